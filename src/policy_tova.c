/* "tova": Token Omission Via Attention (Oren et al. 2024). Over budget, evict the token that the most recent
 * query attended to least. No recent window is protected; only the first b.sink positions when b.sink > 0.
 *
 * State per slot: [0] the probability the latest query that saw the token gave it (0 until one has). */
#include "alloc.h"
#include <stdlib.h>
#include "policy.h"

/* everything is ranked by the latest query; only optional sinks are protected, no recent window */
static hkv_status tova_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    (void)cfg;
    if (s->recent > 0) {
        snprintf(err, errlen, "the tova policy has no recent part; leave the recent budget unset");
        return HKV_ERR_ARG;
    }
    s->recent = 0;
    if (s->total >= 0 && s->sink < 0 && s->heavy >= 0) s->sink = s->total - s->heavy;
    if (s->sink < 0) s->sink = 0;
    if (s->heavy < 0) s->heavy = s->total >= 0 ? s->total - s->sink : 0;
    if (s->total < 0) s->total = s->heavy + s->sink;
    return HKV_OK;
}

/* Overwrite, not accumulate: TOVA only trusts the newest query. Slots newer than the query keep their value. */
static void tova_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                         int32_t qpos) {
    (void)cfg; (void)qpos;
    for (int j = 0; j < n_visible && j < h->n; j++) h->state[h->slots[j]] = probs[j];
}

static float tova_score(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j) {
    (void)cfg;
    return h->state[h->slots[j]];
}

/* Lowest probability among non-sinks; strict < keeps the older one (smaller j) on ties. */
static int tova_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    int best = -1;
    float best_p = 0.0f;
    for (int j = 0; j < h->n; j++) {
        if (hkv_is_sink(cfg, h, j)) continue;
        float p = h->state[h->slots[j]];
        if (best < 0 || p < best_p) { best = j; best_p = p; }
    }
    return best;
}

static int tova_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    float *rank = hkv_malloc(sizeof(float) * (size_t)(h->n ? h->n : 1));
    uint8_t *prot = hkv_malloc((size_t)(h->n ? h->n : 1));
    int kept = -1;
    if (rank && prot) {
        for (int j = 0; j < h->n; j++) { rank[j] = h->state[h->slots[j]]; prot[j] = (uint8_t)hkv_is_sink(cfg, h, j); }
        kept = hkv_select_lowest(h, rank, prot, target, keep);
    }
    hkv_free(rank);
    hkv_free(prot);
    return kept;
}

const hkv_policy_ops hkv_policy_tova = {
    .name = "tova", .help = "TOVA: evict the token the newest query attended to least (no recent window)",
    .needs_probs = 1, .state_floats = 1,
    .derive_budget = tova_derive, .observe = tova_observe, .victim = tova_victim, .select = tova_select,
    .score = tova_score,
};
