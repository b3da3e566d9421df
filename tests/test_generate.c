/* End to end on the real stories260K model: greedy generation reproduces the reference text from
 * ../shared/README.md, and the CLI's documented behaviour (help, bad flags, missing files). */
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"
#include "testutil.h"

static const char *REFERENCE =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw "
    "a big, red ball. She wanted to play with it, but it was too high";

/* Greedy from BOS only, n tokens, through the public API. */
static void greedy_text(hkv_model *m, int n, char *out, int outlen) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_threads = 2;
    hkv_context *c;
    char err[256];
    CHECK(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_OK);
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    int32_t toks[128];
    toks[0] = mi.bos;
    CHECK(hkv_decode(c, 0, toks, 1) == HKV_OK);
    int nt = 1;
    for (int i = 0; i < n; i++) {
        const float *lg = hkv_get_logits(c, 0, -1);
        int32_t best = 0;
        for (int v = 1; v < mi.n_vocab; v++) if (lg[v] > lg[best]) best = v;
        toks[nt++] = best;
        if (i + 1 < n) CHECK(hkv_decode(c, 0, &best, 1) == HKV_OK);
    }
    int len = hkv_detokenize(m, toks, nt, out, outlen);
    CHECK(len > 0);
    hkv_context_free(c);
}

static void test_reference_api(void) {
    hkv_model *m;
    char err[256];
    hkv_status st = hkv_model_load(tu_model(), NULL, &m, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return;
    char text[4096];
    greedy_text(m, 60, text, sizeof text);
    CHECKF(strncmp(text, REFERENCE, strlen(REFERENCE)) == 0, "got: %s", text);
    hkv_model_free(m);
}

static void test_reference_cli(void) {
    char out[8192], args[1024];
    snprintf(args, sizeof args, "run -m '%s' -n 60 --temp 0 -t 2", tu_model());
    int rc = tu_cli(args, out, sizeof out);
    CHECK(rc == 0);
    CHECKF(strncmp(out, REFERENCE, strlen(REFERENCE)) == 0, "got: %s", out);
    CHECKF(strstr(out, "tok/s") != NULL, "timings missing: %s", out);
}

static void test_cli_errors(void) {
    char out[8192], args[1024];
    CHECK(tu_cli("run --help", out, sizeof out) == 0 && strstr(out, "--kv-policy"));
    CHECK(tu_cli("--help", out, sizeof out) == 0 && strstr(out, "run"));
    CHECK(tu_cli("info --help", out, sizeof out) == 0);
    CHECK(tu_cli("run --bogus-flag", out, sizeof out) != 0 && strstr(out, "unknown option"));
    CHECK(tu_cli("frobnicate", out, sizeof out) != 0 && strstr(out, "unknown command"));
    CHECK(tu_cli("run -m /nonexistent/model.gguf", out, sizeof out) != 0 && strstr(out, "/nonexistent/model.gguf"));
    snprintf(args, sizeof args, "run -m '%s' -n abc", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "-n"));
    snprintf(args, sizeof args, "run -m '%s' --temp -1", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0);
    snprintf(args, sizeof args, "run -m '%s' -n 2 -c 8 -p 'Once upon a time there was a big dog and a cat'", tu_model());
    CHECKF(tu_cli(args, out, sizeof out) != 0 && strstr(out, "context"), "%s", out);
    snprintf(args, sizeof args, "run -m '%s' -n 5 --kv-policy h2o --kv-budget 0", tu_model());
    CHECKF(tu_cli(args, out, sizeof out) != 0, "%s", out);
    snprintf(args, sizeof args, "run -m '%s' --kv-policy nope", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "nope"));
    snprintf(args, sizeof args, "run -m '%s' --kv-budget -5%%", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0);
    /* a truncated copy of the model fails cleanly */
    size_t len;
    char *buf = tu_read_file(tu_model(), &len);
    CHECK(buf != NULL);
    if (buf) {
        const char *p = tu_tmp("trunc.gguf");
        FILE *f = fopen(p, "wb");
        fwrite(buf, 1, len / 2, f);
        fclose(f);
        snprintf(args, sizeof args, "run -m '%s' -n 3", p);
        CHECKF(tu_cli(args, out, sizeof out) != 0 && strstr(out, "error"), "%s", out);
        snprintf(args, sizeof args, "info '%s'", p);
        CHECK(tu_cli(args, out, sizeof out) != 0);
        remove(p);
        free(buf);
    }
    snprintf(args, sizeof args, "info '%s'", tu_model());
    CHECKF(tu_cli(args, out, sizeof out) == 0 && strstr(out, "token_embd.weight"), "%s", out);
}

int main(void) {
    test_reference_api();
    test_reference_cli();
    test_cli_errors();
    return tu_done("test_generate");
}
