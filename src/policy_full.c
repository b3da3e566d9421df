/* "full": the baseline that never evicts (the cache is sized to n_ctx), plus the registry of the built-in
 * policies so callers can look one up by its --kv-policy name. */
#include <string.h>
#include "policy.h"

static void full_on_insert(const hkv_policy_cfg *cfg, hkv_head_view *h, int32_t s) {
    (void)cfg; (void)h; (void)s;
}

static void full_observe(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible,
                         int32_t qpos) {
    (void)cfg; (void)h; (void)probs; (void)n_visible; (void)qpos;
}

/* Every token is protected: a full cache is never over budget, so being asked is answered with "none". */
static int full_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    (void)cfg; (void)h;
    return -1;
}

const hkv_policy_ops hkv_policy_full = {
    .name = "full", .needs_probs = 0, .state_floats = 0,
    .on_insert = full_on_insert, .observe = full_observe, .victim = full_victim,
};

static const hkv_policy_ops *const policy_table[] = {
    &hkv_policy_full, &hkv_policy_window, &hkv_policy_sink, &hkv_policy_h2o, &hkv_policy_tova,
};

const hkv_policy_ops *hkv_policy_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof policy_table / sizeof policy_table[0]; i++)
        if (strcmp(policy_table[i]->name, name) == 0) return policy_table[i];
    return NULL;
}
