/* "dummy": a policy that exists only in the test build heavykv-dummy-policy (compiled with
 * -DHKV_TEST_DUMMY_POLICY, which adds X(dummy) to HKV_POLICY_TABLE). It is a plain window with one option and
 * its own budget rule, so test_policy_table can see that its name, help, option and budget derivation reach
 * every help text and error message without any other file naming it. */
#include <stdio.h>
#include "policy.h"

static const hkv_policy_option dummy_options[] = {
    { "level", NULL, 3, 1, 9, "how dummy it is (1..9, default 3)" },
};

/* The test's rule: a sink of exactly `level` tokens, the rest recent. */
static hkv_status dummy_derive(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen) {
    (void)err; (void)errlen;
    s->heavy = 0;
    s->sink = cfg->opt[0];
    if (s->total < 0) s->total = s->sink + (s->recent > 0 ? s->recent : 1);
    s->recent = s->total - s->sink;
    return HKV_OK;
}

static int dummy_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    for (int j = 0; j < h->n; j++)
        if (!hkv_is_sink(cfg, h, j)) return j;
    return -1;
}

const hkv_policy_ops hkv_policy_dummy = {
    .name = "dummy", .help = "DUMMY-HELP-LINE a test-only policy",
    .options = dummy_options, .n_options = 1,
    .derive_budget = dummy_derive, .victim = dummy_victim,
};
