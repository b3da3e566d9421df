/* "keyformer": Keyformer (Adnan et al., MLSys 2024). Like h2o, a token's score accumulates over queries and
 * the lowest-scoring token outside the recent window and the sinks is evicted (older first on ties) — but
 * each query contributes a Gumbel-regularized, temperature-softened distribution instead of its attention
 * probabilities, which the paper shows keeps "key tokens" that plain accumulated attention undervalues once
 * others were discarded:
 *   f_j = softmax_j( (log a_j + g_j) / tau ),   a_j = probs[j] / sum(probs)   (the query's distribution)
 * g_j is Gumbel noise, -log(-log u) with u from a hash of (layer, key position, query position), so runs are
 * reproducible; tau rises linearly from --keyformer-tau-start to --keyformer-tau-end (hundredths; paper: 1
 * to 2) over the first --keyformer-span query positions. The attention logits themselves are not part of the
 * policy seam, but log a_j equals them up to a per-query constant, which softmax cancels; with GQA the group's
 * aggregated distribution stands in for one head's. --keyformer-noise none drops g (temperature only).
 *
 * State per slot: [0] accumulated score. */
#include <math.h>
#include <stdlib.h>
#include "alloc.h"
#include "policy.h"

enum { OPT_TAU0 = 0, OPT_TAU1 = 1, OPT_SPAN = 2, OPT_NOISE = 3 };

static const hkv_policy_option keyformer_options[] = {
    { "tau-start", NULL, 100, 1, 10000, "temperature at position 0, in hundredths (default 100 = 1.0)" },
    { "tau-end", NULL, 200, 1, 10000, "temperature from --keyformer-span on, in hundredths (default 200 = 2.0)" },
    { "span", NULL, 512, 1, 1 << 24, "query positions over which the temperature rises (default 512)" },
    { "noise", "gumbel|none", 0, 0, 1, "gumbel (paper) | none (temperature only)" },
};

/* Gumbel noise of (layer, key position, query position): splitmix64 of the packed triple -> u in (0, 1). */
static float keyformer_gumbel(int layer, int32_t pos, int32_t qpos) {
    uint64_t z = ((uint64_t)(uint32_t)layer << 48) ^ ((uint64_t)(uint32_t)pos << 24) ^ (uint64_t)(uint32_t)qpos;
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 0.5) / 9007199254740992.0;
    return (float)-log(-log(u));
}

static float keyformer_tau(const int *opt, int32_t qpos) {
    double t = qpos >= opt[OPT_SPAN] ? 1.0 : (double)qpos / opt[OPT_SPAN];
    return (float)((opt[OPT_TAU0] + (opt[OPT_TAU1] - opt[OPT_TAU0]) * t) / 100.0);
}

/* recent (default: half of the rest, like h2o) + key tokens + optional sinks */
static hkv_status keyformer_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    (void)cfg; (void)err; (void)errlen;
    hkv_budget_split_heavy_recent(s);
    return HKV_OK;
}

/* z_j = (log a_j + g_j) / tau; the observation adds softmax(z). */
static float keyformer_z(const hkv_policy_cfg *cfg, const hkv_head_view *h, const float *probs, int j, float tot,
                         float tau, int32_t qpos) {
    float a = probs[j] / tot;
    float g = cfg->opt[OPT_NOISE] ? 0.0f : keyformer_gumbel(cfg->layer, h->pos[h->slots[j]], qpos);
    return a > 0.0f ? (logf(a) + g) / tau : -INFINITY;
}

/* No allocation (observe cannot report a failure, and dropping the query would change the scores): the z
 * values live in a stack buffer, or for a longer head are computed again in each pass (same bits). */
static void keyformer_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                              int32_t qpos) {
    enum { ZBUF = 2048 };
    float zbuf[ZBUF];
    int nv = n_visible < h->n ? n_visible : h->n;
    float tot = 0.0f, tau = keyformer_tau(cfg->opt, qpos), m = -INFINITY;
    for (int j = 0; j < nv; j++) tot += probs[j];
    if (nv <= 0 || !(tot > 0.0f)) return;
    int keep = nv <= ZBUF;
    for (int j = 0; j < nv; j++) {
        float z = keyformer_z(cfg, h, probs, j, tot, tau, qpos);
        if (keep) zbuf[j] = z;
        if (z > m) m = z;
    }
    float sum = 0.0f;
    for (int j = 0; j < nv; j++) {
        float z = keep ? zbuf[j] : keyformer_z(cfg, h, probs, j, tot, tau, qpos);
        float e = z == -INFINITY ? 0.0f : expf(z - m);
        if (keep) zbuf[j] = e;
        sum += e;
    }
    for (int j = 0; j < nv; j++) {
        float e = zbuf[j];
        if (!keep) {
            float z = keyformer_z(cfg, h, probs, j, tot, tau, qpos);
            e = z == -INFINITY ? 0.0f : expf(z - m);
        }
        h->state[h->slots[j]] += e / sum;
    }
}

static float keyformer_score(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j) {
    (void)cfg;
    return h->state[h->slots[j]];
}

static int keyformer_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    int best = -1;
    float best_s = 0.0f;
    for (int j = 0; j < h->n; j++) {
        if (hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j)) continue;
        float s = h->state[h->slots[j]];
        if (best < 0 || s < best_s) { best = j; best_s = s; }
    }
    return best;
}

static int keyformer_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    float *rank = hkv_malloc(sizeof(float) * (size_t)(h->n ? h->n : 1));
    uint8_t *prot = hkv_malloc((size_t)(h->n ? h->n : 1));
    int kept = -1;
    if (rank && prot) {
        for (int j = 0; j < h->n; j++) {
            rank[j] = h->state[h->slots[j]];
            prot[j] = (uint8_t)(hkv_is_recent(cfg, h, j) || hkv_is_sink(cfg, h, j));
        }
        kept = hkv_select_lowest(h, rank, prot, target, keep);
    }
    hkv_free(rank);
    hkv_free(prot);
    return kept;
}

const hkv_policy_ops hkv_policy_keyformer = {
    .name = "keyformer", .help = "Keyformer: accumulated Gumbel-softmax key scores + recent window",
    .needs_probs = 1, .state_floats = 1,
    .options = keyformer_options, .n_options = 4,
    .derive_budget = keyformer_derive, .observe = keyformer_observe, .victim = keyformer_victim,
    .select = keyformer_select, .score = keyformer_score,
};
