/* "sink": StreamingLLM — keep the first b.sink positions (attention sinks) forever, plus a window of the
 * newest tokens. Needs no scores. */
#include "policy.h"

static void sink_on_insert(const hkv_policy_cfg *cfg, hkv_head_view *h, int32_t s) {
    (void)cfg; (void)h; (void)s;
}

static void sink_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                         int32_t qpos) {
    (void)cfg; (void)h; (void)probs; (void)n_visible; (void)qpos;
}

/* Slots are in position order, so the first non-sink is the oldest evictable token. */
static int sink_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    for (int j = 0; j < h->n; j++)
        if (!hkv_is_sink(cfg, h, j)) return j;
    return -1;
}

const hkv_policy_ops hkv_policy_sink = {
    .name = "sink", .needs_probs = 0, .state_floats = 0,
    .on_insert = sink_on_insert, .observe = sink_observe, .victim = sink_victim,
};
