/* Budget amounts ("512", "20%", "0.2") and their resolution into heavy/recent/sink token counts per policy. */
#include <string.h>
#include "heavykv.h"
#include "testutil.h"

static void check_parse_ok(const char *s, float value, int is_ratio) {
    hkv_amount a = { -1, -1, 0 };
    char err[256] = "";
    hkv_status st = hkv_amount_parse(s, &a, err, sizeof err);
    CHECKF(st == HKV_OK, "\"%s\": %s", s, err);
    CHECKF(a.set == 1 && a.is_ratio == is_ratio && fabsf(a.value - value) < 1e-6f, "\"%s\" -> %g ratio %d",
           s, a.value, a.is_ratio);
}

static void check_parse_bad(const char *s, const char *needle) {
    hkv_amount a = { 7, 0, 1 };
    char err[256] = "";
    hkv_status st = hkv_amount_parse(s, &a, err, sizeof err);
    CHECKF(st == HKV_ERR_ARG, "\"%s\" accepted", s ? s : "(null)");
    CHECKF(strstr(err, needle) != NULL, "message for \"%s\" lacks \"%s\": %s", s ? s : "(null)", needle, err);
    CHECK(a.value == 7 && a.set == 1);   /* output untouched on error */
}

static void test_parse(void) {
    check_parse_ok("0", 0, 0);
    check_parse_ok("512", 512, 0);
    check_parse_ok("007", 7, 0);
    check_parse_ok("20%", 0.2f, 1);
    check_parse_ok("12.5%", 0.125f, 1);
    check_parse_ok("100%", 1.0f, 1);
    check_parse_ok("0.2", 0.2f, 1);
    check_parse_ok(".5", 0.5f, 1);
    check_parse_ok("1.0", 1.0f, 1);
    check_parse_ok("1.", 1.0f, 1);
    check_parse_ok("16777216", 16777216.0f, 0);
    check_parse_bad("", "empty");
    check_parse_bad(NULL, "empty");
    check_parse_bad("-5", "\"-5\" is negative");
    check_parse_bad("-0.2", "negative");
    check_parse_bad("abc", "\"abc\" is not a number");
    check_parse_bad("10%%", "\"10%%\"");
    check_parse_bad("5x", "\"5x\"");
    check_parse_bad("NaN", "\"NaN\"");
    check_parse_bad("inf", "\"inf\"");
    check_parse_bad("1e3", "\"1e3\"");
    check_parse_bad(" 5", "\" 5\"");
    check_parse_bad("+5", "\"+5\"");
    check_parse_bad("%", "\"%\"");
    check_parse_bad(".", "\".\"");
    check_parse_bad("150%", "\"150%\" must be above 0% and at most 100%");
    check_parse_bad("0%", "\"0%\"");
    check_parse_bad("0.0", "\"0.0\" must be above 0 and at most 1");
    check_parse_bad("1.5", "\"1.5\"");
    check_parse_bad("16777217", "too large");
    check_parse_bad("99999999999999999999999999999999999999", "not a number");
    /* err may be NULL */
    CHECK(hkv_amount_parse("x", NULL, NULL, 0) == HKV_ERR_ARG);
    CHECK(hkv_amount_parse("3", NULL, NULL, 0) == HKV_OK);
}

static hkv_amount tok(int n) { hkv_amount a = { (float)n, 0, 1 }; return a; }
static hkv_amount ratio(float r) { hkv_amount a = { r, 1, 1 }; return a; }
static const hkv_amount UNSET = { 0, 0, 0 };

static hkv_kv_config cfg(const char *policy, hkv_amount total, hkv_amount heavy, hkv_amount recent, hkv_amount sink) {
    hkv_kv_config c = hkv_kv_default_config();
    snprintf(c.policy, sizeof c.policy, "%s", policy);
    c.budget = total; c.heavy = heavy; c.recent = recent; c.sink = sink;
    return c;
}

static void check_ok(hkv_kv_config c, int ref_len, int n_ctx, int total, int heavy, int recent, int sink) {
    hkv_budget b = { -9, -9, -9, -9 };
    char err[256] = "";
    hkv_status st = hkv_budget_resolve(&c, ref_len, n_ctx, &b, err, sizeof err);
    CHECKF(st == HKV_OK, "%s: %s", c.policy, err);
    CHECKF(b.total == total && b.heavy == heavy && b.recent == recent && b.sink == sink,
           "%s: got total %d heavy %d recent %d sink %d, want %d %d %d %d", c.policy, b.total, b.heavy, b.recent,
           b.sink, total, heavy, recent, sink);
}

static void check_bad(hkv_kv_config c, int ref_len, int n_ctx, const char *needle) {
    hkv_budget b = { -9, -9, -9, -9 };
    char err[256] = "";
    hkv_status st = hkv_budget_resolve(&c, ref_len, n_ctx, &b, err, sizeof err);
    CHECKF(st == HKV_ERR_ARG, "%s accepted: %d %d %d %d", c.policy, b.total, b.heavy, b.recent, b.sink);
    CHECKF(strstr(err, needle) != NULL, "%s: message lacks \"%s\": %s", c.policy, needle, err);
}

static void test_defaults(void) {
    hkv_kv_config c = hkv_kv_default_config();
    CHECK(strcmp(c.policy, "full") == 0);
    CHECK(!c.budget.set && !c.heavy.set && !c.recent.set && !c.sink.set);
    CHECK(c.gqa_mean == 0 && c.simulate == 0 && !c.options[0] && !c.budget_layers[0] && !c.custom);
    CHECK(c.prefill_chunk == 0 && c.type == HKV_KV_F16);
    /* the names list is the table's, in its order */
    const char *const *names = hkv_policy_names();
    int n = 0;
    while (names[n]) {
        CHECKF(hkv_policy_at(n) && !strcmp(hkv_policy_at(n)->name, names[n]), "entry %d: %s", n, names[n]);
        n++;
    }
    CHECK(hkv_policy_at(n) == NULL && hkv_policy_at(-1) == NULL);
    const char *want[] = { "full", "window", "sink", "h2o", "tova", "snapkv", "pyramidkv" };
    for (int i = 0; i < 7; i++) CHECKF(hkv_policy_find(want[i]) != NULL, "%s missing", want[i]);
}

static void test_resolve(void) {
    /* full ignores budget flags */
    check_ok(hkv_kv_default_config(), 10, 2048, 2048, 0, 2048, 0);
    check_ok(cfg("full", tok(5), tok(1), UNSET, UNSET), 10, 256, 256, 0, 256, 0);
    /* window */
    check_ok(cfg("window", tok(64), UNSET, UNSET, UNSET), 0, 512, 64, 0, 64, 0);
    check_ok(cfg("window", UNSET, UNSET, tok(32), UNSET), 0, 512, 32, 0, 32, 0);
    check_ok(cfg("window", tok(32), UNSET, tok(32), tok(0)), 0, 512, 32, 0, 32, 0);
    check_bad(cfg("window", tok(32), UNSET, tok(16), UNSET), 0, 512, "window budget split (recent 16)");
    check_bad(cfg("window", tok(32), tok(4), UNSET, UNSET), 0, 512, "no heavy part");
    check_bad(cfg("window", tok(32), UNSET, UNSET, tok(4)), 0, 512, "no sink part");
    /* sink */
    check_ok(cfg("sink", tok(64), UNSET, UNSET, UNSET), 0, 512, 64, 0, 60, 4);
    check_ok(cfg("sink", tok(64), UNSET, UNSET, tok(8)), 0, 512, 64, 0, 56, 8);
    check_ok(cfg("sink", tok(64), UNSET, tok(60), UNSET), 0, 512, 64, 0, 60, 4);
    check_ok(cfg("sink", tok(64), UNSET, tok(62), UNSET), 0, 512, 64, 0, 62, 2);
    check_ok(cfg("sink", UNSET, UNSET, tok(20), UNSET), 0, 512, 24, 0, 20, 4);
    check_ok(cfg("sink", UNSET, UNSET, tok(20), tok(2)), 0, 512, 22, 0, 20, 2);
    check_ok(cfg("sink", tok(16), UNSET, UNSET, tok(0)), 0, 512, 16, 0, 16, 0);   /* sink 0 = window */
    check_ok(cfg("sink", tok(4), UNSET, UNSET, UNSET), 0, 512, 4, 0, 1, 3);        /* default sinks shrink */
    check_ok(cfg("sink", tok(1), UNSET, UNSET, UNSET), 0, 512, 1, 0, 1, 0);
    check_bad(cfg("sink", tok(8), UNSET, UNSET, tok(8)), 0, 512, "recent window of at least 1");
    check_bad(cfg("sink", UNSET, UNSET, UNSET, tok(4)), 0, 512, "recent window of at least 1");
    check_bad(cfg("sink", tok(8), UNSET, UNSET, tok(10)), 0, 512, "(sink 10) does not fit a total of 8");
    check_bad(cfg("sink", tok(8), UNSET, tok(5), tok(4)), 0, 512, "does not fit");
    check_bad(cfg("sink", tok(8), tok(2), UNSET, UNSET), 0, 512, "no heavy part");
    /* h2o: recent = half (rounded down), heavy the rest */
    check_ok(cfg("h2o", tok(64), UNSET, UNSET, UNSET), 0, 512, 64, 32, 32, 0);
    check_ok(cfg("h2o", tok(65), UNSET, UNSET, UNSET), 0, 512, 65, 33, 32, 0);
    check_ok(cfg("h2o", tok(65), UNSET, UNSET, tok(4)), 0, 512, 65, 31, 30, 4);
    check_ok(cfg("h2o", tok(64), tok(10), UNSET, UNSET), 0, 512, 64, 10, 54, 0);
    check_ok(cfg("h2o", tok(64), UNSET, tok(10), UNSET), 0, 512, 64, 54, 10, 0);
    check_ok(cfg("h2o", tok(64), tok(30), tok(30), UNSET), 0, 512, 64, 30, 30, 4);  /* the missing sink */
    check_ok(cfg("h2o", tok(64), tok(30), tok(30), tok(4)), 0, 512, 64, 30, 30, 4);
    check_ok(cfg("h2o", UNSET, tok(10), tok(20), UNSET), 0, 512, 30, 10, 20, 0);
    check_ok(cfg("h2o", UNSET, tok(10), UNSET, UNSET), 0, 512, 10, 10, 0, 0);
    check_ok(cfg("h2o", tok(1), UNSET, UNSET, UNSET), 0, 512, 1, 1, 0, 0);
    check_bad(cfg("h2o", tok(64), tok(30), tok(30), tok(5)), 0, 512, "(heavy 30, recent 30, sink 5) does not fit a total of 64");
    check_bad(cfg("h2o", tok(8), tok(10), UNSET, UNSET), 0, 512, "(heavy 10) does not fit a total of 8");
    check_bad(cfg("h2o", tok(0), UNSET, UNSET, UNSET), 0, 512, "at least 1");
    check_bad(cfg("h2o", UNSET, tok(0), tok(0), UNSET), 0, 512, "at least 1");
    check_bad(cfg("h2o", tok(600), UNSET, UNSET, UNSET), 0, 512, "600 tokens exceeds the context length 512");
    check_bad(cfg("h2o", UNSET, UNSET, UNSET, UNSET), 0, 512, "the h2o policy needs a KV budget");
    /* tova */
    check_ok(cfg("tova", tok(64), UNSET, UNSET, UNSET), 0, 512, 64, 64, 0, 0);
    check_ok(cfg("tova", tok(64), UNSET, UNSET, tok(4)), 0, 512, 64, 60, 0, 4);
    check_ok(cfg("tova", tok(64), tok(60), UNSET, UNSET), 0, 512, 64, 60, 0, 4);
    check_ok(cfg("tova", UNSET, tok(60), UNSET, UNSET), 0, 512, 60, 60, 0, 0);
    check_bad(cfg("tova", tok(64), UNSET, tok(8), UNSET), 0, 512, "no recent part");
    check_bad(cfg("tova", tok(64), tok(70), UNSET, UNSET), 0, 512, "does not fit");
    /* unknown policy, bad n_ctx */
    check_bad(cfg("lru", tok(64), UNSET, UNSET, UNSET), 0, 512, "unknown KV policy 'lru' (choose full, window, sink, h2o, tova, snapkv");
    check_bad(cfg("H2O", tok(64), UNSET, UNSET, UNSET), 0, 512, "unknown KV policy");
    check_bad(cfg("h2o", tok(64), UNSET, UNSET, UNSET), 0, 0, "context length 0");
    hkv_budget b;
    CHECK(hkv_budget_resolve(NULL, 0, 512, &b, NULL, 0) == HKV_ERR_ARG);
}

static void test_ratios(void) {
    /* 20% of 100 = 20, split 10/10 */
    check_ok(cfg("h2o", ratio(0.2f), UNSET, UNSET, UNSET), 100, 2048, 20, 10, 10, 0);
    /* rounding to nearest: 0.25 * 10 = 2.5 -> 3 -> floored to 4; 0.3 * 50 = 15 */
    check_ok(cfg("h2o", ratio(0.25f), UNSET, UNSET, UNSET), 10, 2048, 4, 2, 2, 0);
    check_ok(cfg("window", ratio(0.3f), UNSET, UNSET, UNSET), 50, 2048, 15, 0, 15, 0);
    check_ok(cfg("window", ratio(0.5f), UNSET, UNSET, UNSET), 29, 2048, 15, 0, 15, 0);    /* 14.5 -> 15 */
    check_ok(cfg("window", ratio(0.25f), UNSET, UNSET, UNSET), 58, 2048, 15, 0, 15, 0);   /* 14.5 -> 15 */
    check_ok(cfg("window", ratio(0.25f), UNSET, UNSET, UNSET), 57, 2048, 14, 0, 14, 0);   /* 14.25 -> 14 */
    /* flooring: 1% of 30 tokens would be 0 */
    check_ok(cfg("tova", ratio(0.01f), UNSET, UNSET, UNSET), 30, 2048, 4, 4, 0, 0);
    check_ok(cfg("sink", ratio(0.01f), UNSET, UNSET, UNSET), 30, 2048, 4, 0, 1, 3);
    /* ref_len <= 0 means the context length */
    check_ok(cfg("h2o", ratio(0.5f), UNSET, UNSET, UNSET), 0, 1000, 500, 250, 250, 0);
    check_ok(cfg("h2o", ratio(1.0f), UNSET, UNSET, UNSET), -1, 1000, 1000, 500, 500, 0);
    /* ratio parts */
    check_ok(cfg("h2o", UNSET, ratio(0.1f), ratio(0.1f), UNSET), 200, 2048, 40, 20, 20, 0);
    check_ok(cfg("h2o", ratio(0.5f), ratio(0.1f), UNSET, tok(4)), 200, 2048, 100, 20, 76, 4);
    /* a ratio of a long reference can exceed the context */
    check_bad(cfg("h2o", ratio(0.5f), UNSET, UNSET, UNSET), 4000, 1024, "2000 tokens exceeds the context length 1024");
}

/* Per-policy options: "POLICY.NAME=VALUE" entries, checked against the policy's table entry. */
static void test_options(void) {
    char err[256];
    hkv_kv_config c = cfg("h2o", tok(8), UNSET, UNSET, tok(8));
    c.replace_order = 1;
    check_bad(c, 0, 512, "replace order needs a heavy or recent part");
    c.replace_order = 0;
    CHECK(hkv_kv_set_option(&c, "h2o", "score", "normalized", err, sizeof err) == HKV_OK);
    CHECK(hkv_kv_set_option(&c, "snapkv", "kernel", "5", err, sizeof err) == HKV_OK);
    CHECK(hkv_kv_set_option(&c, "h2o", "score", "sum", err, sizeof err) == HKV_OK);   /* replaces */
    CHECKF(!strcmp(c.options, "snapkv.kernel=5,h2o.score=sum"), "%s", c.options);
    check_ok(c, 0, 512, 8, 0, 0, 8);   /* an all-sink h2o budget is fine in append order */
    c.sink = tok(4);
    check_ok(c, 0, 512, 8, 2, 2, 4);
    /* options of another policy are carried but ignored */
    CHECK(hkv_kv_set_option(&c, "snapkv", "window", "3", err, sizeof err) == HKV_OK);
    check_ok(c, 0, 512, 8, 2, 2, 4);
    CHECK(hkv_kv_set_option(&c, "h2o", "bogus", "1", err, sizeof err) == HKV_ERR_ARG);
    CHECKF(strstr(err, "the h2o policy has no option 'bogus' (choose score)"), "%s", err);
    CHECK(hkv_kv_set_option(&c, "h2o", "score", "max", err, sizeof err) == HKV_ERR_ARG);
    CHECKF(strstr(err, "expects sum|normalized, got 'max'"), "%s", err);
    CHECK(hkv_kv_set_option(&c, "snapkv", "window", "0", err, sizeof err) == HKV_ERR_ARG);
    CHECKF(strstr(err, "integer in [1, 4096]"), "%s", err);
    CHECK(hkv_kv_set_option(&c, "lru", "x", "1", err, sizeof err) == HKV_ERR_ARG);
    CHECKF(strstr(err, "unknown KV policy 'lru'"), "%s", err);
    /* a malformed or unknown entry written by hand is an error when the config is resolved */
    snprintf(c.options, sizeof c.options, "h2o.nope=1");
    check_bad(c, 0, 512, "no option 'nope'");
    snprintf(c.options, sizeof c.options, "h2o-score=sum");
    check_bad(c, 0, 512, "malformed KV policy option");
    /* snapkv: the observation window is the recent part */
    check_ok(cfg("snapkv", tok(32), UNSET, UNSET, UNSET), 0, 512, 32, 24, 8, 0);
    check_ok(cfg("snapkv", tok(6), UNSET, UNSET, UNSET), 0, 512, 6, 0, 6, 0);
    check_ok(cfg("snapkv", tok(32), UNSET, tok(4), tok(2)), 0, 512, 32, 26, 4, 2);
    c = cfg("snapkv", tok(32), UNSET, UNSET, UNSET);
    CHECK(hkv_kv_set_option(&c, "snapkv", "window", "12", err, sizeof err) == HKV_OK);
    check_ok(c, 0, 512, 32, 20, 12, 0);
    CHECK(hkv_kv_set_option(&c, "snapkv", "kernel", "4", err, sizeof err) == HKV_OK);
    check_bad(c, 0, 512, "kernel must be odd");
    check_bad(cfg("snapkv", tok(8), UNSET, tok(0), UNSET), 0, 512, "observation window");
}

/* Per-layer schedules: uniform copies, pyramid falls linearly and keeps the uniform total, lists are explicit. */
static void test_layers(void) {
    hkv_budget lb[8];
    char err[256] = "";
    hkv_kv_config c = cfg("h2o", tok(40), UNSET, UNSET, UNSET);
    CHECK(hkv_layer_budgets(&c, 0, 512, 5, lb, err, sizeof err) == HKV_OK);
    for (int l = 0; l < 5; l++) CHECK(lb[l].total == 40 && lb[l].heavy == 20 && lb[l].recent == 20);
    snprintf(c.budget_layers, sizeof c.budget_layers, "pyramid");
    CHECKF(hkv_layer_budgets(&c, 0, 512, 5, lb, err, sizeof err) == HKV_OK, "%s", err);
    int sum = 0;
    for (int l = 0; l < 5; l++) {
        sum += lb[l].total;
        CHECK(lb[l].heavy + lb[l].recent + lb[l].sink == lb[l].total);
        if (l) CHECKF(lb[l].total < lb[l - 1].total, "layer %d: %d after %d", l, lb[l].total, lb[l - 1].total);
    }
    CHECKF(sum == 200, "pyramid total %d, want 200", sum);
    /* top = 40/20 = 2, bottom = 78, step 19: 78 59 40 21 2 */
    CHECKF(lb[0].total == 78 && lb[2].total == 40 && lb[4].total == 2, "%d %d %d", lb[0].total, lb[2].total, lb[4].total);
    /* user-given parts stay fixed per layer */
    c.recent = tok(2);
    CHECK(hkv_layer_budgets(&c, 0, 512, 5, lb, err, sizeof err) == HKV_OK);
    for (int l = 0; l < 5; l++) CHECK(lb[l].recent == 2 && lb[l].heavy == lb[l].total - 2);
    c.recent = tok(3);
    CHECK(hkv_layer_budgets(&c, 0, 512, 5, lb, err, sizeof err) == HKV_ERR_ARG);
    CHECKF(strstr(err, "layer 4 (budget 2)"), "%s", err);
    /* pyramidkv defaults to the pyramid, uniform overrides */
    c = cfg("pyramidkv", tok(33), UNSET, UNSET, UNSET);
    CHECK(hkv_layer_budgets(&c, 0, 512, 7, lb, err, sizeof err) == HKV_OK);
    sum = 0;
    for (int l = 0; l < 7; l++) sum += lb[l].total;
    CHECK(sum == 231 && lb[0].total > lb[6].total && lb[0].recent == 8);
    snprintf(c.budget_layers, sizeof c.budget_layers, "uniform");
    CHECK(hkv_layer_budgets(&c, 0, 512, 7, lb, err, sizeof err) == HKV_OK && lb[6].total == 33);
    /* explicit lists: amounts per layer, exactly one per layer */
    c = cfg("window", UNSET, UNSET, UNSET, UNSET);
    snprintf(c.budget_layers, sizeof c.budget_layers, "10,20%%,5");
    CHECKF(hkv_layer_budgets(&c, 100, 512, 3, lb, err, sizeof err) == HKV_OK, "%s", err);
    CHECK(lb[0].total == 10 && lb[1].total == 20 && lb[2].total == 5 && lb[2].recent == 5);
    CHECK(hkv_layer_budgets(&c, 100, 512, 4, lb, err, sizeof err) == HKV_ERR_ARG && strstr(err, "lists 3 budgets"));
    CHECK(hkv_layer_budgets(&c, 100, 512, 2, lb, err, sizeof err) == HKV_ERR_ARG && strstr(err, "more budgets"));
    snprintf(c.budget_layers, sizeof c.budget_layers, "10,x,5");
    CHECK(hkv_layer_budgets(&c, 100, 512, 3, lb, err, sizeof err) == HKV_ERR_ARG && strstr(err, "item 2"));
    snprintf(c.budget_layers, sizeof c.budget_layers, "triangle");
    CHECK(hkv_layer_budgets(&c, 100, 512, 3, lb, err, sizeof err) == HKV_ERR_ARG && strstr(err, "uniform, pyramid"));
    /* full ignores schedules */
    c = cfg("full", UNSET, UNSET, UNSET, UNSET);
    snprintf(c.budget_layers, sizeof c.budget_layers, "pyramid");
    CHECK(hkv_layer_budgets(&c, 0, 256, 3, lb, err, sizeof err) == HKV_OK && lb[2].total == 256);
}

int main(void) {
    test_options();
    test_layers();
    test_parse();
    test_defaults();
    test_resolve();
    test_ratios();
    return tu_done("budget");
}
