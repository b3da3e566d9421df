/* Allocation-failure injection (src/alloc.h): for N = 1, 2, ... the N-th library allocation fails during model
 * load, context creation and decoding, until a run completes without reaching N. Every failure must return an
 * error (never crash), leave the object usable or freed, and leak nothing (LeakSanitizer in the ASan build).
 * A failed decode must leave the sequence exactly as it was: same n_past, and the rest of the run gives the
 * same logits bit for bit as a run that never failed. */
#include <stdlib.h>
#include <string.h>
#include "alloc.h"
#include "heavykv.h"
#include "testutil.h"

#define MAX_SWEEP 20000   /* far above the allocations of any phase; a bound so a bug cannot loop forever */

/* Model load: every N up to the number of allocations it makes. */
static void sweep_model_load(void) {
    long n;
    int failures = 0;
    for (n = 1; n < MAX_SWEEP; n++) {
        char err[256] = "";
        hkv_model *m = NULL;
        hkv_alloc_fail_at(n);
        hkv_status st = hkv_model_load(tu_model(), NULL, &m, err, sizeof err);
        int fired = hkv_alloc_fired();
        hkv_alloc_fail_at(0);
        if (!fired) { CHECK(st == HKV_OK); hkv_model_free(m); break; }
        if (st == HKV_OK) { hkv_model_free(m); continue; } /* an optional allocation (e.g. a cache) may fail */
        failures++;
        CHECKF(m == NULL && err[0], "N=%ld: status %d but model %p, message '%s'", n, (int)st, (void *)m, err);
    }
    printf("model load: %ld allocations swept, %d failed cleanly\n", n - 1, failures);
    CHECK(n > 10 && failures > 0);
}

static hkv_context_params params(const char *policy) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_threads = 2;
    cp.n_ctx = 64;
    cp.n_seq = 2;
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "%s", policy);
    cp.kv.budget = (hkv_amount){12, 0, 1};
    cp.kv.prefill_chunk = 4;   /* several chunks with eviction between them, and cache resizes */
    return cp;
}

static void sweep_context_new(hkv_model *m) {
    long n;
    int failures = 0;
    hkv_context_params cp = params("h2o");
    for (n = 1; n < MAX_SWEEP; n++) {
        char err[256] = "";
        hkv_context *c = NULL;
        hkv_alloc_fail_at(n);
        hkv_status st = hkv_context_new(m, &cp, &c, err, sizeof err);
        int fired = hkv_alloc_fired();
        hkv_alloc_fail_at(0);
        if (!fired) { CHECK(st == HKV_OK); hkv_context_free(c); break; }
        if (st == HKV_OK) { hkv_context_free(c); continue; }
        failures++;
        CHECKF(c == NULL && err[0], "N=%ld: status %d, context %p, message '%s'", n, (int)st, (void *)c, err);
    }
    printf("context creation: %ld allocations swept, %d failed cleanly\n", n - 1, failures);
    CHECK(failures > 0);
}

/* The script every decode sweep runs: a 10-token prompt (3 chunks), then 6 single steps of seq 0, then a
 * two-sequence batch step. Returns the logits of seq 0 after each call in out[n_calls][n_vocab]. */
enum { N_CALLS = 8 };
typedef struct script { int32_t prompt[10]; int32_t steps[7]; } script;

static hkv_status run_call(hkv_context *c, const script *s, int call) {
    if (call == 0) return hkv_decode(c, 0, s->prompt, 10);
    if (call < 7) return hkv_decode(c, 0, &s->steps[call - 1], 1);
    int seqs[2] = {0, 1};
    int32_t toks[2] = {s->steps[6], s->steps[0]};
    return hkv_decode_batch(c, seqs, toks, 2);
}

static void sweep_decode(hkv_model *m, const char *policy) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    script s;
    for (int i = 0; i < 10; i++) s.prompt[i] = (int32_t)((i * 37 + 5) % mi.n_vocab);
    for (int i = 0; i < 7; i++) s.steps[i] = (int32_t)((i * 53 + 11) % mi.n_vocab);
    hkv_context_params cp = params(policy);
    cp.logits_all = !strcmp(policy, "full"); /* its rows are allocated per call */
    char err[256];
    /* the reference run, and seq 1's prompt so the batch step has two live sequences */
    float *ref = malloc(sizeof(float) * N_CALLS * (size_t)mi.n_vocab);
    hkv_context *c;
    CHECK(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_OK);
    CHECK(hkv_decode(c, 1, s.prompt, 3) == HKV_OK);
    for (int k = 0; k < N_CALLS; k++) {
        CHECK(run_call(c, &s, k) == HKV_OK);
        memcpy(ref + (size_t)k * mi.n_vocab, hkv_get_logits(c, 0, -1), sizeof(float) * mi.n_vocab);
    }
    hkv_context_free(c);
    long n;
    int failures = 0, mismatches = 0;
    for (n = 1; n < MAX_SWEEP; n++) {
        CHECK(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_OK);
        CHECK(hkv_decode(c, 1, s.prompt, 3) == HKV_OK);
        hkv_alloc_fail_at(n);
        int fired_any = 0, degraded = 0;
        for (int k = 0; k < N_CALLS; k++) {
            int before = hkv_n_past(c, 0), fired0 = hkv_alloc_fired();
            hkv_status st = run_call(c, &s, k);
            int fired_here = hkv_alloc_fired() && !fired0;
            fired_any |= fired_here;
            if (st != HKV_OK) {
                failures++;
                CHECKF(fired_here, "N=%ld call %d failed without an injected failure: %s", n, k, hkv_last_error(c));
                CHECKF(hkv_last_error(c)[0], "N=%ld: no message", n);
                /* the failed call changed nothing: run it again (the injection has fired and is spent) */
                CHECKF(hkv_n_past(c, 0) == before, "N=%ld call %d: n_past %d -> %d", n, k, before, hkv_n_past(c, 0));
                st = run_call(c, &s, k);
                CHECKF(st == HKV_OK, "N=%ld call %d retry: %s", n, k, hkv_last_error(c));
                if (st) break;
            } else if (fired_here) {
                degraded = 1; /* an optional allocation failed (matmul falls back to its float path) */
            }
            const float *lg = hkv_get_logits(c, 0, -1);
            if (!degraded && lg && memcmp(lg, ref + (size_t)k * mi.n_vocab, sizeof(float) * mi.n_vocab)) mismatches++;
        }
        hkv_alloc_fail_at(0);
        hkv_context_free(c);
        if (!fired_any) break;
    }
    printf("decode (%s): %ld allocations swept, %d calls failed cleanly, %d logit mismatches after a failure\n",
           policy, n - 1, failures, mismatches);
    if (!strcmp(policy, "h2o")) CHECK(failures > 0); /* resizes between prefill chunks and decode steps */
    CHECKF(mismatches == 0, "%d calls gave different logits after an injected failure", mismatches);
    free(ref);
}

int main(void) {
    sweep_model_load();
    hkv_model *m;
    char err[256];
    hkv_status st = hkv_model_load(tu_model(), NULL, &m, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return tu_done("test_alloc");
    sweep_context_new(m);
    sweep_decode(m, "h2o");
    sweep_decode(m, "full");
    hkv_model_free(m);
    return tu_done("test_alloc");
}
