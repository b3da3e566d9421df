/* Sampler: greedy, determinism per seed, and the empirical distribution after top-k / top-p / min-p /
 * temperature / repetition penalty compared with the expected truncated, renormalized one. */
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "heavykv.h"
#include "testutil.h"

static hkv_sampler *mk(hkv_sampler_params p, int n_vocab) {
    hkv_sampler *s = NULL;
    char err[256] = "";
    hkv_status st = hkv_sampler_new(&p, n_vocab, &s, err, sizeof err);
    CHECKF(st == HKV_OK && s, "hkv_sampler_new: %s", err);
    return s;
}

/* Everything off: plain softmax at temperature `temp`. */
static hkv_sampler_params plain(float temp, uint64_t seed) {
    hkv_sampler_params p = hkv_sampler_default_params();
    p.temp = temp; p.top_k = 0; p.top_p = 1.0f; p.min_p = 0.0f; p.repeat_penalty = 1.0f; p.seed = seed;
    return p;
}

static uint64_t lcg(uint64_t *x) { *x = *x * 6364136223846793005ull + 1442695040888963407ull; return *x >> 33; }

static void test_defaults_and_params(void) {
    hkv_sampler_params d = hkv_sampler_default_params();
    CHECK_NEAR(d.temp, 0.8, 1e-7);
    CHECK(d.top_k == 40);
    CHECK_NEAR(d.top_p, 0.95, 1e-7);
    CHECK_NEAR(d.min_p, 0.05, 1e-7);
    CHECK(d.repeat_penalty == 1.0f && d.repeat_last_n == 64 && d.seed == 0);

    struct { const char *field; float temp, top_p, min_p, pen; int last_n, n_vocab; } bad[] = {
        { "vocabulary", 0.8f, 0.9f, 0.0f, 1.0f, 64, 0 },
        { "vocabulary", 0.8f, 0.9f, 0.0f, 1.0f, 64, -5 },
        { "top_p", 0.8f, 0.0f, 0.0f, 1.0f, 64, 10 },
        { "top_p", 0.8f, -0.5f, 0.0f, 1.0f, 64, 10 },
        { "top_p", 0.8f, NAN, 0.0f, 1.0f, 64, 10 },
        { "min_p", 0.8f, 0.9f, -0.1f, 1.0f, 64, 10 },
        { "min_p", 0.8f, 0.9f, 1.5f, 1.0f, 64, 10 },
        { "min_p", 0.8f, 0.9f, NAN, 1.0f, 64, 10 },
        { "repeat_penalty", 0.8f, 0.9f, 0.0f, 0.0f, 64, 10 },
        { "repeat_penalty", 0.8f, 0.9f, 0.0f, -1.0f, 64, 10 },
        { "repeat_penalty", 0.8f, 0.9f, 0.0f, INFINITY, 64, 10 },
        { "repeat_last_n", 0.8f, 0.9f, 0.0f, 1.1f, -1, 10 },
        { "temperature", NAN, 0.9f, 0.0f, 1.0f, 64, 10 },
        { "temperature", INFINITY, 0.9f, 0.0f, 1.0f, 64, 10 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hkv_sampler_params p = d;
        p.temp = bad[i].temp; p.top_p = bad[i].top_p; p.min_p = bad[i].min_p;
        p.repeat_penalty = bad[i].pen; p.repeat_last_n = bad[i].last_n;
        hkv_sampler *s = (hkv_sampler *)&p;   /* must be overwritten with NULL */
        char err[256] = "";
        hkv_status st = hkv_sampler_new(&p, bad[i].n_vocab, &s, err, sizeof err);
        CHECKF(st == HKV_ERR_ARG && s == NULL, "case %zu (%s) accepted", i, bad[i].field);
        CHECKF(strstr(err, bad[i].field) != NULL, "case %zu: message lacks \"%s\": %s", i, bad[i].field, err);
    }
    /* edge values that are fine: greedy by negative temp, top_p above 1 (off), min_p 1, no penalty window */
    hkv_sampler_params p = d;
    p.temp = -1; p.top_p = 1.5f; p.min_p = 1.0f; p.repeat_last_n = 0;
    hkv_sampler *s = mk(p, 3);
    hkv_sampler_free(s);
    s = NULL;
    CHECK(hkv_sampler_new(NULL, 5, &s, NULL, 0) == HKV_OK && s);   /* NULL params = defaults */
    hkv_sampler_free(s);
    hkv_sampler_free(NULL);
}

static void test_greedy(void) {
    float l[8] = { 0.1f, 2.0f, -1.0f, 3.5f, 3.5f, 0.0f, -INFINITY, 1.0f };
    hkv_sampler *s = mk(plain(0.0f, 1), 8);
    for (int i = 0; i < 5; i++) CHECK(hkv_sampler_sample(s, l) == 3);   /* tie 3/4: lowest id */
    hkv_sampler_free(s);
    s = mk(plain(-2.0f, 1), 8);
    CHECK(hkv_sampler_sample(s, l) == 3);
    hkv_sampler_free(s);
    /* top_k = 1 with any temperature and seed is greedy */
    uint64_t x = 7;
    float big[1000];
    for (int seed = 0; seed < 5; seed++) {
        hkv_sampler_params p = plain(1.5f, (uint64_t)seed);
        p.top_k = 1;
        s = mk(p, 1000);
        for (int step = 0; step < 20; step++) {
            for (int i = 0; i < 1000; i++) big[i] = (float)(lcg(&x) % 1000) / 100.0f;
            int best = 0;
            for (int i = 1; i < 1000; i++) best = big[i] > big[best] ? i : best;
            CHECK(hkv_sampler_sample(s, big) == best);
        }
        hkv_sampler_free(s);
    }
    CHECK(hkv_sampler_sample(NULL, l) == -1);
}

static void sample_seq(uint64_t seed, int32_t *out, int n) {
    float l[50];
    for (int i = 0; i < 50; i++) l[i] = (float)(i % 7) * 0.1f;
    hkv_sampler_params p = hkv_sampler_default_params();
    p.seed = seed;
    hkv_sampler *s = mk(p, 50);
    for (int i = 0; i < n; i++) out[i] = hkv_sampler_sample(s, l);
    hkv_sampler_free(s);
}

static void test_seed(void) {
    int32_t a[200], b[200], c[200];
    sample_seq(42, a, 200);
    sample_seq(42, b, 200);
    sample_seq(43, c, 200);
    CHECK(memcmp(a, b, sizeof a) == 0);
    int diff = 0, distinct = 0;
    for (int i = 0; i < 200; i++) diff += a[i] != c[i];
    for (int t = 0; t < 50; t++)
        for (int i = 0; i < 200; i++)
            if (a[i] == t) { distinct++; break; }
    CHECKF(diff > 100, "seeds 42 and 43 agree on %d of 200 tokens", 200 - diff);
    CHECKF(distinct > 20, "only %d distinct tokens sampled", distinct);
}

/* A 6-token distribution with ids shuffled so that id order != probability order. */
#define NV 6
static const double P6[NV] = { 0.4, 0.25, 0.15, 0.1, 0.06, 0.04 };
static const int ID6[NV] = { 3, 0, 5, 1, 4, 2 };    /* P6[r] belongs to token ID6[r] */

/* Draws 20000 tokens; expected[r] is the expected probability of rank r (0 = must never appear). */
static void check_freq(const char *what, hkv_sampler_params p, const double expected[NV]) {
    float l[NV];
    for (int r = 0; r < NV; r++) l[ID6[r]] = (float)log(P6[r]) + 3.0f;   /* offset: softmax is shift-invariant */
    hkv_sampler *s = mk(p, NV);
    int count[NV] = { 0 }, n = 20000;
    for (int i = 0; i < n; i++) {
        int32_t t = hkv_sampler_sample(s, l);
        CHECK(t >= 0 && t < NV);
        if (t >= 0 && t < NV) count[t]++;
    }
    for (int r = 0; r < NV; r++) {
        double f = (double)count[ID6[r]] / n;
        if (expected[r] == 0) CHECKF(count[ID6[r]] == 0, "%s: rank %d drawn %d times", what, r, count[ID6[r]]);
        else CHECKF(fabs(f - expected[r]) < 0.015, "%s: rank %d frequency %.4f, expected %.4f", what, r, f,
                    expected[r]);
    }
    hkv_sampler_free(s);
}

static void test_distributions(void) {
    double e[NV];
    hkv_sampler_params p = plain(1.0f, 11);
    check_freq("plain", p, P6);
    /* temperature 0.5 squares the probabilities */
    double z = 0;
    for (int r = 0; r < NV; r++) z += P6[r] * P6[r];
    for (int r = 0; r < NV; r++) e[r] = P6[r] * P6[r] / z;
    p = plain(0.5f, 12);
    check_freq("temp 0.5", p, e);
    /* top-k 3: the 3 best, renormalized over 0.8 */
    for (int r = 0; r < NV; r++) e[r] = r < 3 ? P6[r] / 0.8 : 0;
    p = plain(1.0f, 13); p.top_k = 3;
    check_freq("top-k 3", p, e);
    /* top-p 0.6: 0.4 < 0.6, 0.65 >= 0.6 -> 2 tokens */
    for (int r = 0; r < NV; r++) e[r] = r < 2 ? P6[r] / 0.65 : 0;
    p = plain(1.0f, 14); p.top_p = 0.6f;
    check_freq("top-p 0.6", p, e);
    /* top-p 0.1: at least one token */
    for (int r = 0; r < NV; r++) e[r] = r == 0;
    p = plain(1.0f, 15); p.top_p = 0.1f;
    check_freq("top-p 0.1", p, e);
    /* min-p 0.2: threshold 0.08 drops 0.06 and 0.04 */
    for (int r = 0; r < NV; r++) e[r] = r < 4 ? P6[r] / 0.9 : 0;
    p = plain(1.0f, 16); p.min_p = 0.2f;
    check_freq("min-p 0.2", p, e);
    /* combined: top-k 5 (renormalize over 0.96) -> top-p 0.8 (0.4/.96, +0.25/.96 = 0.677, +0.15/.96 = 0.854)
     * -> min-p 0.5 (threshold 0.5 * 0.4/.96 drops 0.15) */
    for (int r = 0; r < NV; r++) e[r] = r < 2 ? P6[r] / 0.65 : 0;
    p = plain(1.0f, 17); p.top_k = 5; p.top_p = 0.8f; p.min_p = 0.5f;
    check_freq("top-k + top-p + min-p", p, e);
    /* top-k applies before top-p: top-k 2 keeps 0.4, 0.25 = 0.615 / 0.385 after renormalizing, so top-p 0.6
     * already stops after... 0.615 >= 0.6: the best one only */
    for (int r = 0; r < NV; r++) e[r] = r == 0;
    p = plain(1.0f, 18); p.top_k = 2; p.top_p = 0.6f;
    check_freq("top-k then top-p", p, e);
}

static void test_penalty(void) {
    hkv_sampler_params p = plain(0.0f, 1);
    p.repeat_penalty = 1.2f; p.repeat_last_n = 2;
    hkv_sampler *s = mk(p, 4);
    float pos[4] = { 2.0f, 1.9f, -5.0f, -5.0f };
    CHECK(hkv_sampler_sample(s, pos) == 0);      /* history empty */
    CHECK(hkv_sampler_sample(s, pos) == 1);      /* 0 was recorded: 2.0 / 1.2 = 1.67 < 1.9 */
    CHECK(hkv_sampler_sample(s, pos) == 0);      /* both penalized: 1.67 > 1.58 */
    hkv_sampler_accept(s, 2);
    hkv_sampler_accept(s, 3);                    /* window of 2 forgets 0 and 1 */
    CHECK(hkv_sampler_sample(s, pos) == 0);
    hkv_sampler_free(s);

    s = mk(p, 4);
    float neg[4] = { -1.0f, -1.1f, -9.0f, -9.0f };
    hkv_sampler_accept(s, 0);                    /* negative logit: multiplied, -1.2 < -1.1 */
    CHECK(hkv_sampler_sample(s, neg) == 1);
    hkv_sampler_free(s);

    p.repeat_last_n = 8;
    s = mk(p, 4);
    float once[4] = { 2.0f, 1.5f, -9.0f, -9.0f };
    hkv_sampler_accept(s, 0);
    hkv_sampler_accept(s, 0);                    /* applied once per distinct token: 1.67 > 1.5 */
    CHECK(hkv_sampler_sample(s, once) == 0);
    hkv_sampler_accept(s, 99);                   /* out of range: ignored */
    hkv_sampler_accept(s, -1);
    hkv_sampler_free(s);

    p.repeat_penalty = 1.0f;                     /* off */
    s = mk(p, 4);
    hkv_sampler_accept(s, 0);
    CHECK(hkv_sampler_sample(s, pos) == 0);
    hkv_sampler_free(s);

    /* penalty while sampling: logit 1 becomes 0.5, so p0 drops from 0.731 to 1 / (1 + e^-0.5) = 0.622 */
    p = plain(1.0f, 5);
    p.repeat_penalty = 2.0f;
    s = mk(p, 2);
    float two[2] = { 1.0f, 0.0f };
    int c0 = 0;
    for (int i = 0; i < 20000; i++) {
        hkv_sampler_accept(s, 0);                /* token 0 always in the window */
        c0 += hkv_sampler_sample(s, two) == 0;
    }
    CHECK_NEAR(c0 / 20000.0, 1.0 / (1.0 + exp(-0.5)), 0.015);
    hkv_sampler_free(s);
}

/* 150k vocabulary: top-p without top-k must find the exact nucleus beyond the first selected prefix. */
static int cmp_desc(const void *a, const void *b) {
    const float *const *x = a, *const *y = b;   /* sort pointers into the logits: value desc, address asc */
    if (**x != **y) return **x > **y ? -1 : 1;
    return *x < *y ? -1 : *x > *y;
}

/* Reference nucleus by a full sort in double precision: top-p prefix, then min-p. Draws must stay inside it,
 * cover much of it, and give the hot tokens their expected share. */
static void check_large(float top_p, float min_p, int draws, int min_distinct) {
    enum { N = 150000, HOT = 600 };
    float *l = malloc(sizeof *l * N);
    const float **order = malloc(sizeof *order * N);
    unsigned char *in = calloc(N, 1), *hit = calloc(N, 1);
    uint64_t x = 3;
    for (int i = 0; i < N; i++) l[i] = 0.0f;
    for (int h = 0; h < HOT; h++) l[lcg(&x) % N] = 5.0f;   /* hot tokens (a few collide, fine) */
    double z = 0;
    for (int i = 0; i < N; i++) { z += exp(l[i]); order[i] = &l[i]; }
    qsort(order, N, sizeof *order, cmp_desc);
    double cum = 0, pmax = exp(5.0) / z;
    int cut = 0;
    while (cut < N && cum < top_p) cum += exp(*order[cut++]) / z;
    int keep = 0;                                  /* min-p on the top-p prefix */
    while (keep < cut && exp(*order[keep]) / z >= min_p * pmax) keep++;
    if (keep == cut) {                             /* top-p decides: the float sampler must agree on the step */
        double step = exp(*order[cut - 1]) / z;
        CHECKF(cum - top_p > 1e-6 && top_p - (cum - step) > 1e-6, "top_p %g too near a step", top_p);
    }
    CHECKF(keep > 256, "nucleus of %d tokens does not exercise the growth", keep);
    double mass = 0, want_hot = 0;
    for (int i = 0; i < keep; i++) {
        in[order[i] - l] = 1;
        mass += exp(*order[i]) / z;
        want_hot += *order[i] == 5.0f ? exp(5.0) / z : 0;
    }
    want_hot /= mass;
    hkv_sampler_params p = plain(1.0f, 99);
    p.top_p = top_p; p.min_p = min_p;
    hkv_sampler *s = mk(p, N);
    int outside = 0, distinct = 0, hot = 0;
    for (int d = 0; d < draws; d++) {
        int32_t t = hkv_sampler_sample(s, l);
        if (t < 0 || t >= N || !in[t]) { outside++; continue; }
        distinct += !hit[t];
        hit[t] = 1;
        hot += l[t] == 5.0f;
    }
    CHECKF(outside == 0, "top_p %g min_p %g: %d draws outside the nucleus of %d", top_p, min_p, outside, keep);
    CHECKF(distinct >= min_distinct, "top_p %g min_p %g: only %d distinct tokens", top_p, min_p, distinct);
    double tol = 4 * sqrt(want_hot * (1 - want_hot) / draws) + 1e-9;   /* 4 sigma */
    CHECKF(fabs((double)hot / draws - want_hot) <= tol, "top_p %g min_p %g: hot share %.3f, expected %.3f",
           top_p, min_p, (double)hot / draws, want_hot);
    hkv_sampler_free(s);
    free(l); free(order); free(in); free(hit);
}

/* ---------------------------------------------------------------- totality (issue 12, defect 1) */

/* Draws `draws` tokens; every one must be a valid id and, where allowed != NULL, allowed[id] != 0. */
static void check_valid(const char *what, hkv_sampler_params p, const float *l, int n, int draws,
                        const unsigned char *allowed, int *distinct_out) {
    hkv_sampler *s = NULL;
    char err[256] = "";
    if (hkv_sampler_new(&p, n, &s, err, sizeof err) != HKV_OK) {
        CHECKF(0, "%s: hkv_sampler_new refused in-range parameters: %s", what, err);
        return;
    }
    unsigned char hit[512] = { 0 };
    int distinct = 0;
    for (int d = 0; d < draws; d++) {
        int32_t t = hkv_sampler_sample(s, l);
        if (t < 0 || t >= n) { CHECKF(0, "%s: draw %d gave token %d of %d", what, d, (int)t, n); break; }
        if (allowed && !allowed[t]) { CHECKF(0, "%s: draw %d gave token %d, not allowed", what, d, (int)t); break; }
        if (t < 512 && !hit[t]) { hit[t] = 1; distinct++; }
    }
    if (distinct_out) *distinct_out = distinct;
    hkv_sampler_free(s);
}

/* The reported request: repeat_penalty 1e-45 (server accepts (0, 100]) divides positive logits of recent
 * tokens into +inf. Before the fix the probabilities became NaN, min-p kept zero candidates and the sampler
 * read cand[-1] (ASan: heap-buffer-overflow; release: token 0 or garbage). Now the +inf tokens share the
 * mass, so only recently seen tokens with a positive logit can come out. */
static void test_tiny_penalty(void) {
    enum { N = 64 };
    float l[N];
    for (int i = 0; i < N; i++) l[i] = (float)((i * 37) % 11) - 5.0f;   /* both signs, token 0 negative */
    hkv_sampler_params p = hkv_sampler_default_params();
    p.repeat_penalty = 1e-45f;
    p.seed = 3;
    hkv_sampler *s = mk(p, N);
    unsigned char pen[N] = { 0 };
    int recent[] = { 7, 9, 20, 3, 41 };
    for (size_t i = 0; i < sizeof recent / sizeof recent[0]; i++) {
        hkv_sampler_accept(s, recent[i]);
        pen[recent[i]] = 1;
    }
    /* 7 (logit 1) and 41 (logit 5) are the recent tokens with a positive logit: the only +inf ones */
    int bad_draws = 0, n7 = 0, n41 = 0;
    for (int d = 0; d < 200; d++) {
        int32_t t = hkv_sampler_sample(s, l);
        bad_draws += !(t >= 0 && t < N && pen[t] && l[t] > 0);
        n7 += t == 7; n41 += t == 41;
    }
    CHECKF(n7 > 50 && n41 > 50, "the two +inf tokens should share the draws: %d and %d of 200", n7, n41);
    CHECKF(bad_draws == 0, "repeat_penalty 1e-45: %d of 200 draws invalid or not a +inf token", bad_draws);
    hkv_sampler_free(s);
}

static void test_nonfinite_logits(void) {
    enum { N = 40 };
    float nan_all[N], inf_all[N], ninf_all[N], mixed[N];
    unsigned char inf_tok[N] = { 0 };
    for (int i = 0; i < N; i++) {
        nan_all[i] = NAN; inf_all[i] = INFINITY; ninf_all[i] = -INFINITY;
        mixed[i] = i % 4 == 0 ? NAN : i % 4 == 1 ? -INFINITY : i % 4 == 2 ? 1.0f : -3e38f;
    }
    mixed[6] = INFINITY; mixed[13] = INFINITY; mixed[0] = NAN;
    inf_tok[6] = inf_tok[13] = 1;
    hkv_sampler_params d = hkv_sampler_default_params(), pl = plain(1.0f, 8), g = plain(0.0f, 1);
    hkv_sampler_params ps[3] = { d, pl, g };
    const char *names[3] = { "defaults", "plain", "greedy" };
    for (int k = 0; k < 3; k++) {
        char what[96];
        int distinct = 0;
        snprintf(what, sizeof what, "%s, all NaN", names[k]);
        check_valid(what, ps[k], nan_all, N, 50, NULL, NULL);
        snprintf(what, sizeof what, "%s, all -inf", names[k]);
        check_valid(what, ps[k], ninf_all, N, 50, NULL, NULL);
        snprintf(what, sizeof what, "%s, all +inf", names[k]);
        check_valid(what, ps[k], inf_all, N, 200, NULL, &distinct);
        if (k < 2) CHECKF(distinct > 5, "%s: +inf tokens should share the mass, %d distinct", what, distinct);
        snprintf(what, sizeof what, "%s, mixed inf/-inf/NaN", names[k]);
        check_valid(what, ps[k], mixed, N, 200, inf_tok, &distinct);
        if (k < 2) CHECKF(distinct == 2, "%s: both +inf tokens should come out, %d did", what, distinct);
    }
    /* greedy (and argmax) must not let a NaN at id 0 hide the maximum */
    float nan0[4] = { NAN, 1.0f, 2.0f, NAN };
    CHECK(hkv_argmax(nan0, 4) == 2);
    hkv_sampler *s = mk(g, 4);
    CHECK(hkv_sampler_sample(s, nan0) == 2);
    hkv_sampler_free(s);
    float nanonly[3] = { NAN, NAN, -INFINITY };
    CHECK(hkv_argmax(nanonly, 3) == 2);
}

/* Every parameter at the edges of the range hkv_sampler_new accepts, over finite, huge and non-finite
 * logits, for a 1-token vocabulary, a small one and one past the first top-p prefix (256). */
static void test_param_edges(void) {
    const float temps[] = { -1.0f, 0.0f, 1e-45f, 1e-30f, 1.0f, 1e30f, 3.4e38f };
    const int top_ks[] = { -1, 0, 1, 2, 299, 300, 301, 2147483647 };
    const float top_ps[] = { 1e-45f, 0.5f, 0.999999f, 1.0f, INFINITY };
    const float min_ps[] = { 0.0f, 1e-45f, 0.5f, 1.0f };
    const float pens[] = { 1e-45f, 1.0f, 100.0f, 3.4e38f };
    const int last_ns[] = { 0, 1, 64 };
    const int ns[] = { 1, 7, 300 };
    enum { NL = 6, NMAX = 300 };
    static float logits[NL][NMAX];
    uint64_t x = 5;
    for (int i = 0; i < NMAX; i++) {
        logits[0][i] = (float)(lcg(&x) % 2000) / 100.0f - 10.0f;        /* ordinary, both signs */
        logits[1][i] = i % 2 ? 3.4e38f : -3.4e38f;                       /* huge: differences overflow */
        logits[2][i] = NAN;
        logits[3][i] = INFINITY;
        logits[4][i] = i % 3 == 0 ? INFINITY : i % 3 == 1 ? -INFINITY : NAN;
        logits[5][i] = i == NMAX / 2 ? 0.0f : -INFINITY;                 /* one finite token */
    }
    long combos = 0, bad = 0;
    for (size_t a = 0; a < sizeof temps / sizeof *temps; a++)
    for (size_t b = 0; b < sizeof top_ks / sizeof *top_ks; b++)
    for (size_t c = 0; c < sizeof top_ps / sizeof *top_ps; c++)
    for (size_t e = 0; e < sizeof min_ps / sizeof *min_ps; e++)
    for (size_t f = 0; f < sizeof pens / sizeof *pens; f++)
    for (size_t h = 0; h < sizeof last_ns / sizeof *last_ns; h++)
    for (size_t v = 0; v < sizeof ns / sizeof *ns; v++) {
        hkv_sampler_params p = { .temp = temps[a], .top_k = top_ks[b], .top_p = top_ps[c], .min_p = min_ps[e],
                                 .repeat_penalty = pens[f], .repeat_last_n = last_ns[h], .seed = combos };
        int n = ns[v];
        hkv_sampler *s = NULL;
        if (hkv_sampler_new(&p, n, &s, NULL, 0) != HKV_OK) { bad++; continue; }
        for (int k = 0; k < NL; k++) {
            /* rows are NMAX long; the 1-token vocabulary reads the last entry, so row 5 is all -inf there */
            const float *l = logits[k] + (n == 1 ? NMAX - 1 : 0);
            for (int d = 0; d < 3; d++) {
                int32_t t = hkv_sampler_sample(s, l);
                bad += t < 0 || t >= n;
            }
        }
        hkv_sampler_free(s);
        combos++;
    }
    CHECKF(bad == 0, "%ld of %ld parameter combinations gave an invalid token or were refused", bad, combos);
}

/* The second route to defect 1: a GGUF whose classifier has one +inf and one -inf weight (rows 100 and 101,
 * column 0) makes one of those two logits +inf at every step, whatever the sign of the hidden state. Default
 * sampling (min-p on) through the library and through `heavykv run` must give that token, not cand[-1]. */
static void test_inf_weight(void) {
    char err[512];
    gguf_file *g = NULL;
    if (gguf_open(tu_model(), &g, err, sizeof err) != HKV_OK) { CHECKF(0, "%s", err); return; }
    gguf_writer *w = gguf_writer_new();
    gguf_w_copy_kv(w, g, NULL);
    float *patched = NULL;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char name[128];
        gguf_str_copy(t->name, name, sizeof name);
        const void *data = t->data;
        if (!strcmp(name, "output.weight") && t->type == 0 /* F32 */) {
            patched = malloc(t->nbytes);
            memcpy(patched, t->data, t->nbytes);
            patched[100 * t->ne[0]] = INFINITY;
            patched[101 * t->ne[0]] = -INFINITY;
            data = patched;
        }
        gguf_w_tensor(w, name, t->type, t->n_dims, t->ne, data, t->nbytes);
    }
    CHECKF(patched != NULL, "stories260K has no F32 output.weight to patch");
    const char *path = tu_tmp("infweight.gguf");
    CHECKF(gguf_writer_write(w, path, err, sizeof err) == HKV_OK, "%s", err);
    gguf_writer_free(w);
    gguf_close(g);
    free(patched);

    hkv_model *m = NULL;
    hkv_context *c = NULL;
    hkv_sampler *smp = NULL;
    if (hkv_model_load(path, NULL, &m, err, sizeof err) != HKV_OK) { CHECKF(0, "%s", err); remove(path); return; }
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    hkv_context_params cp = hkv_context_default_params();
    cp.n_threads = 1;
    cp.n_ctx = 64;
    CHECKF(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_OK, "%s", err);
    CHECK(hkv_sampler_new(NULL, mi.n_vocab, &smp, err, sizeof err) == HKV_OK);
    int32_t toks[64];
    int nt = hkv_tokenize(m, "Once upon a time", 1, 1, toks, 64);
    if (c && smp && nt > 0 && hkv_decode(c, 0, toks, nt) == HKV_OK) {
        for (int i = 0; i < 8; i++) {
            const float *l = hkv_get_logits(c, 0, -1);
            int32_t t = hkv_sampler_sample(smp, l);
            int32_t want = l[100] == INFINITY ? 100 : l[101] == INFINITY ? 101 : -2;
            if (want >= 0) CHECKF(t == want, "step %d: token %d, the +inf logit is %d", i, (int)t, (int)want);
            else CHECKF(t >= 0 && t < mi.n_vocab, "step %d: token %d", i, (int)t);
            if (hkv_decode(c, 0, &t, 1) != HKV_OK) break;
        }
    } else CHECKF(0, "prompt decode failed");
    hkv_sampler_free(smp);
    hkv_context_free(c);
    hkv_model_free(m);
    char out[4096], args[1024];
    snprintf(args, sizeof args, "run -m '%s' -p 'Once upon a time' -n 8 --seed 1", path);
    int rc = tu_cli(args, out, sizeof out);
    CHECKF(rc == 0, "heavykv run over a model with an inf weight: exit %d: %s", rc, out);
    remove(path);
}

int main(void) {
    test_defaults_and_params();
    test_greedy();
    test_seed();
    test_distributions();
    test_penalty();
    test_tiny_penalty();
    test_nonfinite_logits();
    test_param_edges();
    test_inf_weight();
    check_large(0.3f, 0.0f, 200, 120);      /* nucleus inside the hot tokens: second prefix (2048) */
    check_large(0.55f, 0.0f, 60, 35);       /* nucleus reaches far into the cold tokens: several prefixes */
    check_large(0.55f, 0.005f, 60, 35);     /* min-p keeps the cold tokens: top-p decides */
    check_large(0.5f, 0.01f, 120, 70);      /* min-p drops the cold tokens: min-p decides */
    return tu_done("sampler");
}
