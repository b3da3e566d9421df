/* The eviction-policy seam. A policy is a table of a few functions; it owns per-slot state (scores) but not
 * K/V or positions, which live in the cache (kvcache.c). Adding a policy = one policy_NAME.c file defining a
 * `const hkv_policy_ops hkv_policy_NAME` plus one line in policy_registry (kvcache.c). */
#ifndef HKV_POLICY_H
#define HKV_POLICY_H
#include <stdint.h>
#include "heavykv.h"

/* What every policy call may read: the resolved budget and the options. */
typedef struct hkv_policy_cfg {
    hkv_budget b;      /* total = heavy + recent + sink tokens per KV head */
    int normalized;    /* h2o: score / number of queries that saw the token */
    int replace;       /* h2o: FlexGen order (evict before attending) */
} hkv_policy_cfg;

/* One (sequence, layer, KV head) as a policy sees it. Live slots are listed in position order. */
typedef struct hkv_head_view {
    const int32_t *slots;   /* [n] live slot indices, ascending position */
    const int32_t *pos;     /* [capacity] original position of each slot */
    int n;                  /* live slots */
    int32_t newest;         /* position of the newest token in the head */
    float *state;           /* [capacity][ops->state_floats] this policy's per-slot state */
} hkv_head_view;

typedef struct hkv_policy_ops {
    const char *name;
    int needs_probs;        /* 1: observe() gets attention probabilities (costs a little) */
    int state_floats;       /* floats of per-slot state (0..4) */
    /* A new token was written to slot s: reset its state. */
    void (*on_insert)(const hkv_policy_cfg *cfg, hkv_head_view *h, int32_t s);
    /* One query (position qpos) attended over the head: probs[j] is the probability slot h->slots[j] received
     * (already aggregated over the KV group's query heads, sum or mean). Every live slot with pos <= qpos is in
     * the list; slots newer than qpos (later in the same chunk) have probs[j] == 0 and j >= n_visible. */
    void (*observe)(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible, int32_t qpos);
    /* The head is over budget: return the index j into h->slots of the token to evict, never a protected one
     * (recent/sink as the policy defines). Ties: the older token (smaller j). */
    int (*victim)(const hkv_policy_cfg *cfg, const hkv_head_view *h);
} hkv_policy_ops;

extern const hkv_policy_ops hkv_policy_full, hkv_policy_window, hkv_policy_sink, hkv_policy_h2o, hkv_policy_tova;

const hkv_policy_ops *hkv_policy_find(const char *name);

/* Helpers shared by policies: is slot index j of the view protected by the recent window / sinks? */
static inline int hkv_is_recent(const hkv_policy_cfg *c, const hkv_head_view *h, int j) {
    return h->pos[h->slots[j]] > h->newest - c->b.recent;
}
static inline int hkv_is_sink(const hkv_policy_cfg *c, const hkv_head_view *h, int j) {
    return h->pos[h->slots[j]] < c->b.sink;
}
#endif
