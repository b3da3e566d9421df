/* The attention kernel against the scalar reference, on caches built directly (no model): tiled attention ==
 * attn_reference (outputs and the H2O scores the probabilities feed) within float tolerance for head dims
 * 8/64/128, GQA groups 1/4/8, awkward lengths, every K/V type, with and without eviction; K/V rows round-trip
 * within each format's error bound; attention over Q8_0/Q4_0 rows equals attention over their dequantized rows
 * stored as F32 (bit for bit: the same converted values in the same order), and SIMD == scalar kernels.
 * Every SIMD set the CPU has is checked (AVX2, and AVX-512 on a machine with it): its vector exp against exp
 * in double, its tile kernels against the scalar ones on odd row/key counts and == its own row kernels bit for
 * bit, its softmax step and probability kernels against the scalar ones, and the whole tiled attention against
 * the reference. The decode path that reuses the scores of attn_forward in attn_report gives the same H2O
 * scores bit for bit as the one that recomputes them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "attention.h"
#include "kernels.h"
#include "kvcache.h"
#include "kvrow.h"
#include "model.h"
#include "policy.h"
#include "tensor.h"
#include "testutil.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (2.0 / 16777216.0) - 1.0);
}

static void fill(float *x, size_t n, float amp) { for (size_t i = 0; i < n; i++) x[i] = amp * frand(); }

/* Error bound of one decoded element for each type, given the row. */
static int roundtrip_ok(int type, int hd, const float *x, const float *y, double *worst) {
    int b = kvrow_block(type, hd);
    for (int k = 0; k < hd; k += b) {
        float amax = 0.0f;
        for (int i = 0; i < b; i++) if (fabsf(x[k + i]) > amax) amax = fabsf(x[k + i]);
        for (int i = 0; i < b; i++) {
            double e = fabs((double)x[k + i] - y[k + i]), tol;
            switch (type) {
            case HKV_KV_F32: tol = 0; break;
            case HKV_KV_F16: tol = fabs(x[k + i]) * (1.0 / 2048) + 6e-8; break;
            case HKV_KV_BF16: tol = fabs(x[k + i]) * (1.0 / 256); break;
            /* half a step (Q4_0: one, at the clamped end), plus the f16 rounding of the scale: relative 2^-11,
             * absolute 2^-25 when the scale is an f16 subnormal, times the largest level */
            case HKV_KV_Q8_0: tol = 0.5 * amax / 127.0 * (1 + 1.0 / 512) + 127 * 3e-8; break;
            default: tol = amax / 8.0 * (1 + 1.0 / 512) + 8 * 3e-8; break;
            }
            if (e > tol) return 0;
            if (amax > 0 && e / amax > *worst) *worst = e / amax;
        }
    }
    return 1;
}

static void test_roundtrip(void) {
    const int hds[] = {8, 16, 24, 64, 80, 128};
    for (int type = 0; type < HKV_KV_TYPE_COUNT; type++)
        for (int hi = 0; hi < 6; hi++) {
            int hd = hds[hi];
            size_t rb = kvrow_bytes(type, hd);
            CHECKF(rb > 0, "%s hd %d has no row size", kvrow_type_name(type), hd);
            if (!rb) continue;
            unsigned char row[1024];
            float x[128], y[128];
            double worst = 0;
            int ok = 1;
            for (int rep = 0; rep < 200; rep++) {
                fill(x, (size_t)hd, rep % 3 == 0 ? 100.0f : rep % 3 == 1 ? 1.0f : 1e-3f);
                if (rep == 7) memset(x, 0, sizeof x);
                kvrow_store(type, hd, x, row);
                kvrow_load(type, hd, row, y);
                ok &= roundtrip_ok(type, hd, x, y, &worst);
            }
            CHECKF(ok, "%s hd %d: decoded row outside the format's bound", kvrow_type_name(type), hd);
        }
    CHECK(kvrow_bytes(HKV_KV_Q8_0, 64) == 2 * 34 && kvrow_bytes(HKV_KV_Q4_0, 64) == 2 * 18);
    CHECK(kvrow_bytes(HKV_KV_Q8_0, 8) == 10 && kvrow_bytes(HKV_KV_Q4_0, 8) == 6);
    CHECK(kvrow_bytes(HKV_KV_Q8_0, 12) == 0 && kvrow_bytes(HKV_KV_F16, 12) == 24);
    CHECK(hkv_kv_type_parse("q4_0") == HKV_KV_Q4_0 && hkv_kv_type_parse("q4") < 0);
    /* NaN / inf never turn into undefined levels */
    float bad[8] = {NAN, 1.0f, -INFINITY, 0.5f, 0, 0, 0, 0}, out[8];
    unsigned char row[16];
    kvrow_store(HKV_KV_Q8_0, 8, bad, row);
    kvrow_load(HKV_KV_Q8_0, 8, row, out);
    kvrow_store(HKV_KV_Q4_0, 8, bad, row);
    kvrow_load(HKV_KV_Q4_0, 8, row, out);
}

/* SIMD kernels == scalar kernels within tolerance; for quantized rows the converted values are exact, so the
 * SIMD dot over a Q8_0 row equals the SIMD dot over its F32 decoding bit for bit. */
static void test_kernels(void) {
    const int hds[] = {8, 64, 128};
    for (int type = 0; type < HKV_KV_TYPE_COUNT; type++)
        for (int hi = 0; hi < 3; hi++) {
            int hd = hds[hi], nr = 7;
            unsigned char row[1024], rowf[1024];
            float x[128], q[7 * 128], s1[7], s2[7], s3[7], o1[7 * 128], o2[7 * 128], o3[7 * 128], p[7];
            fill(x, (size_t)hd, 2.0f);
            fill(q, (size_t)nr * hd, 1.0f);
            fill(p, (size_t)nr, 1.0f);
            fill(o1, (size_t)nr * hd, 1.0f);
            memcpy(o2, o1, sizeof o1);
            memcpy(o3, o1, sizeof o1);
            kvrow_store(type, hd, x, row);
            kvrow_load(type, hd, row, x);
            kvrow_store(HKV_KV_F32, hd, x, rowf);
            kvrow_kernels ks = kvrow_kernels_get(type, hd), kr = kvrow_kernels_ref(type, hd),
                          kf = kvrow_kernels_get(HKV_KV_F32, hd);
            ks.kdot(row, q, nr, hd, s1, 1);
            kr.kdot(row, q, nr, hd, s2, 1);
            kf.kdot(rowf, q, nr, hd, s3, 1);
            ks.vaxpy(row, p, 1, nr, o1, hd);
            kr.vaxpy(row, p, 1, nr, o2, hd);
            kf.vaxpy(rowf, p, 1, nr, o3, hd);
            double md = 0;
            for (int r = 0; r < nr; r++) md = fmax(md, fabs((double)s1[r] - s2[r]));
            for (int i = 0; i < nr * hd; i++) md = fmax(md, fabs((double)o1[i] - o2[i]));
            CHECKF(md < 1e-4, "%s hd %d: SIMD vs scalar kernels differ by %g", kvrow_type_name(type), hd, md);
            CHECKF(!memcmp(s1, s3, sizeof(float) * nr) && !memcmp(o1, o3, sizeof(float) * nr * hd),
                   "%s hd %d: kernels over the row != kernels over its F32 decoding", kvrow_type_name(type), hd);
        }
}

#if defined(__x86_64__)
/* The SIMD sets this CPU can run: 0 AVX2, 1 AVX-512. */
static int have_set(int set) {
    hkv_cpu_caps caps = hkv_cpu_detect();
    return set == 0 ? caps.avx2_fma_f16c : caps.avx512;
}

static kvrow_kernels set_kernels(int set, int type, int hd) {
    return set == 0 ? kvrow_kernels_avx2(type, hd) : kvrow_kernels_avx512(type, hd);
}

/* exp within 2 ulp (measured: < 1 ulp) of exp in double over the normal range; the special values. */
static void test_exp(void) {
    enum { N = 200000 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = -87.33f + (88.72f + 87.33f) * (float)i / (N - 1);
    x[0] = 0.0f; x[1] = -1e-30f; x[2] = 1e-30f; x[3] = -0.6931472f; x[4] = 0.6931472f;
    for (int set = 0; set < 2; set++) {
        if (!have_set(set)) continue;
        void (*ex)(const float *, float *, int) = set ? kvrow_exp_avx512 : kvrow_exp_avx2;
        ex(x, y, N);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            double r = exp((double)x[i]);
            float rf = (float)r, ulp = nextafterf(rf, INFINITY) - rf;
            double e = fabs(y[i] - r) / ulp;
            if (e > worst) worst = e;
        }
        CHECKF(worst <= 2.0, "set %d: exp is %.2f ulp from exp in double", set, worst);
        CHECK(y[0] == 1.0f);
        const float sp[7] = {-INFINITY, NAN, -100.0f, -87.5f, 89.0f, INFINITY, -1e30f};
        float o[7];
        ex(sp, o, 7); /* also a tail shorter than a register */
        CHECK(o[0] == 0.0f && isnan(o[1]) && o[2] >= 0.0f && o[2] < 1.2e-38f && o[3] >= 0.0f && o[3] < 1.2e-38f);
        CHECK(isinf(o[4]) && isinf(o[5]) && o[6] == 0.0f);
    }
    free(x);
    free(y);
}

/* Tile kernels of each set: == the scalar kernels within float tolerance, and == the set's own row kernels
 * bit for bit (a dot product or an output element does not depend on how many rows/keys a call covers), on
 * odd counts of query rows and keys; softmax step and probabilities == the scalar versions. */
static void test_simd_sets(void) {
    const int hds[] = {8, 48, 64, 128};
    for (int set = 0; set < 2; set++) {
        if (!have_set(set)) continue;
        for (int type = 0; type < HKV_KV_TYPE_COUNT; type++)
            for (int hi = 0; hi < 4; hi++) {
                int hd = hds[hi];
                kvrow_kernels ks = set_kernels(set, type, hd), kr = kvrow_kernels_ref(type, hd);
                if (!ks.kdot) { CHECK(set == 1 && hd % 16 != 0); continue; }
                enum { NK = 7, NR = 9 };
                static unsigned char rows[NK][1024];
                const void *rp[NK];
                float q[NR * 128], s1[NR * 8], p[NR * 8], o1[NR * 128], o2[NR * 128], o3[NR * 128], x[128];
                for (int j = 0; j < NK; j++) {
                    fill(x, (size_t)hd, 2.0f);
                    kvrow_store(type, hd, x, rows[j]);
                    rp[j] = rows[j];
                }
                fill(q, sizeof q / sizeof q[0], 1.0f);
                fill(p, sizeof p / sizeof p[0], 1.0f);
                fill(o1, sizeof o1 / sizeof o1[0], 1.0f);
                memcpy(o2, o1, sizeof o1);
                memcpy(o3, o1, sizeof o1);
                for (int nk = 1; nk <= NK; nk += 3)
                    for (int nr = 1; nr <= NR; nr += 2) {
                        double md = 0;
                        int same = 1;
                        if (ks.kdot_tile) ks.kdot_tile(rp, nk, q, nr, hd, s1, 8);
                        else for (int j = 0; j < nk; j++) ks.kdot(rp[j], q, nr, hd, s1 + j, 8);
                        for (int j = 0; j < nk; j++)
                            for (int r = 0; r < nr; r++) {
                                float one, ref;
                                ks.kdot(rp[j], q + (size_t)r * hd, 1, hd, &one, 1);
                                kr.kdot(rp[j], q + (size_t)r * hd, 1, hd, &ref, 1);
                                same &= !memcmp(&one, &s1[r * 8 + j], sizeof one);
                                md = fmax(md, fabs((double)s1[r * 8 + j] - ref));
                            }
                        if (ks.vaxpy_tile) ks.vaxpy_tile(rp, nk, p, 8, nr, o1, hd);
                        else for (int j = 0; j < nk; j++) ks.vaxpy(rp[j], p + j, 8, nr, o1, hd);
                        for (int j = 0; j < nk; j++) {
                            ks.vaxpy(rp[j], p + j, 8, nr, o2, hd);
                            kr.vaxpy(rp[j], p + j, 8, nr, o3, hd);
                        }
                        same &= !memcmp(o1, o2, sizeof(float) * (size_t)nr * hd);
                        for (int i = 0; i < nr * hd; i++) md = fmax(md, fabs((double)o1[i] - o3[i]));
                        CHECKF(md < 1e-4, "set %d %s hd %d nk %d nr %d: tile vs scalar kernels differ by %g", set,
                               kvrow_type_name(type), hd, nk, nr, md);
                        CHECKF(same, "set %d %s hd %d nk %d nr %d: tile kernels != row kernels", set,
                               kvrow_type_name(type), hd, nk, nr);
                    }
            }
        /* softmax step and probabilities, lengths 0..40 (tails), from -inf and from a larger running max */
        kvrow_kernels ks = set_kernels(set, HKV_KV_F32, 64), kr = kvrow_kernels_ref(HKV_KV_F32, 64);
        for (int n = 0; n <= 40; n += 3)
            for (int start = 0; start < 2; start++) {
                float a[40], b[40], ka[40], kb[40], acc1[40], acc2[40];
                fill(a, 40, 30.0f);
                memcpy(b, a, sizeof a);
                float m1 = start ? 5.0f : -INFINITY, m2 = m1;
                float l1 = ks.softmax(a, n, 0.125f, &m1, ka), l2 = kr.softmax(b, n, 0.125f, &m2, kb);
                CHECKF(m1 == m2 && !memcmp(ka, kb, sizeof(float) * (size_t)n), "set %d n %d: softmax max/kept scores", set, n);
                CHECKF(fabsf(l1 - l2) <= 1e-6f * fmaxf(1.0f, l2), "set %d n %d: softmax sum %g vs %g", set, n, l1, l2);
                for (int i = 0; i < n; i++) CHECK(fabsf(a[i] - b[i]) <= 2.5e-7f * fmaxf(b[i], 1e-30f));
                fill(acc1, 40, 1.0f);
                memcpy(acc2, acc1, sizeof acc1);
                fill(a, 40, 30.0f);
                ks.exp_acc(a, n, 0.125f, m2, 0.5f, acc1);
                kr.exp_acc(a, n, 0.125f, m2, 0.5f, acc2);
                for (int i = 0; i < n; i++) CHECK(fabsf(acc1[i] - acc2[i]) <= 1e-6f * fmaxf(1.0f, fabsf(acc2[i])));
            }
    }
}
#endif

typedef struct att_case {
    int hd, group, type, n_tokens, chunk;   /* tokens written and attended in chunks of `chunk` */
    int budget;                             /* per head; >= n_tokens: no eviction */
    int gqa_mean, simulate;
    int keep;                               /* chunk 1: attn_block.keep_scores */
} att_case;

/* One cache; per chunk: the reference outputs/probabilities are computed first (they do not touch policy
 * state), then the tiled kernel and its report update the H2O scores, which must equal the scores before plus
 * the reference probabilities; outputs must match; then the head is trimmed (shared, so both sides keep the
 * same rows). Returns the largest output difference. */
static double run_case(const att_case *a) {
    const int nh = 2, hd = a->hd, G = a->group, n = a->n_tokens;
    hkv_policy_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.b.total = a->budget;
    cfg.b.heavy = a->budget / 2;
    cfg.b.recent = a->budget - cfg.b.heavy;
    int cap = a->budget + a->chunk < n ? a->budget + a->chunk : n;
    kv_cache *kv = NULL;
    char err[256];
    if (kv_new(&kv, 1, 1, nh, hd, cap, n, (hkv_kv_type)a->type, a->simulate, &hkv_policy_h2o, &cfg, err, sizeof err)) {
        CHECKF(0, "kv_new: %s", err);
        return 1e9;
    }
    kv_layer *L = kv_layer_of(kv, 0, 0);
    int qd = nh * G * hd, bq = attn_block_queries(G);
    float *q = malloc(sizeof(float) * (size_t)a->chunk * qd), *out = malloc(sizeof(float) * (size_t)a->chunk * qd);
    float *ref = malloc(sizeof(float) * (size_t)a->chunk * qd), *ml = malloc(sizeof(float) * (size_t)a->chunk * nh * G * 2);
    float *probs = malloc(sizeof(float) * (size_t)a->chunk * kv->capacity);
    double *expect = malloc(sizeof(double) * kv->capacity);
    float *scratch = malloc(sizeof(float) * attn_scratch_floats(G, kv->capacity, hd));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)a->chunk);
    float kx[128], vx[128];
    double maxd = 0, maxs = 0;
    for (int done = 0; done < n; done += a->chunk) {
        int k = n - done < a->chunk ? n - done : a->chunk;
        for (int t = 0; t < k; t++) {
            pos[t] = done + t;
            for (int h = 0; h < nh; h++) {
                fill(kx, (size_t)hd, 2.0f);
                fill(vx, (size_t)hd, 1.0f);
                CHECK(kv_insert(kv, L, h, pos[t], kx, vx) == HKV_OK);
            }
        }
        fill(q, (size_t)k * qd, 1.5f);
        for (int h = 0; h < nh; h++) {
            size_t base = (size_t)h * kv->capacity, sf = (size_t)kv->ops->state_floats;
            for (int s = 0; s < kv->capacity; s++) expect[s] = L->pstate[(base + s) * sf];
            int32_t vis[4096];
            for (int t = 0; t < k; t++) {
                int nv = attn_reference(kv, L, h, q + (size_t)t * qd + (size_t)h * G * hd, G, a->gqa_mean, pos[t],
                                        ref + (size_t)t * qd + (size_t)h * G * hd, probs, scratch);
                kv_visible_slots(kv, L, h, pos[t], vis);
                for (int j = 0; j < nv; j++) expect[vis[j]] += probs[j];
            }
            for (int t0 = 0; t0 < k; t0 += bq) {
                attn_block b = {.q = q + (size_t)t0 * qd + (size_t)h * G * hd, .out = out + (size_t)t0 * qd + (size_t)h * G * hd,
                                .stride = (size_t)qd, .pos = pos + t0, .n = k - t0 < bq ? k - t0 : bq, .group = G,
                                .ml = ml + ((size_t)t0 * nh + h) * G * 2, .ml_stride = (size_t)nh * G * 2,
                                .keep_scores = a->keep && k == 1};
                attn_forward(kv, L, h, &b, scratch);
            }
            attn_block all = {.q = q + (size_t)h * G * hd, .out = out + (size_t)h * G * hd, .stride = (size_t)qd, .pos = pos,
                              .n = k, .group = G, .ml = ml + (size_t)h * G * 2, .ml_stride = (size_t)nh * G * 2,
                              .keep_scores = a->keep && k == 1};
            attn_report(kv, L, h, &all, a->gqa_mean, scratch);
            for (int t = 0; t < k; t++)
                for (int i = 0; i < G * hd; i++) {
                    size_t o = (size_t)t * qd + (size_t)h * G * hd + i;
                    maxd = fmax(maxd, fabs((double)out[o] - ref[o]));
                }
            for (int j = 0; j < L->n_live[h]; j++) {
                int32_t s = L->order[base + j];
                maxs = fmax(maxs, fabs(L->pstate[(base + s) * sf] - expect[s]) / (1.0 + fabs(expect[s])));
            }
            kv_trim(kv, L, h, k);
            CHECK(L->n_live[h] <= a->budget);
        }
    }
    CHECKF(maxs < 2e-5, "hd %d group %d %s n %d chunk %d budget %d sim %d: H2O scores differ by %g",
           hd, G, kvrow_type_name(a->type), n, a->chunk, a->budget, a->simulate, maxs);
    free(q); free(out); free(ref); free(ml); free(probs); free(expect); free(scratch); free(pos);
    kv_free(kv);
    return maxd;
}

/* Forces a kernel set for the tiled path: 0 the default (AVX-512 where the CPU has it), 1 AVX2, 2 scalar. */
static void force_set(int mode) {
    hkv_kernels_force_scalar(mode == 2);
    kvrow_force_avx2(mode == 1);
}

static void test_tiled_vs_reference(void) {
    const int hds[] = {8, 64, 128}, groups[] = {1, 4, 8};
    const int types[] = {HKV_KV_F16, HKV_KV_F32, HKV_KV_BF16, HKV_KV_Q8_0, HKV_KV_Q4_0};
    for (int mode = 0; mode < 2; mode++) { /* default set, then AVX2 (the same on a machine without AVX-512) */
    force_set(mode);
    for (int hi = 0; hi < 3; hi++)
        for (int gi = 0; gi < 3; gi++)
            for (int ti = 0; ti < 5; ti++) {
                if (ti >= 2 && (hi != 1 || gi != 1)) continue; /* the other types: one shape is enough */
                att_case c = {.hd = hds[hi], .group = groups[gi], .type = types[ti], .n_tokens = 77, .chunk = 77,
                              .budget = 1000};
                double d = run_case(&c);
                CHECKF(d < 2e-5, "hd %d group %d %s whole: |out - ref| %g", c.hd, c.group, kvrow_type_name(c.type), d);
                c.n_tokens = 131; c.chunk = 37; c.budget = 29;  /* eviction between chunks */
                d = run_case(&c);
                CHECKF(d < 2e-5, "hd %d group %d %s evicting: |out - ref| %g", c.hd, c.group, kvrow_type_name(c.type), d);
                c.chunk = 1; c.n_tokens = 45; c.budget = 9; c.gqa_mean = 1; /* decode steps */
                d = run_case(&c);
                CHECKF(d < 2e-5, "hd %d group %d %s decode: |out - ref| %g", c.hd, c.group, kvrow_type_name(c.type), d);
                c.keep = 1; /* decode steps whose report reuses attn_forward's scores */
                d = run_case(&c);
                CHECKF(d < 2e-5, "hd %d group %d %s decode, kept scores: |out - ref| %g", c.hd, c.group,
                       kvrow_type_name(c.type), d);
            }
    }
    force_set(0);
    /* awkward lengths, the simulation layout, and the scalar kernels behind the same tiling */
    const int lens[][2] = {{1, 1}, {2, 1}, {33, 33}, {65, 64}, {97, 31}};
    for (int li = 0; li < 5; li++)
        for (int sim = 0; sim < 2; sim++)
            for (int mode = 0; mode < 3; mode++) {
                force_set(mode);
                att_case c = {.hd = 64, .group = 4, .type = HKV_KV_F16, .n_tokens = lens[li][0], .chunk = lens[li][1],
                              .budget = 17, .simulate = sim, .keep = lens[li][1] == 1};
                double d = run_case(&c);
                CHECKF(d < 2e-5, "n %d chunk %d sim %d set %d: |out - ref| %g", c.n_tokens, c.chunk, sim, mode, d);
                force_set(0);
            }
}

/* Decode steps under H2O eviction: the report that reuses attn_forward's kept scores and the one that
 * recomputes q.k give the same outputs and the same policy scores, bit for bit, in every kernel set. */
static void test_kept_scores(void) {
    const int hd = 64, G = 4, n = 60, budget = 13;
    for (int mode = 0; mode < 3; mode++) {
        force_set(mode);
        hkv_policy_cfg cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.b.total = budget;
        cfg.b.heavy = budget / 2;
        cfg.b.recent = budget - cfg.b.heavy;
        kv_cache *kv[2] = {NULL, NULL};
        char err[256];
        for (int c = 0; c < 2; c++)
            CHECK(kv_new(&kv[c], 1, 1, 1, hd, budget + 1, n, HKV_KV_F16, 0, &hkv_policy_h2o, &cfg, err, sizeof err) == HKV_OK);
        if (!kv[0] || !kv[1]) { kv_free(kv[0]); kv_free(kv[1]); continue; }
        float *scratch = malloc(sizeof(float) * attn_scratch_floats(G, budget + 1, hd));
        float kx[64], vx[64], q[4 * 64], out[2][4 * 64], ml[2][8];
        int same = 1;
        for (int32_t t = 0; t < n; t++) {
            fill(kx, 64, 2.0f);
            fill(vx, 64, 1.0f);
            fill(q, 4 * 64, 1.5f);
            for (int c = 0; c < 2; c++) {
                kv_layer *L = kv_layer_of(kv[c], 0, 0);
                CHECK(kv_insert(kv[c], L, 0, t, kx, vx) == HKV_OK);
                attn_block b = {.q = q, .out = out[c], .stride = (size_t)G * hd, .pos = &t, .n = 1, .group = G,
                                .ml = ml[c], .ml_stride = 2 * (size_t)G, .keep_scores = c};
                attn_forward(kv[c], L, 0, &b, scratch);
                attn_report(kv[c], L, 0, &b, 0, scratch);
                kv_trim(kv[c], L, 0, 1);
            }
            same &= !memcmp(out[0], out[1], sizeof out[0]);
        }
        kv_layer *L0 = kv_layer_of(kv[0], 0, 0), *L1 = kv_layer_of(kv[1], 0, 0);
        size_t sf = (size_t)kv[0]->ops->state_floats;
        CHECKF(same, "set %d: outputs differ with kept scores", mode);
        CHECKF(L0->n_live[0] == budget && L1->n_live[0] == budget, "set %d: %d / %d rows kept", mode, L0->n_live[0],
               L1->n_live[0]);
        CHECKF(!memcmp(L0->pos, L1->pos, sizeof(int32_t) * (size_t)(budget + 1)) &&
                   !memcmp(L0->pstate, L1->pstate, sizeof(float) * sf * (size_t)(budget + 1)),
               "set %d: kept and recomputed scores give different H2O state", mode);
        free(scratch);
        kv_free(kv[0]);
        kv_free(kv[1]);
    }
    force_set(0);
}

/* Attention over Q8_0 / Q4_0 rows == attention over the same rows decoded to F32, bit for bit. */
static void test_quantized_equals_dequantized(void) {
    const int types[] = {HKV_KV_Q8_0, HKV_KV_Q4_0, HKV_KV_BF16, HKV_KV_F16};
    for (int ti = 0; ti < 4; ti++)
        for (int hd = 8; hd <= 128; hd *= 4) {
            const int n = 70, G = 4, nh = 1;
            hkv_policy_cfg cfg;
            memset(&cfg, 0, sizeof cfg);
            cfg.b.total = n;
            kv_cache *kq = NULL, *kf = NULL;
            char err[256];
            CHECK(kv_new(&kq, 1, 1, nh, hd, n, n, (hkv_kv_type)types[ti], 0, &hkv_policy_full, &cfg, err, sizeof err) == HKV_OK);
            CHECK(kv_new(&kf, 1, 1, nh, hd, n, n, HKV_KV_F32, 0, &hkv_policy_full, &cfg, err, sizeof err) == HKV_OK);
            if (!kq || !kf) { kv_free(kq); kv_free(kf); continue; }
            kv_layer *Lq = kv_layer_of(kq, 0, 0), *Lf = kv_layer_of(kf, 0, 0);
            float kx[128], vx[128], q[16 * 4 * 128], o1[16 * 4 * 128], o2[16 * 4 * 128], ml[16 * 8];
            unsigned char row[1024];
            for (int t = 0; t < n; t++) {
                fill(kx, (size_t)hd, 3.0f);
                fill(vx, (size_t)hd, 1.0f);
                CHECK(kv_insert(kq, Lq, 0, t, kx, vx) == HKV_OK);
                kvrow_store(types[ti], hd, kx, row); kvrow_load(types[ti], hd, row, kx);
                kvrow_store(types[ti], hd, vx, row); kvrow_load(types[ti], hd, row, vx);
                CHECK(kv_insert(kf, Lf, 0, t, kx, vx) == HKV_OK);
            }
            int32_t pos[16];
            for (int i = 0; i < 16; i++) pos[i] = n - 16 + i;
            fill(q, sizeof q / sizeof q[0], 1.0f);
            float *scratch = malloc(sizeof(float) * attn_scratch_floats(G, n, hd));
            attn_block b = {.q = q, .out = o1, .stride = (size_t)G * hd, .pos = pos, .n = 16, .group = G, .ml = ml, .ml_stride = 8};
            attn_forward(kq, Lq, 0, &b, scratch);
            b.out = o2;
            attn_forward(kf, Lf, 0, &b, scratch);
            CHECKF(!memcmp(o1, o2, sizeof(float) * 16 * G * hd), "%s hd %d: attention over the rows != over their decoding",
                   kvrow_type_name(types[ti]), hd);
            free(scratch);
            kv_free(kq);
            kv_free(kf);
        }
}

static void test_bad_shapes(void) {
    hkv_policy_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.b.total = 8;
    kv_cache *kv = NULL;
    char err[256] = "";
    CHECK(kv_new(&kv, 1, 1, 1, 12, 8, 8, HKV_KV_Q8_0, 0, &hkv_policy_full, &cfg, err, sizeof err) == HKV_ERR_UNSUPPORTED);
    CHECKF(strstr(err, "multiple of 8") != NULL, "%s", err);
    CHECK(kv == NULL);
    CHECK(kv_new(&kv, 1, 1, 1, 12, 8, 8, HKV_KV_F16, 0, &hkv_policy_full, &cfg, err, sizeof err) == HKV_OK);
    kv_free(kv);
    CHECK(kv_new(&kv, 1, 1, 1, 8, 8, 8, (hkv_kv_type)9, 0, &hkv_policy_full, &cfg, err, sizeof err) == HKV_ERR_UNSUPPORTED);
}

/* Cache-position mode: every output equals an independent computation that rotates the query by its own
 * cache index and each kept key (raw, as written) by its index among the kept positions — with hkv_rope, not
 * the table — while H2O evicts between chunks. */
static void test_cache_positions(void) {
    const int n = 70, chunk = 7, nh = 1;
    for (int variant = 0; variant < 4; variant++) {
        int hd = variant & 1 ? 64 : 8, G = variant & 2 ? 4 : 1, type = variant == 3 ? HKV_KV_F16 : HKV_KV_F32;
        hkv_hparams hp;
        memset(&hp, 0, sizeof hp);
        hp.head_dim = hp.n_rot = hd;
        hp.rope_theta = 10000.0f;
        hp.rope_freq_scale = 1.0f;
        hp.rope_neox = variant >= 2;
        hkv_policy_cfg cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.b = (hkv_budget){12, 5, 5, 2};
        kv_cache *kv = NULL;
        char err[256];
        if (kv_new(&kv, 1, 1, nh, hd, 12 + chunk, n, (hkv_kv_type)type, 0, &hkv_policy_h2o, &cfg, err, sizeof err) ||
            attn_set_rope(kv, &hp, NULL, 12 + chunk)) {
            CHECKF(0, "%s", err);
            kv_free(kv);
            continue;
        }
        kv_layer *L = kv_layer_of(kv, 0, 0);
        float *K = malloc(sizeof(float) * n * hd), *V = malloc(sizeof(float) * n * hd), q[7 * 4 * 64], out[7 * 4 * 64], ml[7 * 8];
        float *scratch = malloc(sizeof(float) * attn_scratch_floats(G, kv->capacity, hd));
        unsigned char row[512];
        int32_t pos[7], kept[64];
        double maxd = 0;
        int max_index = 0;
        for (int done = 0; done < n; done += chunk) {
            for (int t = 0; t < chunk; t++) {
                pos[t] = done + t;
                float *k = K + (size_t)pos[t] * hd, *v = V + (size_t)pos[t] * hd;
                fill(k, (size_t)hd, 2.0f);
                fill(v, (size_t)hd, 1.0f);
                CHECK(kv_insert(kv, L, 0, pos[t], k, v) == HKV_OK);
                kvrow_store(type, hd, k, row); kvrow_load(type, hd, row, k); /* what the cache holds */
                kvrow_store(type, hd, v, row); kvrow_load(type, hd, row, v);
            }
            fill(q, (size_t)chunk * G * hd, 1.0f);
            attn_block b = {.q = q, .out = out, .stride = (size_t)G * hd, .pos = pos, .n = chunk, .group = G, .ml = ml,
                            .ml_stride = 2 * (size_t)G};
            attn_forward(kv, L, 0, &b, scratch);
            attn_report(kv, L, 0, &b, 0, scratch);
            int nk = kv_positions(kv, 0, 0, 0, kept, 64);
            for (int t = 0; t < chunk; t++) {
                int nv = 0;
                while (nv < nk && kept[nv] <= pos[t]) nv++;
                if (nv - 1 > max_index) max_index = nv - 1;
                for (int g = 0; g < G; g++) {
                    float qr[64], kr[64];
                    double s[64], mx = -1e300, sum = 0, o[64] = {0};
                    memcpy(qr, q + ((size_t)t * G + g) * hd, sizeof(float) * hd);
                    hkv_rope(&hp, NULL, qr, nv - 1);
                    for (int j = 0; j < nv; j++) {
                        memcpy(kr, K + (size_t)kept[j] * hd, sizeof(float) * hd);
                        hkv_rope(&hp, NULL, kr, j);
                        s[j] = 0;
                        for (int i = 0; i < hd; i++) s[j] += (double)qr[i] * kr[i];
                        s[j] /= sqrt((double)hd);
                        if (s[j] > mx) mx = s[j];
                    }
                    for (int j = 0; j < nv; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
                    for (int j = 0; j < nv; j++)
                        for (int i = 0; i < hd; i++) o[i] += s[j] / sum * V[(size_t)kept[j] * hd + i];
                    for (int i = 0; i < hd; i++) maxd = fmax(maxd, fabs(o[i] - out[((size_t)t * G + g) * hd + i]));
                }
            }
            kv_trim(kv, L, 0, chunk);
        }
        CHECKF(maxd < 1e-5, "cache positions hd %d group %d neox %d: |out - independent| %g", hd, G, hp.rope_neox, maxd);
        CHECKF(max_index == 12 + chunk - 1, "the largest cache index used was %d", max_index); /* eviction happened */
        free(K); free(V); free(scratch);
        kv_free(kv);
    }
}

int main(void) {
    test_roundtrip();
    test_kernels();
#if defined(__x86_64__)
    test_exp();
    test_simd_sets();
#endif
    test_tiled_vs_reference();
    test_kept_scores();
    test_quantized_equals_dequantized();
    test_bad_shapes();
    test_cache_positions();
    return tu_done("test_attention");
}
