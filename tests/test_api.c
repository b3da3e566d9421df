/* The embedding API on the real stories260K model: hkv_seq_cp / hkv_seq_rm, sequence state files, the
 * multi-token batch (hkv_decode_tokens), the abort callback, and failed decodes that change nothing. Every
 * comparison is bit-exact: the API promises identical continuations, not similar ones. */
#include <stdlib.h>
#include <string.h>
#include "alloc.h"
#include "heavykv.h"
#include "testutil.h"

static hkv_model *M;
static int V;

typedef struct opts { const char *policy; int n_seq, replace, logits_all, chunk, budget, n_ctx, lazy; } opts;

static hkv_context *ctx(opts o) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_threads = 2;
    cp.n_ctx = o.n_ctx ? o.n_ctx : 256;
    cp.n_seq = o.n_seq ? o.n_seq : 1;
    cp.logits_all = o.logits_all;
    cp.lazy_seqs = o.lazy;
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "%s", o.policy);
    if (strcmp(o.policy, "full")) cp.kv.budget = (hkv_amount){(float)(o.budget ? o.budget : 16), 0, 1};
    cp.kv.replace_order = o.replace;
    cp.kv.prefill_chunk = o.chunk;
    hkv_context *c = NULL;
    char err[256];
    hkv_status st = hkv_context_new(M, &cp, &c, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    return c;
}

static void prompt_tokens(int32_t *t, int n, int salt) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)((i * 31 + salt * 17 + 3) % V);
}

/* n greedy tokens of seq from its current logits; each is decoded. Returns 0 if a call failed. */
static int greedy(hkv_context *c, int seq, int n, int32_t *out) {
    for (int i = 0; i < n; i++) {
        const float *lg = hkv_get_logits(c, seq, -1);
        if (!lg) return 0;
        out[i] = hkv_argmax(lg, V);
        if (hkv_decode(c, seq, &out[i], 1)) return 0;
    }
    return 1;
}

static void test_seq_cp_rm(void) {
    hkv_context *c = ctx((opts){.policy = "h2o", .n_seq = 3, .chunk = 8});
    int32_t p[30], a[40], b[40], r[40];
    prompt_tokens(p, 30, 1);
    CHECK(hkv_decode(c, 0, p, 30) == HKV_OK);
    CHECK(hkv_seq_cp(c, 0, 1) == HKV_OK);
    CHECK(hkv_n_past(c, 1) == 30);
    CHECK(greedy(c, 0, 40, a) && greedy(c, 1, 40, b));
    CHECK(!memcmp(a, b, sizeof a));
    /* the same as a context that never forked */
    hkv_context *ref = ctx((opts){.policy = "h2o", .n_seq = 1, .chunk = 8});
    CHECK(hkv_decode(ref, 0, p, 30) == HKV_OK && greedy(ref, 0, 40, r));
    CHECK(!memcmp(a, r, sizeof a));
    hkv_context_free(ref);
    /* rm frees every slot of seq 1 and leaves seq 0 alone */
    int32_t pos[64];
    CHECK(hkv_seq_rm(c, 1) == HKV_OK);
    CHECK(hkv_n_past(c, 1) == 0 && hkv_get_logits(c, 1, -1) == NULL);
    for (int l = 0; l < 2; l++) CHECK(hkv_kv_positions(c, 1, l, 0, pos, 64) == 0);
    CHECK(hkv_kv_positions(c, 0, 0, 0, pos, 64) == 16);
    CHECK(hkv_seq_rm(c, 3) == HKV_ERR_ARG && hkv_seq_cp(c, 0, -1) == HKV_ERR_ARG);
    /* the freed sequence starts over like a new one */
    CHECK(hkv_decode(c, 1, p, 30) == HKV_OK && greedy(c, 1, 40, b));
    CHECK(!memcmp(b, r, sizeof b));
    hkv_context_free(c);
}

static void test_state(const char *policy, int replace) {
    opts o = {.policy = policy, .chunk = 8, .replace = replace};
    hkv_context *c = ctx(o);
    int32_t p[40], a[50], b[50];
    prompt_tokens(p, 40, 2);
    CHECK(hkv_decode(c, 0, p, 40) == HKV_OK);
    int32_t warm[5];
    CHECK(greedy(c, 0, 5, warm));
    const char *path = tu_tmp("seq.state");
    CHECK(hkv_seq_state_save(c, 0, path) == HKV_OK);
    CHECK(greedy(c, 0, 50, a));
    hkv_context *d = ctx(o);
    hkv_status st = hkv_seq_state_load(d, 0, path);
    CHECKF(st == HKV_OK, "%s", hkv_last_error(d));
    CHECK(hkv_n_past(d, 0) == 45);
    CHECK(greedy(d, 0, 50, b));
    CHECKF(!memcmp(a, b, sizeof a), "%s: continuation after load differs", policy);
    hkv_context_free(d);
    hkv_context_free(c);

    /* mismatches and damage: clear errors, the target sequence unchanged */
    o.policy = !strcmp(policy, "full") ? "h2o" : "full";
    d = ctx(o);
    int32_t q[3] = {1, 2, 3};
    CHECK(hkv_decode(d, 0, q, 3) == HKV_OK);
    st = hkv_seq_state_load(d, 0, path);
    CHECKF(st == HKV_ERR_STATE && strstr(hkv_last_error(d), "policy"), "%d %s", (int)st, hkv_last_error(d));
    CHECK(hkv_n_past(d, 0) == 3);
    hkv_context_free(d);
    o.policy = policy;
    o.budget = 20;
    if (strcmp(policy, "full")) {
        d = ctx(o);
        st = hkv_seq_state_load(d, 0, path);
        CHECKF(st == HKV_ERR_STATE && strstr(hkv_last_error(d), "budget"), "%d %s", (int)st, hkv_last_error(d));
        hkv_context_free(d);
    }
    o.budget = 0;
    size_t len;
    char *buf = tu_read_file(path, &len);
    const char *cut = tu_tmp("seq_cut.state");
    d = ctx(o);
    CHECK(hkv_decode(d, 0, q, 3) == HKV_OK);
    size_t cuts[3] = {10, len / 2, len - 1};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(cut, "wb");
        fwrite(buf, 1, cuts[i], f);
        fclose(f);
        st = hkv_seq_state_load(d, 0, cut);
        CHECKF(st == HKV_ERR_FORMAT, "cut at %zu: %d %s", cuts[i], (int)st, hkv_last_error(d));
        CHECK(hkv_n_past(d, 0) == 3);
    }
    buf[0] = 'X';
    FILE *f = fopen(cut, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    CHECK(hkv_seq_state_load(d, 0, cut) == HKV_ERR_FORMAT && strstr(hkv_last_error(d), "not a heavykv"));
    CHECK(hkv_seq_state_load(d, 0, "/nonexistent/x.state") == HKV_ERR_IO);
    CHECK(hkv_seq_state_save(d, 0, "/nonexistent/x.state") == HKV_ERR_IO);
    free(buf);
    hkv_context_free(d);
}

/* One call of 4 sequences: seq 1 gets a prompt piece of np tokens, seqs 0, 2, 3 one decode token each; the
 * same tokens fed to a second context one sequence at a time must give the same logits bit for bit. */
static void test_batch(const char *policy, int replace, int lazy) {
    opts o = {.policy = policy, .n_seq = 4, .chunk = 24, .replace = replace, .budget = 12, .lazy = lazy};
    hkv_context *c = ctx(o);
    o.logits_all = 1;
    o.lazy = 0; /* the reference allocates everything up front and resizes between chunks */
    hkv_context *r = ctx(o);
    hkv_kv_stats ks;
    hkv_get_kv_stats(c, &ks);
    uint64_t per_seq = (uint64_t)ks.capacity * ks.n_layer * ks.n_head_kv * 2 * (uint64_t)ks.row_bytes;
    if (lazy) { /* no sequence holds storage yet; the capacity is the prefill size for good */
        CHECK(ks.kv_bytes == 0);
        CHECK(!strcmp(policy, "full") ? ks.capacity == 256 : ks.capacity == 12 + 24);
    }
    int32_t p[24];
    for (int s = 0; s < 4; s++) {
        if (s == 1) continue;
        prompt_tokens(p, 10 + s, s);
        CHECK(hkv_decode(c, s, p, 10 + s) == HKV_OK && hkv_decode(r, s, p, 10 + s) == HKV_OK);
    }
    int max_tok, max_seq;
    hkv_batch_limits(c, &max_tok, &max_seq);
    CHECK(max_tok >= 27 && max_seq == 24);
    int mism = 0, calls = 0;
    for (int round = 0; round < 6; round++) {
        int np = round < 3 ? (round == 0 ? 20 : 3) : 1; /* prompt pieces, then plain decoding */
        int32_t tok[32];
        int seq[32];
        int8_t want[32];
        int n = 0;
        for (int s = 0; s < 4; s++) {
            int k = s == 1 ? np : 1;
            for (int i = 0; i < k; i++) {
                const float *lg = hkv_get_logits(r, s, -1);
                tok[n] = s == 1 && round < 3 ? (int32_t)((round * 7 + i * 13 + 5) % V) : (lg ? hkv_argmax(lg, V) : 1);
                seq[n] = s;
                want[n] = (int8_t)(i == k - 1 || i == 2);
                n++;
            }
        }
        /* interleave: seq 1's tokens in the middle */
        hkv_batch b = {n, tok, seq, want};
        hkv_status st = hkv_decode_tokens(c, &b);
        CHECKF(st == HKV_OK, "%s", hkv_last_error(c));
        int at = 0;
        for (int s = 0; s < 4; s++) {
            int k = s == 1 ? np : 1;
            CHECK(hkv_decode(r, s, tok + at, k) == HKV_OK);
            for (int i = 0; i < k; i++) {
                const float *x = hkv_get_logits_ith(c, at + i), *y = hkv_get_logits(r, s, i);
                if (!want[at + i]) { CHECK(x == NULL); continue; }
                calls++;
                if (!x || !y || memcmp(x, y, sizeof(float) * V)) mism++;
            }
            CHECK(hkv_n_past(c, s) == hkv_n_past(r, s));
            at += k;
        }
    }
    CHECKF(mism == 0, "%s: %d of %d logit rows differ between the batch and one sequence at a time", policy, mism, calls);
    /* kept positions agree too */
    int32_t pa[64], pb[64];
    for (int s = 0; s < 4; s++) {
        int na = hkv_kv_positions(c, s, 1, 0, pa, 64), nb = hkv_kv_positions(r, s, 1, 0, pb, 64);
        CHECK(na == nb && !memcmp(pa, pb, sizeof(int32_t) * (size_t)na));
    }
    if (lazy) {
        hkv_get_kv_stats(c, &ks);
        CHECK(ks.kv_bytes == 4 * per_seq);
        /* hkv_seq_rm gives a sequence's K/V back; a copy into it or a new decode allocates it again */
        CHECK(hkv_seq_rm(c, 2) == HKV_OK);
        hkv_get_kv_stats(c, &ks);
        CHECK(ks.kv_bytes == 3 * per_seq && hkv_n_past(c, 2) == 0);
        int32_t kp[64];
        CHECK(hkv_kv_positions(c, 2, 0, 0, kp, 64) == 0 && hkv_kv_scores(c, 2, 0, 0, (float *)kp, 64) == 0);
        CHECK(hkv_seq_cp(c, 2, 1) == HKV_OK && hkv_n_past(c, 1) == 0); /* copying an empty sequence */
        hkv_get_kv_stats(c, &ks);
        CHECK(ks.kv_bytes == 3 * per_seq);
        CHECK(hkv_seq_cp(c, 0, 2) == HKV_OK && hkv_n_past(c, 2) == hkv_n_past(c, 0));
        hkv_get_kv_stats(c, &ks);
        CHECK(ks.kv_bytes == 4 * per_seq); /* seq 1 kept its storage (emptied), seq 2 got it back */
        int32_t g0[8], g2[8];
        CHECK(greedy(c, 0, 8, g0) && greedy(c, 2, 8, g2) && !memcmp(g0, g2, sizeof g0));
        /* a fresh prompt in a released sequence equals the same prompt in the reference */
        CHECK(hkv_seq_rm(c, 3) == HKV_OK);
        hkv_seq_reset(r, 3);
        int32_t fp[20], ga[8], gb[8];
        prompt_tokens(fp, 20, 9);
        CHECK(hkv_decode(c, 3, fp, 20) == HKV_OK && hkv_decode(r, 3, fp, 20) == HKV_OK);
        CHECK(greedy(c, 3, 8, ga) && greedy(r, 3, 8, gb) && !memcmp(ga, gb, sizeof ga));
    }
    /* limits */
    int32_t many[64] = {0};
    int sq[64] = {0};
    hkv_batch big = {25, many, sq, NULL};
    CHECK(hkv_decode_tokens(c, &big) == HKV_ERR_ARG && strstr(hkv_last_error(c), "prefill chunk"));
    big.n_tokens = 0;
    CHECK(hkv_decode_tokens(c, &big) == HKV_ERR_ARG);
    CHECK(hkv_decode_tokens(c, NULL) == HKV_ERR_ARG);
    sq[1] = 9;
    big.n_tokens = 2;
    CHECK(hkv_decode_tokens(c, &big) == HKV_ERR_ARG);
    hkv_context_free(r);
    hkv_context_free(c);
}

static int abort_at, abort_calls;
static int abort_cb(void *user) {
    (void)user;
    return ++abort_calls == abort_at;
}

/* The next 20 greedy tokens after a failed call equal those of a context where the call never happened. */
static float *ref_lg0, *ref_lg20; /* logits of the reference before and after its 20 greedy tokens */
static void expect_unchanged(hkv_context *c, const int32_t *ref, int n_past, const char *what) {
    int32_t g[20];
    CHECKF(hkv_n_past(c, 0) == n_past, "%s: n_past %d, want %d", what, hkv_n_past(c, 0), n_past);
    const float *lg = hkv_get_logits(c, 0, -1);
    CHECKF(lg && !memcmp(lg, ref_lg0, sizeof(float) * V), "%s: last logits changed", what);
    CHECKF(greedy(c, 0, 20, g) && !memcmp(g, ref, sizeof g), "%s: continuation differs", what);
    lg = hkv_get_logits(c, 0, -1);
    CHECKF(lg && !memcmp(lg, ref_lg20, sizeof(float) * V), "%s: logits after 20 tokens differ", what);
}

static void test_failed_decode(const char *policy, int replace) {
    opts o = {.policy = policy, .chunk = 4, .replace = replace, .budget = 10};
    int32_t p[20], ref[20], extra[12];
    prompt_tokens(p, 20, 5);
    prompt_tokens(extra, 12, 6);
    hkv_context *c = ctx(o);
    CHECK(hkv_decode(c, 0, p, 20) == HKV_OK);
    memcpy(ref_lg0, hkv_get_logits(c, 0, -1), sizeof(float) * V);
    CHECK(greedy(c, 0, 20, ref));
    memcpy(ref_lg20, hkv_get_logits(c, 0, -1), sizeof(float) * V);
    hkv_context_free(c);
    hkv_model_info mi;
    hkv_model_get_info(M, &mi);
    char what[128];

    /* bad token, bad sequence, past the context */
    c = ctx(o);
    CHECK(hkv_decode(c, 0, p, 20) == HKV_OK);
    int32_t bad[3] = {1, (int32_t)V, 2};
    CHECK(hkv_decode(c, 0, bad, 3) == HKV_ERR_ARG);
    expect_unchanged(c, ref, 20, "bad token");
    hkv_context_free(c);

    /* abort before layer k of the j-th forward chunk: single steps (replace order reuses an evicted slot) and
     * a 12-token continuation in 3 chunks on a full cache (chunks reuse slots freed by earlier chunks) */
    for (int multi = 0; multi < 2; multi++)
        for (int k = 1; k <= (multi ? 3 : 1) * mi.n_layer + 1; k++) {
            c = ctx(o);
            CHECK(hkv_decode(c, 0, p, 20) == HKV_OK);
            abort_at = k;
            abort_calls = 0;
            hkv_set_abort_callback(c, abort_cb, NULL);
            hkv_status st = hkv_decode(c, 0, multi ? extra : extra + 3, multi ? 12 : 1);
            snprintf(what, sizeof what, "%s abort at layer call %d (%s)", policy, k, multi ? "12 tokens" : "1 token");
            if (abort_calls >= k) CHECKF(st == HKV_ERR_ABORTED && strstr(hkv_last_error(c), "abort"), "%s", what);
            hkv_set_abort_callback(c, NULL, NULL);
            if (st == HKV_ERR_ABORTED) expect_unchanged(c, ref, 20, what);
            hkv_context_free(c);
        }

    /* injected allocation failures: the first few that make hkv_decode fail */
    int failed = 0;
    for (long n = 1; n < 400 && failed < 6; n++) {
        c = ctx(o);
        CHECK(hkv_decode(c, 0, p, 20) == HKV_OK);
        hkv_alloc_fail_at(n);
        hkv_status st = hkv_decode(c, 0, extra, 12);
        int fired = hkv_alloc_fired();
        hkv_alloc_fail_at(0);
        if (st) {
            failed++;
            CHECK(st == HKV_ERR_NOMEM && fired);
            snprintf(what, sizeof what, "%s allocation %ld failed", policy, n);
            expect_unchanged(c, ref, 20, what);
        }
        hkv_context_free(c);
        if (!fired) break;
    }
    CHECKF(failed > 0 || !strcmp(policy, "full"), "%s: no allocation failure reached hkv_decode", policy);
}

/* The tools' public API: a standalone tokenizer equals the model's, quantize and synth report bad input,
 * and the CLI prints the library version. */
static void test_tools(void) {
    char err[256];
    hkv_tokenizer *t = NULL;
    CHECKF(hkv_tokenizer_load(tu_model(), &t, err, sizeof err) == HKV_OK, "%s", err);
    if (t) {
        const char *text = "Once upon a time, there was a little girl.";
        int32_t a[64], b[64];
        int na = hkv_tokenizer_encode(t, text, 1, 1, a, 64), nb = hkv_tokenize(M, text, 1, 1, b, 64);
        CHECK(na > 5 && na == nb && !memcmp(a, b, sizeof(int32_t) * (size_t)na));
        CHECK(hkv_tokenizer_n_vocab(t) == V);
        char x[256], y[256];
        CHECK(hkv_tokenizer_decode(t, a, na, x, sizeof x) > 0 && hkv_detokenize(M, a, na, y, sizeof y) > 0 && !strcmp(x, y));
        CHECK(hkv_tokenizer_piece(t, a[1], x, sizeof x) > 0 && hkv_tokenizer_text(t, a[1]) != NULL);
        CHECK(hkv_tokenizer_text(t, -1) == NULL);
        hkv_tokenizer_free(t);
    }
    CHECK(hkv_tokenizer_load("/nonexistent/tokenizer.json", &t, err, sizeof err) == HKV_ERR_IO && t == NULL);
    CHECK(hkv_model_quantize(tu_model(), tu_tmp("q.gguf"), "Q3_X", 1, NULL, err, sizeof err) == HKV_ERR_ARG &&
          strstr(err, "Q4_K_M"));
    hkv_quantize_stats qs;
    CHECKF(hkv_model_quantize(tu_model(), tu_tmp("q.gguf"), "q8_0", 1, &qs, err, sizeof err) == HKV_OK, "%s", err);
    CHECK(qs.n_tensors > 0 && qs.n_of_type[8] > 0 && !strcmp(hkv_tensor_type_name(8), "Q8_0"));
    hkv_synth_params sp = hkv_synth_default_params();
    sp.preset = "tiny";
    sp.tokenizer = tu_model();
    sp.type = "Q9";
    CHECK(hkv_synth_write(&sp, tu_tmp("s.gguf"), NULL, err, sizeof err) == HKV_ERR_ARG && strstr(err, "Q9"));
    int np = 0;
    CHECK(hkv_synth_presets(&np) != NULL && np > 3);
    char out[512];
    CHECK(tu_cli("--version", out, sizeof out) == 0 && !strncmp(out, "heavykv ", 8) && strstr(out, hkv_version()));
    CHECK(tu_cli("run --version", out, sizeof out) == 0 && strstr(out, HKV_VERSION_STRING));
    CHECK(tu_cli("frobnicate --version", out, sizeof out) != 0);
}

int main(void) {
    char err[256];
    hkv_status st = hkv_model_load(tu_model(), NULL, &M, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return tu_done("test_api");
    hkv_model_info mi;
    hkv_model_get_info(M, &mi);
    V = mi.n_vocab;
    ref_lg0 = malloc(sizeof(float) * V);
    ref_lg20 = malloc(sizeof(float) * V);
    test_tools();
    test_seq_cp_rm();
    test_state("h2o", 0);
    test_state("full", 0);
    test_state("tova", 0);
    test_state("h2o", 1);
    test_state("snapkv", 0);
    test_batch("h2o", 0, 0);
    test_batch("h2o", 1, 0);
    test_batch("full", 0, 0);
    test_batch("window", 0, 0);
    test_batch("snapkv", 0, 0);
    test_batch("h2o", 0, 1);   /* lazy_seqs: same results, storage per sequence in use */
    test_batch("h2o", 1, 1);
    test_batch("full", 0, 1);
    test_failed_decode("h2o", 0);
    test_failed_decode("h2o", 1);
    test_failed_decode("full", 0);
    test_failed_decode("snapkv", 0);
    hkv_model_free(M);
    free(ref_lg0);
    free(ref_lg20);
    return tu_done("test_api");
}
