/* Sampler: logits -> token id.
 *
 * Pipeline (llama.cpp-like): repetition penalty over the last repeat_last_n accepted tokens -> greedy argmax
 * when temp <= 0 -> top-k -> softmax with temperature -> top-p -> min-p -> renormalize -> draw with a seeded
 * xoshiro256** generator (same seed, same logits -> same tokens).
 *
 * Candidates are ordered best first by (logit desc, id asc), a total order, so every cut is deterministic and
 * ties go to the lower id. Sorting the whole vocabulary (150k) per token is avoided: top-k selects its k
 * with a bounded heap, and top-p without top-k grows a selected prefix (256, 2048, ...) until it holds the
 * nucleus — the sorted top-m is exactly the first m of the full sorted order, so the result is the same.
 * With min-p set, only the tokens min-p would keep are sorted (see gather). */
#include "alloc.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sampler.h"

#define HKV_MAX_REPEAT_LAST_N (1 << 20)
#define HKV_TOP_P_FIRST_PREFIX 256   /* first prefix tried for top-p without top-k; grows 8x */

typedef struct hkv_cand { float logit; float p; int32_t id; } hkv_cand;

struct hkv_sampler {
    hkv_sampler_params p;
    int n_vocab;
    uint64_t rng[4];          /* xoshiro256** state */
    int32_t *hist;            /* [repeat_last_n] ring buffer of the last accepted tokens */
    int n_hist, hist_next;    /* tokens in the ring, next write index */
    unsigned char *seen;      /* [n_vocab] scratch, all 0 between calls: token already penalized this step */
    float *work;              /* [n_vocab] logits after the penalty */
    hkv_cand *cand;           /* [n_vocab] candidates of the current step */
};

hkv_sampler_params hkv_sampler_default_params(void) {
    hkv_sampler_params p = { .temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                             .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0 };
    return p;
}

/* ---------------------------------------------------------------- random numbers */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

/* ---------------------------------------------------------------- construction */

static hkv_status bad(char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    return HKV_ERR_ARG;
}

hkv_status hkv_sampler_new(const hkv_sampler_params *pp, int n_vocab, hkv_sampler **out, char *err, size_t errlen) {
    hkv_sampler_params p = pp ? *pp : hkv_sampler_default_params();
    char msg[160];
    if (!out) return bad(err, errlen, "hkv_sampler_new needs an output pointer");
    *out = NULL;
    if (n_vocab <= 0) {
        snprintf(msg, sizeof msg, "sampler vocabulary size %d must be positive", n_vocab);
        return bad(err, errlen, msg);
    }
    if (!isfinite(p.temp)) return bad(err, errlen, "sampler temperature must be a finite number (0 or less: greedy)");
    if (!(p.top_p > 0)) {
        snprintf(msg, sizeof msg, "top_p %g must be above 0 (1 or more turns it off)", (double)p.top_p);
        return bad(err, errlen, msg);
    }
    if (!(p.min_p >= 0 && p.min_p <= 1)) {
        snprintf(msg, sizeof msg, "min_p %g must be between 0 (off) and 1", (double)p.min_p);
        return bad(err, errlen, msg);
    }
    if (!(p.repeat_penalty > 0) || isinf(p.repeat_penalty)) {
        snprintf(msg, sizeof msg, "repeat_penalty %g must be a positive number (1 turns it off)",
                 (double)p.repeat_penalty);
        return bad(err, errlen, msg);
    }
    if (p.repeat_last_n < 0 || p.repeat_last_n > HKV_MAX_REPEAT_LAST_N) {
        snprintf(msg, sizeof msg, "repeat_last_n %d must be between 0 (off) and %d", p.repeat_last_n,
                 HKV_MAX_REPEAT_LAST_N);
        return bad(err, errlen, msg);
    }
    hkv_sampler *s = hkv_calloc(1, sizeof *s);
    if (s) {
        s->hist = hkv_malloc(sizeof *s->hist * (size_t)(p.repeat_last_n > 0 ? p.repeat_last_n : 1));
        s->seen = hkv_calloc((size_t)n_vocab, 1);
        s->work = hkv_malloc(sizeof *s->work * (size_t)n_vocab);
        s->cand = hkv_malloc(sizeof *s->cand * (size_t)n_vocab);
    }
    if (!s || !s->hist || !s->seen || !s->work || !s->cand) {
        hkv_sampler_free(s);
        if (err && errlen) snprintf(err, errlen, "out of memory for a sampler over %d tokens", n_vocab);
        return HKV_ERR_NOMEM;
    }
    s->p = p;
    s->n_vocab = n_vocab;
    uint64_t x = p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    *out = s;
    return HKV_OK;
}

void hkv_sampler_free(hkv_sampler *s) {
    if (!s) return;
    hkv_free(s->hist); hkv_free(s->seen); hkv_free(s->work); hkv_free(s->cand);
    hkv_free(s);
}

void hkv_sampler_accept(hkv_sampler *s, int32_t token) {
    if (!s || token < 0 || token >= s->n_vocab || s->p.repeat_last_n <= 0) return;
    s->hist[s->hist_next] = token;
    s->hist_next = (s->hist_next + 1) % s->p.repeat_last_n;
    if (s->n_hist < s->p.repeat_last_n) s->n_hist++;
}

/* ---------------------------------------------------------------- steps */

/* work = logits with the penalty applied once per distinct recent token (llama.cpp: a positive logit is
 * divided, a negative one multiplied, so the token always becomes less likely). NaN becomes -inf. */
static void apply_penalty(hkv_sampler *s, const float *logits) {
    for (int i = 0; i < s->n_vocab; i++) s->work[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f) return;
    for (int i = 0; i < s->n_hist; i++) {
        int32_t t = s->hist[i];
        if (s->seen[t]) continue;
        s->seen[t] = 1;
        s->work[t] = s->work[t] > 0 ? s->work[t] / pen : s->work[t] * pen;
    }
    for (int i = 0; i < s->n_hist; i++) s->seen[s->hist[i]] = 0;
}

/* NaN ranks below everything (also below -inf), so one NaN at id 0 cannot hide the real maximum. */
int32_t hkv_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i]))) best = i;
    return best;
}

/* a ranks below b: lower logit, or the same logit and a higher id. */
static int worse(const hkv_cand *a, const hkv_cand *b) {
    return a->logit < b->logit || (a->logit == b->logit && a->id > b->id);
}

static int cmp_best_first(const void *pa, const void *pb) {
    const hkv_cand *a = pa, *b = pb;
    return worse(a, b) ? 1 : worse(b, a) ? -1 : 0;
}

/* Min-heap on `worse`: h[0] is the worst of the kept candidates. */
static void sift_down(hkv_cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m])) m = l;
        if (r < n && worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        hkv_cand t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

/* Fills s->cand[0..m) with the m best tokens, best first. O(n log m). */
static void select_top(hkv_sampler *s, int m) {
    hkv_cand *h = s->cand;
    int n = s->n_vocab;
    if (m >= n) {
        for (int i = 0; i < n; i++) { h[i].logit = s->work[i]; h[i].id = i; }
        qsort(h, (size_t)n, sizeof *h, cmp_best_first);
        return;
    }
    for (int i = 0; i < m; i++) { h[i].logit = s->work[i]; h[i].id = i; }
    for (int i = m / 2 - 1; i >= 0; i--) sift_down(h, m, i);
    for (int i = m; i < n; i++) {
        hkv_cand c = { s->work[i], 0.0f, i };
        if (worse(&h[0], &c)) { h[0] = c; sift_down(h, m, 0); }
    }
    for (int k = m - 1; k > 0; k--) {   /* heapsort: move the worst to the back, leaving best first */
        hkv_cand t = h[0]; h[0] = h[k]; h[k] = t;
        sift_down(h, k, 0);
    }
}

/* Sets cand[i].p = exp((logit - lmax) / temp) / z for the first m candidates. */
static void fill_probs(hkv_cand *c, int m, float lmax, float temp, double z) {
    for (int i = 0; i < m; i++) c[i].p = (float)(expf((c[i].logit - lmax) / temp) / z);
}

/* Smallest prefix of the sorted candidates whose probability reaches top_p (at least 1); 0 if the m given
 * do not reach it. */
static int top_p_cut(const hkv_cand *c, int m, float top_p) {
    double cum = 0;
    for (int i = 0; i < m; i++) {
        cum += c[i].p;
        if (cum >= top_p) return i + 1;
    }
    return 0;
}

/* Top-k, softmax with temperature and top-p: leaves the candidates in s->cand and returns their number;
 * *sorted says whether they are best first (otherwise in id order). */
static int gather(hkv_sampler *s, float lmax, int *sorted) {
    int n = s->n_vocab, k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    float temp = s->p.temp, top_p = s->p.top_p;
    if (k < n) {
        select_top(s, k);
        double z = 0;
        for (int i = 0; i < k; i++) z += expf((s->cand[i].logit - lmax) / temp);
        fill_probs(s->cand, k, lmax, temp, z);
        int cut = top_p < 1 ? top_p_cut(s->cand, k, top_p) : k;
        *sorted = 1;
        return cut > 0 ? cut : k;
    }
    double z = 0;
    for (int i = 0; i < n; i++) z += expf((s->work[i] - lmax) / temp);
    if (top_p >= 1) {                  /* no cut needs an order: keep id order */
        for (int i = 0; i < n; i++) { s->cand[i].logit = s->work[i]; s->cand[i].id = i; }
        fill_probs(s->cand, n, lmax, temp, z);
        *sorted = 0;
        return n;
    }
    *sorted = 1;
    if (s->p.min_p > 0) {
        /* min-p also keeps a prefix of the sorted order (p >= min_p * p_max, and p_max = 1/z survives top-p),
         * so top-p followed by min-p is the shorter of the two prefixes: sort only min-p's survivors. */
        float thr = s->p.min_p * (float)(1.0 / z);
        int m = 0;
        for (int i = 0; i < n; i++) {
            float pi = (float)(expf((s->work[i] - lmax) / temp) / z);
            if (pi >= thr) { hkv_cand c = { s->work[i], pi, i }; s->cand[m++] = c; }
        }
        qsort(s->cand, (size_t)m, sizeof *s->cand, cmp_best_first);
        int cut = top_p_cut(s->cand, m, top_p);
        return cut > 0 ? cut : m;
    }
    for (int m = HKV_TOP_P_FIRST_PREFIX;; m = m > n / 8 ? n : m * 8) {
        if (m > n) m = n;
        select_top(s, m);
        fill_probs(s->cand, m, lmax, temp, z);
        int cut = top_p_cut(s->cand, m, top_p);
        if (cut > 0) return cut;
        if (m == n) return n;          /* rounding kept the sum just below top_p: keep everything */
    }
}

/* Drops candidates with p < min_p * p_max, keeping their order. */
static int min_p_filter(hkv_cand *c, int m, float min_p, int sorted) {
    float pmax = c[0].p;
    if (!sorted)
        for (int i = 1; i < m; i++) pmax = c[i].p > pmax ? c[i].p : pmax;
    float thr = min_p * pmax;
    int o = 0;
    for (int i = 0; i < m; i++)
        if (c[i].p >= thr) c[o++] = c[i];
    return o;
}

/* Sampling is total: whatever the logits (finite, +-inf, NaN) and parameters (in the ranges hkv_sampler_new
 * accepts), it returns an id in [0, n_vocab) and reads only inside its arrays. The invariant that makes the
 * steps below safe is a finite lmax: then every (logit - lmax) / temp is finite or -inf, every p is in
 * [0, 1], the best token has p = 1/z > 0 and survives top-k, top-p and min-p, so m >= 1. */
static int32_t draw(hkv_sampler *s) {
    int32_t best = hkv_argmax(s->work, s->n_vocab);
    float lmax = s->work[best];
    if (isinf(lmax) && lmax < 0) return best;     /* every token is -inf (or was NaN): nothing to weigh */
    if (isinf(lmax)) {
        /* Some logits are +inf (a tiny repeat_penalty divides a positive logit into overflow; a model with an
         * inf weight). inf - inf is NaN, so take the softmax's limit instead: the +inf tokens share the mass
         * equally and every finite token gets none. */
        for (int i = 0; i < s->n_vocab; i++) s->work[i] = s->work[i] == INFINITY ? 0.0f : -INFINITY;
        lmax = 0.0f;
    }
    int sorted;
    int m = gather(s, lmax, &sorted);
    if (s->p.min_p > 0) m = min_p_filter(s->cand, m, s->p.min_p, sorted);
    if (m <= 0) return best;                      /* unreachable by the invariant; never index cand[-1] */
    double total = 0;
    for (int i = 0; i < m; i++) total += s->cand[i].p;
    double u = rng_uniform(s->rng) * total, acc = 0;
    for (int i = 0; i < m; i++) {
        acc += s->cand[i].p;
        if (u < acc) return s->cand[i].id;
    }
    return s->cand[m - 1].id;                     /* u landed on the rounding edge of the last one */
}

int32_t hkv_sampler_sample(hkv_sampler *s, const float *logits) {
    if (!s || !logits) return -1;
    apply_penalty(s, logits);
    int32_t tok = s->p.temp <= 0 ? hkv_argmax(s->work, s->n_vocab) : draw(s);
    hkv_sampler_accept(s, tok);
    return tok;
}
