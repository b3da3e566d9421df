/* The bounded KV cache on the real model: large budgets equal `full` bit for bit, simulation (mask over a
 * full cache) equals real drop for every policy, memory is exactly capacity-sized and never grows, GQA keeps
 * one slot set per KV head, and window/sink keep exactly the positions they promise. */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "heavykv.h"
#include "testutil.h"

static hkv_model *M;
static hkv_model_info MI;

typedef struct run_cfg {
    const char *policy;
    const char *budget;     /* amount string, NULL = unset */
    const char *sink;
    int simulate, normalized, replace, gqa_mean, chunk, positions_cache;
    hkv_kv_type type;
    const char *layers;     /* --kv-budget-layers, NULL = the policy's default */
} run_cfg;

static const char *PROMPT = "Once upon a time, there was a little dog named Max. Max liked to run in the big green park with his friend";

static hkv_context *make_ctx(const run_cfg *r, int n_ctx, int ref_len) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_threads = 2;
    cp.n_ctx = n_ctx;
    cp.ref_len = ref_len;
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "%s", r->policy);
    char err[256];
    if (r->budget) CHECK(hkv_amount_parse(r->budget, &cp.kv.budget, err, sizeof err) == HKV_OK);
    if (r->sink) CHECK(hkv_amount_parse(r->sink, &cp.kv.sink, err, sizeof err) == HKV_OK);
    cp.kv.simulate = r->simulate;
    if (r->normalized) CHECK(hkv_kv_set_option(&cp.kv, "h2o", "score", "normalized", err, sizeof err) == HKV_OK);
    cp.kv.replace_order = r->replace;
    cp.kv.gqa_mean = r->gqa_mean;
    cp.kv.prefill_chunk = r->chunk;
    if (r->layers) snprintf(cp.kv.budget_layers, sizeof cp.kv.budget_layers, "%s", r->layers);
    cp.kv.type = r->type;
    cp.kv.positions_cache = r->positions_cache;
    hkv_context *c = NULL;
    hkv_status st = hkv_context_new(M, &cp, &c, err, sizeof err);
    CHECKF(st == HKV_OK, "%s/%s: %s", r->policy, r->budget ? r->budget : "-", err);
    return c;
}

/* Prompt then n greedy steps; logits of every step copied to out[n+1][n_vocab], tokens to toks. */
static int greedy(const run_cfg *r, int n, float *out, int32_t *toks) {
    int32_t p[256];
    int np = hkv_tokenize(M, PROMPT, 1, 0, p, 256);
    hkv_context *c = make_ctx(r, 512, np);
    if (!c) return 0;
    int ok = hkv_decode(c, 0, p, np) == HKV_OK;
    for (int i = 0; ok && i <= n; i++) {
        const float *lg = hkv_get_logits(c, 0, -1);
        memcpy(out + (size_t)i * MI.n_vocab, lg, sizeof(float) * MI.n_vocab);
        int32_t best = 0;
        for (int v = 1; v < MI.n_vocab; v++) if (lg[v] > lg[best]) best = v;
        toks[i] = best;
        if (i < n) ok = hkv_decode(c, 0, &best, 1) == HKV_OK;
    }
    CHECKF(ok, "%s: %s", r->policy, hkv_last_error(c));
    hkv_context_free(c);
    return ok;
}

static void test_large_budget_equals_full(void) {
    int n = 40;
    float *ref = malloc(sizeof(float) * (n + 1) * MI.n_vocab), *got = malloc(sizeof(float) * (n + 1) * MI.n_vocab);
    int32_t rt[64], gt[64];
    run_cfg full = {.policy = "full"};
    greedy(&full, n, ref, rt);
    /* every evicting policy in the table (a new one is covered without editing this test) */
    const char *pols[32];
    int np = 0;
    for (int k = 0; hkv_policy_at(k) && np < 32; k++)
        if (!hkv_policy_at(k)->never_evicts) pols[np++] = hkv_policy_at(k)->name;
    CHECK(np >= 6);
    for (int i = 0; i < np; i++) {
        run_cfg r = {.policy = pols[i], .budget = "200", .layers = "uniform"}; /* a pyramid's top layer is small */
        greedy(&r, n, got, gt);
        CHECKF(memcmp(ref, got, sizeof(float) * (n + 1) * MI.n_vocab) == 0, "%s differs from full", pols[i]);
        r.chunk = 7; /* chunked prefill without eviction is also identical */
        greedy(&r, n, got, gt);
        CHECKF(memcmp(ref, got, sizeof(float) * (n + 1) * MI.n_vocab) == 0, "%s chunked differs from full", pols[i]);
    }
    free(ref);
    free(got);
}

static void sim_vs_real(run_cfg r, int n) {
    float *a = malloc(sizeof(float) * (n + 1) * MI.n_vocab), *b = malloc(sizeof(float) * (n + 1) * MI.n_vocab);
    int32_t ta[256], tb[256];
    r.simulate = 0;
    greedy(&r, n, a, ta);
    r.simulate = 1;
    greedy(&r, n, b, tb);
    double maxd = 0;
    for (size_t i = 0; i < (size_t)(n + 1) * MI.n_vocab; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > maxd) maxd = d;
    }
    CHECKF(maxd <= 1e-4, "%s budget %s sink %s norm %d repl %d chunk %d: max |dlogit| %g", r.policy, r.budget,
           r.sink ? r.sink : "-", r.normalized, r.replace, r.chunk, maxd);
    CHECKF(memcmp(ta, tb, sizeof(int32_t) * (n + 1)) == 0, "%s budget %s: greedy tokens differ", r.policy, r.budget);
    free(a);
    free(b);
}

static void test_simulation_equals_real(void) {
    const char *budgets[] = {"8", "16", "20%", "50%"};
    for (int bi = 0; bi < 4; bi++) {
        const char *bud = budgets[bi];
        sim_vs_real((run_cfg){.policy = "window", .budget = bud}, 110);
        sim_vs_real((run_cfg){.policy = "sink", .budget = bud, .sink = "2"}, 110);
        sim_vs_real((run_cfg){.policy = "h2o", .budget = bud}, 110);
        sim_vs_real((run_cfg){.policy = "tova", .budget = bud}, 110);
        sim_vs_real((run_cfg){.policy = "snapkv", .budget = bud}, 110);
        sim_vs_real((run_cfg){.policy = "pyramidkv", .budget = bud}, 110);
        sim_vs_real((run_cfg){.policy = "scissorhands", .budget = bud}, 110);
        sim_vs_real((run_cfg){.policy = "keyformer", .budget = bud}, 110);
    }
    sim_vs_real((run_cfg){.policy = "snapkv", .budget = "16", .chunk = 9}, 110);
    sim_vs_real((run_cfg){.policy = "h2o", .budget = "12", .normalized = 1}, 110);
    sim_vs_real((run_cfg){.policy = "h2o", .budget = "12", .replace = 1}, 110);
    sim_vs_real((run_cfg){.policy = "h2o", .budget = "12", .gqa_mean = 1, .sink = "1"}, 110);
    sim_vs_real((run_cfg){.policy = "h2o", .budget = "12", .chunk = 5}, 110);
    sim_vs_real((run_cfg){.policy = "h2o", .budget = "12", .type = HKV_KV_F32}, 110);
    /* every policy x every K/V type (quantized rows are written once, so both layouts hold the same bytes) */
    const char *pols[] = {"window", "sink", "h2o", "tova"};
    for (int ty = HKV_KV_F32; ty < HKV_KV_TYPE_COUNT; ty++)
        for (int i = 0; i < 4; i++)
            sim_vs_real((run_cfg){.policy = pols[i], .budget = "10", .sink = i == 1 ? "2" : NULL, .type = (hkv_kv_type)ty}, 40);
}

/* Bytes of one K or V row of head_dim elements (the README formula). */
static uint64_t row_bytes(hkv_kv_type t, int hd) {
    int b = hd % 32 == 0 ? 32 : hd % 16 == 0 ? 16 : 8;
    switch (t) {
    case HKV_KV_F32: return 4u * hd;
    case HKV_KV_Q8_0: return (uint64_t)(hd / b) * (2 + b);
    case HKV_KV_Q4_0: return (uint64_t)(hd / b) * (2 + b / 2);
    default: return 2u * hd;
    }
}

/* K/V bytes are exactly capacity-sized and constant over a 1,000-token generation; GQA: n_head_kv sets. */
static void test_memory(void) {
    const char *pols[] = {"full", "window", "sink", "h2o", "tova"};
    int32_t p[256];
    int np = hkv_tokenize(M, PROMPT, 1, 0, p, 256);
    for (int i = 0; i < 5; i++) {
        for (int ty = 0; ty < HKV_KV_TYPE_COUNT; ty++) {
            run_cfg r = {.policy = pols[i], .budget = "32", .type = (hkv_kv_type)ty};
            hkv_context *c = make_ctx(&r, 1100, np);
            if (!c) continue;
            CHECK(hkv_decode(c, 0, p, np) == HKV_OK);
            hkv_kv_stats s0;
            hkv_get_kv_stats(c, &s0);
            CHECK(s0.n_head_kv == MI.n_head_kv && MI.n_head_kv < MI.n_head);
            CHECKF(s0.kv_bytes == (uint64_t)s0.capacity * MI.n_layer * MI.n_head_kv * 2 * row_bytes(r.type, MI.head_dim),
                   "%s: %llu bytes for capacity %d", pols[i], (unsigned long long)s0.kv_bytes, s0.capacity);
            if (i > 0) CHECKF(s0.capacity == 33, "%s capacity %d, want budget+1", pols[i], s0.capacity);
            int grew = 0, over = 0;
            int32_t tok = p[np - 1];
            for (int step = 0; step < 1000 - np; step++) {
                tok = (tok * 7 + 3) % MI.n_vocab; /* any token stream will do */
                if (hkv_decode(c, 0, &tok, 1) != HKV_OK) { CHECK(0); break; }
                hkv_kv_stats s;
                hkv_get_kv_stats(c, &s);
                grew |= s.kv_bytes != s0.kv_bytes || s.meta_bytes != s0.meta_bytes;
                over |= i > 0 && s.occupancy_max > 32;
            }
            CHECKF(!grew, "%s: KV memory changed during generation", pols[i]);
            CHECKF(!over, "%s: a head held more than its budget", pols[i]);
            hkv_context_free(c);
        }
    }
}

/* Window keeps the last B positions; sink keeps the first S plus the last B-S, in every layer and head. */
static void test_kept_positions(void) {
    int32_t p[256], kept[64];
    int np = hkv_tokenize(M, PROMPT, 1, 0, p, 256);
    run_cfg rw = {.policy = "window", .budget = "10"}, rs = {.policy = "sink", .budget = "10", .sink = "3"};
    hkv_context *cw = make_ctx(&rw, 512, np), *cs = make_ctx(&rs, 512, np);
    CHECK(hkv_decode(cw, 0, p, np) == HKV_OK && hkv_decode(cs, 0, p, np) == HKV_OK);
    for (int step = 0; step < 20; step++) {
        int32_t t = 13 + step;
        CHECK(hkv_decode(cw, 0, &t, 1) == HKV_OK && hkv_decode(cs, 0, &t, 1) == HKV_OK);
        int last = hkv_n_past(cw, 0) - 1;
        for (int l = 0; l < MI.n_layer; l++)
            for (int h = 0; h < MI.n_head_kv; h++) {
                int n = hkv_kv_positions(cw, 0, l, h, kept, 64);
                int ok = n == 10;
                for (int j = 0; ok && j < n; j++) ok = kept[j] == last - 9 + j;
                CHECKF(ok, "window layer %d head %d step %d", l, h, step);
                n = hkv_kv_positions(cs, 0, l, h, kept, 64);
                ok = n == 10 && kept[0] == 0 && kept[1] == 1 && kept[2] == 2;
                for (int j = 3; ok && j < n; j++) ok = kept[j] == last - 9 + j;
                CHECKF(ok, "sink layer %d head %d step %d", l, h, step);
            }
    }
    hkv_context_free(cw);
    hkv_context_free(cs);
}

static void test_bad_budgets(void) {
    const char *bad[][2] = {{"h2o", "0"}, {"h2o", "600"}, {"window", NULL}, {"sink", "2"}};
    for (int i = 0; i < 4; i++) {
        hkv_context_params cp = hkv_context_default_params();
        cp.n_ctx = 512;
        snprintf(cp.kv.policy, sizeof cp.kv.policy, "%s", bad[i][0]);
        char err[256] = "";
        if (bad[i][1]) hkv_amount_parse(bad[i][1], &cp.kv.budget, err, sizeof err);
        if (i == 3) hkv_amount_parse("4", &cp.kv.sink, err, sizeof err);
        hkv_context *c = NULL;
        err[0] = 0;
        CHECKF(hkv_context_new(M, &cp, &c, err, sizeof err) != HKV_OK && err[0], "case %d accepted", i);
        hkv_context_free(c);
    }
    hkv_context_params cp = hkv_context_default_params();
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "lru");
    hkv_context *c = NULL;
    char err[256];
    CHECK(hkv_context_new(M, &cp, &c, err, sizeof err) == HKV_ERR_ARG);
}

/* --kv-trace writes one JSON line per step whose kept positions match hkv_kv_positions; the CLI's
 * simulation and real drop print the same text; --kv-stats reports the budget. */
static void test_trace_and_cli(void) {
    char args[2048], out[16384], out2[16384];
    const char *trace = tu_tmp("trace.jsonl");
    snprintf(args, sizeof args, "run -m '%s' -p 'Once upon a time' -n 30 --temp 0 --kv-policy h2o --kv-budget 12 "
             "--kv-trace '%s' --kv-stats", tu_model(), trace);
    CHECK(tu_cli(args, out, sizeof out) == 0);
    CHECKF(strstr(out, "budget 12 per head (heavy 6, recent 6, sink 0)") != NULL, "%s", out);
    size_t len;
    char *t = tu_read_file(trace, &len);
    CHECK(t != NULL);
    int lines = 0, ok = 1;
    for (char *line = t, *nl; t && line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *j = cJSON_Parse(line);
        cJSON *layers = cJSON_GetObjectItem(j, "layers");
        ok &= j && cJSON_GetArraySize(layers) == MI.n_layer &&
              cJSON_GetArraySize(cJSON_GetArrayItem(layers, 0)) == MI.n_head_kv &&
              cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetArrayItem(layers, 0), 0)) <= 12;
        cJSON_Delete(j);
        lines++;
    }
    CHECKF(ok && lines == 30, "trace: %d lines, ok %d", lines, ok); /* prompt + 29 decode steps */
    free(t);
    remove(trace);
    const char *pols[] = {"h2o", "tova", "sink", "window"};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "run -m '%s' -p 'Once upon a time' -n 80 --temp 0 --kv-policy %s --kv-budget 10",
                 tu_model(), pols[i]);
        CHECK(tu_cli(args, out, sizeof out) == 0);
        strcat(args, " --kv-simulate");
        CHECK(tu_cli(args, out2, sizeof out2) == 0);
        char *e1 = strstr(out, "prompt:"), *e2 = strstr(out2, "prompt:"); /* timings differ */
        if (e1) *e1 = 0;
        if (e2) *e2 = 0;
        CHECKF(!strcmp(out, out2), "%s: simulate differs:\n%s\n---\n%s", pols[i], out, out2);
    }
}

/* --kv-positions cache: nothing evicted -> the same logits as original positions up to float rounding (the
 * rotation happens after the K/V rounding instead of before); with eviction, real drop == simulation still;
 * a bounded cache streams past the context length, which original positions refuse. */
static void test_cache_positions(void) {
    int n = 40;
    float *a = malloc(sizeof(float) * (n + 1) * MI.n_vocab), *b = malloc(sizeof(float) * (n + 1) * MI.n_vocab);
    int32_t ta[64], tb[64];
    for (int ty = 0; ty < 2; ty++) {
        run_cfg r = {.policy = "h2o", .budget = "200", .type = ty ? HKV_KV_F32 : HKV_KV_F16};
        greedy(&r, n, a, ta);
        r.positions_cache = 1;
        greedy(&r, n, b, tb);
        double maxd = 0;
        for (size_t i = 0; i < (size_t)(n + 1) * MI.n_vocab; i++) maxd = fmax(maxd, fabs((double)a[i] - b[i]));
        CHECKF(maxd < (ty ? 1e-4 : 5e-2), "%s: cache positions differ from original by %g", ty ? "f32" : "f16", maxd);
        if (ty) CHECK(memcmp(ta, tb, sizeof(int32_t) * (n + 1)) == 0);
    }
    free(a);
    free(b);
    sim_vs_real((run_cfg){.policy = "h2o", .budget = "12", .positions_cache = 1}, 80);
    sim_vs_real((run_cfg){.policy = "sink", .budget = "10", .sink = "2", .positions_cache = 1, .type = HKV_KV_Q8_0}, 80);
    for (int mode = 0; mode < 2; mode++) {
        run_cfg r = {.policy = "sink", .budget = "16", .sink = "4", .positions_cache = mode};
        hkv_context *c = make_ctx(&r, 64, 0);
        if (!c) continue;
        int32_t tok = 1;
        int steps = 0;
        hkv_status st = HKV_OK;
        for (; steps < 300 && !(st = hkv_decode(c, 0, &tok, 1)); steps++) tok = hkv_argmax(hkv_get_logits(c, 0, -1), MI.n_vocab);
        if (mode) CHECKF(steps == 300, "cache positions stopped at %d: %s", steps, hkv_last_error(c));
        else CHECKF(steps == 64 && st == HKV_ERR_CONTEXT, "original positions: %d steps", steps);
        hkv_context_free(c);
    }
}

/* Per-layer budgets: pyramidkv's schedule is honored layer by layer (kept positions, --kv-stats), the layers
 * sum to the uniform total, and --kv-trace-scores carries one score per kept position. */
static void test_layer_budgets(void) {
    run_cfg r = {.policy = "pyramidkv", .budget = "12"};
    int32_t p[256], pos[512];
    int np = hkv_tokenize(M, PROMPT, 1, 0, p, 256);
    hkv_context *c = make_ctx(&r, 512, np);
    if (!c) return;
    CHECK(hkv_decode(c, 0, p, np) == HKV_OK);
    int sum = 0, differ = 0;
    for (int l = 0; l < MI.n_layer; l++) {
        hkv_budget b = hkv_context_layer_budget(c, l);
        sum += b.total;
        differ |= l && b.total != hkv_context_layer_budget(c, l - 1).total;
        for (int h = 0; h < MI.n_head_kv; h++) {
            int n = hkv_kv_positions(c, 0, l, h, pos, 512);
            CHECKF(n == b.total, "layer %d head %d keeps %d, budget %d", l, h, n, b.total);
        }
    }
    CHECKF(sum == 12 * MI.n_layer && differ, "pyramid total %d over %d layers", sum, MI.n_layer);
    hkv_context_free(c);

    char args[2048], out[16384];
    const char *trace = tu_tmp("trace_scores.jsonl");
    snprintf(args, sizeof args, "run -m '%s' -p '%s' -n 10 --temp 0 --kv-policy pyramidkv --kv-budget 12 "
             "--kv-stats --kv-trace '%s' --kv-trace-scores", tu_model(), PROMPT, trace);
    CHECK(tu_cli(args, out, sizeof out) == 0);
    int layers = 0, total = 0;
    for (const char *q = out; (q = strstr(q, "kv: layer ")); q++) {
        int l, b;
        float occ;
        if (sscanf(q, "kv: layer %d budget %d occupancy %f", &l, &b, &occ) != 3) continue;
        CHECKF(occ == (float)b, "--kv-stats layer %d: occupancy %g, budget %d", l, (double)occ, b);
        total += b;
        layers++;
    }
    CHECKF(layers == MI.n_layer && total == 12 * MI.n_layer, "--kv-stats: %d layers, total %d", layers, total);
    size_t len;
    char *t = tu_read_file(trace, &len);
    char *nl = t ? strchr(t, '\n') : NULL;
    if (nl) *nl = 0;
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    cJSON *L = cJSON_GetObjectItem(j, "layers"), *S = cJSON_GetObjectItem(j, "scores");
    int ok = j && cJSON_GetArraySize(L) == MI.n_layer && cJSON_GetArraySize(S) == MI.n_layer;
    for (int l = 0; ok && l < MI.n_layer; l++)
        for (int h = 0; h < MI.n_head_kv; h++)
            ok &= cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetArrayItem(L, l), h)) ==
                  cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetArrayItem(S, l), h));
    CHECKF(ok, "trace with scores: %.200s", t ? t : "(none)");
    cJSON_Delete(j);
    free(t);
    remove(trace);
}

int main(void) {
    char err[256];
    if (hkv_model_load(tu_model(), NULL, &M, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    hkv_model_get_info(M, &MI);
    test_large_budget_equals_full();
    test_simulation_equals_real();
    test_memory();
    test_kept_positions();
    test_bad_budgets();
    test_trace_and_cli();
    test_cache_positions();
    test_layer_budgets();
    hkv_model_free(M);
    return tu_done("test_kvcache");
}
