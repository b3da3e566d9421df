/* "snapkv": SnapKV (Li et al. 2024). After a prompt, each head keeps the tokens that the prompt's last W
 * queries (the observation window) attended to most, plus the window itself:
 *   1. score[p]  = sum over the last W prompt queries q of the probability q gave token p (summed over the KV
 *                  group's query heads by --gqa-agg, like every policy here);
 *   2. pooled[p] = max of score over the K positions centred on p (1-D max pooling, K = --snapkv-kernel, odd;
 *                  only over tokens outside the window, as the paper pools the prefix), so the neighbours of a
 *                  strongly attended token survive with it and the kept context stays readable;
 *   3. keep the window (b.recent = W tokens), the first b.sink positions (default 0), and the highest-pooled
 *      remaining tokens up to the budget; ties drop the older token first.
 * Step 3 is the batch hook (select), run after every step that wrote more than one token (a prompt chunk; with
 * --prefill-chunk each chunk's last W queries form the window).
 *
 * Decode rule (the paper compresses the prompt only; a bounded cache needs a rule for generated tokens too):
 * h2o-like. Every decode query adds its probabilities to score[], and when a step is over budget the token with
 * the lowest accumulated (unpooled) score outside the newest W tokens and the sinks is evicted, older first on
 * ties. So the prompt selection is kept as long as the generated text keeps attending to it.
 *
 * State per slot: [0] score = sum of the probabilities from the observation-window and decode queries. */
#include "alloc.h"
#include <stdlib.h>
#include "policy.h"

enum { OPT_WINDOW = 0, OPT_KERNEL = 1 };

static const hkv_policy_option snapkv_options[] = {
    { "window", NULL, 8, 1, 4096, "observation window W: last prompt queries that vote, also kept (default 8)" },
    { "kernel", NULL, 7, 1, 63, "max-pooling kernel over positions, odd (default 7; 1 = no pooling)" },
};

/* The window is the recent part: recent = W unless given (at most the budget less the sinks); heavy = rest. */
hkv_status hkv_snapkv_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    if (cfg->opt[OPT_KERNEL] % 2 == 0) {
        snprintf(err, errlen, "the snapkv kernel must be odd (got %d)", cfg->opt[OPT_KERNEL]);
        return HKV_ERR_ARG;
    }
    if (s->sink < 0) s->sink = 0;
    if (s->recent < 0) {
        s->recent = cfg->opt[OPT_WINDOW];
        if (s->total >= 0 && s->recent > s->total - s->sink) s->recent = s->total - s->sink;
        if (s->recent < 0) s->recent = 0;
    }
    if (s->total >= 0 && s->heavy < 0) s->heavy = s->total - s->recent - s->sink;
    if (s->heavy < 0 && s->total < 0) s->heavy = 0;
    if (s->total < 0) s->total = s->heavy + s->recent + s->sink;
    if (s->recent < 1 && s->total >= 1 && s->heavy >= 0 && s->heavy + s->recent + s->sink == s->total) {
        snprintf(err, errlen, "the %s policy needs an observation window (recent part) of at least 1 token",
                 "snapkv");
        return HKV_ERR_ARG;
    }
    return HKV_OK;
}

/* Queries inside the window (the last W positions written so far) vote; during a prompt chunk the newest
 * position is the chunk's last, so earlier prompt queries are ignored. In decode every query is the newest. */
void hkv_snapkv_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                        int32_t qpos) {
    if (qpos <= h->newest - cfg->b.recent) return;
    for (int j = 0; j < n_visible && j < h->n; j++) h->state[h->slots[j]] += probs[j];
}

float hkv_snapkv_score(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j) {
    (void)cfg;
    return h->state[h->slots[j]];
}

/* Decode: lowest accumulated score outside the window and the sinks; strict < keeps the older on ties. */
int hkv_snapkv_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    int best = -1;
    float best_s = 0.0f;
    for (int j = 0; j < h->n; j++) {
        if (hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j)) continue;
        float s = h->state[h->slots[j]];
        if (best < 0 || s < best_s) { best = j; best_s = s; }
    }
    return best;
}

/* Prompt: pool the scores of the tokens outside the window, keep the top ones plus the protected tokens. */
int hkv_snapkv_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    int n = h->n, half = cfg->opt[OPT_KERNEL] / 2, kept = -1;
    float *pooled = hkv_malloc(sizeof(float) * (size_t)(n ? n : 1));
    uint8_t *prot = hkv_malloc((size_t)(n ? n : 1));
    if (pooled && prot) {
        int n_prefix = 0;            /* tokens before the window: the live list is in position order */
        while (n_prefix < n && !hkv_is_recent(cfg, h, n_prefix)) n_prefix++;
        for (int j = 0; j < n; j++) {
            prot[j] = (uint8_t)(j >= n_prefix || hkv_is_sink(cfg, h, j));
            pooled[j] = 0.0f;
            if (j >= n_prefix) continue;
            int lo = j - half < 0 ? 0 : j - half, hi = j + half >= n_prefix ? n_prefix - 1 : j + half;
            float m = h->state[h->slots[lo]];
            for (int i = lo + 1; i <= hi; i++) if (h->state[h->slots[i]] > m) m = h->state[h->slots[i]];
            pooled[j] = m;
        }
        kept = hkv_select_lowest(h, pooled, prot, target, keep);
    }
    hkv_free(pooled);
    hkv_free(prot);
    return kept;
}

const hkv_policy_ops hkv_policy_snapkv = {
    .name = "snapkv", .help = "SnapKV: the prompt's last W queries vote (max-pooled); then h2o-like decode",
    .needs_probs = 1, .state_floats = 1,
    .options = snapkv_options, .n_options = 2,
    .derive_budget = hkv_snapkv_derive, .observe = hkv_snapkv_observe, .victim = hkv_snapkv_victim,
    .select = hkv_snapkv_select, .score = hkv_snapkv_score,
};
