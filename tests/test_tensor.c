/* Tensor types: conversions, block layouts, quantization error bounds, SIMD vs scalar agreement,
 * thread pool and matmul determinism. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"
#include "tensor.h"
#include "kernels.h"
#include "testutil.h"

static const int QTYPES[] = {HKV_TYPE_F32, HKV_TYPE_F16, HKV_TYPE_BF16, HKV_TYPE_Q8_0, HKV_TYPE_Q4_0,
                             HKV_TYPE_Q5_0, HKV_TYPE_Q4_K, HKV_TYPE_Q5_K, HKV_TYPE_Q6_K};
#define N_QTYPES ((int)(sizeof QTYPES / sizeof QTYPES[0]))

/* Deterministic generator: xorshift64 + Box-Muller for N(0,1). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static double rng_u(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static float rng_normal(void) { return (float)(sqrt(-2.0 * log(rng_u())) * cos(6.283185307179586 * rng_u())); }
static void fill_normal(float *x, int64_t n, float scale) { for (int64_t i = 0; i < n; i++) x[i] = scale * rng_normal(); }

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_f16(void) {
    CHECK(hkv_f32_to_f16(0.0f) == 0x0000);
    CHECK(hkv_f32_to_f16(-0.0f) == 0x8000);
    CHECK(hkv_f32_to_f16(1.0f) == 0x3c00);
    CHECK(hkv_f32_to_f16(-2.0f) == 0xc000);
    CHECK(hkv_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(hkv_f32_to_f16(65519.996f) == 0x7bff);          /* just below the halfway point to 65536 */
    CHECK(hkv_f32_to_f16(65520.0f) == 0x7c00);            /* tie rounds to even = overflow to inf */
    CHECK(hkv_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(hkv_f32_to_f16(-INFINITY) == 0xfc00);
    uint16_t hn = hkv_f32_to_f16(NAN);
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
    CHECK(hkv_f32_to_f16(ldexpf(1.0f, -14)) == 0x0400);   /* smallest normal */
    CHECK(hkv_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001);   /* smallest subnormal */
    CHECK(hkv_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);   /* half of it: tie to even (0) */
    CHECK(hkv_f32_to_f16(ldexpf(1.5f, -25)) == 0x0001);
    CHECK(hkv_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);   /* 1.5 ulp: tie to even (2) */
    CHECK(hkv_f32_to_f16(ldexpf(1.0f, -26)) == 0x0000);
    CHECK(hkv_f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400); /* subnormal rounding carries into normal */
    CHECK(hkv_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00); /* tie, even stays */
    CHECK(hkv_f32_to_f16(1.0f + ldexpf(3.0f, -11)) == 0x3c02); /* tie, odd rounds up */
    CHECK(hkv_f32_to_f16(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)) == 0x3c01);
    CHECK(hkv_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(hkv_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    CHECK(hkv_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(isinf(hkv_f16_to_f32(0xfc00)) && hkv_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(hkv_f16_to_f32(0x7e00)) && isnan(hkv_f16_to_f32(0x7c01)));
    CHECK(fbits(hkv_f16_to_f32(0x8000)) == 0x80000000u);
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) { /* every non-NaN half survives the round trip */
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        bad += hkv_f32_to_f16(hkv_f16_to_f32((uint16_t)h)) != h;
    }
    CHECKF(bad == 0, "%d halves do not round-trip", bad);
    /* rounding is to nearest: compare against the two neighbouring halves for random floats */
    bad = 0;
    for (int i = 0; i < 20000; i++) {
        float f = (float)((rng_u() - 0.5) * ldexp(1.0, (int)(rng_u() * 44) - 26));
        float r = hkv_f16_to_f32(hkv_f32_to_f16(f));
        uint16_t h = hkv_f32_to_f16(f);
        float up = hkv_f16_to_f32((uint16_t)(h + 1)), dn = (h & 0x7fff) ? hkv_f16_to_f32((uint16_t)(h - 1)) : r;
        if (fabsf(up - f) < fabsf(r - f) || fabsf(dn - f) < fabsf(r - f)) bad++;
    }
    CHECKF(bad == 0, "%d floats not rounded to nearest half", bad);
}

static void test_bf16(void) {
    CHECK(hkv_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(hkv_f32_to_bf16(bitsf(0x3f808000u)) == 0x3f80); /* tie, even stays */
    CHECK(hkv_f32_to_bf16(bitsf(0x3f818000u)) == 0x3f82); /* tie, odd rounds up */
    CHECK(hkv_f32_to_bf16(bitsf(0x3f808001u)) == 0x3f81);
    CHECK(hkv_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(hkv_f32_to_bf16(bitsf(0x7f7fffffu)) == 0x7f80);  /* FLT_MAX rounds to inf */
    uint16_t n = hkv_f32_to_bf16(bitsf(0x7f800001u));      /* NaN with payload only in the low bits */
    CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    CHECK(hkv_f32_to_bf16(bitsf(0x00000001u)) == 0x0000);  /* tiny subnormal */
    CHECK(hkv_bf16_to_f32(0xbf80) == -1.0f);
    CHECK(hkv_bf16_to_f32(0x0001) == bitsf(0x00010000u));
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue;
        bad += hkv_f32_to_bf16(hkv_bf16_to_f32((uint16_t)h)) != h;
    }
    CHECKF(bad == 0, "%d bf16 values do not round-trip", bad);
}

static void test_traits(void) {
    struct { int t; const char *name; int bs; size_t ts; int sup; } want[] = {
        {HKV_TYPE_F32, "F32", 1, 4, 1}, {HKV_TYPE_F16, "F16", 1, 2, 1}, {HKV_TYPE_BF16, "BF16", 1, 2, 1},
        {HKV_TYPE_Q4_0, "Q4_0", 32, 18, 1}, {HKV_TYPE_Q4_1, "Q4_1", 32, 20, 0},
        {HKV_TYPE_Q5_0, "Q5_0", 32, 22, 1}, {HKV_TYPE_Q5_1, "Q5_1", 32, 24, 0},
        {HKV_TYPE_Q8_0, "Q8_0", 32, 34, 1}, {HKV_TYPE_Q8_1, "Q8_1", 32, 36, 0},
        {HKV_TYPE_Q2_K, "Q2_K", 256, 84, 0}, {HKV_TYPE_Q3_K, "Q3_K", 256, 110, 0},
        {HKV_TYPE_Q4_K, "Q4_K", 256, 144, 1}, {HKV_TYPE_Q5_K, "Q5_K", 256, 176, 1},
        {HKV_TYPE_Q6_K, "Q6_K", 256, 210, 1}, {HKV_TYPE_Q8_K, "Q8_K", 256, 292, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const hkv_type_traits *t = hkv_type_get(want[i].t);
        CHECKF(t->name && strcmp(t->name, want[i].name) == 0, "type %d", want[i].t);
        CHECKF(t->block_size == want[i].bs && t->type_size == want[i].ts, "%s size", want[i].name);
        CHECKF(hkv_type_supported(want[i].t) == want[i].sup, "%s supported", want[i].name);
    }
    /* the structs in tensor.h match the byte sizes */
    CHECK(sizeof(block_q8_0) == 34 && sizeof(block_q4_0) == 18 && sizeof(block_q5_0) == 22);
    CHECK(sizeof(block_q4_K) == 144 && sizeof(block_q5_K) == 176 && sizeof(block_q6_K) == 210);
    CHECK(hkv_type_get(4)->name == NULL && hkv_type_get(-1)->name == NULL && hkv_type_get(HKV_TYPE_COUNT)->name == NULL);
    CHECK(hkv_type_get(1000)->name == NULL && !hkv_type_supported(1000));
    CHECK(hkv_row_size(HKV_TYPE_Q4_0, 64) == 36);
    CHECK(hkv_row_size(HKV_TYPE_Q4_K, 512) == 288);
    CHECK(hkv_row_size(HKV_TYPE_F16, 7) == 14);
    CHECK(hkv_row_size(HKV_TYPE_Q4_0, 33) == 0);
    CHECK(hkv_row_size(HKV_TYPE_Q6_K, 128) == 0);
    CHECK(hkv_row_size(HKV_TYPE_F32, -4) == 0);
    CHECK(hkv_row_size(4, 32) == 0);
    CHECK(hkv_row_size(HKV_TYPE_F32, INT64_MAX) == 0);        /* overflows size_t */
    float x[33] = {0};
    uint8_t buf[64];
    CHECK(hkv_quantize_row(HKV_TYPE_Q8_0, x, buf, 33) == 0);
    CHECK(hkv_quantize_row(HKV_TYPE_Q4_1, x, buf, 32) == 0);
}

/* Hand-built blocks with known values. */
static void test_known_blocks(void) {
    float y[256];
    block_q8_0 b8;
    b8.d = 0x3800; /* 0.5 */
    for (int j = 0; j < 32; j++) b8.qs[j] = (int8_t)(j * 8 - 127);
    hkv_dequant_row_ref(HKV_TYPE_Q8_0, &b8, y, 32);
    int bad = 0;
    for (int j = 0; j < 32; j++) bad += y[j] != 0.5f * (float)(j * 8 - 127);
    CHECK(bad == 0);

    block_q4_0 b4;
    b4.d = 0x4000; /* 2.0 */
    for (int j = 0; j < 16; j++) b4.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    hkv_dequant_row_ref(HKV_TYPE_Q4_0, &b4, y, 32);
    bad = 0;
    for (int j = 0; j < 16; j++) bad += y[j] != 2.0f * (float)(j - 8) || y[j + 16] != 2.0f * (float)(7 - j);
    CHECK(bad == 0);

    block_q5_0 b5;
    b5.d = 0x3c00; /* 1.0 */
    uint32_t qh = 0xA5C30F01u;
    memcpy(b5.qh, &qh, 4);
    for (int j = 0; j < 16; j++) b5.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    hkv_dequant_row_ref(HKV_TYPE_Q5_0, &b5, y, 32);
    bad = 0;
    for (int j = 0; j < 16; j++) {
        bad += y[j] != (float)((j | (int)(((qh >> j) & 1) << 4)) - 16);
        bad += y[j + 16] != (float)(((15 - j) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16);
    }
    CHECK(bad == 0);

    /* Q4_K: 6-bit scales/mins, the upper four sub-blocks split across bytes 0..3 / 4..7 top bits and 8..11 */
    block_q4_K bk;
    const int sc[8] = {1, 2, 3, 4, 17, 33, 48, 63}, mn[8] = {0, 5, 10, 15, 20, 40, 50, 60};
    bk.d = 0x3c00;    /* 1.0 */
    bk.dmin = 0x3800; /* 0.5 */
    for (int j = 0; j < 4; j++) {
        bk.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        bk.scales[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        bk.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    memset(bk.qs, 0x31, sizeof bk.qs); /* low nibble 1, high nibble 3 */
    hkv_dequant_row_ref(HKV_TYPE_Q4_K, &bk, y, 256);
    bad = 0;
    for (int e = 0; e < 256; e++) {
        int sub = e / 32, q = (sub % 2) ? 3 : 1;
        bad += y[e] != (float)(sc[sub] * q) - 0.5f * (float)mn[sub];
    }
    CHECKF(bad == 0, "Q4_K hand block: %d wrong", bad);

    /* Q6_K: element l of a 128-half: low 4 bits from ql, high 2 bits from qh, 16-element int8 scales */
    block_q6_K b6;
    b6.d = 0x3c00;
    for (int j = 0; j < 16; j++) b6.scales[j] = (int8_t)(j - 8);
    for (int j = 0; j < 128; j++) b6.ql[j] = (uint8_t)(j * 37);
    for (int j = 0; j < 64; j++) b6.qh[j] = (uint8_t)(j * 101 + 7);
    hkv_dequant_row_ref(HKV_TYPE_Q6_K, &b6, y, 256);
    bad = 0;
    for (int e = 0; e < 256; e++) { /* element e: half h, group g (32 wide), lane l */
        int h = e / 128, g = (e % 128) / 32, l = e % 32;
        int low = (b6.ql[64 * h + 32 * (g & 1) + l] >> (4 * (g >> 1))) & 15;
        int high = (b6.qh[32 * h + l] >> (2 * g)) & 3;
        bad += y[e] != (float)b6.scales[e / 16] * (float)((low | (high << 4)) - 32);
    }
    CHECKF(bad == 0, "Q6_K hand block: %d wrong", bad);
}

/* Relative RMS error bounds for N(0,1) data. Uniform quantization noise has RMS step/sqrt(12); with
 * the expected block absmax / range of Gaussian samples this gives: Q8_0 (step amax/127, amax~2.1 over 32)
 * ~0.005; Q5_0 (amax/16) ~0.04; Q4_0 (amax/8) ~0.08 plus the clamped extreme; Q6_K (16-wide, amax/32)
 * ~0.016; Q5_K (range~4.1 /31) ~0.038; Q4_K (/15) ~0.079 before the scale search; F16 2^-11 relative
 * rounding ~2e-4; BF16 2^-8 ~1.6e-3. The bounds below add ~25% slack over those estimates. */
static double rms_bound(int type) {
    switch (type) {
    case HKV_TYPE_F32: return 0.0;
    case HKV_TYPE_F16: return 3e-4;
    case HKV_TYPE_BF16: return 2.5e-3;
    case HKV_TYPE_Q8_0: return 0.007;
    case HKV_TYPE_Q4_0: return 0.10;
    case HKV_TYPE_Q5_0: return 0.05;
    case HKV_TYPE_Q4_K: return 0.09;
    case HKV_TYPE_Q5_K: return 0.045;
    case HKV_TYPE_Q6_K: return 0.022;
    default: return 0;
    }
}

/* For the 32-blocks the per-element bound is exact: half a step, or the distance to the clamped top code
 * (the largest-magnitude value takes the extreme code -8/-16/-127, its opposite side has one level less). */
static int check_block_bounds(int type, const void *q, const float *x, const float *y, int64_t n) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *blk = (const uint8_t *)q + (i / 32) * hkv_type_get(type)->type_size;
        uint16_t dh;
        memcpy(&dh, blk, 2);
        double d = fabs(hkv_f16_to_f32(dh)), top = type == HKV_TYPE_Q8_0 ? 127 : type == HKV_TYPE_Q4_0 ? 7 : 15;
        double bound = 0.5 * d + fmax(0.0, fabs(x[i]) - (top + 0.5) * d);
        bad += fabs((double)x[i] - y[i]) > bound * (1 + 1e-6) + 1e-30;
    }
    return bad;
}

static void test_quant_roundtrip(void) {
    const int64_t n = 4096;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *y2 = malloc(n * sizeof(float));
    uint8_t *q = malloc(n * 4), *q2 = malloc(n * 4);
    const float scales[] = {1.0f, 1e-3f, 300.0f};
    for (int ti = 0; ti < N_QTYPES; ti++) {
        int t = QTYPES[ti];
        const char *nm = hkv_type_get(t)->name;
        for (int si = 0; si < 3; si++) {
            fill_normal(x, n, scales[si]);
            CHECKF(hkv_quantize_row(t, x, q, n) == hkv_row_size(t, n), "%s size", nm);
            hkv_dequant_row_ref(t, q, y, n);
            double e2 = 0, s2 = 0;
            for (int64_t i = 0; i < n; i++) { e2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]); s2 += (double)x[i] * x[i]; }
            double rel = sqrt(e2 / s2);
            CHECKF(rel <= rms_bound(t), "%s scale %g: relative RMS error %g > %g", nm, scales[si], rel, rms_bound(t));
            if (t == HKV_TYPE_Q8_0 || t == HKV_TYPE_Q4_0 || t == HKV_TYPE_Q5_0)
                CHECKF(check_block_bounds(t, q, x, y, n) == 0, "%s per-element bound", nm);
            /* requantizing the dequantized values must not drift far (codes are stable) */
            hkv_quantize_row(t, y, q2, n);
            hkv_dequant_row_ref(t, q2, y2, n);
            double e3 = 0;
            for (int64_t i = 0; i < n; i++) e3 += ((double)y2[i] - y[i]) * ((double)y2[i] - y[i]);
            CHECKF(sqrt(e3 / s2) <= rms_bound(t), "%s requantize drift %g", nm, sqrt(e3 / s2));
        }
        /* all-zero and all-positive rows */
        memset(x, 0, n * sizeof(float));
        hkv_quantize_row(t, x, q, n);
        hkv_dequant_row_ref(t, q, y, n);
        int nz = 0;
        for (int64_t i = 0; i < n; i++) nz += y[i] != 0.0f;
        CHECKF(nz == 0, "%s zero row", nm);
        for (int64_t i = 0; i < n; i++) x[i] = 2.0f + fabsf(rng_normal());
        hkv_quantize_row(t, x, q, n);
        hkv_dequant_row_ref(t, q, y, n);
        double e2 = 0, s2 = 0;
        for (int64_t i = 0; i < n; i++) { e2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]); s2 += (double)x[i] * x[i]; }
        CHECKF(sqrt(e2 / s2) <= rms_bound(t), "%s positive row rel RMS %g", nm, sqrt(e2 / s2));
    }
    free(x); free(y); free(y2); free(q); free(q2);
}

/* Dot products: reference vs dequantized f64 dot; dispatched vs reference; dispatched bit-identical to
 * dot_f32 over the dispatched dequantization (the batch-invariance contract hkv_matmul relies on). */
static void test_dots(void) {
    const int64_t maxn = 4096;
    float *w = malloc(maxn * sizeof(float)), *x = malloc(maxn * sizeof(float));
    float *y = malloc(maxn * sizeof(float)), *y2 = malloc(maxn * sizeof(float));
    uint8_t *q = malloc(maxn * 4);
    const int64_t lens[] = {1, 7, 8, 31, 32, 33, 64, 100, 255, 256, 257, 512, 1000, 1024, 2048, 2304, 4095, 4096};
    int tested = 0;
    for (int ti = 0; ti < N_QTYPES; ti++) {
        int t = QTYPES[ti];
        const char *nm = hkv_type_get(t)->name;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int64_t n = lens[li];
            if (hkv_row_size(t, n) == 0) continue;
            fill_normal(w, n, 1.0f);
            fill_normal(x, n, 1.0f);
            hkv_quantize_row(t, w, q, n);
            hkv_dequant_row_ref(t, q, y, n);
            double exact = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) { exact += (double)y[i] * x[i]; mag += fabs((double)y[i] * x[i]); }
            float ref = hkv_dot_ref(t, q, x, n);
            CHECKF(fabs(ref - exact) <= 1e-4 * mag + 1e-30, "%s n=%lld ref %g vs %g", nm, (long long)n, ref, exact);
            float simd = hkv_dot(t, q, x, n);
            CHECKF(fabs(simd - ref) <= 1e-5 * mag + 1e-30, "%s n=%lld dispatched %g vs ref %g", nm, (long long)n, simd, ref);
            hkv_dequant_row(t, q, y2, n);
            CHECKF(memcmp(y, y2, (size_t)n * sizeof(float)) == 0, "%s n=%lld dispatched dequant differs", nm, (long long)n);
            float via = hkv_dot_f32(y2, x, n);
            CHECKF(fbits(via) == fbits(simd), "%s n=%lld dot %a vs dot_f32(dequant) %a", nm, (long long)n, simd, via);
            tested++;
        }
    }
    CHECK(tested == 96); /* 54 float-type + 24 block-32 + 18 block-256 cases */
    /* axpy against a double reference */
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int64_t n = lens[li];
        fill_normal(x, n, 1.0f);
        fill_normal(y, n, 1.0f);
        memcpy(y2, y, (size_t)n * sizeof(float));
        hkv_axpy_f32(y2, 0.75f, x, n);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += fabs(y2[i] - (y[i] + 0.75 * x[i])) > 1e-6 * (fabs(y[i]) + fabs(x[i]));
        CHECKF(bad == 0, "axpy n=%lld", (long long)n);
    }
    /* unsupported type / bad length: no crash, 0 */
    CHECK(hkv_dot(HKV_TYPE_Q4_1, q, x, 32) == 0.0f);
    CHECK(hkv_dot(HKV_TYPE_Q4_0, q, x, 31) == 0.0f);
    free(w); free(x); free(y); free(y2); free(q);
}

typedef struct { atomic_int *count; int bad_thread; int n_threads; } pool_probe;
static void probe_fn(void *arg, int i, int thread) {
    pool_probe *p = arg;
    atomic_fetch_add(&p->count[i], 1);
    if (thread < 0 || thread >= p->n_threads) p->bad_thread = 1;
}

static void test_pool(void) {
    for (int nt = 1; nt <= 4; nt++) {
        hkv_pool *p = hkv_pool_new(nt);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK(hkv_pool_size(p) == nt);
        for (int rep = 0; rep < 50; rep++) {
            int n = 1 + rep * 7;
            atomic_int count[400];
            for (int i = 0; i < n; i++) atomic_init(&count[i], 0);
            pool_probe pr = {count, 0, nt};
            hkv_pool_run(p, probe_fn, &pr, n);
            int wrong = 0;
            for (int i = 0; i < n; i++) wrong += atomic_load(&count[i]) != 1;
            CHECKF(wrong == 0 && !pr.bad_thread, "pool %d threads, n=%d", nt, n);
        }
        hkv_pool_free(p);
    }
    hkv_pool_free(NULL);
}

/* ---- integer path (kernels.h): activation quantization, SIMD == scalar reference, error bound */

static const int QDOT_TYPES[] = {HKV_TYPE_Q8_0, HKV_TYPE_Q4_0, HKV_TYPE_Q5_0, HKV_TYPE_Q4_K, HKV_TYPE_Q5_K, HKV_TYPE_Q6_K};
#define N_QDOT_TYPES ((int)(sizeof QDOT_TYPES / sizeof QDOT_TYPES[0]))

/* Quantized activations of nx tokens of n values each, in both formats (the K-quant one when n is a
 * multiple of 256). */
typedef struct { uint8_t *u; float *d, *s, *dl, *dk; int8_t *qk; int16_t *bk; hkv_qx x[HKV_QX_MAX_TOK]; } qx_buf;

static void qx_make(qx_buf *b, const float *x, int nx, int64_t n) {
    b->u = malloc((size_t)(nx * n));
    b->d = malloc((size_t)(10 * nx * n / 32) * sizeof *b->d);
    b->s = b->d + nx * n / 32;
    b->dl = b->d + 2 * nx * n / 32;
    b->qk = malloc((size_t)(nx * n));
    b->dk = malloc((size_t)(nx * n / 256 + 1) * sizeof *b->dk);
    b->bk = malloc((size_t)(nx * n / 16) * sizeof *b->bk);
    for (int t = 0; t < nx; t++) {
        hkv_quantize_qx_ref(x + t * n, b->u + t * n, b->d + t * n / 32, b->s + t * n / 32, b->dl + t * n / 4, n);
        b->x[t] = (hkv_qx){b->u + t * n, b->d + t * n / 32, b->s + t * n / 32, b->dl + t * n / 4, NULL, NULL, NULL};
        if (n % 256) continue;
        hkv_quantize_qk_ref(x + t * n, b->qk + t * n, b->dk + t * n / 256, b->bk + t * n / 16, n);
        b->x[t].qk = b->qk + t * n, b->x[t].dk = b->dk + t * n / 256, b->x[t].bk = b->bk + t * n / 16;
    }
}
static void qx_free(qx_buf *b) { free(b->u); free(b->d); free(b->qk); free(b->dk); free(b->bk); }

static void test_quantize_qx(void) {
    const int64_t n = 1024;
    float x[1024];
    qx_buf b;
    fill_normal(x, n, 3.0f);
    x[40] = 1e-31f;                       /* block 1 keeps its scale from the other values */
    for (int j = 64; j < 96; j++) x[j] = 0; /* block 2 all zero */
    qx_make(&b, x, 1, n);
    int bad = 0, bad_s = 0;
    for (int64_t g = 0; g < n / 32; g++) {
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            int64_t i = 32 * g + j, q = (int)b.u[i] - 128;
            sum += (int32_t)q;
            bad += b.u[i] == 0 || fabs(x[i] - (double)b.d[g] * q) > 0.51 * b.d[g];
        }
        bad_s += b.s[g] != b.d[g] * (float)sum;
        for (int l = 0; l < 8; l++) bad_s += memcmp(&b.dl[8 * g + l], &b.d[g], sizeof(float)) != 0;
    }
    /* half a step, plus the rounding of x * (1/d) in f32: up to 127 * 2^-23 of a step; q = -128 never occurs */
    CHECKF(bad == 0, "%d activations off by more than 0.51 steps", bad);
    CHECK(bad_s == 0);
    CHECK(b.d[2] == 0.0f && b.s[2] == 0.0f);
    qx_free(&b);
    x[100] = NAN;
    x[300] = INFINITY;
    qx_make(&b, x, 1, n);
    CHECK(isnan(b.d[3]) && isnan(b.s[3]) && isnan(b.d[9]) && b.u[100] == 128 && b.u[101] == 128);
    CHECK(isfinite(b.d[4]));
    block_q8_0 blk = {0x3c00, {0}};
    for (int j = 0; j < 32; j++) blk.qs[j] = 1;
    float o;
    hkv_qdot_ref_fn(HKV_TYPE_Q8_0)(&blk, b.x, 1, &o, 32);
    CHECK(isfinite(o));
    hkv_qx shifted = {b.u + 96, b.d + 3, b.s + 3, b.dl + 24, NULL, NULL, NULL}; /* the NaN block */
    hkv_qdot_ref_fn(HKV_TYPE_Q8_0)(&blk, &shifted, 1, &o, 32);
    CHECK(isnan(o));
    qx_free(&b);
    CHECK(hkv_qdot_ref_fn(HKV_TYPE_F32) == NULL && hkv_qdot_ref_fn(HKV_TYPE_F16) == NULL && hkv_qdot_ref_fn(HKV_TYPE_Q4_1) == NULL);
    CHECK(hkv_qdot_fn_get(HKV_TYPE_BF16) == NULL && hkv_qdot_fn_get(-1) == NULL && hkv_qdot_fn_get(HKV_TYPE_COUNT) == NULL);
    CHECK(hkv_qdot_uses_qk(HKV_TYPE_Q4_K) && hkv_qdot_uses_qk(HKV_TYPE_Q6_K) && !hkv_qdot_uses_qk(HKV_TYPE_Q8_0));
}

/* The K-quant activation format: one scale per 256 (absmax / 127), levels within half a step, bs = the sums
 * of each 16 levels, a zero super-block is d = 0, an inf / NaN one d = NaN with zero levels. */
static void test_quantize_qk(void) {
    enum { N = 1024 };
    float x[N], d[N / 256];
    int8_t q[N];
    int16_t bs[N / 16];
    fill_normal(x, N, 3.0f);
    for (int j = 256; j < 512; j++) x[j] = 0;
    x[600] = NAN;
    hkv_quantize_qk_ref(x, q, d, bs, N);
    int bad = 0, bad_s = 0;
    for (int i = 0; i < N / 256; i++) {
        if (i == 2) continue;
        float amax = 0;
        for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[256 * i + j]));
        bad += d[i] != amax / 127.0f;
        for (int j = 0; j < 256; j++) bad += q[256 * i + j] == -128 || fabs(x[256 * i + j] - (double)d[i] * q[256 * i + j]) > 0.51 * d[i];
    }
    for (int g = 0; g < N / 16; g++) {
        int sum = 0;
        for (int j = 0; j < 16; j++) sum += q[16 * g + j];
        bad_s += bs[g] != sum;
    }
    CHECKF(bad == 0, "%d K-format activations off by more than 0.51 steps", bad);
    CHECK(bad_s == 0);
    CHECK(d[1] == 0.0f && isnan(d[2]) && q[600] == 0 && q[700] == 0 && bs[40] == 0 && isfinite(d[3]));
}

/* The kernel sets this CPU can run (the scalar reference is compared against each). */
static int simd_sets(hkv_kernel_set *sets) {
    int n = 0;
#if defined(__x86_64__)
    hkv_cpu_caps caps = hkv_cpu_detect();
    if (caps.avx2_fma_f16c) {
        hkv_kernels_avx2_init(&sets[n++]);
        if (caps.avxvnni) hkv_kernels_avxvnni_init(&sets[n++]);
        if (caps.avx512) hkv_kernels_avx512_init(&sets[n++], 0);
        if (caps.avx512vnni) hkv_kernels_avx512_init(&sets[n++], 1);
    }
#endif
    (void)sets;
    return n;
}

/* Every kernel set's activation quantizer equals the scalar reference bit for bit: random blocks of many
 * scales, exact rounding ties, zero / tiny / inf / NaN blocks, values at the clamp. */
static void test_quantize_qx_sets(void) {
    hkv_kernel_set sets[4];
    int n_sets = simd_sets(sets), bad = 0, checked = 0;
    enum { N = 4096 };
    float *x = malloc(N * sizeof(float));
    uint8_t *u0 = malloc(N), *u1 = malloc(N);
    float *f0 = malloc(10 * N / 32 * sizeof(float)), *f1 = malloc(10 * N / 32 * sizeof(float));
    for (int rep = 0; rep < 4; rep++) {
        for (int b = 0; b < N / 32; b++) {
            float scale = (float)pow(10.0, (double)(b % 13) - 6.0);
            for (int j = 0; j < 32; j++) x[32 * b + j] = scale * rng_normal();
            if (b % 7 == 1) /* amax 127: levels are x itself, so k + 0.5 is an exact tie */
                for (int j = 0; j < 32; j++) x[32 * b + j] = j == 0 ? 127.0f : (float)((j * 37 + rep) % 253 - 126) + 0.5f * (j & 1);
            if (b % 11 == 2) memset(x + 32 * b, 0, 32 * sizeof(float));
            if (b % 11 == 3) x[32 * b + 5] = 1e-35f * (float)(rep + 1);
        }
        if (rep >= 2) { x[32 * 9 + 3] = NAN; x[32 * 20 + 31] = -INFINITY; x[32 * 40] = INFINITY; }
        hkv_quantize_qx_ref(x, u0, f0, f0 + N / 32, f0 + 2 * N / 32, N);
        for (int si = 0; si < n_sets; si++) {
            if (!sets[si].quantize_qx) continue;
            memset(u1, 0, N);
            memset(f1, 0, 10 * N / 32 * sizeof(float));
            sets[si].quantize_qx(x, u1, f1, f1 + N / 32, f1 + 2 * N / 32, N);
            bad += memcmp(u0, u1, N) != 0 || memcmp(f0, f1, 10 * N / 32 * sizeof(float)) != 0;
            checked++;
        }
    }
    CHECKF(bad == 0, "%d of %d SIMD activation quantizations differ from the reference", bad, checked);
    hkv_quantize_qx(x, u1, f1, f1 + N / 32, f1 + 2 * N / 32, N); /* the dispatched one, too */
    CHECK(memcmp(u0, u1, N) == 0 && memcmp(f0, f1, 10 * N / 32 * sizeof(float)) == 0);
    /* the K-quant format on the same data (the 32-blocks of many scales now share super-blocks) */
    int16_t b0[N / 16], b1[N / 16];
    int bad_k = 0, checked_k = 0;
    for (int rep = 0; rep < 3; rep++) {
        for (int i = 0; i < N / 256; i++) { /* one super-block in 5 gets its own scale from 10^-6 to 10^6 */
            float sc = (float)pow(10.0, (double)(i % 13) - 6.0);
            if (i % 5 == 0) for (int j = 0; j < 256; j++) x[256 * i + j] = sc * rng_normal();
            if (i % 7 == 3) for (int j = 0; j < 256; j++) x[256 * i + j] = j == 0 ? 127.0f : (float)((j * 37 + rep) % 253 - 126) + 0.5f * (j & 1);
            if (i % 6 == 4) memset(x + 256 * i, 0, 256 * sizeof(float));
        }
        if (rep == 2) x[256 * 9 + 17] = NAN;
        hkv_quantize_qk_ref(x, (int8_t *)u0, f0, b0, N);
        for (int si = 0; si < n_sets; si++) {
            if (!sets[si].quantize_qk) continue;
            memset(u1, 1, N); memset(f1, 1, N / 256 * sizeof(float)); memset(b1, 1, sizeof b1);
            sets[si].quantize_qk(x, (int8_t *)u1, f1, b1, N);
            bad_k += memcmp(u0, u1, N) != 0 || memcmp(f0, f1, N / 256 * sizeof(float)) != 0 || memcmp(b0, b1, sizeof b0) != 0;
            checked_k++;
        }
        hkv_quantize_qk(x, (int8_t *)u1, f1, b1, N);
        bad_k += memcmp(u0, u1, N) != 0 || memcmp(f0, f1, N / 256 * sizeof(float)) != 0 || memcmp(b0, b1, sizeof b0) != 0;
    }
    CHECKF(bad_k == 0, "%d of %d SIMD K-format quantizations differ from the reference", bad_k, checked_k);
    CHECK(checked_k == 3 * n_sets);
    free(x); free(u0); free(u1); free(f0); free(f1);
}

/* Every kernel set's qdot equals the scalar reference bit for bit, for every nx and every token position
 * in the group; and the reference is within the stated bound of the exact dot with float activations:
 *   |qdot - sum w x| <= sum_i |w_i| * 0.51 * d_x(block of i)  +  1e-5 * sum_i |w_i x_i|
 * with w the dequantized weights, so for the K-quants this is the check that the super-block integer dot
 * is close to the float dot of the dequantized row (the first term is the activation rounding, at most
 * 0.51 int8 steps of d_x = absmax / 127 of the 32-block, or of the 256-element super-block for K-quants;
 * the second covers the f32 scale products and accumulation, ~n/32 roundings of 2^-24). */
static void test_qdot(void) {
    hkv_kernel_set sets[4];
    int n_sets = simd_sets(sets);
    /* odd block counts (32, 96, 288) end in a half chunk */
    const int64_t lens[] = {32, 64, 96, 256, 288, 512, 896, 2304, 4864};
    const int64_t maxn = 4864;
    float *w = malloc(maxn * sizeof(float)), *wd = malloc(maxn * sizeof(float));
    float *x = malloc(HKV_QX_MAX_TOK * maxn * sizeof(float));
    uint8_t *row = malloc(maxn * 4);
    int cases = 0, bad_bits = 0, bad_nx = 0, bad_bound = 0, bad_two = 0, n_two = 0, bad_rows = 0, n_rows = 0;
    for (int ti = 0; ti < N_QDOT_TYPES; ti++) {
        int t = QDOT_TYPES[ti];
        hkv_qdot_fn ref = hkv_qdot_ref_fn(t);
        CHECK(ref != NULL);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0] && ref; li++) {
            int64_t n = lens[li];
            if (hkv_row_size(t, n) == 0) continue;
            for (int rep = 0; rep < 3; rep++) {
                fill_normal(w, n, rep == 2 ? 1e-3f : 1.0f);
                fill_normal(x, HKV_QX_MAX_TOK * n, rep == 1 ? 50.0f : 1.0f);
                if (rep == 2) for (int64_t i = 0; i < n; i += 7) x[i] *= 1000.0f; /* outliers in some blocks */
                size_t rb = hkv_row_size(t, n);
                uint8_t *row2 = row + rb; /* a second row right after the first, as in a matrix */
                for (int64_t i = 0; i < n; i++) wd[i] = -0.5f * w[(i * 7) % n] + (rep == 2 ? 1e-4f : 0.1f);
                hkv_quantize_row(t, wd, row2, n);
                hkv_quantize_row(t, w, row, n);
                hkv_dequant_row_ref(t, row, wd, n);
                qx_buf b;
                qx_make(&b, x, HKV_QX_MAX_TOK, n);
                float one[HKV_QX_MAX_TOK], o[HKV_QX_MAX_TOK];
                for (int k = 0; k < HKV_QX_MAX_TOK; k++) ref(row, &b.x[k], 1, &one[k], n);
                for (int k = 0; k < HKV_QX_MAX_TOK; k++) {
                    double exact = 0, mag = 0, qerr = 0;
                    for (int64_t i = 0; i < n; i++) {
                        exact += (double)wd[i] * x[k * n + i];
                        mag += fabs((double)wd[i] * x[k * n + i]);
                        /* the step of the activation level: its 32-block's, or its super-block's (K-quants) */
                        double step = hkv_qdot_uses_qk(t) ? b.dk[k * n / 256 + i / 256] : b.d[k * n / 32 + i / 32];
                        qerr += fabs((double)wd[i]) * 0.51 * step;
                    }
                    bad_bound += fabs(one[k] - exact) > qerr + 1e-5 * mag;
                }
                float two[HKV_QX_MAX_TOK], o2[2 * HKV_QX_MAX_TOK];
                for (int k = 0; k < HKV_QX_MAX_TOK; k++) ref(row2, &b.x[k], 1, &two[k], n);
                for (int nx = 1; nx <= HKV_QX_MAX_TOK; nx++)
                    for (int t0 = 0; t0 + nx <= HKV_QX_MAX_TOK; t0++) {
                        ref(row, b.x + t0, nx, o, n);
                        bad_nx += memcmp(o, one + t0, (size_t)nx * sizeof(float)) != 0;
                        for (int si = 0; si < n_sets; si++) {
                            sets[si].qdot[t](row, b.x + t0, nx, o, n);
                            bad_bits += memcmp(o, one + t0, (size_t)nx * sizeof(float)) != 0;
                            if (nx == 1 && t0 == 0 && sets[si].qdotr[t]) { /* many rows, one token */
                                float orr[2];
                                sets[si].qdotr[t](row, rb, 2, b.x, orr, n);
                                bad_rows += memcmp(&orr[0], &one[0], sizeof(float)) != 0 || memcmp(&orr[1], &two[0], sizeof(float)) != 0;
                                n_rows++;
                            }
                            if (!sets[si].qdot2[t]) continue;
                            /* two-row kernel: each row exactly as qdot alone */
                            sets[si].qdot2[t](row, rb, b.x + t0, nx, o2, n);
                            bad_two += memcmp(o2, one + t0, (size_t)nx * sizeof(float)) != 0 ||
                                       memcmp(o2 + nx, two + t0, (size_t)nx * sizeof(float)) != 0;
                            n_two++;
                        }
                    }
                qx_free(&b);
                cases++;
            }
        }
    }
    CHECK(cases == 3 * (9 + 9 + 9 + 4 + 4 + 4)); /* 32-blocks: all 9 lengths; K-quants: 256, 512, 2304, 4864 */
    CHECKF(bad_bound == 0, "%d integer-path dots outside the error bound", bad_bound);
    CHECKF(bad_nx == 0, "%d reference results depend on the token group", bad_nx);
    CHECKF(bad_bits == 0, "%d SIMD integer dots differ from the scalar reference (%d sets)", bad_bits, n_sets);
    CHECKF(bad_two == 0, "%d of %d two-row SIMD results differ from the scalar reference", bad_two, n_two);
    CHECKF(bad_rows == 0, "%d of %d many-row one-token SIMD results differ from the scalar reference", bad_rows, n_rows);
    fprintf(stderr, "integer path: %d SIMD kernel sets checked against the reference, %d two-row results, %d many-row calls\n",
            n_sets, n_two, n_rows);
    free(w); free(wd); free(x); free(row);
}

/* hkv_matmul: same bits for any thread count and any n_tok (each token's row of a batch equals that
 * token alone), quantized types equal the per-row reference (so SIMD == scalar path), float types equal
 * per-row hkv_dot. rows * cols is large enough that the pool splits the rows; a small case runs inline. */
static void test_matmul_shape(int rows, int cols, int max_tok) {
    float *wf = malloc((size_t)rows * cols * sizeof(float)), *x = malloc((size_t)max_tok * cols * sizeof(float));
    uint8_t *W = malloc((size_t)rows * cols * 4);
    float *out[3], *naive = malloc((size_t)rows * max_tok * sizeof(float)), *simd_out = malloc((size_t)rows * max_tok * sizeof(float));
    hkv_pool *pools[3];
    for (int k = 0; k < 3; k++) {
        out[k] = malloc((size_t)rows * max_tok * sizeof(float));
        pools[k] = hkv_pool_new(k + 1);
    }
    fill_normal(wf, (int64_t)rows * cols, 0.5f);
    fill_normal(x, (int64_t)max_tok * cols, 1.0f);
    for (int ti = 0; ti < N_QTYPES; ti++) {
        int t = QTYPES[ti];
        size_t rb = hkv_row_size(t, cols);
        if (rb == 0) continue;
        const char *nm = hkv_type_get(t)->name;
        hkv_qdot_fn ref = hkv_qdot_ref_fn(t);
        for (int r = 0; r < rows; r++) hkv_quantize_row(t, wf + (size_t)r * cols, W + r * rb, cols);
        for (int scalar = 0; scalar < 2; scalar++) {
            hkv_kernels_force_scalar(scalar);
            for (int n_tok = 1; n_tok <= max_tok; n_tok += (n_tok < 5 ? 1 : 4)) {
                for (int tok = 0; tok < n_tok; tok++) {
                    qx_buf b;
                    if (ref) qx_make(&b, x + (size_t)tok * cols, 1, cols);
                    for (int r = 0; r < rows; r++) {
                        float *o = &naive[tok * rows + r];
                        if (ref) ref(W + r * rb, b.x, 1, o, cols);
                        else *o = hkv_dot(t, W + r * rb, x + (size_t)tok * cols, cols);
                    }
                    if (ref) qx_free(&b);
                }
                for (int k = 0; k < 3; k++) hkv_matmul(pools[k], out[k], t, W, x, rows, cols, n_tok);
                size_t bytes = (size_t)rows * n_tok * sizeof(float);
                CHECKF(memcmp(out[0], out[1], bytes) == 0 && memcmp(out[0], out[2], bytes) == 0,
                       "%s %dx%d n_tok=%d scalar=%d: results depend on thread count", nm, rows, cols, n_tok, scalar);
                CHECKF(memcmp(out[0], naive, bytes) == 0, "%s %dx%d n_tok=%d scalar=%d: matmul differs from per-row, per-token dots",
                       nm, rows, cols, n_tok, scalar);
                if (ref && scalar == 0 && n_tok == max_tok) memcpy(simd_out, out[0], bytes);
                if (ref && scalar == 1 && n_tok == max_tok)
                    CHECKF(memcmp(simd_out, out[0], bytes) == 0, "%s: SIMD and scalar matmul differ", nm);
            }
        }
    }
    hkv_kernels_force_scalar(0);
    for (int k = 0; k < 3; k++) { free(out[k]); hkv_pool_free(pools[k]); }
    free(wf); free(x); free(W); free(naive); free(simd_out);
}

/* hkv_matmul_multi: matrices of mixed types (integer and float path) sharing x give exactly what
 * hkv_matmul gives for each, for any thread count and n_tok, with SIMD and scalar kernels. */
static void test_matmul_multi(void) {
    enum { COLS = 512, MAXTOK = 19, NM = 4 };
    const int types[NM] = {HKV_TYPE_Q4_K, HKV_TYPE_Q6_K, HKV_TYPE_F16, HKV_TYPE_Q8_0};
    const int rows[NM] = {301, 64, 9, 130};
    float *wf = malloc((size_t)301 * COLS * sizeof(float)), *x = malloc((size_t)MAXTOK * COLS * sizeof(float));
    uint8_t *W[NM];
    float *sep[NM], *mul[NM];
    fill_normal(wf, (int64_t)301 * COLS, 0.5f);
    fill_normal(x, (int64_t)MAXTOK * COLS, 1.0f);
    for (int i = 0; i < NM; i++) {
        size_t rb = hkv_row_size(types[i], COLS);
        W[i] = malloc(rb * (size_t)rows[i]);
        for (int r = 0; r < rows[i]; r++) hkv_quantize_row(types[i], wf + (size_t)(r * 3 % 301) * COLS, W[i] + r * rb, COLS);
        sep[i] = malloc((size_t)rows[i] * MAXTOK * sizeof(float));
        mul[i] = malloc((size_t)rows[i] * MAXTOK * sizeof(float));
    }
    int bad = 0, runs = 0;
    for (int nt = 1; nt <= 3; nt++) {
        hkv_pool *p = hkv_pool_new(nt);
        for (int scalar = 0; scalar < 2; scalar++) {
            hkv_kernels_force_scalar(scalar);
            for (int n_tok = 1; n_tok <= MAXTOK; n_tok += 6) {
                hkv_mm mm[NM];
                for (int i = 0; i < NM; i++) {
                    hkv_matmul(p, sep[i], types[i], W[i], x, rows[i], COLS, n_tok);
                    mm[i] = (hkv_mm){mul[i], types[i], W[i], rows[i]};
                }
                hkv_matmul_multi(p, mm, NM, x, COLS, n_tok);
                for (int i = 0; i < NM; i++) bad += memcmp(sep[i], mul[i], (size_t)rows[i] * n_tok * sizeof(float)) != 0;
                runs++;
            }
        }
        hkv_pool_free(p);
    }
    hkv_kernels_force_scalar(0);
    CHECK(runs == 3 * 2 * 4);
    CHECKF(bad == 0, "%d multi-matmul outputs differ from separate matmuls", bad);
    for (int i = 0; i < NM; i++) { free(W[i]); free(sep[i]); free(mul[i]); }
    free(wf); free(x);
}

static void test_matmul(void) {
    test_matmul_shape(301, 512, 9);  /* pooled; token groups of 8 and 1; odd rows: a pair kernel tail */
    test_matmul_shape(5, 64, 3);     /* below the inline threshold */
    test_matmul_multi();
}

static void test_dispatch(void) {
    const char *name = hkv_kernel_name();
    CHECK(strcmp(name, "avx2") == 0 || strcmp(name, "avxvnni") == 0 || strcmp(name, "avx512") == 0 ||
          strcmp(name, "avx512vnni") == 0 || strcmp(name, "scalar") == 0);
    CHECK(hkv_cpu_features() != NULL);
    hkv_kernels_force_scalar(1);
    CHECK(strcmp(hkv_kernel_name(), "scalar") == 0);
    hkv_kernels_force_scalar(0);
    CHECK(strcmp(hkv_kernel_name(), name) == 0);
    fprintf(stderr, "kernels: %s (%s)\n", name, hkv_cpu_features());
    double t0 = hkv_time_sec(), t1 = hkv_time_sec();
    CHECK(t0 > 0 && t1 >= t0);
}

int main(void) {
    test_f16();
    test_bf16();
    test_traits();
    test_known_blocks();
    test_quant_roundtrip();
    test_dispatch();
    test_dots();
    hkv_kernels_force_scalar(1); /* the scalar path must satisfy the same contracts */
    test_dots();
    hkv_kernels_force_scalar(0);
    test_pool();
    test_quantize_qx();
    test_quantize_qk();
    test_quantize_qx_sets();
    test_qdot();
    test_matmul();
    return tu_done("test_tensor");
}
