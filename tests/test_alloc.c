/* Allocation-failure injection (src/alloc.h): for N = 1, 2, ... the N-th library allocation fails during model
 * load, context creation, tokenizer import (tokenizer.json + tokenizer_config.json, cJSON's allocations
 * included) and decoding with every policy of the table, until a run completes without reaching N. Every failure must return an
 * error (never crash), leave the object usable or freed, and leak nothing (LeakSanitizer in the ASan build).
 * A failed decode must leave the sequence exactly as it was: same n_past, and the rest of the run gives the
 * same logits bit for bit as a run that never failed. */
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
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


/* ---------------------------------------------------------------- tokenizer import
 * Two synthetic tokenizers that between them reach every allocation of tokenizer_hf.c and of the tokenizer
 * tables (tokenizer.c): byte-level BPE (NFC normalizer, ByteLevel pre-tokenizer, 80 merges as strings and
 * pairs so the merge arrays grow past their first 64, a 260-byte merge result that does not fit the stack
 * buffer, special and non-special added tokens, a TemplateProcessing post-processor) and SentencePiece-style
 * BPE (Replace + Prepend normalizers, byte fallback, unk), each with a tokenizer_config.json (bos/eos as a
 * string and as {"content"}, pad, add_bos_token, a chat template as a string and as a named list). */

/* cJSON's allocations count too: its hooks are the host program's to set (the library never sets them), and
 * this test points them at the library's wrappers. Records whether the failure happened inside cJSON. */
static int cjson_failed;
static void *cj_malloc(size_t n) {
    int before = hkv_alloc_fired();
    void *p = hkv_malloc(n);
    if (!p && !before && hkv_alloc_fired()) cjson_failed = 1;
    return p;
}
static void cj_free(void *p) { hkv_free(p); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Appends printf-style text to a fixed buffer (the files are a few KiB). */
typedef struct sbuf { char p[16384]; size_t n; } sbuf;
__attribute__((format(printf, 2, 3))) static void sb_add(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->n, sizeof b->p - b->n, fmt, ap);
    va_end(ap);
    if (k > 0) b->n += (size_t)k < sizeof b->p - b->n ? (size_t)k : sizeof b->p - b->n - 1;
}

/* Byte-level BPE: letters a-z, the 78 pairs of {a,b,c} x a-z (merges "a b" ... as strings, the "c" ones as
 * [left, right] pairs), G-dot-space ("\u0120") with a merge, 130 + 130 = 260 X's, and added tokens. */
static void write_bpe(const char *dir) {
    static sbuf b;
    char x130[131];
    memset(x130, 'X', 130);
    x130[130] = 0;
    b.n = 0;
    sb_add(&b, "{\"version\": \"1.0\", \"normalizer\": {\"type\": \"NFC\"},\n"
               " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true},\n"
               " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<|bos|>\"}},"
               " {\"Sequence\": {\"id\": \"A\"}}]},\n"
               " \"added_tokens\": [{\"id\": 200, \"content\": \"<|bos|>\", \"special\": true},"
               " {\"id\": 201, \"content\": \"<|endoftext|>\", \"special\": true},"
               " {\"id\": 202, \"content\": \"<|im_start|>\", \"special\": true},"
               " {\"id\": 203, \"content\": \"<|im_end|>\", \"special\": true},"
               " {\"id\": 204, \"content\": \"<tool>\", \"special\": false}],\n"
               " \"model\": {\"type\": \"BPE\", \"vocab\": {");
    int id = 0;
    for (char ch = 'a'; ch <= 'z'; ch++) sb_add(&b, "\"%c\": %d, ", ch, id++);
    for (char c1 = 'a'; c1 <= 'c'; c1++)
        for (char c2 = 'a'; c2 <= 'z'; c2++) sb_add(&b, "\"%c%c\": %d, ", c1, c2, id++);
    sb_add(&b, "\"\\u0120\": %d, \"\\u0120a\": %d, \"%s\": %d, \"%s%s\": %d}, \"merges\": [", id, id + 1, x130, id + 2,
           x130, x130, id + 3);
    for (char c1 = 'a'; c1 <= 'c'; c1++)
        for (char c2 = 'a'; c2 <= 'z'; c2++)
            sb_add(&b, c1 == 'c' ? "[\"%c\", \"%c\"], " : "\"%c %c\", ", c1, c2);
    sb_add(&b, "\"\\u0120 a\", \"%s %s\"]}}\n", x130, x130);
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_text(path, b.p);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_text(path, "{\"bos_token\": \"<|bos|>\", \"eos_token\": {\"content\": \"<|im_end|>\"}, "
                     "\"pad_token\": \"<|endoftext|>\", \"chat_template\": \"{% for m in messages %}"
                     "<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{% endfor %}\"}\n");
}

/* SentencePiece-style BPE with byte fallback. */
static void write_spm(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_text(path,
        "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},"
        " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},\n"
        " \"pre_tokenizer\": null,\n"
        " \"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
        " {\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true},"
        " {\"id\": 14, \"content\": \"<|user|>\", \"special\": false}],\n"
        " \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0,"
        " \"<s>\": 1, \"</s>\": 2, \"\\u2581\": 3, \"a\": 4, \"b\": 5, \"\\u2581a\": 6, \"ab\": 7, \"<0x0A>\": 8,"
        " \"<0x41>\": 9, \"c\": 10, \"abc\": 11, \"\\u2581ab\": 12, \"\\u2581abc\": 13},"
        " \"merges\": [\"\\u2581 a\", \"a b\", \"ab c\", [\"\\u2581a\", \"b\"], \"\\u2581ab c\"]}}\n");
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_text(path, "{\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\", \"unk_token\": \"<unk>\","
                     " \"add_bos_token\": true, \"add_eos_token\": false, \"chat_template\": [{\"name\": \"tool_use\","
                     " \"template\": \"x\"}, {\"name\": \"default\", \"template\": \"{{ messages }}\"}]}\n");
}

static int encode(const hkv_tokenizer *t, const char *text, int32_t *ids, int cap) {
    return hkv_tokenizer_encode(t, text, 1, 1, ids, cap);
}

static void sweep_tokenizer(const char *label, const char *dir, const char *text) {
    char path[600], err[256] = "";
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    hkv_tokenizer *t = NULL;
    int32_t ref[128], got[128];
    hkv_status st = hkv_tokenizer_load(path, &t, err, sizeof err);
    CHECKF(st == HKV_OK, "%s: %s", label, err);
    if (st) return;
    int n_ref = encode(t, text, ref, 128), n_vocab = hkv_tokenizer_n_vocab(t);
    CHECKF(n_ref > 3, "%s: %d tokens", label, n_ref);
    hkv_tokenizer_free(t);

    cJSON_Hooks hooks = {cj_malloc, cj_free};
    cJSON_InitHooks(&hooks);
    long n;
    int failures = 0, in_cjson = 0;
    for (n = 1; n < MAX_SWEEP; n++) {
        err[0] = 0;
        t = NULL;
        cjson_failed = 0;
        hkv_alloc_fail_at(n);
        st = hkv_tokenizer_load(path, &t, err, sizeof err);
        int fired = hkv_alloc_fired();
        hkv_alloc_fail_at(0);
        if (!fired) { CHECK(st == HKV_OK); hkv_tokenizer_free(t); break; }
        /* no allocation of the import is optional: each failure is an error */
        CHECKF(st != HKV_OK, "%s N=%ld: an allocation failed but the import succeeded", label, n);
        if (st == HKV_OK) { hkv_tokenizer_free(t); continue; }
        failures++;
        in_cjson += cjson_failed;
        /* cJSON reports a failed parse without saying why, so that one may read as a format error */
        CHECKF(t == NULL && err[0] && (st == HKV_ERR_NOMEM || (cjson_failed && st == HKV_ERR_FORMAT)),
               "%s N=%ld: status %d (in cJSON: %d), tokenizer %p, message '%s'", label, n, (int)st, cjson_failed,
               (void *)t, err);
    }
    cJSON_InitHooks(NULL);
    printf("tokenizer import (%s): %ld allocations swept (%d inside cJSON), %d failed cleanly\n", label, n - 1,
           in_cjson, failures);
    CHECK(failures > 20 && in_cjson > 0 && failures == n - 1);
    /* after the sweep an unfailed import works and encodes as before */
    st = hkv_tokenizer_load(path, &t, err, sizeof err);
    CHECKF(st == HKV_OK, "%s after the sweep: %s", label, err);
    if (st) return;
    CHECK(hkv_tokenizer_n_vocab(t) == n_vocab);
    CHECK(encode(t, text, got, 128) == n_ref && !memcmp(got, ref, sizeof(int32_t) * (size_t)n_ref));
    hkv_tokenizer_free(t);
}

static void remove_dir(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    remove(path);
    rmdir(dir);
}

static void sweep_tokenizers(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tu_tmp("alloc_tok_bpe"));
    mkdir(dir, 0755);
    write_bpe(dir);
    sweep_tokenizer("byte-level BPE", dir, "<|bos|>abc cab <tool> \xc3\xa9 aXb<|im_end|>");
    remove_dir(dir);
    snprintf(dir, sizeof dir, "%s", tu_tmp("alloc_tok_spm"));
    mkdir(dir, 0755);
    write_spm(dir);
    sweep_tokenizer("SentencePiece BPE", dir, "abc ab <|user|> A\n\xe2\x82\xac</s>");
    remove_dir(dir);
}

static hkv_context_params params(const char *policy, int n_threads) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_threads = n_threads;
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
    hkv_context_params cp = params("h2o", 2);
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

/* Returns how many injected failures were absorbed (the call succeeded with a fallback path). */
/* strict: compare the logits after absorbed failures too (every fallback left must give the same bits). */
static int sweep_decode(hkv_model *m, const char *policy, int n_threads, int strict) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    script s;
    for (int i = 0; i < 10; i++) s.prompt[i] = (int32_t)((i * 37 + 5) % mi.n_vocab);
    for (int i = 0; i < 7; i++) s.steps[i] = (int32_t)((i * 53 + 11) % mi.n_vocab);
    hkv_context_params cp = params(policy, n_threads);
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
    int failures = 0, mismatches = 0, absorbed = 0;
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
                degraded = 1; /* an optional allocation failed (a policy's batch hook falls back to victim()) */
                absorbed++;
            }
            const float *lg = hkv_get_logits(c, 0, -1);
            if ((!degraded || strict) && lg && memcmp(lg, ref + (size_t)k * mi.n_vocab, sizeof(float) * mi.n_vocab)) mismatches++;
        }
        hkv_alloc_fail_at(0);
        hkv_context_free(c);
        if (!fired_any) break;
    }
    printf("decode (%s, %d thread%s): %ld allocations swept, %d calls failed cleanly, %d absorbed by a fallback, %d "
           "logit mismatches after a failure\n", policy, n_threads, n_threads > 1 ? "s" : "", n - 1, failures, absorbed,
           mismatches);
    if (!strcmp(policy, "h2o")) CHECK(failures > 0); /* resizes between prefill chunks and decode steps */
    CHECKF(mismatches == 0, "%d calls gave different logits after an injected failure", mismatches);
    free(ref);
    return absorbed;
}

/* A Q8_0 copy of the model: its matmuls take the integer path, whose scratch (quantized activations) used to be
 * allocated per matmul and, on failure, silently replaced by the float path (other bits). Now the context
 * reserves it up front (the pool's scratch). With `full` (no batch hook) the only fallback left is the float
 * path's row buffer (per-token dots, same bits), so every call must give the reference logits bit for bit. */
static void sweep_decode_quantized(void) {
    char err[256], path[600];
    snprintf(path, sizeof path, "%s", tu_tmp("alloc_q8.gguf"));
    hkv_status st = hkv_model_quantize(tu_model(), path, "Q8_0", 1, NULL, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    hkv_model *m;
    if (!st && (st = hkv_model_load(path, NULL, &m, err, sizeof err)) == HKV_OK) {
        sweep_decode(m, "full", 2, 1);
        hkv_model_free(m);
    }
    CHECKF(st == HKV_OK, "%s", err);
    remove(path);
}

int main(void) {
    sweep_tokenizers();
    sweep_model_load();
    hkv_model *m;
    char err[256];
    hkv_status st = hkv_model_load(tu_model(), NULL, &m, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return tu_done("test_alloc");
    sweep_context_new(m);
    sweep_decode(m, "h2o", 2, 0);
    sweep_decode(m, "full", 2, 0);
    /* every other policy of the table: its own allocations (batch hook, scratch) are on this thread with one
       worker thread, where the h2o/full sweeps above use two */
    for (int i = 0; hkv_policy_at(i); i++) {
        const char *name = hkv_policy_at(i)->name;
        if (strcmp(name, "h2o") && strcmp(name, "full")) sweep_decode(m, name, 1, 0);
    }
    hkv_model_free(m);
    sweep_decode_quantized();
    return tu_done("test_alloc");
}
