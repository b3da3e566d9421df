/* "tova": Token Omission Via Attention (Oren et al. 2024). Over budget, evict the token that the most recent
 * query attended to least. No recent window is protected; only the first b.sink positions when b.sink > 0.
 *
 * State per slot: [0] the probability the latest query that saw the token gave it (0 until one has). */
#include "policy.h"

static void tova_on_insert(const hkv_policy_cfg *cfg, hkv_head_view *h, int32_t s) {
    (void)cfg;
    h->state[s] = 0.0f;
}

/* Overwrite, not accumulate: TOVA only trusts the newest query. Slots newer than the query keep their value. */
static void tova_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                         int32_t qpos) {
    (void)cfg; (void)qpos;
    for (int j = 0; j < n_visible && j < h->n; j++) h->state[h->slots[j]] = probs[j];
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

const hkv_policy_ops hkv_policy_tova = {
    .name = "tova", .needs_probs = 1, .state_floats = 1,
    .on_insert = tova_on_insert, .observe = tova_observe, .victim = tova_victim,
};
