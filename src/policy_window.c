/* "window": keep the newest b.total tokens (StreamingLLM without sinks). Needs no scores. */
#include "policy.h"

static void window_on_insert(const hkv_policy_cfg *cfg, hkv_head_view *h, int32_t s) {
    (void)cfg; (void)h; (void)s;
}

static void window_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                           int32_t qpos) {
    (void)cfg; (void)h; (void)probs; (void)n_visible; (void)qpos;
}

/* Slots are listed oldest first, so the victim is always the first one. */
static int window_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    (void)cfg;
    return h->n > 0 ? 0 : -1;
}

const hkv_policy_ops hkv_policy_window = {
    .name = "window", .needs_probs = 0, .state_floats = 0,
    .on_insert = window_on_insert, .observe = window_observe, .victim = window_victim,
};
