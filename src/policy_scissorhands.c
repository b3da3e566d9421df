/* "scissorhands": Scissorhands (Liu et al. 2023), "persistence of importance": a token that was unimportant to
 * the recent queries will stay unimportant, so count, over a history window of the last w queries that saw
 * each token, how often it received less than the average attention of that query (threshold = the query's
 * total probability / number of tokens it saw; the total is 1, or the group size with --gqa-agg sum). Over
 * budget, evict the token with the most low-attention marks in its window, except the newest b.recent tokens
 * and the first b.sink positions; ties evict the older token.
 *
 * State per slot: [0] the marks of the last w observations as a bit mask (bit 0 = the newest), stored as an
 * exact integer in a float (w <= 24, so every mask value is exact). */
#include "alloc.h"
#include <stdlib.h>
#include "policy.h"

enum { OPT_HISTORY = 0 };

static const hkv_policy_option scissorhands_options[] = {
    { "history", NULL, 16, 1, 24, "history window w: queries per token whose low-attention marks count (default 16)" },
};

/* recent (default: half of the rest, like h2o) + ranked tokens + optional sinks */
static hkv_status scissorhands_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    (void)cfg; (void)err; (void)errlen;
    hkv_budget_split_heavy_recent(s);
    return HKV_OK;
}

static void scissorhands_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                                 int32_t qpos) {
    (void)qpos;
    int nv = n_visible < h->n ? n_visible : h->n;
    if (nv <= 0) return;
    float total = 0.0f;
    for (int j = 0; j < nv; j++) total += probs[j];
    float thresh = total / (float)nv;
    uint32_t keep_bits = (1u << cfg->opt[OPT_HISTORY]) - 1u;
    for (int j = 0; j < nv; j++) {
        float *st = &h->state[h->slots[j]];
        uint32_t mask = (uint32_t)*st;
        mask = ((mask << 1) | (probs[j] < thresh ? 1u : 0u)) & keep_bits;
        *st = (float)mask;
    }
}

static int popcount24(uint32_t m) {
    int c = 0;
    for (; m; m &= m - 1) c++;
    return c;
}

/* Marks in the window: the higher, the less important. */
static float scissorhands_score(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j) {
    (void)cfg;
    return (float)popcount24((uint32_t)h->state[h->slots[j]]);
}

static int scissorhands_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    int best = -1;
    float best_m = 0.0f;
    for (int j = 0; j < h->n; j++) {
        if (hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j)) continue;
        float m = scissorhands_score(cfg, h, j);
        if (best < 0 || m > best_m) { best = j; best_m = m; }
    }
    return best;
}

/* The victim loop drops the most-marked tokens first, older first on ties: lowest (-marks) in one sort. */
static int scissorhands_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    float *rank = hkv_malloc(sizeof(float) * (size_t)(h->n ? h->n : 1));
    uint8_t *prot = hkv_malloc((size_t)(h->n ? h->n : 1));
    int kept = -1;
    if (rank && prot) {
        for (int j = 0; j < h->n; j++) {
            rank[j] = -scissorhands_score(cfg, h, j);
            prot[j] = (uint8_t)(hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j));
        }
        kept = hkv_select_lowest(h, rank, prot, target, keep);
    }
    hkv_free(rank);
    hkv_free(prot);
    return kept;
}

const hkv_policy_ops hkv_policy_scissorhands = {
    .name = "scissorhands", .help = "Scissorhands: evict the token most often below-average in its history window",
    .needs_probs = 1, .state_floats = 1,
    .options = scissorhands_options, .n_options = 1,
    .derive_budget = scissorhands_derive, .observe = scissorhands_observe, .victim = scissorhands_victim,
    .select = scissorhands_select, .score = scissorhands_score,
};
