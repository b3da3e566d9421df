/* "window": keep the newest b.total tokens (StreamingLLM without sinks). Needs no scores. */
#include "policy.h"

/* All of the budget is the recent window. */
static hkv_status window_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    (void)cfg;
    if (s->heavy > 0 || s->sink > 0) {
        snprintf(err, errlen, "the window policy has no %s part; leave the %s budget unset",
                 s->heavy > 0 ? "heavy" : "sink", s->heavy > 0 ? "heavy" : "sink");
        return HKV_ERR_ARG;
    }
    s->heavy = s->sink = 0;
    if (s->recent < 0) s->recent = s->total;
    if (s->total < 0) s->total = s->recent;
    return HKV_OK;
}

/* Slots are listed oldest first, so the victim is always the first one. */
static int window_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    (void)cfg;
    return h->n > 0 ? 0 : -1;
}

/* The newest `target` survive: the same set as calling window_victim n - target times. */
static int window_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    (void)cfg;
    for (int j = 0; j < h->n; j++) keep[j] = j >= h->n - target;
    return h->n < target ? h->n : target;
}

const hkv_policy_ops hkv_policy_window = {
    .name = "window", .help = "keep the newest tokens (a sliding window)",
    .derive_budget = window_derive, .victim = window_victim, .select = window_select,
};
