/* The eviction-policy seam, internal side. The interface itself (hkv_policy_ops, hkv_head_view,
 * hkv_policy_cfg) is public in heavykv.h so policies can also be written outside the library. Adding a
 * built-in policy = one policy_NAME.c defining `const hkv_policy_ops hkv_policy_NAME` plus one X(NAME) line in
 * HKV_POLICY_TABLE below; names, help, error messages and budget derivation then all come from the table. */
#ifndef HKV_POLICY_H
#define HKV_POLICY_H
#include <stdint.h>
#include "heavykv.h"

/* The policy table, in help-text order. One line per policy. */
#define HKV_POLICY_TABLE(X) \
    X(full)                 \
    X(window)               \
    X(sink)                 \
    X(h2o)                  \
    X(tova)                 \
    X(snapkv)               \
    X(pyramidkv)            \
    X(scissorhands)         \
    X(keyformer)            \
    HKV_POLICY_TABLE_TEST(X)

/* A test build (tests/policy_dummy.c, -DHKV_TEST_DUMMY_POLICY) adds one entry to prove that every name in help
 * text and error messages comes from this table. */
#ifdef HKV_TEST_DUMMY_POLICY
#define HKV_POLICY_TABLE_TEST(X) X(dummy)
#else
#define HKV_POLICY_TABLE_TEST(X)
#endif

#define HKV_POLICY_DECLARE(n) extern const hkv_policy_ops hkv_policy_##n;
HKV_POLICY_TABLE(HKV_POLICY_DECLARE)
#undef HKV_POLICY_DECLARE

/* The option values of ops for the "POLICY.NAME=VALUE" entries of opts (defaults for the rest). */
hkv_status hkv_policy_options(const hkv_policy_ops *ops, const char *opts, int *out, char *err, size_t errlen);
/* The config's policy: custom, or the table entry; NULL with the "unknown KV policy" message. */
const hkv_policy_ops *hkv_policy_of(const hkv_kv_config *c, char *err, size_t errlen);

/* Helpers shared by policies: is slot index j of the view protected by the recent window / sinks? */
static inline int hkv_is_recent(const hkv_policy_cfg *c, const hkv_head_view *h, int j) {
    return h->pos[h->slots[j]] > h->newest - c->b.recent;
}
static inline int hkv_is_sink(const hkv_policy_cfg *c, const hkv_head_view *h, int j) {
    return h->pos[h->slots[j]] < c->b.sink;
}

/* Batch hook helper for policies that rank by one number, lowest evicted first, ties evicting the older token:
 * marks keep[] so that exactly the tokens a victim() loop would evict are dropped (ranks are fixed while a
 * head is trimmed, so sorting once gives the same set). rank[j] for j < h->n; prot[j] = 1: never evicted.
 * Returns the number kept, or -1 when out of memory (the caller then falls back to victim()). */
int hkv_select_lowest(const hkv_head_view *h, const float *rank, const uint8_t *prot, int target, uint8_t *keep);

/* Budget rule of the heavy + recent (+ sink) policies once the sink count is known (< 0: none): the rest of
 * the total goes half to recent (rounded down) and half to heavy when neither is given, else to the one not
 * given; without a total, unset parts are 0 and the total is their sum. */
void hkv_budget_split_heavy_recent(hkv_budget *s);

/* SnapKV's callbacks, shared with PyramidKV (the same selection under a pyramid budget schedule). */
hkv_status hkv_snapkv_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen);
void hkv_snapkv_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible, int32_t qpos);
float hkv_snapkv_score(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j);
int hkv_snapkv_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h);
int hkv_snapkv_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep);
#endif
