/* Hardening regressions: malformed flags, files and API calls must give a one-sentence error on stderr and a
 * non-zero exit (CLI) or an error status (library) — never a crash, a sanitizer report or exit code 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "gguf.h"
#include "heavykv.h"
#include "testutil.h"

/* Runs the CLI with args; stderr goes into err, stdout into out (both may be NULL). Returns the exit code,
 * or 128 + signal, or -1. */
static int cli2(const char *args, char *out, size_t outlen, char *err, size_t errlen) {
    char cmd[4096];
    const char *ef = tu_tmp("stderr.txt"), *of = tu_tmp("stdout.txt");
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", HKV_CLI_PATH, args, of, ef);
    int st = system(cmd);
    int rc = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    char *o = tu_read_file(of, NULL), *e = tu_read_file(ef, NULL);
    if (out) snprintf(out, outlen, "%s", o ? o : "");
    if (err) snprintf(err, errlen, "%s", e ? e : "");
    free(o);
    free(e);
    return rc;
}

/* The CLI must fail with exactly one "heavykv: error:" line on stderr containing `want`, nothing on stdout
 * that looks like an error, and no sanitizer report. */
static void expect_error(const char *args, const char *want) {
    char out[8192], err[8192];
    int rc = cli2(args, out, sizeof out, err, sizeof err);
    CHECKF(rc == 1, "'%s': exit code %d (want 1); stderr: %s", args, rc, err);
    const char *nl = strchr(err, '\n');
    CHECKF(!strncmp(err, "heavykv: error: ", 16) && nl && !nl[1], "'%s': stderr is not one error line: %s", args, err);
    CHECKF(!want || strstr(err, want), "'%s': stderr lacks '%s': %s", args, want, err);
    CHECKF(!strstr(out, "error"), "'%s': an error on stdout: %s", args, out);
}

static void test_bench(const char *model) {
    char a[1024];
    /* the prompt does not fit: the error, not a NULL-logits crash */
    snprintf(a, sizeof a, "bench -m '%s' -c 10 -p 20 -n 1", model);
    expect_error(a, "context length 10");
    /* comma lists: empty items and bad values are rejected before anything runs (they used to be skipped,
     * and an empty list measured nothing with exit code 0) */
    const char *lists[][2] = {{"-b ''", "--batch"}, {"-b 1,,2", "--batch"}, {"-b 1,", "--batch"},
                              {"--kv-policy ,", "--kv-policy"}, {"--kv-policy full,bogus", "bogus"},
                              {"--kv-budget ''", "--kv-budget"}, {"--kv-budget 20%,,4", "--kv-budget"}};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        snprintf(a, sizeof a, "bench -m '%s' -p 4 -n 1 %s", model, lists[i][0]);
        expect_error(a, lists[i][1]);
    }
}

static void test_tokenizer_files(void) {
    char a[1024], d[512];
    /* a directory as tokenizer.json: fopen succeeds and ftell reports LONG_MAX (malloc of 2^63 bytes) */
    snprintf(d, sizeof d, "%s", tu_tmp("dir"));
    mkdir(d, 0700);
    snprintf(a, sizeof a, "tokenize --tokenizer '%s' -p hi", d);
    expect_error(a, "cannot read");
    snprintf(a, sizeof a, "detokenize --tokenizer '%s' -p 1", d);
    expect_error(a, "cannot read");
    rmdir(d);
}

/* A prompt of P tokens in a context of C >= P generates C - P + 1 tokens: the last one is sampled from the
 * logits and never decoded. It used to refuse P == C and stop one token early. */
static void test_run_context_limit(const char *model) {
    const char *prompt = "Once upon a time there was a little girl named Lily who liked to play";
    char a[1024], out[4096], err[4096];
    snprintf(a, sizeof a, "tokenize -m '%s' -p '%s' --add-bos --ids", model, prompt);
    CHECK(cli2(a, out, sizeof out, err, sizeof err) == 0);
    int n = 1;
    for (const char *p = out; *p; p++) n += *p == ',';
    for (int extra = 0; extra < 3; extra++) {
        snprintf(a, sizeof a, "run -m '%s' -p '%s' -c %d -n 10 --temp 0 --ignore-eos -t 1", model, prompt, n + extra);
        int rc = cli2(a, out, sizeof out, err, sizeof err), got = -1;
        const char *g = strstr(err, "generation: ");
        if (g) sscanf(g, "generation: %d", &got);
        CHECKF(rc == 0 && got == extra + 1, "-c %d with a %d-token prompt: rc %d, %d tokens: %s", n + extra, n, rc, got, err);
    }
    snprintf(a, sizeof a, "run -m '%s' -p '%s' -c %d", model, prompt, n - 1);
    expect_error(a, "does not fit the context length");
}

static void test_cli_misc(void) {
    expect_error("eval", "needs a subcommand");   /* was: usage on stdout, exit 1, no message */
    char a[1024], d[512];
    snprintf(a, sizeof a, "run -m '%s' -p '' --no-bos", tu_model());
    expect_error(a, "--no-bos");                   /* was: "the model has no BOS token" (it has one) */
    snprintf(d, sizeof d, "%s", tu_tmp("pdir"));
    mkdir(d, 0700);
    snprintf(a, sizeof a, "run -m '%s' -f '%s'", tu_model(), d);
    expect_error(a, "Is a directory");             /* was: "cannot read" without the reason */
    rmdir(d);
    /* a non-integer gold index is named as such, not as missing */
    const char *task = tu_tmp("task.jsonl");
    FILE *f = fopen(task, "w");
    if (f) { fputs("{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": 0.5}\n", f); fclose(f); }
    snprintf(a, sizeof a, "eval mc -m '%s' -f '%s' -q", tu_model(), task);
    expect_error(a, "\"gold\" must be an integer");
    remove(task);
    /* conflicting sources used to be resolved silently (one of them ignored) */
    snprintf(a, sizeof a, "tokenize -m '%s' --tokenizer '%s' -p hi", tu_model(), tu_shared("tokenizers/llama3/tokenizer.json"));
    expect_error(a, "not both");
    snprintf(a, sizeof a, "detokenize -m '%s' -p 1 -f '%s'", tu_model(), tu_model());
    expect_error(a, "not both");
    snprintf(a, sizeof a, "run -m '%s' -p hi -f '%s'", tu_model(), tu_model());
    expect_error(a, "not both");
}

static hkv_context *ctx_with(hkv_model *m, const char *policy, const char *budget, const char *heavy,
                             const char *recent, const char *sink, int replace, int simulate, int n_ctx, int n_seq) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_seq = n_seq;
    cp.n_threads = 1;
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "%s", policy);
    char err[256];
    if (budget) hkv_amount_parse(budget, &cp.kv.budget, err, sizeof err);
    if (heavy) hkv_amount_parse(heavy, &cp.kv.heavy, err, sizeof err);
    if (recent) hkv_amount_parse(recent, &cp.kv.recent, err, sizeof err);
    if (sink) hkv_amount_parse(sink, &cp.kv.sink, err, sizeof err);
    cp.kv.replace_order = replace;
    cp.kv.simulate = simulate;
    hkv_context *c = NULL;
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) return NULL;
    return c;
}

/* FlexGen replace order: the incoming token is the newest for the recent window. Measuring the window from
 * the previous token protected every kept token when heavy = 0, and the decode failed with "cache full". */
static void test_replace_order(hkv_model *m) {
    const char *cfg[][5] = {{"h2o", "4", "0", "2", "2"}, {"h2o", "4", "0", NULL, NULL}, {"h2o", "3", NULL, NULL, NULL},
                            {"tova", "4", NULL, NULL, "2"}, {"sink", "4", NULL, NULL, NULL}, {"window", "3", NULL, NULL, NULL}};
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++)
        for (int sim = 0; sim < 2; sim++) {
            hkv_context *c = ctx_with(m, cfg[k][0], cfg[k][1], cfg[k][2], cfg[k][3], cfg[k][4], 1, sim, 64, 1);
            CHECKF(c != NULL, "context %s %s", cfg[k][0], cfg[k][1]);
            if (!c) continue;
            hkv_budget b = hkv_context_budget(c);
            hkv_status st = HKV_OK;
            for (int32_t t = 0; t < 30 && !st; t++) {
                int32_t tok = 1 + (t * 7) % 500;
                st = hkv_decode(c, 0, &tok, 1);
                int32_t pos[64];
                int n = hkv_kv_positions(c, 0, 0, 0, pos, 64);
                CHECKF(n >= 1 && n <= b.total && pos[n - 1] == t, "%s: step %d keeps %d tokens", cfg[k][0], t, n);
                /* the last `recent` positions are all kept */
                for (int r = 0; r < b.recent && t - r >= 0 && n - 1 - r >= 0; r++) CHECK(pos[n - 1 - r] == t - r);
            }
            CHECKF(st == HKV_OK, "%s budget %s heavy %s replace%s: %s", cfg[k][0], cfg[k][1], cfg[k][2] ? cfg[k][2] : "-",
                   sim ? " simulate" : "", hkv_last_error(c));
            hkv_context_free(c);
        }
    /* a budget that is all sink leaves the replace order no slot: rejected up front */
    CHECK(ctx_with(m, "h2o", "4", NULL, NULL, "4", 1, 0, 64, 1) == NULL);
    CHECK(ctx_with(m, "tova", "4", NULL, NULL, "4", 1, 0, 64, 1) == NULL);
    hkv_context *c = ctx_with(m, "h2o", "4", NULL, NULL, "4", 0, 0, 64, 1); /* fine in the append order */
    CHECK(c != NULL);
    hkv_context_free(c);
}

/* ---- malformed model metadata, written with the GGUF writer from stories260K */

static int skip_kv_heads(const char *key) { return !strcmp(key, "llama.attention.head_count_kv"); }

/* Copies the model with `skip` keys dropped, then lets add() write extra keys; returns the load status. */
static hkv_status load_variant(const gguf_file *src, int (*skip)(const char *), void (*add)(gguf_writer *),
                               char *err, size_t errlen) {
    gguf_writer *w = gguf_writer_new();
    gguf_w_copy_kv(w, src, skip);
    add(w);
    for (uint64_t i = 0; i < src->n_tensors; i++) {
        const gguf_tensor *t = &src->tensors[i];
        char name[128];
        gguf_str_copy(t->name, name, sizeof name);
        gguf_w_tensor(w, name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
    }
    const char *path = tu_tmp("variant.gguf");
    hkv_status st = gguf_writer_write(w, path, err, errlen);
    gguf_writer_free(w);
    if (st) return st;
    hkv_model *m = NULL;
    st = hkv_model_load(path, NULL, &m, err, errlen);
    hkv_model_free(m);
    remove(path);
    return st;
}

static void add_nothing(gguf_writer *w) { (void)w; }
/* 2^32 + 4 used to be truncated to 4 and accepted */
static void add_kv_heads_huge(gguf_writer *w) { gguf_w_u64(w, "llama.attention.head_count_kv", (1ull << 32) + 4); }
static void add_key_length_huge(gguf_writer *w) { gguf_w_u64(w, "llama.attention.key_length", (1ull << 32) + 8); }
static void add_rot_huge(gguf_writer *w) { gguf_w_u64(w, "llama.rope.dimension_count", (1ull << 32) + 8); }
static void add_theta_inf(gguf_writer *w) { gguf_w_f32(w, "llama.rope.freq_base", INFINITY); }
/* low == high: the llama3 smoothing divided by zero and gave NaN frequencies */
static void add_llama3_bad(gguf_writer *w) {
    gguf_w_str(w, "llama.rope.scaling.type", "llama3");
    gguf_w_f32(w, "llama.rope.scaling.factor", 8.0f);
    gguf_w_f32(w, "llama.rope.scaling.low_freq_factor", 2.0f);
    gguf_w_f32(w, "llama.rope.scaling.high_freq_factor", 2.0f);
}
static void add_llama3_good(gguf_writer *w) {
    gguf_w_str(w, "llama.rope.scaling.type", "llama3");
    gguf_w_f32(w, "llama.rope.scaling.factor", 8.0f);
    gguf_w_f32(w, "llama.rope.scaling.low_freq_factor", 1.0f);
    gguf_w_f32(w, "llama.rope.scaling.high_freq_factor", 4.0f);
}

static void test_model_metadata(const char *model) {
    char err[512];
    gguf_file *g;
    CHECKF(gguf_open(model, &g, err, sizeof err) == HKV_OK, "%s", err);
    if (!g) return;
    CHECKF(load_variant(g, NULL, add_nothing, err, sizeof err) == HKV_OK, "the unchanged copy: %s", err);
    CHECKF(load_variant(g, NULL, add_llama3_good, err, sizeof err) == HKV_OK, "llama3 scaling: %s", err);
    struct { int (*skip)(const char *); void (*add)(gguf_writer *); const char *want; } bad[] = {
        {skip_kv_heads, add_kv_heads_huge, "head_count_kv"}, {NULL, add_key_length_huge, "key_length"},
        {NULL, add_rot_huge, "dimension_count"}, {NULL, add_theta_inf, "freq_base"}, {NULL, add_llama3_bad, "scaling"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hkv_status st = load_variant(g, bad[i].skip, bad[i].add, err, sizeof err);
        CHECKF(st == HKV_ERR_FORMAT && strstr(err, bad[i].want), "case %zu: status %d: %s", i, st, err);
    }
    gguf_close(g);
}

/* API edges of hkv_decode / hkv_decode_batch: errors, never a crash, and the state stays usable. */
static void test_decode_edges(hkv_model *m) {
    hkv_context *c = ctx_with(m, "h2o", "2", NULL, NULL, NULL, 0, 0, 4, 2);
    CHECK(c != NULL);
    if (!c) return;
    int32_t t[5] = {1, 2, 3, 4, 5}, bad = 1 << 30;
    int seqs[3] = {0, 1, 0};
    CHECK(hkv_decode(c, 0, t, 0) == HKV_ERR_ARG);
    CHECK(hkv_decode(c, 2, t, 1) == HKV_ERR_ARG);
    CHECK(hkv_decode(c, -1, t, 1) == HKV_ERR_ARG);
    CHECK(hkv_decode(c, 0, &bad, 1) == HKV_ERR_ARG);
    CHECK(hkv_decode(c, 0, t, 5) == HKV_ERR_CONTEXT);      /* 5 > n_ctx 4 */
    CHECK(hkv_n_past(c, 0) == 0);
    CHECK(hkv_decode_batch(c, seqs, t, 0) == HKV_ERR_ARG);
    CHECK(hkv_decode_batch(c, seqs, t, 3) == HKV_ERR_ARG);  /* more than n_seq */
    CHECK(hkv_decode_batch(c, seqs + 1, t, 2) == HKV_OK);     /* sequences {1, 0} */
    CHECK(hkv_n_past(c, 0) == 1 && hkv_n_past(c, 1) == 1);
    int dup[2] = {1, 1};
    CHECK(hkv_decode_batch(c, dup, t, 2) == HKV_ERR_ARG);
    CHECK(hkv_decode(c, 0, t, 3) == HKV_OK);                  /* fills the context exactly */
    CHECK(hkv_decode(c, 0, t, 1) == HKV_ERR_CONTEXT);
    CHECK(hkv_decode_batch(c, seqs, t, 2) == HKV_ERR_CONTEXT);
    CHECK(hkv_n_past(c, 1) == 1);                             /* the failed batch changed nothing */
    CHECK(hkv_decode(c, 1, t, 3) == HKV_OK);
    CHECK(hkv_get_logits(c, 1, -1) != NULL && hkv_get_logits(c, 2, -1) == NULL);
    hkv_seq_reset(c, 0);
    CHECK(hkv_n_past(c, 0) == 0 && hkv_decode(c, 0, t, 4) == HKV_OK);
    hkv_context_free(c);
}

/* Issue 12 defect 8: -c above the training context (2048 for stories260K) needs --allow-long-context and
 * warns; the context's memory is checked before anything is allocated (-c 16777216 allocated 2.6 GB per
 * sequence before a token was read). */
static void test_long_context(const char *model, hkv_model *m) {
    char a[1024], out[4096], err[4096];
    snprintf(a, sizeof a, "run -m '%s' -p 'Once' -c 16777216 -n 1", model);
    expect_error(a, "--allow-long-context");
    snprintf(a, sizeof a, "run -m '%s' -p 'Once' -c 2049 -n 1", model);
    expect_error(a, "training context 2048");
    snprintf(a, sizeof a, "run -m '%s' -p 'Once' -c 2048 -n 1 -t 1", model);
    CHECKF(cli2(a, out, sizeof out, err, sizeof err) == 0 && !strstr(err, "warning"), "-c 2048: %s", err);
    snprintf(a, sizeof a, "run -m '%s' -p 'Once' -c 2100 -n 2 -t 1 --allow-long-context", model);
    int rc = cli2(a, out, sizeof out, err, sizeof err);
    CHECKF(rc == 0 && strstr(err, "warning: context length 2100 is above"), "--allow-long-context: rc %d: %s", rc, err);

    hkv_context_params cp = hkv_context_default_params();
    hkv_context *c = (hkv_context *)&cp;
    cp.n_threads = 1;
    cp.n_ctx = 4096;
    CHECK(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_ERR_ARG && c == NULL && strstr(err, "training"));
    cp.kv.allow_long_ctx = 1;
    CHECKF(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_OK, "%s", err);
    hkv_context_free(c);
    /* 4096 sequences of 2^24 positions with the full cache: about 60 TB, refused before allocating */
    cp.n_ctx = 1 << 24;
    cp.n_seq = 4096;
    c = (hkv_context *)&cp;
    hkv_status st = hkv_context_new(m, &cp, &c, err, sizeof err);
    CHECKF(st == HKV_ERR_NOMEM && c == NULL && strstr(err, "GiB") && strstr(err, "memory of this machine"),
           "huge context: status %d: %s", st, err);
}

int main(void) {
    const char *model = tu_model();
    test_bench(model);
    test_tokenizer_files();
    test_cli_misc();
    test_run_context_limit(model);
    test_model_metadata(model);
    char err[512];
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 1;
    hkv_model *m = NULL;
    CHECKF(hkv_model_load(model, &mp, &m, err, sizeof err) == HKV_OK, "%s", err);
    if (m) {
        test_replace_order(m);
        test_decode_edges(m);
        test_long_context(model, m);
        hkv_model_free(m);
    }
    return tu_done("hardening");
}
