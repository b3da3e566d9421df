/* heavykv eval: quality lost to KV eviction (perplexity, fidelity vs the full cache, multiple choice,
 * passkey retrieval), swept over policies x budgets, reported as a table, CSV, JSON and an SVG plot.
 * The measurements live in apps/eval/ (tools on the public API); this file parses flags, runs the grid,
 * draws the progress line and writes the reports (CSV / JSONL row by row, so an interrupted sweep can be
 * resumed). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "eval.h"

#define MAX_GRID 32   /* policies or budgets in one sweep */

typedef struct eval_opts {
    const char *sub;                         /* ppl | fidelity | mc | passkey */
    const char *model, *file, *csv, *json, *jsonl, *svg, *metric;
    int n_ctx, n_threads, quiet;
    int resume;                              /* --resume: keep the rows already in --csv / --jsonl */
    int bos;                                 /* EVAL_BOS_* (--bos / --no-bos) */
    int n_pol, n_bud;
    char pol[MAX_GRID][16];                  /* --kv-policy list */
    char bud[MAX_GRID][24];                  /* --kv-budget list (labels as given) */
    int n_posm, posm[2];                     /* --kv-positions list (0 original, 1 cache); 0: kv's own */
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
    "  --csv FILE            write policy,budget,budget_tokens,<metrics> rows (each row as soon as it is done)\n"
    "  --jsonl FILE          write each row as a JSON line as soon as it is done\n"
    "  --json FILE           write all rows as one JSON document at the end\n"
    "  --resume              keep the rows already in --csv / --jsonl and compute only the missing ones\n"
    "  --svg FILE            plot --metric against the budget, one line per policy\n"
    "  --metric NAME         metric to plot (default: ppl, agree, acc, acc)\n"
    "  -s, --seed S          seed for self-generated text and passkeys (default 0)\n"
    CLI_BOS_HELP
    "  -q, --quiet           no progress line (it is only drawn when stderr is a terminal)\n\n";

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
               "  -f, --file PATH       text to score (BOS first when the model adds one, see --bos)\n"
               "  --self-prompts K      score K texts the model generates itself from BOS (seeded sampling)\n"
               "  --prompt-len L        tokens per self-generated text (default 400)\n"
               "  --max-tokens N        score only the first N tokens of the file\n"
               "  --mode M              stream (default): one token per step through the bounded cache;\n"
               "                        chunked: strided windows (--window, --stride), each a fresh sequence;\n"
               "                        forward: one pass over the whole text (must fit the context);\n"
               "                        llama: llama.cpp's llama-perplexity (chunks of -c tokens, BOS at each chunk\n"
               "                        start when the model adds BOS, second half of each chunk scored)\n"
               "  --window W            chunked: tokens per window (default: the context length)\n"
               "  --stride S            chunked: distance between window starts (default W/2)\n"
               "  --chunks N            llama: score at most N chunks (llama-perplexity --chunks)\n"
               "  --bins N              stream: also ppl of the tokens at positions [P, P+N) as metric ppl@P;\n"
               "                        with --svg, the plot is ppl against the position (one line per row)\n"
               "  --kv-positions L      original, cache or original,cache (both; cache rows named NAME+cache)\n"
               "Metrics: ppl, nll (nats/token), tokens, ppl_se, nll_se (standard errors, llama-perplexity's\n"
               "estimate: ppl_se is the +/- it prints).\n\n");
    else if (!strcmp(sub, "fidelity"))
        printf("usage: heavykv eval fidelity (-f PROMPTS | --self-prompts K) [options]\n\n"
               "Runs every prompt with the full cache and with the policy and compares them.\n\n"
               "  -f, --file PATH       prompts: one per line, or JSON lines {\"prompt\": \"...\"}\n"
               "  --self-prompts K      K prompts the model generates itself from BOS (seeded sampling)\n"
               "  --prompt-len L        tokens per self-generated prompt (default 64)\n"
               "  -n, --n-gen N         tokens generated / compared per prompt (default 64)\n"
               "Metrics (means over prompts): agree (%% of positions where the policy's own greedy token equals\n"
               "the full cache's), agree_pre (%% of positions before the first divergence), top1 (%% teacher-\n"
               "forced positions with the same argmax), kl_mean / kl_max (KL(full || policy), nats), prompts, and\n"
               "the standard errors agree_se, agree_pre_se, top1_se (over prompts), kl_mean_se (over positions).\n\n");
    else if (!strcmp(sub, "mc"))
        printf("usage: heavykv eval mc -f TASK.jsonl [options]\n\n"
               "Scores each choice by the log-likelihood of its tokens after the context (the policy applies\n"
               "while the context is read, then one token per step).\n\n"
               "  -f, --file PATH       JSONL, one of:\n"
               "      {\"context\": \"...\", \"choices\": [\" a\", \" b\"], \"gold\": 0}\n"
               "      {\"request_type\": \"loglikelihood\", \"doc_id\": 7, \"context\"|\"prompt\": \"...\",\n"
               "       \"continuation\"|\"target\": \" a\", \"gold\": 0}   (one line per choice, grouped by doc_id)\n"
               "Metrics: acc, acc_norm (log-likelihood divided by the choice's length in bytes), in %%, items,\n"
               "acc_se, acc_norm_se (standard errors).\n\n");
    else
        printf("usage: heavykv eval passkey [options]\n\n"
               "Hides \"The pass key is NNNNN. Remember it.\" in filler text and asks for it at the end; the\n"
               "answer is right when the first number in 8 greedy tokens equals the key.\n\n"
               "  --lengths L1,L2,..    input lengths in tokens (default 256,512)\n"
               "  --depths D1,D2,..     needle depth in %% of the filler (default 0,25,50,75,100)\n"
               "  --trials N            keys per (length, depth) (default 5)\n"
               "Metrics: acc (all trials), acc_L<length>_D<depth> per cell, in %%.\n\n");
    printf("%s%s", common_help, cli_kv_help());
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
    if (strcmp(a, "--kv-policy") && strcmp(a, "--kv-budget") && strcmp(a, "--kv-positions")) return 0;
    if (!(v = cli_value(argc, argv, i))) return -1;
    char items[MAX_GRID][24];
    int n = split_list(a, v, items, 24), is_pol = !strcmp(a, "--kv-policy");
    if (n < 0) return -1;
    if (!strcmp(a, "--kv-positions")) { /* original,cache: both position modes, cache rows labelled NAME+cache */
        if (n > 2) return cli_error("--kv-positions: at most original,cache"), -1;
        for (int k = 0; k < n; k++) {
            if (strcmp(items[k], "original") && strcmp(items[k], "cache"))
                return cli_error("--kv-positions expects 'original' or 'cache', got '%s'", items[k]), -1;
            o->posm[k] = !strcmp(items[k], "cache");
        }
        o->n_posm = n;
        return 1;
    }
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
    const char *names = !strcmp(sub, "ppl") ? ",ppl,nll,tokens,ppl_se,nll_se," : !strcmp(sub, "fidelity")
                        ? ",agree,agree_pre,top1,kl_mean,kl_max,prompts,agree_se,agree_pre_se,top1_se,kl_mean_se,"
                        : !strcmp(sub, "mc") ? ",acc,acc_norm,items,acc_se,acc_norm_se," : ",acc,";
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
        else if (!strcmp(a, "--jsonl")) { VAL(); o->jsonl = v; }
        else if (!strcmp(a, "--resume")) o->resume = 1;
        else if (!strcmp(a, "--bos") || !strcmp(a, "--no-bos")) o->bos = a[2] == 'b' ? EVAL_BOS_ADD : EVAL_BOS_NONE;
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
            else if (!strcmp(v, "llama")) o->ppl.mode = EVAL_PPL_LLAMA;
            else return cli_error("--mode expects stream, chunked, forward or llama, got '%s'", v);
        } else if (!strcmp(a, "--window") && !strcmp(o->sub, "ppl")) INT(2, 1 << 24, &o->ppl.window);
        else if (!strcmp(a, "--stride") && !strcmp(o->sub, "ppl")) INT(1, 1 << 24, &o->ppl.stride);
        else if (!strcmp(a, "--chunks") && !strcmp(o->sub, "ppl")) INT(1, 1 << 24, &o->ppl.chunks);
        else if (!strcmp(a, "--bins") && !strcmp(o->sub, "ppl")) INT(1, 1 << 24, &o->ppl.bins);
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
    if (o->ppl.bins && (o->ppl.mode != EVAL_PPL_STREAM || o->forward))
        return cli_error("--bins needs --mode stream (one token per step)");
    if (!known_metric(o->sub, o->metric)) return cli_error("--metric: eval %s has no metric '%s'", o->sub, o->metric);
    if (o->pk.n_lengths * o->pk.n_depths > EVAL_PASSKEY_MAX_CELLS)
        return cli_error("passkey: at most %d (length, depth) cells", EVAL_PASSKEY_MAX_CELLS);
    if (!strcmp(o->sub, "mc") && !o->file) return cli_error("eval mc needs a task file (-f TASK.jsonl)");
    if ((!strcmp(o->sub, "ppl") || !strcmp(o->sub, "fidelity")) && !o->file == !o->self_prompts)
        return cli_error("eval %s needs exactly one of -f FILE and --self-prompts K", o->sub);
    if (o->resume && !o->csv && !o->jsonl) return cli_error("--resume needs --csv FILE or --jsonl FILE (the rows to keep)");
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

/* ---------------------------------------------------------------- progress line */

/* One line on stderr (a terminal only), redrawn at most 10 times a second: the row being computed out of the
 * rows this run computes, its own bar and ETA, and the ETA of the whole sweep. */
typedef struct progress {
    char label[48];
    double t0, last;      /* start of this row, last redraw */
    int row, n_rows;      /* 1-based row being computed; rows this run computes */
    double rows_time;     /* seconds spent on the rows already finished (row - 1 of them) */
    int drawn;
} progress;

static void fmt_eta(char *buf, size_t len, double s) {
    int t = s > 0 && s < 1e8 ? (int)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, len, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%d:%02d", t / 60, t % 60);
}

static void progress_cb(void *ud, long done, long total) {
    progress *p = ud;
    double now = hkv_time_sec();
    if (done < total && now - p->last < 0.1) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? done / el : 0, eta = rate > 0 ? (total - done) / rate : 0;
    /* rows still to come take as long as the finished ones did on average (this one's estimate at first) */
    double per_row = p->row > 1 ? p->rows_time / (p->row - 1) : el + eta;
    double total_eta = eta + per_row * (p->n_rows - p->row);
    int width = 24, fill = total > 0 ? (int)(width * done / total) : 0;
    char bar[32], e1[16], e2[16];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fmt_eta(e1, sizeof e1, eta);
    fmt_eta(e2, sizeof e2, total_eta);
    fprintf(stderr, "\r\033[Krow %d/%d %-18s [%s] %3d%% %ld/%ld ETA %s | sweep ETA %s ", p->row, p->n_rows, p->label,
            bar, total > 0 ? (int)(100 * done / total) : 0, done, total, e1, e2);
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
    /* ppl over several texts: the per-token sums (and sums of squares, for the standard error) add up. */
    double sum = 0, sum2 = 0, tokens = 0, budget = 0;
    eval_metrics one;
    for (int i = 0; i < d->texts.n; i++) {
        eval_ppl_opts po = o->ppl;
        if (o->forward) po.window = po.stride = d->texts.len[i];
        hkv_status st = eval_ppl(env, &po, d->texts.toks[i], d->texts.len[i], &one, err, errlen);
        if (st) return st;
        double t = eval_metrics_get(&one, "tokens"), nll = eval_metrics_get(&one, "nll"), se = eval_metrics_get(&one, "nll_se");
        sum += nll * t;
        sum2 += (se * se * (t - 1) + nll * nll) * t;   /* inverts eval_ppl_metrics' variance */
        tokens += t;
        budget += one.budget_tokens;
    }
    eval_ppl_metrics(m, sum, sum2, (long)tokens, budget / d->texts.n);
    if (d->texts.n == 1) /* one text: its --bins metrics carry over */
        for (int k = 0; k < one.n; k++)
            if (!strncmp(one.names[k], "ppl@", 4)) eval_metrics_add(m, one.names[k], one.values[k]);
    return HKV_OK;
}

/* The per-row outputs of a sweep (--csv, --jsonl): rows are appended and flushed as they finish, so an
 * interrupted sweep keeps every finished row and --resume can skip them. */
typedef struct sweep_out {
    FILE *csv, *jsonl;
    int csv_header;         /* the CSV already has its header line */
    eval_metrics names;     /* its metric names (a resumed CSV's header) */
} sweep_out;

/* Appends a row to --csv / --jsonl and flushes. */
static int out_row(const eval_opts *o, sweep_out *so, const eval_row *r) {
    if (so->csv) {
        if (!so->csv_header) { eval_write_csv_header(so->csv, &r->m); so->names = r->m; so->csv_header = 1; }
        int same = so->names.n == r->m.n;
        for (int k = 0; same && k < r->m.n; k++) same = !strcmp(so->names.names[k], r->m.names[k]);
        if (!same) return cli_error("'%s' has other columns than this sweep's rows (another subcommand or other "
                                    "options?); give a new file or drop --resume", o->csv);
        eval_write_csv_row(so->csv, r);
        if (fflush(so->csv) || ferror(so->csv)) return cli_error("cannot write '%s'", o->csv);
    }
    if (so->jsonl) {
        eval_write_jsonl_row(so->jsonl, r);
        if (fflush(so->jsonl) || ferror(so->jsonl)) return cli_error("cannot write '%s'", o->jsonl);
    }
    return 0;
}

/* Reads the rows a previous run left in path (CSV or JSONL); a missing file is an empty sweep. */
static int read_done(const char *path, int jsonl, eval_row **done, int *n_done) {
    *done = NULL;
    *n_done = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    char *text = cli_read_file(path, NULL), err[256];
    if (!text) return 1;
    hkv_status st = jsonl ? eval_read_jsonl(text, done, n_done, err, sizeof err)
                          : eval_read_csv(text, done, n_done, err, sizeof err);
    free(text);
    if (st) return cli_error("--resume: %s: %s", path, err);
    return 0;
}

/* Opens --csv / --jsonl. With --resume the rows already there are kept (read into *done) and the files are
 * rewritten with exactly those rows, which drops a line cut short by a kill; otherwise they are truncated. */
static int open_outputs(const eval_opts *o, sweep_out *so, eval_row **done, int *n_done) {
    memset(so, 0, sizeof *so);
    *done = NULL;
    *n_done = 0;
    if (o->resume && read_done(o->csv ? o->csv : o->jsonl, !o->csv, done, n_done)) return 1;
    if (o->csv && !(so->csv = fopen(o->csv, "w"))) return cli_error("cannot write '%s'", o->csv);
    if (o->jsonl && !(so->jsonl = fopen(o->jsonl, "w"))) return cli_error("cannot write '%s'", o->jsonl);
    for (int i = 0; i < *n_done; i++)
        if (out_row(o, so, &(*done)[i])) return 1;
    return 0;
}

static int close_outputs(const eval_opts *o, sweep_out *so) {
    int rc = 0;
    if (so->csv && fclose(so->csv)) rc = cli_error("cannot write '%s'", o->csv);
    if (so->jsonl && fclose(so->jsonl)) rc = cli_error("cannot write '%s'", o->jsonl);
    so->csv = so->jsonl = NULL;
    return rc;
}

/* Test hook (documented in the README): HEAVYKV_EVAL_KILL_AFTER_ROWS=N kills the process with SIGKILL right
 * after the N-th computed row was written, the way an interrupted sweep ends. */
static void kill_hook(int computed) {
    const char *v = getenv("HEAVYKV_EVAL_KILL_AFTER_ROWS");
    if (v && *v && atoi(v) == computed) raise(SIGKILL);
}

static int find_row(const eval_row *rows, int n, const char *policy, const char *budget) {
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].policy, policy) && !strcmp(rows[i].budget, budget)) return i;
    return -1;
}

/* 0 for a "full" row, 1 for "full+cache", -1 for other policies: full is measured once per position mode. */
static int full_mode(const char *label) {
    return !strcmp(label, "full") ? 0 : !strcmp(label, "full+cache") ? 1 : -1;
}

static int run_grid(const eval_opts *o, hkv_model *model, const eval_data *d, eval_row *rows, int *n_rows) {
    int n_bud = o->n_bud ? o->n_bud : 1;
    eval_row *done;
    int n_done, rc = 0;
    sweep_out so;
    if (open_outputs(o, &so, &done, &n_done)) { close_outputs(o, &so); free(done); return 1; }
    /* The grid: policy x budget. Rows found in the resumed file are taken as they are; `full` ignores the
     * budget, so it is measured once (or taken from the file) and repeated: the flat baseline of the plot. */
    int need[MAX_GRID * MAX_GRID * 2], n_need = 0, n_taken = 0, full_src[2] = {-1, -1};
    int n_posm = o->n_posm ? o->n_posm : 1;
    *n_rows = 0;
    for (int pm = 0; pm < n_posm && !rc; pm++)
    for (int p = 0; p < o->n_pol && !rc; p++)
        for (int b = 0; b < n_bud && !rc; b++) {
            eval_row *r = &rows[*n_rows];
            memset(r, 0, sizeof *r);
            /* with --kv-positions original,cache the cache rows are named NAME+cache */
            snprintf(r->policy, sizeof r->policy, "%.9s%s", o->pol[p], n_posm > 1 && o->posm[pm] ? "+cache" : "");
            snprintf(r->budget, sizeof r->budget, "%s", o->n_bud ? o->bud[b] : "-");
            r->budget_pct = NAN;
            if (o->n_bud) {
                hkv_amount a;
                char err[256];
                if (hkv_amount_parse(o->bud[b], &a, err, sizeof err)) rc = cli_error("--kv-budget: %s", err);
                else if (a.is_ratio) r->budget_pct = 100.0 * a.value;
            }
            int k = find_row(done, n_done, r->policy, r->budget);
            need[*n_rows] = k < 0;
            if (k >= 0) {
                r->m = done[k].m;
                n_taken++;
                if (full_mode(r->policy) >= 0) full_src[full_mode(r->policy)] = *n_rows;
            }
            (*n_rows)++;
        }
    for (int i = 0; i < *n_rows; i++) {
        int fm = full_mode(rows[i].policy);
        if (need[i] && fm >= 0) {
            if (full_src[fm] >= 0) need[i] = 2; /* 2: copy rows[full_src] */
            else full_src[fm] = i;              /* measured here, before the later full rows */
        }
        n_need += need[i] == 1;
    }
    progress pg = {0};
    eval_env env = {.model = model, .n_ctx = o->n_ctx, .n_threads = o->n_threads, .bos = o->bos};
    if (!o->quiet && isatty(2)) { env.progress = progress_cb; env.progress_ud = &pg; }
    pg.n_rows = n_need;
    int computed = 0;
    for (int i = 0; i < *n_rows && !rc; i++) {
        eval_row *r = &rows[i];
        if (!need[i]) continue;
        if (need[i] == 2) {
            r->m = rows[full_src[full_mode(r->policy)]].m;
            rc = out_row(o, &so, r);
            continue;
        }
        env.kv = o->kv;
        snprintf(env.kv.policy, sizeof env.kv.policy, "%s", r->policy);
        char *plus = strchr(env.kv.policy, '+');
        if (plus) *plus = 0; /* NAME+cache */
        if (o->n_posm) env.kv.positions_cache = plus != NULL || (o->n_posm == 1 && o->posm[0]);
        if (o->n_bud) {
            char err[256];
            hkv_amount_parse(r->budget, &env.kv.budget, err, sizeof err); /* validated above */
        }
        snprintf(pg.label, sizeof pg.label, "%s %s", r->policy, r->budget);
        pg.row = computed + 1;
        pg.t0 = pg.last = hkv_time_sec();
        char err[512];
        hkv_status st = run_one(o, &env, d, &r->m, err, sizeof err);
        pg.rows_time += hkv_time_sec() - pg.t0;
        progress_clear(&pg);
        if (st) { rc = cli_error("%s (policy %s, budget %s)", err, r->policy, r->budget); break; }
        computed++;
        if ((rc = out_row(o, &so, r))) break;
        kill_hook(computed);
    }
    if (close_outputs(o, &so)) rc = 1;
    if (o->resume)
        fprintf(stderr, "eval: %d row(s) computed, %d taken from '%s' (--resume)\n", computed, n_taken,
                o->csv ? o->csv : o->jsonl);
    free(done);
    return rc;
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
    int rc = 0, add_bos = o->bos == EVAL_BOS_ADD ? 1 : o->bos == EVAL_BOS_NONE ? 0 : -1;
    if (strspn(text, " \t\r\n") == len) rc = cli_error("'%s' is empty", o->file);
    else if (strlen(text) != len) rc = cli_error("'%s' contains NUL bytes (not a text file)", o->file);
    else if (!strcmp(o->sub, "mc")) {
        if (eval_mc_parse(text, &d->mc, err, sizeof err)) rc = cli_error("%s: %s", o->file, err);
    } else if (!strcmp(o->sub, "fidelity")) {
        if (eval_prompts_parse(m, text, add_bos, &d->texts, err, sizeof err)) rc = cli_error("%s: %s", o->file, err);
    } else { /* ppl: the whole file is one text */
        int cap = (int)len + 16;
        int32_t *t = malloc(sizeof *t * (size_t)cap);
        int n = t ? hkv_tokenize(m, text, add_bos, 0, t, cap) : -1;
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

/* The longest sequence (in positions) one evaluation feeds the model; 0 when unknown. */
static long eval_length(const eval_opts *o, const hkv_model_info *mi, const eval_data *d) {
    long longest = 0;
    for (int i = 0; i < d->texts.n; i++) longest = d->texts.len[i] > longest ? d->texts.len[i] : longest;
    int n_ctx = o->n_ctx ? o->n_ctx : mi->n_ctx_default;
    if (!strcmp(o->sub, "ppl")) {
        if (o->ppl.mode == EVAL_PPL_STREAM || o->forward) return longest;
        if (o->ppl.mode == EVAL_PPL_LLAMA) return n_ctx;
        long w = o->ppl.window > 0 ? o->ppl.window : n_ctx;
        return w < longest ? w : longest;
    }
    if (!strcmp(o->sub, "fidelity")) return longest + o->n_gen;
    if (!strcmp(o->sub, "passkey")) {
        for (int i = 0; i < o->pk.n_lengths; i++) longest = o->pk.lengths[i] > longest ? o->pk.lengths[i] : longest;
        return longest;
    }
    return 0;
}

/* A model asked to read past its trained context extrapolates: say so, the numbers then measure that. */
static void warn_trained_context(const eval_opts *o, hkv_model *m, const eval_data *d) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    long n = eval_length(o, &mi, d);
    if (mi.n_ctx_train > 0 && n > mi.n_ctx_train)
        fprintf(stderr, "heavykv: warning: eval %s feeds sequences of up to %ld tokens, more than the %d the model "
                "was trained on (its GGUF context_length): the results measure extrapolation beyond it\n", o->sub, n,
                mi.n_ctx_train);
}

/* "model X | data Y | N tokens" for the plot. */
static void describe_run(const eval_opts *o, const eval_data *d, char *buf, size_t len) {
    const char *mb = strrchr(o->model, '/'), *db = o->file ? strrchr(o->file, '/') : NULL;
    mb = mb ? mb + 1 : o->model;
    db = db ? db + 1 : o->file;
    long tokens = 0;
    for (int i = 0; i < d->texts.n; i++) tokens += d->texts.len[i];
    char data[96];
    if (o->self_prompts) snprintf(data, sizeof data, "%d self-generated texts", o->self_prompts);
    else if (!strcmp(o->sub, "passkey")) snprintf(data, sizeof data, "passkey prompts x %d trials", o->pk.trials);
    else snprintf(data, sizeof data, "%.60s", db ? db : "-");
    if (!strcmp(o->sub, "mc")) snprintf(buf, len, "model %.60s | data %s | %d questions", mb, data, d->mc.n);
    else if (tokens) snprintf(buf, len, "model %.60s | data %s | %ld tokens", mb, data, tokens);
    else snprintf(buf, len, "model %.60s | data %s", mb, data);
}

static int write_reports(const eval_opts *o, const eval_data *d, const eval_row *rows, int n) {
    eval_write_table(stdout, rows, n);
    struct { const char *path; int kind; } outs[2] = {{o->json, 1}, {o->svg, 2}};
    for (int k = 0; k < 2; k++) {
        if (!outs[k].path) continue;
        FILE *f = fopen(outs[k].path, "w");
        if (!f) return cli_error("cannot write '%s'", outs[k].path);
        char err[512], title[128], sub[256];
        hkv_status st = HKV_OK;
        if (outs[k].kind == 1) eval_write_json(f, o->sub, rows, n);
        else if (o->ppl.bins) {
            snprintf(title, sizeof title, "heavykv eval ppl --mode stream: perplexity per %d positions", o->ppl.bins);
            describe_run(o, d, sub, sizeof sub);
            st = eval_write_position_svg(f, title, sub, rows, n, err, sizeof err);
        } else {
            snprintf(title, sizeof title, "heavykv eval %s: %s vs KV budget", o->sub, o->metric);
            describe_run(o, d, sub, sizeof sub);
            st = eval_write_svg(f, title, sub, o->metric, rows, n, err, sizeof err);
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
    eval_row *rows = malloc(sizeof *rows * MAX_GRID * MAX_GRID * 2);
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
    if (!r && !rc) warn_trained_context(o, m, &d);
    int n_rows = 0;
    if (!r && !rc) rc = run_grid(o, m, &d, rows, &n_rows);
    if (!r && !rc) rc = write_reports(o, &d, rows, n_rows);
    eval_prompts_free(&d.texts);
    eval_mc_free(&d.mc);
    if (m) hkv_model_free(m);
    free(rows);
    free(o);
    return rc;
}
