/* heavykv eval: quality lost to KV eviction (perplexity, fidelity vs the full cache, multiple choice,
 * passkey retrieval), swept over policies x budgets, reported as a table, CSV, JSON and an SVG plot.
 * The measurements live in src/eval_*.c (tools on the public API); this file parses flags, runs the grid,
 * draws the progress bar and writes the reports. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "eval.h"

#define MAX_GRID 32   /* policies or budgets in one sweep */

typedef struct eval_opts {
    const char *sub;                         /* ppl | fidelity | mc | passkey */
    const char *model, *file, *csv, *json, *svg, *metric;
    int n_ctx, n_threads, quiet;
    int n_pol, n_bud;
    char pol[MAX_GRID][16];                  /* --kv-policy list */
    char bud[MAX_GRID][24];                  /* --kv-budget list (labels as given) */
    hkv_kv_config kv;                        /* every other KV flag */
    uint64_t seed;
    int self_prompts, prompt_len, n_gen;     /* fidelity / ppl self-generated text */
    eval_ppl_opts ppl;
    int forward;                             /* ppl --mode forward: one pass, must fit the context */
    int max_tokens;                          /* ppl: evaluate at most this many tokens of the file (0: all) */
    eval_passkey_opts pk;
} eval_opts;

/* ---------------------------------------------------------------- help */

static const char *const common_help =
    "Common options:\n"
    "  -m, --model PATH      GGUF model (default $HEAVYKV_MODEL or ../shared/models/stories260K.gguf)\n"
    "  -c, --ctx-size N      context length (default: the model's, at most 4096)\n"
    "  -t, --threads N       worker threads (default: all cores)\n"
    "  --kv-policy P1,P2,..  policies to sweep (default full)\n"
    "  --kv-budget B1,B2,..  budgets to sweep: tokens, P% or 0.R of the evaluated length\n"
    "  --csv FILE            write policy,budget,budget_tokens,<metrics> rows\n"
    "  --json FILE           write the rows as JSON\n"
    "  --svg FILE            plot --metric against the budget, one line per policy\n"
    "  --metric NAME         metric to plot (default: ppl, agree, acc, acc)\n"
    "  -s, --seed S          seed for self-generated text and passkeys (default 0)\n"
    "  -q, --quiet           no progress bar (it is only drawn when stderr is a terminal)\n\n";

static void help_main(void) {
    printf("usage: heavykv eval SUBCOMMAND [options]   (heavykv eval SUBCOMMAND --help for each)\n\n"
           "Measures the quality lost to KV-cache eviction. Every subcommand sweeps --kv-policy x --kv-budget\n"
           "and prints one row per (policy, budget); budget_tokens is the budget per KV head actually used.\n\n"
           "subcommands:\n"
           "  ppl        perplexity of a text (streaming through the bounded cache, or strided windows)\n"
           "  fidelity   agreement / KL divergence against the full cache on the same prompts\n"
           "  mc         multiple-choice accuracy (lm-eval style log-likelihood of each choice)\n"
           "  passkey    retrieval of a number hidden at a chosen depth of long filler text\n\n"
           "example:\n"
           "  heavykv eval ppl -f text.txt --kv-policy h2o,window,sink,tova --kv-budget 10%%,20%%,50%%,100%% \\\n"
           "      --csv ppl.csv --svg ppl.svg\n");
}

static void help_sub(const char *sub) {
    if (!strcmp(sub, "ppl"))
        printf("usage: heavykv eval ppl (-f TEXT | --self-prompts K) [options]\n\n"
               "Perplexity = exp(mean negative log-likelihood) of every token after the first.\n\n"
               "  -f, --file PATH       text to score (BOS is prepended)\n"
               "  --self-prompts K      score K texts the model generates itself from BOS (seeded sampling)\n"
               "  --prompt-len L        tokens per self-generated text (default 400)\n"
               "  --max-tokens N        score only the first N tokens of the file\n"
               "  --mode M              stream (default): one token per step through the bounded cache;\n"
               "                        chunked: strided windows (--window, --stride), each a fresh sequence;\n"
               "                        forward: one pass over the whole text (must fit the context)\n"
               "  --window W            chunked: tokens per window (default: the context length)\n"
               "  --stride S            chunked: distance between window starts (default W/2)\n"
               "Metrics: ppl, nll (nats/token), tokens.\n\n");
    else if (!strcmp(sub, "fidelity"))
        printf("usage: heavykv eval fidelity (-f PROMPTS | --self-prompts K) [options]\n\n"
               "Runs every prompt with the full cache and with the policy and compares them.\n\n"
               "  -f, --file PATH       prompts: one per line, or JSON lines {\"prompt\": \"...\"}\n"
               "  --self-prompts K      K prompts the model generates itself from BOS (seeded sampling)\n"
               "  --prompt-len L        tokens per self-generated prompt (default 64)\n"
               "  -n, --n-gen N         tokens generated / compared per prompt (default 64)\n"
               "Metrics (means over prompts): agree (%% of positions where the policy's own greedy token equals\n"
               "the full cache's), agree_pre (%% of positions before the first divergence), top1 (%% teacher-\n"
               "forced positions with the same argmax), kl_mean / kl_max (KL(full || policy), nats).\n\n");
    else if (!strcmp(sub, "mc"))
        printf("usage: heavykv eval mc -f TASK.jsonl [options]\n\n"
               "Scores each choice by the log-likelihood of its tokens after the context (the policy applies\n"
               "while the context is read, then one token per step).\n\n"
               "  -f, --file PATH       JSONL, one of:\n"
               "      {\"context\": \"...\", \"choices\": [\" a\", \" b\"], \"gold\": 0}\n"
               "      {\"request_type\": \"loglikelihood\", \"doc_id\": 7, \"context\"|\"prompt\": \"...\",\n"
               "       \"continuation\"|\"target\": \" a\", \"gold\": 0}   (one line per choice, grouped by doc_id)\n"
               "Metrics: acc, acc_norm (log-likelihood divided by the choice's length in bytes), in %%.\n\n");
    else
        printf("usage: heavykv eval passkey [options]\n\n"
               "Hides \"The pass key is NNNNN. Remember it.\" in filler text and asks for it at the end; the\n"
               "answer is right when the first number in 8 greedy tokens equals the key.\n\n"
               "  --lengths L1,L2,..    input lengths in tokens (default 256,512)\n"
               "  --depths D1,D2,..     needle depth in %% of the filler (default 0,25,50,75,100)\n"
               "  --trials N            keys per (length, depth) (default 5)\n"
               "Metrics: acc (all trials), acc_L<length>_D<depth> per cell, in %%.\n\n");
    printf("%s%s", common_help, cli_kv_help);
}

/* ---------------------------------------------------------------- flags */

/* Splits a comma list into fixed-size strings; returns the count or -1 (error printed). */
static int split_list(const char *flag, const char *v, char (*out)[24], int width) {
    int n = 0;
    for (const char *s = v;; n++) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (n == MAX_GRID) return cli_error("%s: at most %d values", flag, MAX_GRID), -1;
        if (len == 0 || len >= (size_t)width) return cli_error("%s: bad list '%s'", flag, v), -1;
        memcpy(out[n], s, len);
        out[n][len] = 0;
        if (!e) return n + 1;
        s = e + 1;
    }
}

static int int_list(const char *flag, const char *v, int *out, int max, long lo, long hi) {
    char items[MAX_GRID][24];
    int n = split_list(flag, v, items, 24);
    if (n < 0) return -1;
    if (n > max) return cli_error("%s: at most %d values", flag, max), -1;
    for (int i = 0; i < n; i++)
        if (!cli_int(flag, items[i], lo, hi, &out[i])) return -1;
    return n;
}

static int parse_grid_flag(int argc, char **argv, int *i, eval_opts *o) {
    const char *a = argv[*i], *v;
    if (strcmp(a, "--kv-policy") && strcmp(a, "--kv-budget")) return 0;
    if (!(v = cli_value(argc, argv, i))) return -1;
    char items[MAX_GRID][24];
    int n = split_list(a, v, items, 24), is_pol = !strcmp(a, "--kv-policy");
    if (n < 0) return -1;
    for (int k = 0; k < n; k++) {
        /* Validate each value the way the single-value flag does. */
        char *fake[2] = {(char *)a, items[k]};
        int j = 0;
        hkv_kv_config tmp = hkv_kv_default_config();
        if (cli_kv_flag(2, fake, &j, &tmp) < 0) return -1;
        if (is_pol) snprintf(o->pol[k], sizeof o->pol[k], "%.15s", items[k]); /* a known policy name */
        else snprintf(o->bud[k], sizeof o->bud[k], "%.23s", items[k]);
    }
    if (is_pol) o->n_pol = n;
    else o->n_bud = n;
    return 1;
}

/* The metric names each subcommand reports (passkey adds acc_L<length>_D<depth> per cell). */
static int known_metric(const char *sub, const char *metric) {
    const char *names = !strcmp(sub, "ppl") ? ",ppl,nll,tokens," : !strcmp(sub, "fidelity")
                        ? ",agree,agree_pre,top1,kl_mean,kl_max,prompts," : !strcmp(sub, "mc") ? ",acc,acc_norm,items," : ",acc,";
    char key[40];
    snprintf(key, sizeof key, ",%.36s,", metric);
    return strstr(names, key) || (!strcmp(sub, "passkey") && !strncmp(metric, "acc_L", 5));
}

/* Returns 0 ok, 1 error, 2 help shown. */
static int parse_eval(int argc, char **argv, eval_opts *o) {
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r = parse_grid_flag(argc, argv, &i, o);
        if (!r) r = cli_kv_flag(argc, argv, &i, &o->kv);
        if (r < 0) return 1;
        if (r > 0) continue;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
#define INT(lo, hi, dst) do { VAL(); if (!cli_int(a, v, lo, hi, dst)) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help_sub(o->sub); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); o->model = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { VAL(); o->file = v; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) INT(0, 1 << 24, &o->n_ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) INT(1, 1024, &o->n_threads);
        else if (!strcmp(a, "--csv")) { VAL(); o->csv = v; }
        else if (!strcmp(a, "--json")) { VAL(); o->json = v; }
        else if (!strcmp(a, "--svg")) { VAL(); o->svg = v; }
        else if (!strcmp(a, "--metric")) { VAL(); o->metric = v; }
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) o->quiet = 1;
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) { VAL(); if (!cli_u64(a, v, &o->seed)) return 1; }
        else if (!strcmp(a, "--self-prompts") && strcmp(o->sub, "mc") && strcmp(o->sub, "passkey"))
            INT(1, 100000, &o->self_prompts);
        else if (!strcmp(a, "--prompt-len") && strcmp(o->sub, "mc") && strcmp(o->sub, "passkey"))
            INT(2, 1 << 20, &o->prompt_len);
        else if ((!strcmp(a, "-n") || !strcmp(a, "--n-gen")) && !strcmp(o->sub, "fidelity")) INT(1, 1 << 20, &o->n_gen);
        else if (!strcmp(a, "--mode") && !strcmp(o->sub, "ppl")) {
            VAL();
            if (!strcmp(v, "stream")) o->ppl.mode = EVAL_PPL_STREAM;
            else if (!strcmp(v, "chunked")) o->ppl.mode = EVAL_PPL_CHUNKED;
            else if (!strcmp(v, "forward")) { o->ppl.mode = EVAL_PPL_CHUNKED; o->forward = 1; }
            else return cli_error("--mode expects stream, chunked or forward, got '%s'", v);
        } else if (!strcmp(a, "--window") && !strcmp(o->sub, "ppl")) INT(2, 1 << 24, &o->ppl.window);
        else if (!strcmp(a, "--stride") && !strcmp(o->sub, "ppl")) INT(1, 1 << 24, &o->ppl.stride);
        else if (!strcmp(a, "--max-tokens") && !strcmp(o->sub, "ppl")) INT(2, 1 << 30, &o->max_tokens);
        else if (!strcmp(a, "--lengths") && !strcmp(o->sub, "passkey")) {
            VAL();
            if ((o->pk.n_lengths = int_list(a, v, o->pk.lengths, 8, 16, 1 << 20)) < 0) return 1;
        } else if (!strcmp(a, "--depths") && !strcmp(o->sub, "passkey")) {
            VAL();
            if ((o->pk.n_depths = int_list(a, v, o->pk.depths, 11, 0, 100)) < 0) return 1;
        } else if (!strcmp(a, "--trials") && !strcmp(o->sub, "passkey")) INT(1, 100000, &o->pk.trials);
        else return cli_error("unknown option '%s' for 'eval %s' (see heavykv eval %s --help)", a, o->sub, o->sub);
#undef INT
#undef VAL
    }
    if (!known_metric(o->sub, o->metric)) return cli_error("--metric: eval %s has no metric '%s'", o->sub, o->metric);
    if (o->pk.n_lengths * o->pk.n_depths > EVAL_PASSKEY_MAX_CELLS)
        return cli_error("passkey: at most %d (length, depth) cells", EVAL_PASSKEY_MAX_CELLS);
    if (!strcmp(o->sub, "mc") && !o->file) return cli_error("eval mc needs a task file (-f TASK.jsonl)");
    if ((!strcmp(o->sub, "ppl") || !strcmp(o->sub, "fidelity")) && !o->file == !o->self_prompts)
        return cli_error("eval %s needs exactly one of -f FILE and --self-prompts K", o->sub);
    return 0;
}

static void defaults(eval_opts *o, const char *sub) {
    memset(o, 0, sizeof *o);
    o->sub = sub;
    o->model = cli_default_model();
    o->kv = hkv_kv_default_config();
    o->n_pol = 1;
    snprintf(o->pol[0], sizeof o->pol[0], "full");
    o->prompt_len = strcmp(sub, "ppl") ? 64 : 400;
    o->n_gen = 64;
    o->metric = !strcmp(sub, "ppl") ? "ppl" : !strcmp(sub, "fidelity") ? "agree" : "acc";
    static const int lens[] = {256, 512}, deps[] = {0, 25, 50, 75, 100};
    o->pk.n_lengths = 2;
    memcpy(o->pk.lengths, lens, sizeof lens);
    o->pk.n_depths = 5;
    memcpy(o->pk.depths, deps, sizeof deps);
    o->pk.trials = 5;
}

/* ---------------------------------------------------------------- progress bar */

typedef struct progress {
    char label[48];
    double t0, last;   /* start, last redraw */
    int drawn;
} progress;

static void progress_cb(void *ud, long done, long total) {
    progress *p = ud;
    double now = hkv_time_sec();
    if (done < total && now - p->last < 0.1) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? done / el : 0, eta = rate > 0 ? (total - done) / rate : 0;
    int width = 30, fill = total > 0 ? (int)(width * done / total) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%-22s [%s] %3d%% %ld/%ld %.1f/s ETA %d:%02d ", p->label, bar,
            total > 0 ? (int)(100 * done / total) : 0, done, total, rate, (int)eta / 60, (int)eta % 60);
    p->drawn = 1;
}

static void progress_clear(progress *p) {
    if (p->drawn) fputs("\r\033[K", stderr);
    p->drawn = 0;
}

/* ---------------------------------------------------------------- the grid */

/* What one run needs besides its env: the loaded inputs of the subcommand. */
typedef struct eval_data {
    eval_prompts texts;   /* ppl / fidelity token sequences */
    eval_mc_task mc;
} eval_data;

static hkv_status run_one(const eval_opts *o, const eval_env *env, const eval_data *d, eval_metrics *m, char *err,
                          size_t errlen) {
    if (!strcmp(o->sub, "fidelity")) return eval_fidelity(env, &d->texts, o->n_gen, m, err, errlen);
    if (!strcmp(o->sub, "mc")) return eval_mc(env, &d->mc, m, NULL, err, errlen);
    if (!strcmp(o->sub, "passkey")) return eval_passkey(env, &o->pk, m, err, errlen);
    /* ppl over several texts: token-weighted mean NLL. */
    double nll = 0, tokens = 0, budget = 0;
    for (int i = 0; i < d->texts.n; i++) {
        eval_ppl_opts po = o->ppl;
        if (o->forward) po.window = po.stride = d->texts.len[i];
        eval_metrics one;
        hkv_status st = eval_ppl(env, &po, d->texts.toks[i], d->texts.len[i], &one, err, errlen);
        if (st) return st;
        double t = eval_metrics_get(&one, "tokens");
        nll += eval_metrics_get(&one, "nll") * t;
        tokens += t;
        budget += one.budget_tokens;
    }
    memset(m, 0, sizeof *m);
    eval_metrics_add(m, "ppl", exp(nll / tokens));
    eval_metrics_add(m, "nll", nll / tokens);
    eval_metrics_add(m, "tokens", tokens);
    m->budget_tokens = budget / d->texts.n;
    return HKV_OK;
}

static int run_grid(const eval_opts *o, hkv_model *model, const eval_data *d, eval_row *rows, int *n_rows) {
    int n_bud = o->n_bud ? o->n_bud : 1, have_full = -1;
    progress pg = {0};
    eval_env env = {.model = model, .n_ctx = o->n_ctx, .n_threads = o->n_threads};
    if (!o->quiet && isatty(2)) { env.progress = progress_cb; env.progress_ud = &pg; }
    *n_rows = 0;
    for (int p = 0; p < o->n_pol; p++)
        for (int b = 0; b < n_bud; b++) {
            eval_row *r = &rows[(*n_rows)++];
            memset(r, 0, sizeof *r);
            snprintf(r->policy, sizeof r->policy, "%s", o->pol[p]);
            snprintf(r->budget, sizeof r->budget, "%s", o->n_bud ? o->bud[b] : "-");
            env.kv = o->kv;
            snprintf(env.kv.policy, sizeof env.kv.policy, "%s", o->pol[p]);
            r->budget_pct = NAN;
            if (o->n_bud) {
                char err[256];
                if (hkv_amount_parse(o->bud[b], &env.kv.budget, err, sizeof err)) return cli_error("--kv-budget: %s", err);
                if (env.kv.budget.is_ratio) r->budget_pct = 100.0 * env.kv.budget.value;
            }
            /* `full` ignores the budget: measure it once and repeat the row (the flat baseline of the plot). */
            if (!strcmp(o->pol[p], "full") && have_full >= 0) { r->m = rows[have_full].m; continue; }
            snprintf(pg.label, sizeof pg.label, "%s %s", r->policy, r->budget);
            pg.t0 = pg.last = hkv_time_sec();
            char err[512];
            hkv_status st = run_one(o, &env, d, &r->m, err, sizeof err);
            progress_clear(&pg);
            if (st) return cli_error("%s (policy %s, budget %s)", err, r->policy, r->budget);
            if (!strcmp(o->pol[p], "full")) have_full = *n_rows - 1;
        }
    return 0;
}

/* ---------------------------------------------------------------- inputs and outputs */

static int load_data(const eval_opts *o, hkv_model *m, eval_data *d) {
    char err[512];
    if (o->self_prompts) {
        if (eval_prompts_self(m, o->self_prompts, o->prompt_len, o->seed, o->n_threads, &d->texts, err, sizeof err))
            return cli_error("%s", err);
        return 0;
    }
    if (!o->file) return 0; /* passkey makes its own inputs */
    size_t len;
    char *text = cli_read_file(o->file, &len);
    if (!text) return 1;
    int rc = 0;
    if (strspn(text, " \t\r\n") == len) rc = cli_error("'%s' is empty", o->file);
    else if (strlen(text) != len) rc = cli_error("'%s' contains NUL bytes (not a text file)", o->file);
    else if (!strcmp(o->sub, "mc")) {
        if (eval_mc_parse(text, &d->mc, err, sizeof err)) rc = cli_error("%s: %s", o->file, err);
    } else if (!strcmp(o->sub, "fidelity")) {
        if (eval_prompts_parse(m, text, &d->texts, err, sizeof err)) rc = cli_error("%s: %s", o->file, err);
    } else { /* ppl: the whole file is one text */
        int cap = (int)len + 16;
        int32_t *t = malloc(sizeof *t * (size_t)cap);
        int n = t ? hkv_tokenize(m, text, 1, 0, t, cap) : -1;
        if (o->max_tokens && n > o->max_tokens) n = o->max_tokens;
        d->texts.toks = malloc(sizeof *d->texts.toks);
        d->texts.len = malloc(sizeof *d->texts.len);
        if (!d->texts.toks || !d->texts.len || n < 0) { free(t); rc = cli_error("out of memory"); }
        else if (n < 2) { free(t); rc = cli_error("'%s' has fewer than 2 tokens", o->file); }
        else { d->texts.toks[0] = t; d->texts.len[0] = n; d->texts.n = 1; }
    }
    free(text);
    return rc;
}

/* Forward mode reads the text in one pass: it must fit the context. */
static int check_forward(const eval_opts *o, hkv_model *m, const eval_data *d) {
    if (!o->forward) return 0;
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    int n_ctx = o->n_ctx ? o->n_ctx : mi.n_ctx_default;
    for (int i = 0; i < d->texts.n; i++)
        if (d->texts.len[i] > n_ctx)
            return cli_error("the text has %d tokens, more than the context length %d (use --mode stream, "
                             "--mode chunked or --max-tokens)", d->texts.len[i], n_ctx);
    return 0;
}

static int write_reports(const eval_opts *o, const eval_row *rows, int n) {
    eval_write_table(stdout, rows, n);
    struct { const char *path; int kind; } outs[3] = {{o->csv, 0}, {o->json, 1}, {o->svg, 2}};
    for (int k = 0; k < 3; k++) {
        if (!outs[k].path) continue;
        FILE *f = fopen(outs[k].path, "w");
        if (!f) return cli_error("cannot write '%s'", outs[k].path);
        char err[512], title[128];
        hkv_status st = HKV_OK;
        if (outs[k].kind == 0) eval_write_csv(f, rows, n);
        else if (outs[k].kind == 1) eval_write_json(f, o->sub, rows, n);
        else {
            snprintf(title, sizeof title, "heavykv eval %s: %s vs KV budget", o->sub, o->metric);
            st = eval_write_svg(f, title, o->metric, rows, n, err, sizeof err);
        }
        int bad = ferror(f);
        bad |= fclose(f) != 0;
        if (st) return cli_error("--svg: %s", err);
        if (bad) return cli_error("cannot write '%s'", outs[k].path);
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2) return cli_error("eval needs a subcommand: ppl, fidelity, mc or passkey (see heavykv eval --help)");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        help_main();
        return 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "ppl") && strcmp(sub, "fidelity") && strcmp(sub, "mc") && strcmp(sub, "passkey"))
        return cli_error("unknown eval subcommand '%s' (choose ppl, fidelity, mc or passkey)", sub);
    eval_opts *o = malloc(sizeof *o);
    eval_row *rows = malloc(sizeof *rows * MAX_GRID * MAX_GRID);
    if (!o || !rows) { free(o); free(rows); return cli_error("out of memory"); }
    defaults(o, sub);
    int r = parse_eval(argc, argv, o), rc = r == 2 ? 0 : r;
    hkv_model *m = NULL;
    eval_data d;
    memset(&d, 0, sizeof d);
    if (!r && !(m = cli_load_model(o->model, o->n_threads))) rc = 1;
    if (m) cli_warn_long_ctx(m, o->n_ctx, &o->kv);
    if (!r && !rc) rc = load_data(o, m, &d);
    if (!r && !rc) rc = check_forward(o, m, &d);
    int n_rows = 0;
    if (!r && !rc) rc = run_grid(o, m, &d, rows, &n_rows);
    if (!r && !rc) rc = write_reports(o, rows, n_rows);
    eval_prompts_free(&d.texts);
    eval_mc_free(&d.mc);
    if (m) hkv_model_free(m);
    free(rows);
    free(o);
    return rc;
}
