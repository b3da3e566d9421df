/* "sink": StreamingLLM — keep the first b.sink positions (attention sinks) forever, plus a window of the
 * newest tokens. Needs no scores. */
#include "policy.h"

/* sink tokens + recent window. The default of 4 sinks shrinks for tiny budgets so one recent slot is left. */
static hkv_status sink_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    (void)cfg;
    if (s->heavy > 0) {
        snprintf(err, errlen, "the sink policy has no heavy part; leave the heavy budget unset");
        return HKV_ERR_ARG;
    }
    s->heavy = 0;
    if (s->total >= 0 && s->sink < 0 && s->recent >= 0) s->sink = s->total - s->recent;
    if (s->sink < 0) s->sink = s->total >= 0 && s->total <= 4 ? (s->total > 0 ? s->total - 1 : 0) : 4;
    if (s->total >= 0 && s->recent < 0) s->recent = s->total - s->sink;
    if (s->recent < 0) s->recent = 0;
    if (s->total < 0) s->total = s->sink + s->recent;
    if (s->recent < 1 && s->total >= 1 && s->sink + s->recent == s->total) {
        snprintf(err, errlen, "the sink policy needs a recent window of at least 1 token (sink %d of %d)", s->sink,
                 s->total);
        return HKV_ERR_ARG;
    }
    return HKV_OK;
}

/* Slots are in position order, so the first non-sink is the oldest evictable token. */
static int sink_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    for (int j = 0; j < h->n; j++)
        if (!hkv_is_sink(cfg, h, j)) return j;
    return -1;
}

/* The oldest non-sinks go first: keep every sink, then the newest of the rest up to the target. */
static int sink_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    int drop = h->n - target, kept = h->n;
    for (int j = 0; j < h->n; j++) {
        keep[j] = 1;
        if (drop > 0 && !hkv_is_sink(cfg, h, j)) { keep[j] = 0; drop--; kept--; }
    }
    return kept;
}

const hkv_policy_ops hkv_policy_sink = {
    .name = "sink", .help = "StreamingLLM: the first --kv-sink tokens plus a window of the newest",
    .derive_budget = sink_derive, .victim = sink_victim, .select = sink_select,
};
