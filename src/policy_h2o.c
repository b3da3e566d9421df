/* "h2o": Heavy-Hitter Oracle (Zhang et al. 2023). Every token accumulates the attention probability it
 * receives from each later query; over budget, the token with the lowest accumulated score is evicted, except
 * the newest b.recent tokens and the first b.sink positions, which are always kept.
 *
 * State per slot: [0] score = sum of probabilities received, [1] count = number of queries that saw it.
 * Normalized mode (cfg->normalized) ranks by score / count instead, so old tokens are not favoured merely for
 * having been seen by more queries. A token no query has seen yet (count 0 — possible in the FlexGen
 * "replace" order, where eviction runs before the new token attends) has score 0 and ranks as 0 in both
 * modes: it has earned nothing yet. */
#include "policy.h"

enum { H2O_SCORE = 0, H2O_COUNT = 1, H2O_FLOATS = 2 };

static void h2o_on_insert(const hkv_policy_cfg *cfg, hkv_head_view *h, int32_t s) {
    (void)cfg;
    h->state[(size_t)s * H2O_FLOATS + H2O_SCORE] = 0.0f;
    h->state[(size_t)s * H2O_FLOATS + H2O_COUNT] = 0.0f;
}

/* Only the first n_visible slots are older than or equal to the query; the rest did not take part. */
static void h2o_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                        int32_t qpos) {
    (void)cfg; (void)qpos;
    for (int j = 0; j < n_visible && j < h->n; j++) {
        float *st = h->state + (size_t)h->slots[j] * H2O_FLOATS;
        st[H2O_SCORE] += probs[j];
        st[H2O_COUNT] += 1.0f;
    }
}

static float h2o_rank(const hkv_policy_cfg *cfg, const float *st) {
    if (!cfg->normalized) return st[H2O_SCORE];
    return st[H2O_COUNT] > 0.0f ? st[H2O_SCORE] / st[H2O_COUNT] : 0.0f;
}

/* Lowest-ranked unprotected token; strict < keeps the older one (smaller j) on ties. */
static int h2o_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    int best = -1;
    float best_rank = 0.0f;
    for (int j = 0; j < h->n; j++) {
        if (hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j)) continue;
        float r = h2o_rank(cfg, h->state + (size_t)h->slots[j] * H2O_FLOATS);
        if (best < 0 || r < best_rank) { best = j; best_rank = r; }
    }
    return best;
}

const hkv_policy_ops hkv_policy_h2o = {
    .name = "h2o", .needs_probs = 1, .state_floats = H2O_FLOATS,
    .on_insert = h2o_on_insert, .observe = h2o_observe, .victim = h2o_victim,
};
