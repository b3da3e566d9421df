/* Cross-engine agreement without another engine at test time. The engine's per-token log-probabilities must
 * equal, to 1e-4, those of the independent F32 reference forward pass in refmodel.c (no code shared with
 * src/context.c), and for stories260K also the committed fixture parity_fixture.h (written by that reference:
 * it pins tokenization and numbers, so a change in either shows up here). Covered:
 *   - stories260K (add_bos_token = true): BOS first, log-probs, `eval ppl --mode llama` against the
 *     reference's llama-perplexity scoring (BOS over each chunk's first token, second half scored);
 *   - a tiny synthetic Qwen-style file (qwen2 architecture, a BOS id but add_bos_token = false, as llama.cpp's
 *     Qwen2/2.5 conversions have) made with `heavykv synth`: no BOS by default in the library, `run` and
 *     `eval`, --bos / --no-bos overrides, log-probs and llama-mode perplexity without BOS.
 * HKV_PARITY_PRINT=1 prints a fresh fixture (C source) instead of testing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "heavykv.h"
#include "parity_fixture.h"
#include "refmodel.h"
#include "testutil.h"

#define TOL 1e-4
#define CHUNK 16   /* -c of the llama-mode checks */

/* log p(t[i+1] | t[0..i]) for i < n-1 from logits rows [n][nv], in double. */
static void logprobs_from(const float *logits, int nv, const int32_t *t, int n, double *lp) {
    for (int i = 0; i + 1 < n; i++) {
        const float *l = logits + (size_t)i * nv;
        double mx = l[0], s = 0;
        for (int v = 1; v < nv; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < nv; v++) s += exp((double)l[v] - mx);
        lp[i] = (double)l[t[i + 1]] - mx - log(s);
    }
}

static void ref_logprobs(const ref_model *r, const int32_t *t, int n, double *lp) {
    float *logits = malloc(sizeof(float) * (size_t)n * r->n_vocab);
    ref_forward(r, t, n, logits);
    logprobs_from(logits, r->n_vocab, t, n, lp);
    free(logits);
}

/* The engine's log-probs: the whole sequence in one hkv_decode (step = 0) or one token per call. F32 K/V so
 * that storage rounding does not blur the comparison. */
static int engine_logprobs(hkv_model *m, const int32_t *t, int n, int step, double *lp) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = n;
    cp.logits_all = 1;
    cp.kv.type = HKV_KV_F32;
    hkv_context *c;
    char err[256];
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 0; }
    float *logits = malloc(sizeof(float) * (size_t)n * mi.n_vocab);
    int ok = 1;
    if (!step) {
        ok = hkv_decode(c, 0, t, n) == HKV_OK;
        for (int i = 0; ok && i < n; i++) memcpy(logits + (size_t)i * mi.n_vocab, hkv_get_logits(c, 0, i), sizeof(float) * mi.n_vocab);
    } else
        for (int i = 0; ok && i < n; i++) {
            ok = hkv_decode(c, 0, t + i, 1) == HKV_OK;
            if (ok) memcpy(logits + (size_t)i * mi.n_vocab, hkv_get_logits(c, 0, -1), sizeof(float) * mi.n_vocab);
        }
    if (ok) logprobs_from(logits, mi.n_vocab, t, n, lp);
    free(logits);
    hkv_context_free(c);
    return ok;
}

static double max_diff(const double *a, const double *b, int n) {
    double d = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

/* llama-perplexity's mean NLL over the reference: chunks of CHUNK, BOS over the first token when add_bos,
 * tokens CHUNK/2+1 .. CHUNK-1 scored. */
static double ref_llama_nll(const ref_model *r, const int32_t *t, int n, int add_bos, int32_t bos, long *count) {
    double sum = 0, lp[CHUNK];
    *count = 0;
    for (int i = 0; i < n / CHUNK; i++) {
        int32_t chunk[CHUNK];
        memcpy(chunk, t + i * CHUNK, sizeof chunk);
        if (add_bos) chunk[0] = bos;
        ref_logprobs(r, chunk, CHUNK, lp);
        for (int k = CHUNK / 2; k < CHUNK - 1; k++, (*count)++) sum -= lp[k];
    }
    return sum / *count;
}

/* `heavykv eval ppl --mode llama -c CHUNK` on text (a file); returns the nll column of its CSV (NAN on failure). */
static double cli_llama_nll(const char *model, const char *text, const char *extra, long *tokens) {
    static char out[8192];
    char args[2048];
    const char *txt = tu_tmp("parity.txt"), *csv = tu_tmp("parity.csv");
    FILE *f = fopen(txt, "w");
    fputs(text, f);
    fclose(f);
    snprintf(args, sizeof args, "eval ppl -m '%s' -f '%s' --mode llama -c %d --kv-type f32 -q --csv '%s' %s", model,
             txt, CHUNK, csv, extra);
    int rc = tu_cli(args, out, sizeof out);
    CHECKF(rc == 0, "%s: %s", args, out);
    char *c = tu_read_file(csv, NULL);
    double nll = NAN, ppl, tok;
    /* policy,budget,budget_tokens,ppl,nll,tokens,... */
    const char *row = c ? strchr(c, '\n') : NULL;
    if (row && sscanf(row + 1, "full,-,%*[^,],%lf,%lf,%lf", &ppl, &nll, &tok) == 3) *tokens = (long)tok;
    free(c);
    remove(txt);
    remove(csv);
    return nll;
}

/* The prompt token count `heavykv run` reports on stderr ("prompt: N tokens"); -1 if absent. */
static int run_prompt_tokens(const char *model, const char *flags) {
    static char out[8192];
    char args[1024];
    snprintf(args, sizeof args, "run -m '%s' -p 'Once upon a time' -n 2 --temp 0 %s", model, flags);
    if (tu_cli(args, out, sizeof out) != 0) return -1;
    const char *p = strstr(out, "prompt: ");
    return p ? atoi(p + 8) : -1;
}

static int open_ref(const char *path, gguf_file **g, ref_model *r) {
    char err[256];
    if (gguf_open(path, g, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 0; }
    return ref_load(*g, r);
}

static void print_fixture(hkv_model *m, const ref_model *r) {
    int32_t t[512];
    int n = hkv_tokenize(m, FX_TEXT, -1, 0, t, 512);
    double *lp = malloc(sizeof(double) * (size_t)n);
    ref_logprobs(r, t, n, lp);
    printf("/* Written by `HKV_PARITY_PRINT=1 ./test_parity` (tests/test_parity.c) with the F32 reference in\n"
           " * tests/refmodel.c: stories260K.gguf (sha256 270cba1b...), FX_TEXT tokenized with the model's default\n"
           " * (BOS first), fx_logprob[i] = log p(fx_tokens[i+1] | fx_tokens[0..i]). */\n"
           "#define FX_TEXT \"%s\"\n#define FX_N %d\nstatic const int32_t fx_tokens[FX_N] = {", FX_TEXT, n);
    for (int i = 0; i < n; i++) printf("%s%s%d", i ? "," : "", i % 16 ? " " : "\n    ", t[i]);
    printf("\n};\nstatic const double fx_logprob[FX_N - 1] = {");
    for (int i = 0; i + 1 < n; i++) printf("%s%s%.9f", i ? "," : "", i % 6 ? " " : "\n    ", lp[i]);
    printf("\n};\n");
    free(lp);
}

static void test_stories(void) {
    hkv_model *m;
    char err[256];
    gguf_file *g = NULL;
    ref_model r;
    if (hkv_model_load(tu_model(), NULL, &m, err, sizeof err) || !open_ref(tu_model(), &g, &r)) {
        CHECKF(0, "cannot load %s", tu_model());
        return;
    }
    if (getenv("HKV_PARITY_PRINT")) { print_fixture(m, &r); exit(0); }
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    CHECK(mi.add_bos == 1 && mi.bos == 1);
    int32_t t[512];
    int n = hkv_tokenize(m, FX_TEXT, -1, 0, t, 512);
    CHECKF(n == FX_N && !memcmp(t, fx_tokens, sizeof fx_tokens), "tokenization changed: %d tokens", n);
    double ref[FX_N], eng[FX_N];
    ref_logprobs(&r, fx_tokens, FX_N, ref);
    double d = max_diff(ref, fx_logprob, FX_N - 1);
    CHECKF(d < 1e-6, "the reference moved from the fixture by %g", d);
    for (int step = 0; step < 2; step++) {
        CHECK(engine_logprobs(m, fx_tokens, FX_N, step, eng));
        d = max_diff(eng, fx_logprob, FX_N - 1);
        CHECKF(d < TOL, "stories260K %s: max |engine - fixture| log-prob %g", step ? "one token per step" : "one pass", d);
        printf("stories260K   %-18s max |engine - reference| per-token log-prob = %.2e\n", step ? "token by token" : "one pass", d);
    }
    /* llama-perplexity's number from the CLI equals the reference's (BOS replaces each chunk's first token) */
    long count, tokens = -1;
    double want = ref_llama_nll(&r, fx_tokens, FX_N, 1, mi.bos, &count);
    double got = cli_llama_nll(tu_model(), FX_TEXT, "", &tokens);
    CHECKF(fabs(got - want) < TOL && tokens == count, "llama mode nll %g over %ld tokens, reference %g over %ld", got,
           tokens, want, count);
    printf("stories260K   eval ppl --mode llama -c %d: nll %.6f, reference %.6f (%ld tokens)\n", CHUNK, got, want, count);
    /* run: BOS by default (add_bos_token = true); --no-bos drops it */
    int nd = run_prompt_tokens(tu_model(), ""), nb = run_prompt_tokens(tu_model(), "--bos"),
        nn = run_prompt_tokens(tu_model(), "--no-bos");
    CHECKF(nd > 1 && nd == nb && nn == nd - 1, "run prompt tokens: default %d, --bos %d, --no-bos %d", nd, nb, nn);
    ref_free(&r);
    gguf_close(g);
    hkv_model_free(m);
}

static int skip_non_tokenizer(const char *key) {
    return strncmp(key, "tokenizer.", 10) != 0 || !strcmp(key, "tokenizer.ggml.add_bos_token");
}

/* A qwen2-architecture file whose vocabulary has a BOS id but add_bos_token = false (llama.cpp's Qwen2/2.5
 * conversions: bos_token_id 151643, add_bos_token false). The vocabulary is stories260K's (512 tokens) so the
 * file stays small; what matters here is the flag. */
static const char *make_qwen_style(void) {
    static char out[8192];
    const char *tok = tu_tmp("parity_tok.gguf"), *path = tu_tmp("parity_qwen.gguf");
    char err[256], args[1024];
    gguf_file *g;
    if (gguf_open(tu_model(), &g, err, sizeof err)) return NULL;
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "qwen2");
    gguf_w_copy_kv(w, g, skip_non_tokenizer);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 0);
    hkv_status st = gguf_writer_write(w, tok, err, sizeof err);
    gguf_writer_free(w);
    gguf_close(g);
    CHECKF(st == HKV_OK, "%s", err);
    snprintf(args, sizeof args, "synth --preset tiny --arch qwen2 --tokenizer '%s' --seed 11 -t 2 -o '%s'", tok, path);
    int rc = tu_cli(args, out, sizeof out);
    CHECKF(rc == 0, "%s", out);
    remove(tok);
    return rc == 0 ? path : NULL;
}

static void test_qwen_style(void) {
    const char *path = make_qwen_style();
    if (!path) return;
    hkv_model *m;
    char err[256];
    gguf_file *g = NULL;
    ref_model r;
    if (hkv_model_load(path, NULL, &m, err, sizeof err) || !open_ref(path, &g, &r)) {
        CHECKF(0, "cannot load %s", path);
        return;
    }
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    CHECK(!strcmp(mi.arch, "qwen2") && mi.bos == 1 && mi.add_bos == 0);
    /* the library default follows add_bos_token; 1 and 0 force it */
    int32_t t[512], tb[512], tn[512];
    int n = hkv_tokenize(m, FX_TEXT, -1, 0, t, 512), nb = hkv_tokenize(m, FX_TEXT, 1, 0, tb, 512),
        nn = hkv_tokenize(m, FX_TEXT, 0, 0, tn, 512);
    CHECK(n == FX_N - 1 && t[0] != mi.bos && !memcmp(t, fx_tokens + 1, sizeof(int32_t) * (size_t)n));
    CHECK(nb == n + 1 && tb[0] == mi.bos && nn == n && !memcmp(tn, t, sizeof(int32_t) * (size_t)n));
    double ref[FX_N], eng[FX_N];
    ref_logprobs(&r, t, n, ref);
    for (int step = 0; step < 2; step++) {
        CHECK(engine_logprobs(m, t, n, step, eng));
        double d = max_diff(eng, ref, n - 1);
        CHECKF(d < TOL, "qwen-style %s: max |engine - reference| log-prob %g", step ? "one token per step" : "one pass", d);
        printf("qwen2 no-BOS  %-18s max |engine - reference| per-token log-prob = %.2e\n", step ? "token by token" : "one pass", d);
    }
    /* llama mode without BOS: chunks are the raw text; --bos puts BOS over each chunk's first token */
    long count, tokens = -1;
    double want = ref_llama_nll(&r, t, n, 0, mi.bos, &count), got = cli_llama_nll(path, FX_TEXT, "", &tokens);
    CHECKF(fabs(got - want) < TOL && tokens == count, "llama mode nll %g over %ld tokens, reference %g over %ld", got,
           tokens, want, count);
    printf("qwen2 no-BOS  eval ppl --mode llama -c %d: nll %.6f, reference %.6f (%ld tokens)\n", CHUNK, got, want, count);
    want = ref_llama_nll(&r, tb, nb, 1, mi.bos, &count);
    got = cli_llama_nll(path, FX_TEXT, "--bos", &tokens);
    CHECKF(fabs(got - want) < TOL && tokens == count, "--bos: llama mode nll %g, reference %g", got, want);
    /* run: no BOS by default, --bos adds it */
    int rd = run_prompt_tokens(path, ""), rb = run_prompt_tokens(path, "--bos"), rn = run_prompt_tokens(path, "--no-bos");
    CHECKF(rd > 0 && rn == rd && rb == rd + 1, "run prompt tokens: default %d, --bos %d, --no-bos %d", rd, rb, rn);
    ref_free(&r);
    gguf_close(g);
    hkv_model_free(m);
    remove(path);
}

int main(void) {
    test_stories();
    test_qwen_style();
    return tu_done("test_parity");
}
