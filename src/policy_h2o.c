/* "h2o": Heavy-Hitter Oracle (Zhang et al. 2023). Every token accumulates the attention probability it
 * receives from each later query; over budget, the token with the lowest accumulated score is evicted, except
 * the newest b.recent tokens and the first b.sink positions, which are always kept.
 *
 * State per slot: [0] score = sum of probabilities received, [1] count = number of queries that saw it.
 * Option score=normalized ranks by score / count instead, so old tokens are not favoured merely for having
 * been seen by more queries. A token no query has seen yet (count 0 — possible in the FlexGen replace order,
 * where eviction runs before the new token attends) has score 0 and ranks as 0 in both modes: it has earned
 * nothing yet. */
#include "alloc.h"
#include <stdlib.h>
#include "policy.h"

enum { H2O_SCORE = 0, H2O_COUNT = 1, H2O_FLOATS = 2 };
enum { OPT_SCORE = 0 };

static const hkv_policy_option h2o_options[] = {
    { "score", "sum|normalized", 0, 0, 1, "sum (original H2O) | normalized (divided by #queries that saw the token)" },
};

/* sink (default 0) + heavy hitters + recent window; an even split of the rest when neither is given
 * (recent = half rounded down, heavy gets the odd token). */
static hkv_status h2o_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    (void)cfg; (void)err; (void)errlen;
    if (s->total >= 0 && s->sink < 0 && s->heavy >= 0 && s->recent >= 0) s->sink = s->total - s->heavy - s->recent;
    hkv_budget_split_heavy_recent(s);
    return HKV_OK;
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

static float h2o_score(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j) {
    const float *st = h->state + (size_t)h->slots[j] * H2O_FLOATS;
    if (!cfg->opt[OPT_SCORE]) return st[H2O_SCORE];
    return st[H2O_COUNT] > 0.0f ? st[H2O_SCORE] / st[H2O_COUNT] : 0.0f;
}

/* Lowest-ranked unprotected token; strict < keeps the older one (smaller j) on ties. */
static int h2o_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    int best = -1;
    float best_rank = 0.0f;
    for (int j = 0; j < h->n; j++) {
        if (hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j)) continue;
        float r = h2o_score(cfg, h, j);
        if (best < 0 || r < best_rank) { best = j; best_rank = r; }
    }
    return best;
}

/* Scores do not change while a head is trimmed, so the victim loop evicts the n - target lowest-ranked
 * unprotected tokens (older first on ties): one sort instead of n - target scans. */
static int h2o_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    float *rank = hkv_malloc(sizeof(float) * (size_t)(h->n ? h->n : 1));
    uint8_t *prot = hkv_malloc((size_t)(h->n ? h->n : 1));
    int kept = -1;
    if (rank && prot) {
        for (int j = 0; j < h->n; j++) {
            rank[j] = h2o_score(cfg, h, j);
            prot[j] = (uint8_t)(hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j));
        }
        kept = hkv_select_lowest(h, rank, prot, target, keep);
    }
    hkv_free(rank);
    hkv_free(prot);
    return kept;
}

const hkv_policy_ops hkv_policy_h2o = {
    .name = "h2o", .help = "Heavy-Hitter Oracle: accumulated attention (heavy hitters) + recent window",
    .needs_probs = 1, .state_floats = H2O_FLOATS,
    .options = h2o_options, .n_options = 1,
    .derive_budget = h2o_derive, .observe = h2o_observe, .victim = h2o_victim,
    .select = h2o_select, .score = h2o_score,
};
