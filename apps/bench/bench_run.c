/* heavykv bench: prompt processing (pp) and generation (tg) speed, per-step latency, KV memory (allocated
 * and in use), peak RSS and the decode roofline, for each (policy, budget, batch, depth).
 *
 * One context per configuration is reused across repetitions (sequences reset in between), so after the
 * untimed warm-up no page of the cache is touched for the first time inside a timed region. Token streams
 * are synthetic (no tokenizer needed) and decoding is greedy, so runs are repeatable. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"
#include "cli.h"

static void bench_help(void) {
    printf("usage: heavykv bench [-m MODEL.gguf] [options]\n\n"
           "Measures prompt processing (pp) and generation (tg) speed, per-step latency and KV-cache memory.\n\n"
           "  -m, --model PATH        GGUF model (default as for run)\n"
           "  -p, --n-prompt N        prompt tokens per sequence (default 128)\n"
           "  -n, --n-gen N           generated tokens per sequence (default 64)\n"
           "  -d, --depth LIST        context tokens before the prompt, e.g. 0,4096 (default 0): pp and tg are\n"
           "                          measured after DEPTH tokens (untimed), like llama-bench -d\n"
           "  -b, --batch LIST        sequences decoding together, e.g. 1,4,8 (default 1)\n"
           "      --kv-memory SIZE    instead of -b: per policy the largest batch whose caches (at their peak,\n"
           "                          budget + prefill chunk for bounded policies) fit in SIZE (e.g. 1GiB);\n"
           "                          bounded policies prefill in chunks of 512 unless --prefill-chunk is given\n"
           "      --shared-prompt     sequence 0 decodes the depth and prompt, the others copy it (hkv_seq_cp), like\n"
           "                          llama-batched-bench -pps: decode steps are unchanged, prefill is paid once\n"
           "  -r, --reps N            timed repetitions, reported as mean +- sd and best (default 3)\n"
           "      --no-warmup         skip the untimed warm-up repetition\n"
           "  -t, --threads N         worker threads (default: all cores)\n"
           "  -c, --ctx-size N        context length (default: depth + n-prompt + n-gen)\n"
           "  -o, --output FMT        table (default), json, csv or md\n"
           "      --json FILE         also write the records to FILE as JSON\n"
           "      --no-roofline       do not measure the memory read bandwidth and the int8 compute peak\n"
           "      --bw-mib N          buffer for the bandwidth measurement (default 512)\n"
           "      --kv-policy LIST    e.g. full,h2o,window (default full)\n"
           "      --kv-budget LIST    e.g. 20%%,64 (default 20%%; ignored by full)\n"
           "  other KV flags as for run (--kv-sink, --h2o-score, --prefill-chunk, --kv-type, ...)\n\n"
           "tg tok/s and pp tok/s are summed over the batch. lat p50/p99: one decode step (one token for every\n"
           "sequence). KV used / alloc: bytes of the K/V rows held / allocated after generation. roofline: bytes\n"
           "read per second while decoding (weights + kept K/V) over the measured read bandwidth. JSON/CSV also\n"
           "give pp_ops_per_s (2 x weights x prompt tok/s) and int8_peak (the machine's measured int8 ops/s).\n");
}

/* A comma list flag: non-empty items only, each valid as the single-value flag (checked here, before any
 * measurement runs). Returns 1 ok, 0 error printed. */
static int list_ok(const char *flag, const char *v, char *dst, size_t dstlen) {
    if (strlen(v) >= dstlen) return cli_error("%s: list '%s' is too long", flag, v), 0;
    snprintf(dst, dstlen, "%s", v);
    for (const char *s = v;;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        char item[64];
        if (len == 0 || len >= sizeof item) return cli_error("%s: bad list '%s'", flag, v), 0;
        memcpy(item, s, len);
        item[len] = 0;
        int num;
        if (!strcmp(flag, "--batch")) { if (!cli_int(flag, item, 1, 4096, &num)) return 0; }
        else if (!strcmp(flag, "--depth")) { if (!cli_int(flag, item, 0, 1 << 24, &num)) return 0; }
        else {
            char *fake[2] = {(char *)flag, item};
            int j = 0;
            hkv_kv_config tmp = hkv_kv_default_config();
            if (cli_kv_flag(2, fake, &j, &tmp) < 0) return 0;
        }
        if (!e) return 1;
        s = e + 1;
    }
}

static int parse_bench(int argc, char **argv, bench_opts *o, int *bw_mib) {
    memset(o, 0, sizeof *o);
    o->model = cli_default_model();
    o->n_prompt = 128; o->n_gen = 64; o->reps = 3; o->warmup = 1; o->roofline = 1;
    *bw_mib = 512;
    snprintf(o->policies, sizeof o->policies, "full");
    snprintf(o->budgets, sizeof o->budgets, "20%%");
    snprintf(o->batches, sizeof o->batches, "1");
    snprintf(o->depths, sizeof o->depths, "0");
    o->kv = hkv_kv_default_config();
    int batch_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { bench_help(); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) { VAL(); if (!cli_int(a, v, 1, 1 << 24, &o->n_prompt)) return 1; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) { VAL(); if (!cli_int(a, v, 0, 1 << 20, &o->n_gen)) return 1; }
        else if (!strcmp(a, "-r") || !strcmp(a, "--reps")) { VAL(); if (!cli_int(a, v, 1, 1000, &o->reps)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &o->n_threads)) return 1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VAL(); if (!cli_int(a, v, 0, 1 << 24, &o->n_ctx)) return 1; }
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) { VAL(); batch_given = 1; if (!list_ok("--batch", v, o->batches, sizeof o->batches)) return 1; }
        else if (!strcmp(a, "-d") || !strcmp(a, "--depth")) { VAL(); if (!list_ok("--depth", v, o->depths, sizeof o->depths)) return 1; }
        else if (!strcmp(a, "--kv-policy")) { VAL(); if (!list_ok(a, v, o->policies, sizeof o->policies)) return 1; }
        else if (!strcmp(a, "--kv-budget")) { VAL(); if (!list_ok(a, v, o->budgets, sizeof o->budgets)) return 1; }
        else if (!strcmp(a, "--kv-memory")) {
            VAL();
            if (!bench_parse_size(v, &o->kv_memory))
                return cli_error("--kv-memory: '%s' is not a size (e.g. 512MiB, 2GiB, 1.5G)", v);
        }
        else if (!strcmp(a, "--no-warmup")) o->warmup = 0;
        else if (!strcmp(a, "--shared-prompt")) o->shared_prompt = 1;
        else if (!strcmp(a, "--json")) { VAL(); o->json_path = v; }
        else if (!strcmp(a, "--no-roofline")) o->roofline = 0;
        else if (!strcmp(a, "--bw-mib")) { VAL(); if (!cli_int(a, v, 1, 1 << 20, bw_mib)) return 1; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            VAL();
            if (!strcmp(v, "table")) o->format = BENCH_TABLE;
            else if (!strcmp(v, "json")) o->format = BENCH_JSON;
            else if (!strcmp(v, "csv")) o->format = BENCH_CSV;
            else if (!strcmp(v, "md")) o->format = BENCH_MD;
            else return cli_error("--output: '%s' is not one of table, json, csv, md", v);
        }
        else {
            int r = cli_kv_flag(argc, argv, &i, &o->kv);
            if (r < 0) return 1;
            if (r == 0) return cli_error("unknown option '%s' for 'bench' (see heavykv bench --help)", a);
        }
#undef VAL
    }
    if (o->kv_memory && batch_given) return cli_error("--kv-memory chooses the batch itself: drop -b/--batch");
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[n]. */
static double percentile(const double *v, int n, double p) {
    if (n <= 0) return 0;
    int k = (int)ceil(p / 100.0 * n) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static void mean_sd_best(const double *v, int n, double *mean, double *sd, double *best) {
    double s = 0, b = 0;
    for (int i = 0; i < n; i++) { s += v[i]; if (v[i] > b) b = v[i]; }
    *mean = n ? s / n : 0;
    double q = 0;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
    *best = b;
}

static int ctx_size(const bench_opts *o, int depth) { return o->n_ctx ? o->n_ctx : depth + o->n_prompt + (o->n_gen ? o->n_gen : 1); }

static hkv_context_params ctx_params(const bench_opts *o, const hkv_kv_config *kv, int batch, int depth) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = ctx_size(o, depth);
    cp.n_seq = batch;
    cp.n_threads = o->n_threads;
    cp.ref_len = depth + o->n_prompt; /* a percentage budget is of the whole context before generation */
    cp.kv = *kv;
    return cp;
}

/* --kv-memory: the largest batch whose caches fit. One sequence's peak is its capacity while a prompt chunk
 * is appended before eviction (budget + chunk slots; the whole context for full or simulation), priced with
 * the per-slot bytes (K/V + metadata) of a one-sequence context. */
static int kv_memory_batch(hkv_model *m, const bench_opts *o, const hkv_kv_config *kv, int depth, uint64_t *seq_peak) {
    hkv_context_params cp = ctx_params(o, kv, 1, depth);
    hkv_context *c;
    char err[512];
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) return cli_error("%s", err), -1;
    hkv_kv_stats st;
    hkv_get_kv_stats(c, &st);
    hkv_budget b = hkv_context_budget(c);
    hkv_context_free(c);
    double per_slot = (double)(st.kv_bytes + st.meta_bytes) / (st.capacity > 0 ? st.capacity : 1);
    long slots = cp.n_ctx;
    if (strcmp(kv->policy, "full") && !kv->simulate) {
        int chunk = kv->prefill_chunk > 0 ? kv->prefill_chunk : cp.ref_len;
        if ((long)b.total + chunk < slots) slots = (long)b.total + chunk;
    }
    *seq_peak = (uint64_t)(per_slot * (double)slots);
    uint64_t n = *seq_peak ? o->kv_memory / *seq_peak : 0;
    if (n < 1) {
        cli_error("--kv-memory: one sequence of policy %s needs %.1f MiB at its peak, more than the %.1f MiB given",
                  kv->policy, *seq_peak / 1048576.0, o->kv_memory / 1048576.0);
        return -1;
    }
    return n > 4096 ? 4096 : (int)n;
}

typedef struct run_buf { int32_t *ctx_tok, *prompt, *toks; int *seqs; double *step_ms; } run_buf;

/* One repetition: reset, DEPTH untimed context tokens, the timed prompt of every sequence, then n_gen timed
 * batched steps. Fills pp/tg seconds, the step latencies and the K/V bytes in use around generation. */
static int run_once(hkv_context *c, const bench_opts *o, int batch, int depth, int n_vocab, run_buf *rb,
                    double *pp_s, double *tg_s, uint64_t *kv_used_avg) {
    /* --shared-prompt: only sequence 0 is prefilled; the copies are part of the timed prompt phase */
    int n_fill = o->shared_prompt ? 1 : batch;
    for (int s = 0; s < batch; s++) hkv_seq_reset(c, s);
    for (int s = 0; s < n_fill && depth > 0; s++)
        if (hkv_decode(c, s, rb->ctx_tok, depth)) return cli_error("%s", hkv_last_error(c));
    double t0 = hkv_time_sec();
    for (int s = 0; s < batch; s++) {
        if (s < n_fill && hkv_decode(c, s, rb->prompt, o->n_prompt)) return cli_error("%s", hkv_last_error(c));
        if (s >= n_fill && hkv_seq_cp(c, 0, s)) return cli_error("%s", hkv_last_error(c));
        rb->seqs[s] = s;
        rb->toks[s] = hkv_argmax(hkv_get_logits(c, s, -1), n_vocab);
    }
    double t1 = hkv_time_sec();
    hkv_kv_stats st;
    hkv_get_kv_stats(c, &st);
    uint64_t used0 = st.kv_bytes_used;
    for (int step = 0; step < o->n_gen; step++) {
        double ts = hkv_time_sec();
        if (hkv_decode_batch(c, rb->seqs, rb->toks, batch)) return cli_error("%s", hkv_last_error(c));
        for (int s = 0; s < batch; s++) rb->toks[s] = hkv_argmax(hkv_get_logits(c, s, -1), n_vocab);
        rb->step_ms[step] = 1e3 * (hkv_time_sec() - ts);
    }
    double t2 = hkv_time_sec();
    hkv_get_kv_stats(c, &st);
    *kv_used_avg = (used0 + st.kv_bytes_used) / 2;
    *pp_s = t1 - t0;
    *tg_s = t2 - t1;
    return 0;
}

int bench_measure(hkv_model *m, const bench_opts *o, const hkv_kv_config *kv, const char *budget_str, int batch,
                  int depth, const bench_machine *mach, bench_record *r) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    memset(r, 0, sizeof *r);
    snprintf(r->policy, sizeof r->policy, "%s", kv->policy);
    snprintf(r->budget, sizeof r->budget, "%s", budget_str);
    r->shared_prompt = o->shared_prompt;
    r->batch = batch; r->depth = depth; r->n_prompt = o->n_prompt; r->n_gen = o->n_gen; r->reps = o->reps;
    r->n_threads = o->n_threads > 0 ? o->n_threads : mach->n_cpus;
    hkv_context_params cp = ctx_params(o, kv, batch, depth);
    r->n_ctx = cp.n_ctx;
    if ((long)depth + o->n_prompt > cp.n_ctx)
        return cli_error("depth %d + prompt %d tokens do not fit the context length %d", depth, o->n_prompt, cp.n_ctx);
    bench_rss_reset();
    hkv_context *c;
    char err[512];
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) return cli_error("%s", err);
    r->budget_tokens = strcmp(kv->policy, "full") ? hkv_context_budget(c).total : cp.n_ctx;
    int n_steps = o->n_gen * o->reps;
    run_buf rb = {malloc(sizeof(int32_t) * (size_t)(depth + 1)), malloc(sizeof(int32_t) * (size_t)o->n_prompt),
                  malloc(sizeof(int32_t) * (size_t)batch), malloc(sizeof(int) * (size_t)batch),
                  malloc(sizeof(double) * (size_t)(n_steps + o->n_gen + 1))};
    double *pp = malloc(sizeof(double) * (size_t)o->reps), *tg = malloc(sizeof(double) * (size_t)o->reps);
    int rc = 0;
    if (!rb.ctx_tok || !rb.prompt || !rb.toks || !rb.seqs || !rb.step_ms || !pp || !tg) rc = cli_error("out of memory");
    for (int i = 0; !rc && i < depth; i++) rb.ctx_tok[i] = (int32_t)((i * 40503u + 7u) % (unsigned)mi.n_vocab);
    for (int i = 0; !rc && i < o->n_prompt; i++) rb.prompt[i] = (int32_t)((i * 2654435761u) % (unsigned)mi.n_vocab);
    double bytes_per_s = 0;
    for (int k = o->warmup ? -1 : 0; !rc && k < o->reps; k++) {
        double pp_s = 0, tg_s = 0;
        uint64_t used = 0;
        run_buf rk = rb;
        rk.step_ms = k < 0 ? rb.step_ms + n_steps : rb.step_ms + (size_t)k * o->n_gen; /* warm-up: spare row */
        if ((rc = run_once(c, o, batch, depth, mi.n_vocab, &rk, &pp_s, &tg_s, &used))) break;
        if (k < 0) continue;
        pp[k] = (double)o->n_prompt * (o->shared_prompt ? 1 : batch) / pp_s;
        tg[k] = o->n_gen ? (double)o->n_gen * batch / tg_s : 0;
        if (o->n_gen) bytes_per_s += ((double)mi.weight_bytes + (double)used) * o->n_gen / tg_s / o->reps;
    }
    if (!rc) {
        mean_sd_best(pp, o->reps, &r->pp_tps, &r->pp_sd, &r->pp_best);
        mean_sd_best(tg, o->reps, &r->tg_tps, &r->tg_sd, &r->tg_best);
        qsort(rb.step_ms, (size_t)n_steps, sizeof(double), cmp_double);
        r->tg_p50_ms = percentile(rb.step_ms, n_steps, 50);
        r->tg_p99_ms = percentile(rb.step_ms, n_steps, 99);
        hkv_kv_stats st;
        hkv_get_kv_stats(c, &st);
        r->kv_bytes = st.kv_bytes;
        r->kv_bytes_used = st.kv_bytes_used;
        r->kv_meta_bytes = st.meta_bytes;
        r->capacity = st.capacity;
        r->tg_bytes_per_s = bytes_per_s;
        r->roofline = mach->read_bw > 0 ? bytes_per_s / mach->read_bw : 0;
        r->peak_rss = bench_rss_peak();
    }
    free(rb.ctx_tok); free(rb.prompt); free(rb.toks); free(rb.seqs); free(rb.step_ms); free(pp); free(tg);
    hkv_context_free(c);
    return rc;
}

/* The comma list s as items, each passed to fn; stops at the first error. */
typedef int (*item_fn)(void *ctx, const char *item);
static int each_item(const char *list, item_fn fn, void *ctx) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    int rc = 0;
    for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && !rc; t = strtok_r(NULL, ",", &sv)) rc = fn(ctx, t);
    return rc;
}

typedef struct loop_ctx {
    hkv_model *m;
    hkv_model_info mi;
    const bench_opts *o;
    const bench_machine *mach;
    FILE *json;                   /* --json file or NULL */
    hkv_kv_config kv;
    const char *budget;
    int depth, n_records;
} loop_ctx;

static int do_batch(void *v, const char *item) {
    loop_ctx *L = v;
    int batch;
    uint64_t seq_peak = 0;
    if (L->o->kv_memory) {
        if ((batch = kv_memory_batch(L->m, L->o, &L->kv, L->depth, &seq_peak)) < 0) return 1;
    } else if (!cli_int("--batch", item, 1, 4096, &batch)) return 1;
    bench_record r;
    if (bench_measure(L->m, L->o, &L->kv, L->budget, batch, L->depth, L->mach, &r)) return 1;
    r.kv_memory = L->o->kv_memory;
    r.kv_seq_peak = seq_peak;
    bench_report_record(stdout, L->o->format, &r, &L->mi, L->mach, L->n_records == 0);
    if (L->json) bench_report_record(L->json, BENCH_JSON, &r, &L->mi, L->mach, L->n_records == 0);
    L->n_records++;
    fflush(stdout);
    return 0;
}

static int do_depth(void *v, const char *item) {
    loop_ctx *L = v;
    if (!cli_int("--depth", item, 0, 1 << 24, &L->depth)) return 1;
    return each_item(L->o->kv_memory ? "-" : L->o->batches, do_batch, L);
}

static int do_budget(void *v, const char *item) {
    loop_ctx *L = v;
    L->kv.budget = L->o->kv.budget;
    char err[256];
    if (strcmp(item, "-") && hkv_amount_parse(item, &L->kv.budget, err, sizeof err)) return cli_error("--kv-budget: %s", err);
    L->budget = item;
    return each_item(L->o->depths, do_depth, L);
}

static int do_policy(void *v, const char *item) {
    loop_ctx *L = v;
    L->kv = L->o->kv;
    snprintf(L->kv.policy, sizeof L->kv.policy, "%s", item);
    int bounded = strcmp(item, "full") && !L->kv.simulate;
    if (L->o->kv_memory && bounded && L->kv.prefill_chunk == 0) L->kv.prefill_chunk = 512;
    return each_item(!strcmp(item, "full") ? "-" : L->o->budgets, do_budget, L);
}

int bench_main(int argc, char **argv) {
    bench_opts o;
    int bw_mib;
    int pr = parse_bench(argc, argv, &o, &bw_mib);
    if (pr) return pr == 2 ? 0 : 1;
    hkv_model *m = cli_load_model(o.model, o.n_threads);
    if (!m) return 1;
    cli_warn_long_ctx(m, o.n_ctx, &o.kv);
    loop_ctx L;
    memset(&L, 0, sizeof L);
    L.m = m;
    L.o = &o;
    hkv_model_get_info(m, &L.mi);
    bench_machine mach;
    bench_machine_probe(&mach, o.n_threads, o.roofline ? (size_t)bw_mib << 20 : 0);
    L.mach = &mach;
    if (o.json_path && !(L.json = fopen(o.json_path, "w"))) {
        hkv_model_free(m);
        return cli_error("--json: cannot open '%s' for writing", o.json_path);
    }
    bench_report_begin(stdout, o.format, &L.mi, o.model, &mach);
    if (L.json) bench_report_begin(L.json, BENCH_JSON, &L.mi, o.model, &mach);
    int rc = each_item(o.policies, do_policy, &L);
    bench_report_end(stdout, o.format);
    if (L.json) {
        bench_report_end(L.json, BENCH_JSON);
        if (fclose(L.json)) rc = cli_error("--json: write error on '%s'", o.json_path);
    }
    hkv_model_free(m);
    return rc;
}
