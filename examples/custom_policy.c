/* custom_policy.c — an eviction policy written outside the library, using only heavykv.h.
 *
 * A policy is a struct of callbacks (hkv_policy_ops). The library's own policies are instances of the same
 * struct; an embedder passes one through hkv_kv_config.custom (and any data of its own through custom_user),
 * per context — there is no global registry to change.
 *
 * This one, "peak", keeps the tokens whose *largest* attention probability ever received is highest (a
 * heavy-hitter variant that does not favour old tokens for having been seen more often), and never evicts the
 * newest `protect` tokens (its one option). It counts its own evictions through the user pointer.
 *
 *   cc custom_policy.c $(pkg-config --cflags --libs heavykv) -o custom_policy
 *   ./custom_policy ../shared/models/stories260K.gguf        (or set $HEAVYKV_MODEL)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"

typedef struct peak_stats { long observed, victims; } peak_stats;   /* our data, reached via cfg->user */

static const hkv_policy_option peak_options[] = {
    { "protect", NULL, 4, 0, 1024, "newest tokens never evicted (default 4)" },
};

/* One float of state per slot: the peak probability. on_insert is NULL: the library zeroes new state. */
static void peak_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                         int32_t qpos) {
    (void)qpos;
    for (int j = 0; j < n_visible && j < h->n; j++) {
        float *st = &h->state[h->slots[j]];
        if (probs[j] > *st) *st = probs[j];
    }
    ((peak_stats *)cfg->user)->observed++;
}

/* Lowest peak among the tokens older than the protected window (older first on ties); -1: all protected. */
static int peak_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    int best = -1, protect = cfg->opt[0];
    for (int j = 0; j < h->n; j++) {
        if (h->pos[h->slots[j]] > h->newest - protect) continue;
        if (best < 0 || h->state[h->slots[j]] < h->state[h->slots[best]]) best = j;
    }
    if (best >= 0) ((peak_stats *)cfg->user)->victims++;
    return best;
}

static float peak_score(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j) {
    (void)cfg;
    return h->state[h->slots[j]];
}

static const hkv_policy_ops peak_policy = {
    .name = "peak", .help = "keep the tokens with the highest peak attention",
    .needs_probs = 1, .state_floats = 1,
    .options = peak_options, .n_options = 1,
    /* derive_budget NULL: the whole budget is ranked (heavy); select NULL: victim() is called per token */
    .observe = peak_observe, .victim = peak_victim, .score = peak_score,
};

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : getenv("HEAVYKV_MODEL");
    if (!path) { fprintf(stderr, "usage: custom_policy MODEL.gguf (or set HEAVYKV_MODEL)\n"); return 2; }
    char err[512];
    hkv_model *m;
    if (hkv_model_load(path, NULL, &m, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }

    peak_stats stats = { 0, 0 };
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = 256;
    cp.kv.custom = &peak_policy;
    cp.kv.custom_user = &stats;
    hkv_amount_parse("16", &cp.kv.budget, err, sizeof err);                 /* 16 tokens per KV head */
    if (hkv_kv_set_option(&cp.kv, "peak", "protect", "6", err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    hkv_context *c;
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) { fprintf(stderr, "%s\n", err); hkv_model_free(m); return 1; }

    int32_t toks[256], tok;
    int n = hkv_tokenize(m, "Once upon a time, there was a little girl named Lily. She loved", 1, 0, toks, 256);
    hkv_status st = n > 0 ? hkv_decode(c, 0, toks, n) : HKV_ERR_ARG;
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    for (int i = 0; i < 40 && st == HKV_OK; i++) {           /* greedy continuation */
        tok = hkv_argmax(hkv_get_logits(c, 0, -1), mi.n_vocab);
        char piece[64];
        int len = hkv_token_to_piece(m, tok, piece, sizeof piece);
        if (len > 0) fwrite(piece, 1, (size_t)len, stdout);
        st = hkv_decode(c, 0, &tok, 1);
    }
    printf("\n");
    if (st) fprintf(stderr, "decode: %s\n", hkv_last_error(c));

    int32_t pos[256];
    float score[256];
    int kept = hkv_kv_positions(c, 0, 0, 0, pos, 256);
    hkv_kv_scores(c, 0, 0, 0, score, 256);
    printf("policy %s: budget %d, layer 0 head 0 keeps %d positions:", peak_policy.name,
           hkv_context_budget(c).total, kept);
    for (int j = 0; j < kept; j++) printf(" %d(%.2f)", pos[j], (double)score[j]);
    printf("\nobserve calls %ld, evictions %ld\n", stats.observed, stats.victims);
    hkv_context_free(c);
    hkv_model_free(m);
    return st == HKV_OK && kept == 16 && stats.victims > 0 ? 0 : 1;
}
