/* heavykv run: prompt -> streamed tokens on stdout; timings and KV statistics on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

typedef struct run_opts {
    const char *model, *prompt, *prompt_file, *trace;
    int n_predict, n_threads, n_ctx, ignore_eos, kv_stats, add_bos, parse_special; /* add_bos: -1 model's */
    int trace_scores;
    hkv_sampler_params sp;
    hkv_kv_config kv;
} run_opts;

static void run_help(void) {
    printf("usage: heavykv run [-m MODEL.gguf] [-p PROMPT | -f FILE] [options]\n\n"
           "Generates text, streaming it to stdout; speed and cache statistics go to stderr.\n\n"
           "  -m, --model PATH      GGUF model (default $HEAVYKV_MODEL or ../shared/models/stories260K.gguf)\n"
           "  -p, --prompt TEXT     prompt (default empty: generation starts from BOS)\n"
           "  -f, --file PATH       read the prompt from a file\n"
           "  -n, --n-predict N     tokens to generate (default 128)\n"
           "  -c, --ctx-size N      context length (default: the model's, at most 4096)\n"
           "  -t, --threads N       worker threads (default: all cores)\n"
           "      --temp T          temperature; 0 = greedy (default 0.8)\n"
           "      --top-k K         (default 40; 0 = off)\n"
           "      --top-p P         (default 0.95; 1 = off)\n"
           "      --min-p P         (default 0.05; 0 = off)\n"
           "      --repeat-penalty R  (default 1.0 = off)   --repeat-last-n N (default 64)\n"
           "  -s, --seed S          sampling seed (default 0)\n"
           "      --ignore-eos      keep generating after end-of-generation tokens\n"
           CLI_BOS_HELP
           "      --no-special      do not match special-token text in the prompt\n"
           "      --kv-stats        print per-layer KV capacity/occupancy/evictions/bytes at the end\n"
           "      --kv-trace FILE   write kept positions per head after every step (JSON lines)\n"
           "      --kv-trace-scores add the policy's score of each kept position to the trace (\"scores\")\n\n%s",
           cli_kv_help());
}

/* Returns 0 ok, 1 error, 2 help shown. */
static int parse_run(int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = cli_default_model();
    o->prompt = "";
    o->n_predict = 128;
    o->parse_special = 1;
    o->add_bos = -1;
    o->sp = hkv_sampler_default_params();
    o->kv = hkv_kv_default_config();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r = cli_kv_flag(argc, argv, &i, &o->kv);
        if (r == 0) r = cli_sampler_flag(argc, argv, &i, &o->sp);
        if (r < 0) return 1;
        if (r > 0) continue;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { run_help(); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { VAL(); o->prompt = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { VAL(); o->prompt_file = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { VAL(); if (!cli_int(a, v, 0, 1 << 24, &o->n_predict)) return 1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VAL(); if (!cli_int(a, v, 0, 1 << 24, &o->n_ctx)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &o->n_threads)) return 1; }
        else if (!strcmp(a, "--ignore-eos")) o->ignore_eos = 1;
        else if (cli_bos_flag(a, &o->add_bos)) continue;
        else if (!strcmp(a, "--no-special")) o->parse_special = 0;
        else if (!strcmp(a, "--kv-stats")) o->kv_stats = 1;
        else if (!strcmp(a, "--kv-trace")) { VAL(); o->trace = v; }
        else if (!strcmp(a, "--kv-trace-scores")) o->trace_scores = 1;
        else return cli_error("unknown option '%s' for 'run' (see heavykv run --help)", a);
#undef VAL
    }
    return 0;
}

static void print_kv_stats(hkv_context *c) {
    hkv_kv_stats s;
    hkv_get_kv_stats(c, &s);
    fprintf(stderr, "kv: budget %d per head (heavy %d, recent %d, sink %d), capacity %d slots, %d layers x %d KV heads x %d dims\n",
            s.budget.total, s.budget.heavy, s.budget.recent, s.budget.sink, s.capacity, s.n_layer, s.n_head_kv, s.head_dim);
    fprintf(stderr, "kv: %s rows of %d bytes (K/V bytes = %d slots x %d layers x %d heads x 2 x %d), %s positions\n",
            hkv_kv_type_name(s.type), s.row_bytes, s.capacity, s.n_layer, s.n_head_kv, s.row_bytes,
            s.positions_cache ? "cache" : "original");
    for (int l = 0; l < s.n_layer; l++) {
        int occ;
        uint64_t ev;
        hkv_get_kv_layer_stats(c, l, &occ, &ev);
        hkv_budget lb = hkv_context_layer_budget(c, l);
        fprintf(stderr, "kv: layer %2d  budget %d  occupancy %6.1f / %d per head  evictions %llu\n", l, lb.total,
                (double)occ / s.n_head_kv, s.capacity, (unsigned long long)ev);
    }
    fprintf(stderr, "kv: K/V bytes %llu (%.2f MiB), metadata bytes %llu, total evictions %llu\n",
            (unsigned long long)s.kv_bytes, s.kv_bytes / 1048576.0, (unsigned long long)s.meta_bytes,
            (unsigned long long)s.evictions);
}

/* Streams n_predict tokens after the prompt. Returns exit code. */
static int generate(hkv_model *m, hkv_context *c, hkv_sampler *smp, const run_opts *o, int n_prompt, double t_prompt) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    hkv_utf8_stream us = {.strip_space = mi.spm && !*o->prompt};
    char out[256];
    double t0 = hkv_time_sec();
    int n_gen = 0;
    for (; n_gen < o->n_predict; n_gen++) {
        int32_t tok = hkv_sampler_sample(smp, hkv_get_logits(c, 0, -1));
        if (!o->ignore_eos && hkv_token_is_eog(m, tok)) break;
        int k = hkv_utf8_stream_push(&us, m, tok, out, sizeof out);
        if (k > 0) { fwrite(out, 1, (size_t)k, stdout); fflush(stdout); }
        if (n_gen + 1 == o->n_predict) { n_gen++; break; } /* no need to run the last token */
        if (hkv_decode(c, 0, &tok, 1)) {
            fputc('\n', stdout);
            return cli_error("%s", hkv_last_error(c));
        }
    }
    double t_gen = hkv_time_sec() - t0;
    fputc('\n', stdout);
    fprintf(stderr, "prompt: %d tokens in %.3f s (%.1f tok/s) | generation: %d tokens in %.3f s (%.1f tok/s) | kernels %s\n",
            n_prompt, t_prompt, t_prompt > 0 ? n_prompt / t_prompt : 0.0, n_gen, t_gen, t_gen > 0 ? n_gen / t_gen : 0.0,
            hkv_cpu_features());
    if (o->kv_stats) print_kv_stats(c);
    return 0;
}

static int run_with_model(hkv_model *m, const run_opts *o, const char *prompt) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    int cap = (int)strlen(prompt) + 16;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)cap);
    int n = toks ? hkv_tokenize(m, prompt, o->add_bos, o->parse_special, toks, cap) : 0;
    if (n <= 0) {
        free(toks);
        return cli_error(o->add_bos == 0 ? "the prompt is empty after tokenization and --no-bos adds no BOS token"
                         : o->add_bos < 0 && mi.bos >= 0 && !mi.add_bos
                         ? "the prompt is empty after tokenization and this model adds no BOS token (give a prompt or --bos)"
                         : "the prompt is empty after tokenization and the model has no BOS token");
    }
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = o->n_ctx;
    cp.n_threads = o->n_threads;
    cp.kv = o->kv;
    cp.ref_len = n;
    cp.trace_path = o->trace;
    cp.trace_scores = o->trace_scores;
    int n_ctx = o->n_ctx ? o->n_ctx : mi.n_ctx_default;
    if (n > n_ctx) { free(toks); return cli_error("the prompt has %d tokens, which does not fit the context length %d", n, n_ctx); }
    hkv_context *c;
    hkv_sampler *smp;
    char err[512];
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) { free(toks); return cli_error("%s", err); }
    if (hkv_sampler_new(&o->sp, mi.n_vocab, &smp, err, sizeof err)) { free(toks); hkv_context_free(c); return cli_error("%s", err); }
    for (int i = 0; i < n; i++) hkv_sampler_accept(smp, toks[i]);
    fputs(prompt, stdout);
    fflush(stdout);
    double t0 = hkv_time_sec();
    int rc;
    if (hkv_decode(c, 0, toks, n)) rc = cli_error("%s", hkv_last_error(c));
    else {
        int n_predict_fit = n_ctx - n + 1; /* the last generated token is sampled, never decoded */
        run_opts o2 = *o;
        /* cache positions with a bounded real-drop cache stream past the context length (README "Endless
         * streaming"); otherwise generation stops when the context is full */
        int endless = o->kv.positions_cache && !o->kv.simulate && strcmp(o->kv.policy, "full") != 0;
        if (!endless && o2.n_predict > n_predict_fit) o2.n_predict = n_predict_fit;
        rc = generate(m, c, smp, &o2, n, hkv_time_sec() - t0);
    }
    free(toks);
    hkv_sampler_free(smp);
    hkv_context_free(c);
    return rc;
}

int cmd_run(int argc, char **argv) {
    run_opts o;
    int r = parse_run(argc, argv, &o);
    if (r) return r == 2 ? 0 : 1;
    if (o.prompt_file && *o.prompt) return cli_error("give either -p or -f, not both");
    char *file_prompt = NULL;
    if (o.prompt_file && !(file_prompt = cli_read_file(o.prompt_file, NULL))) return 1;
    hkv_model *m = cli_load_model(o.model, o.n_threads);
    if (!m) { free(file_prompt); return 1; }
    cli_warn_long_ctx(m, o.n_ctx, &o.kv);
    int rc = run_with_model(m, &o, file_prompt ? file_prompt : o.prompt);
    free(file_prompt);
    hkv_model_free(m);
    return rc;
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int max_items = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: heavykv info MODEL.gguf [--max-items N]\n\nPrints the GGUF header, every metadata key "
                   "(arrays: first N items, default 16) and the tensor table.\n");
            return 0;
        } else if (!strcmp(argv[i], "--max-items")) {
            const char *v = cli_value(argc, argv, &i);
            if (!v || !cli_int("--max-items", v, 0, 1 << 30, &max_items)) return 1;
        } else if (argv[i][0] == '-' && argv[i][1]) return cli_error("unknown option '%s' for 'info'", argv[i]);
        else if (path) return cli_error("info takes one file, got '%s' and '%s'", path, argv[i]);
        else path = argv[i];
    }
    if (!path) path = cli_default_model();
    char err[512];
    if (hkv_gguf_dump(path, stdout, max_items, err, sizeof err)) return cli_error("%s", err);
    return 0;
}
