/* A policy from outside the library (hkv_kv_config.custom): examples/custom_policy.c is compiled into this test
 * with the project's warnings and run on the real model; and a second custom policy checks the contract the
 * public header promises — its name in errors, its options, its user pointer, NULL callbacks, its batch hook. */
#include <string.h>
#include "heavykv.h"
#include "testutil.h"

int example_main(int argc, char **argv);
#define main example_main
#include "../examples/custom_policy.c"
#undef main

/* "evens": keeps even positions first (evicts the oldest odd one, then the oldest even one). */
typedef struct ev_user { int selects, victims; } ev_user;

static int ev_victim(const hkv_policy_cfg *cfg, const hkv_head_view *h) {
    ((ev_user *)cfg->user)->victims++;
    for (int j = 0; j < h->n; j++) if (h->pos[h->slots[j]] % 2 && h->pos[h->slots[j]] != h->newest) return j;
    return h->n > 1 ? 0 : -1;
}

/* The batch hook gives the same survivors as the victim loop: the newest, then evens, then odds by recency. */
static int ev_select(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep) {
    ((ev_user *)cfg->user)->selects++;
    int drop = h->n - target;
    for (int j = 0; j < h->n; j++) keep[j] = 1;
    for (int j = 0; j < h->n && drop > 0; j++)
        if (h->pos[h->slots[j]] % 2 && j != h->n - 1) { keep[j] = 0; drop--; }
    for (int j = 0; j < h->n && drop > 0; j++)
        if (keep[j] && j != h->n - 1) { keep[j] = 0; drop--; }
    return target;
}

static const hkv_policy_option ev_opts[] = { { "mode", "a|b", 0, 0, 1, "unused" } };
static const hkv_policy_ops evens = {
    .name = "evens", .victim = ev_victim, .select = ev_select, .options = ev_opts, .n_options = 1,
};

static void test_contract(hkv_model *m) {
    char err[256];
    ev_user u = { 0, 0 };
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = 128;
    cp.ref_len = 0;
    cp.kv.custom = &evens;
    cp.kv.custom_user = &u;
    hkv_context *c = NULL;
    CHECK(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_ERR_ARG);
    CHECKF(strstr(err, "the evens policy needs a KV budget"), "%s", err);
    CHECK(hkv_kv_set_option(&cp.kv, "evens", "mode", "c", err, sizeof err) == HKV_ERR_ARG);
    CHECKF(strstr(err, "evens option 'mode' expects a|b"), "%s", err);
    CHECK(hkv_kv_set_option(&cp.kv, "evens", "mode", "b", err, sizeof err) == HKV_OK);
    hkv_amount_parse("10", &cp.kv.budget, err, sizeof err);
    CHECKF(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_OK, "%s", err);
    if (!c) return;
    hkv_budget b = hkv_context_budget(c);
    CHECK(b.total == 10 && b.heavy == 10 && b.recent == 0 && b.sink == 0);   /* NULL derive_budget */
    int32_t toks[40];
    for (int i = 0; i < 40; i++) toks[i] = 1 + (i * 13) % 400;
    CHECK(hkv_decode(c, 0, toks, 30) == HKV_OK);                              /* prompt: batch hook */
    CHECK(u.selects > 0);
    int32_t pos[64];
    int n = hkv_kv_positions(c, 0, 0, 0, pos, 64);
    int ok = n == 10 && pos[9] == 29;
    for (int j = 0; j < 9 && ok; j++) ok = pos[j] == 12 + 2 * j;            /* the newest nine evens */
    CHECKF(ok, "kept %d positions, first %d last %d", n, n ? pos[0] : -1, n ? pos[n - 1] : -1);
    for (int i = 30; i < 34; i++) CHECK(hkv_decode(c, 0, &toks[i], 1) == HKV_OK);  /* decode: victim */
    CHECK(u.victims > 0);
    float sc[64];
    CHECK(hkv_kv_scores(c, 0, 0, 0, sc, 64) == 10 && sc[0] == 0.0f);        /* NULL score callback */
    hkv_context_free(c);
    /* a custom policy must be able to evict */
    hkv_policy_ops broken = evens;
    broken.victim = NULL;
    cp.kv.custom = &broken;
    CHECK(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_ERR_ARG && strstr(err, "no victim callback"));
}

int main(void) {
    char *argv[] = { (char *)"custom_policy", (char *)tu_model(), NULL };
    CHECK(example_main(2, argv) == 0);
    hkv_model *m;
    char err[256];
    if (hkv_model_load(tu_model(), NULL, &m, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    test_contract(m);
    hkv_model_free(m);
    return tu_done("policy_custom");
}
