/* heavykv bench: prompt-processing and generation speed, and KV memory, for each (policy, budget, batch).
 * Synthetic token streams (no tokenizer needed), greedy argmax so runs are repeatable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

typedef struct bench_opts {
    const char *model;
    int n_prompt, n_gen, reps, n_threads, n_ctx;
    char policies[256], budgets[256], batches[128];
    hkv_kv_config kv;
} bench_opts;

static void bench_help(void) {
    printf("usage: heavykv bench [-m MODEL.gguf] [options]\n\n"
           "Measures prompt processing (pp) and generation (tg) speed and KV-cache memory.\n\n"
           "  -m, --model PATH        GGUF model (default as for run)\n"
           "  -p, --n-prompt N        prompt tokens (default 128)\n"
           "  -n, --n-gen N           generated tokens per sequence (default 64)\n"
           "  -b, --batch LIST        sequences decoding together, e.g. 1,4,8 (default 1)\n"
           "  -r, --reps N            repetitions, best time reported (default 1)\n"
           "  -t, --threads N         worker threads (default: all cores)\n"
           "  -c, --ctx-size N        context length (default: the model's, at most 4096)\n"
           "      --kv-policy LIST    e.g. full,h2o,window (default full)\n"
           "      --kv-budget LIST    e.g. 20%%,64 (default 20%%; ignored by full)\n"
           "  other KV flags as for run (--kv-sink, --h2o-score, --prefill-chunk, --kv-type, ...)\n");
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
        int batch;
        if (!strcmp(flag, "--batch")) { if (!cli_int(flag, item, 1, 4096, &batch)) return 0; }
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

static int parse_bench(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = cli_default_model();
    o->n_prompt = 128; o->n_gen = 64; o->reps = 1;
    snprintf(o->policies, sizeof o->policies, "full");
    snprintf(o->budgets, sizeof o->budgets, "20%%");
    snprintf(o->batches, sizeof o->batches, "1");
    o->kv = hkv_kv_default_config();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { bench_help(); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) { VAL(); if (!cli_int(a, v, 1, 1 << 20, &o->n_prompt)) return 1; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) { VAL(); if (!cli_int(a, v, 0, 1 << 20, &o->n_gen)) return 1; }
        else if (!strcmp(a, "-r") || !strcmp(a, "--reps")) { VAL(); if (!cli_int(a, v, 1, 1000, &o->reps)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &o->n_threads)) return 1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VAL(); if (!cli_int(a, v, 0, 1 << 24, &o->n_ctx)) return 1; }
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) { VAL(); if (!list_ok("--batch", v, o->batches, sizeof o->batches)) return 1; }
        else if (!strcmp(a, "--kv-policy")) { VAL(); if (!list_ok(a, v, o->policies, sizeof o->policies)) return 1; }
        else if (!strcmp(a, "--kv-budget")) { VAL(); if (!list_ok(a, v, o->budgets, sizeof o->budgets)) return 1; }
        else {
            int r = cli_kv_flag(argc, argv, &i, &o->kv);
            if (r < 0) return 1;
            if (r == 0) return cli_error("unknown option '%s' for 'bench' (see heavykv bench --help)", a);
        }
#undef VAL
    }
    return 0;
}

typedef struct bench_result { double pp_tps, tg_tps; uint64_t kv_bytes; int capacity; hkv_budget b; } bench_result;

/* One measurement: every sequence gets the prompt (timed together as pp), then n_gen batched steps (tg). */
static int bench_one(hkv_model *m, const bench_opts *o, const hkv_kv_config *kv, int batch, bench_result *r) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = o->n_ctx;
    cp.n_seq = batch;
    cp.n_threads = o->n_threads;
    cp.ref_len = o->n_prompt;
    cp.kv = *kv;
    hkv_context *c;
    char err[512];
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) return cli_error("%s", err);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)o->n_prompt);
    int *seqs = malloc(sizeof(int) * (size_t)batch);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)batch);
    if (!prompt || !seqs || !toks) {
        free(prompt); free(seqs); free(toks); hkv_context_free(c);
        return cli_error("out of memory for a batch of %d sequences", batch);
    }
    for (int i = 0; i < o->n_prompt; i++) prompt[i] = (int32_t)((i * 2654435761u) % (unsigned)mi.n_vocab);
    int rc = 0;
    double t0 = hkv_time_sec();
    for (int s = 0; s < batch && !rc; s++) {
        if (hkv_decode(c, s, prompt, o->n_prompt)) { rc = cli_error("%s", hkv_last_error(c)); break; }
        seqs[s] = s;
        toks[s] = hkv_argmax(hkv_get_logits(c, s, -1), mi.n_vocab);
    }
    double t1 = hkv_time_sec();
    for (int step = 0; step < o->n_gen && !rc; step++) {
        if (hkv_decode_batch(c, seqs, toks, batch)) { rc = cli_error("%s", hkv_last_error(c)); break; }
        for (int s = 0; s < batch; s++) toks[s] = hkv_argmax(hkv_get_logits(c, s, -1), mi.n_vocab);
    }
    double t2 = hkv_time_sec();
    hkv_kv_stats st;
    hkv_get_kv_stats(c, &st);
    r->pp_tps = (double)o->n_prompt * batch / (t1 - t0);
    r->tg_tps = o->n_gen ? (double)o->n_gen * batch / (t2 - t1) : 0;
    r->kv_bytes = st.kv_bytes;
    r->capacity = st.capacity;
    r->b = st.budget;
    free(prompt); free(seqs); free(toks);
    hkv_context_free(c);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o;
    int pr = parse_bench(argc, argv, &o);
    if (pr) return pr == 2 ? 0 : 1;
    hkv_model *m = cli_load_model(o.model, o.n_threads);
    if (!m) return 1;
    cli_warn_long_ctx(m, o.n_ctx, &o.kv);
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    printf("model: %s (%s), %d layers, %d heads / %d KV heads, head_dim %d, %.1f M params, kernels %s\n",
           mi.name[0] ? mi.name : o.model, mi.arch, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim,
           mi.n_params / 1e6, hkv_cpu_features());
    printf("%-8s %-8s %6s %6s %6s %6s %10s %10s %10s\n", "policy", "budget", "batch", "pp", "tg", "slots",
           "pp tok/s", "tg tok/s", "KV MiB");
    int rc = 0;
    char pol[256], bud[256], bat[128];
    snprintf(pol, sizeof pol, "%s", o.policies);
    for (char *ps = NULL, *p = strtok_r(pol, ",", &ps); p && !rc; p = strtok_r(NULL, ",", &ps)) {
        snprintf(bud, sizeof bud, "%s", !strcmp(p, "full") ? "-" : o.budgets);
        for (char *bs = NULL, *b = strtok_r(bud, ",", &bs); b && !rc; b = strtok_r(NULL, ",", &bs)) {
            hkv_kv_config kv = o.kv;
            snprintf(kv.policy, sizeof kv.policy, "%s", p);
            char err[256];
            if (strcmp(b, "-") && hkv_amount_parse(b, &kv.budget, err, sizeof err)) { rc = cli_error("--kv-budget: %s", err); break; }
            snprintf(bat, sizeof bat, "%s", o.batches);
            for (char *ts = NULL, *t = strtok_r(bat, ",", &ts); t && !rc; t = strtok_r(NULL, ",", &ts)) {
                int batch;
                if (!cli_int("--batch", t, 1, 4096, &batch)) { rc = 1; break; }
                bench_result best = {0}, r = {0};
                for (int k = 0; k < o.reps && !rc; k++) {
                    rc = bench_one(m, &o, &kv, batch, &r);
                    if (rc) break;
                    double pp = best.pp_tps > r.pp_tps ? best.pp_tps : r.pp_tps; /* best of each, independently */
                    if (k == 0 || r.tg_tps > best.tg_tps) best = r;
                    best.pp_tps = pp;
                }
                if (!rc)
                    printf("%-8s %-8s %6d %6d %6d %6d %10.1f %10.1f %10.3f\n", p, b, batch, o.n_prompt, o.n_gen,
                           best.capacity, best.pp_tps, best.tg_tps, best.kv_bytes / 1048576.0);
                fflush(stdout);
            }
        }
    }
    hkv_model_free(m);
    return rc;
}
