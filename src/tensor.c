/* Tensor element types: traits table, fp16/bf16 conversions, scalar reference dequantize / dot / quantize
 * for the ggml block formats we support, and run-time dispatch to the SIMD kernels.
 *
 * Block layouts follow ggml exactly (they are what GGUF files contain):
 *   Q8_0  32 elems: f16 d, int8 qs[32]                 x = d * q
 *   Q4_0  32 elems: f16 d, u8 qs[16]                   x = d * (q - 8); low nibbles elems 0..15, high 16..31
 *   Q5_0  32 elems: f16 d, u32 qh, u8 qs[16]           as Q4_0 with a 5th bit: elem j uses qh bit j, q - 16
 *   Q4_K 256 elems: f16 d, dmin, 12 bytes of 6-bit (scale, min) pairs for 8 sub-blocks of 32, u8 qs[128]
 *                   x = d*sc * q - dmin*m; each 32 bytes of qs hold 64 elems (low nibbles first)
 *   Q5_K 256 elems: Q4_K plus qh[32]: elem l of 64-chunk c takes bit 2c (low half) / 2c+1 (high half) of qh[l]
 *   Q6_K 256 elems: ql[128] low 4 bits, qh[64] high 2 bits, int8 scales[16] per 16 elems, f16 d
 *                   x = d * sc * (q - 32) */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include "heavykv.h"
#include "tensor.h"
#include "kernels.h"

/* ---------------------------------------------------------------- type traits */

/* Every ggml id up to BF16 and beyond, with real block sizes, so that file sizes of tensors we cannot
 * compute with are still validated correctly. */
static const hkv_type_traits TRAITS[HKV_TYPE_COUNT] = {
    [0] = {"F32", 1, 4, 1},          [1] = {"F16", 1, 2, 1},
    [2] = {"Q4_0", 32, 18, 1},       [3] = {"Q4_1", 32, 20, 0},
    [6] = {"Q5_0", 32, 22, 1},       [7] = {"Q5_1", 32, 24, 0},
    [8] = {"Q8_0", 32, 34, 1},       [9] = {"Q8_1", 32, 36, 0},
    [10] = {"Q2_K", 256, 84, 0},     [11] = {"Q3_K", 256, 110, 0},
    [12] = {"Q4_K", 256, 144, 1},    [13] = {"Q5_K", 256, 176, 1},
    [14] = {"Q6_K", 256, 210, 1},    [15] = {"Q8_K", 256, 292, 0},
    [16] = {"IQ2_XXS", 256, 66, 0},  [17] = {"IQ2_XS", 256, 74, 0},
    [18] = {"IQ3_XXS", 256, 98, 0},  [19] = {"IQ1_S", 256, 50, 0},
    [20] = {"IQ4_NL", 32, 18, 0},    [21] = {"IQ3_S", 256, 110, 0},
    [22] = {"IQ2_S", 256, 82, 0},    [23] = {"IQ4_XS", 256, 136, 0},
    [24] = {"I8", 1, 1, 0},          [25] = {"I16", 1, 2, 0},
    [26] = {"I32", 1, 4, 0},         [27] = {"I64", 1, 8, 0},
    [28] = {"F64", 1, 8, 0},         [29] = {"IQ1_M", 256, 56, 0},
    [30] = {"BF16", 1, 2, 1},
    [34] = {"TQ1_0", 256, 54, 0},    [35] = {"TQ2_0", 256, 66, 0},
};

const hkv_type_traits *hkv_type_get(int type) {
    static const hkv_type_traits unknown = {NULL, 0, 0, 0};
    if (type < 0 || type >= HKV_TYPE_COUNT || !TRAITS[type].name) return &unknown;
    return &TRAITS[type];
}

int hkv_type_supported(int type) { return hkv_type_get(type)->supported; }

size_t hkv_row_size(int type, int64_t n) {
    const hkv_type_traits *t = hkv_type_get(type);
    if (!t->name || n < 0 || n % t->block_size != 0) return 0;
    uint64_t blocks = (uint64_t)(n / t->block_size);
    if (blocks > SIZE_MAX / t->type_size) return 0; /* would overflow size_t */
    return (size_t)blocks * t->type_size;
}

/* ---------------------------------------------------------------- fp16 / bf16 */

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float hkv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan; NaNs come out quiet like the F16C instruction */
        return bits_f32(sign | 0x7f800000 | (mant << 13) | (mant ? 0x400000 : 0));
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in f32 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/* Rounds m >> shift to nearest, ties to even. */
static uint32_t shift_rne(uint32_t m, int shift) {
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return r;
}

uint16_t hkv_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x > 0x7f800000) return sign | 0x7e00 | (uint16_t)((x >> 13) & 0x3ff); /* quiet nan, keep payload */
    if (x >= 0x477ff000) return sign | 0x7c00;        /* >= 65520 rounds to inf */
    int e = (int)(x >> 23);
    if (e >= 113) /* normal f16: rebias exponent, round 13 mantissa bits (carry may bump the exponent) */
        return sign | (uint16_t)shift_rne(((uint32_t)(e - 112) << 23) | (x & 0x7fffff), 13);
    if (e < 101) return sign;                         /* below 2^-25: rounds to zero */
    /* subnormal f16: value / 2^-24 = m * 2^(e-126) with the implicit bit restored */
    return sign | (uint16_t)shift_rne((x & 0x7fffff) | 0x800000, 126 - e);
}

float hkv_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t hkv_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ---------------------------------------------------------------- scalar dequantization */

static float f16(uint16_t h) { return hkv_f16_to_f32(h); }

static void deq_f32(const void *src, float *y, int64_t n) { memcpy(y, src, (size_t)n * sizeof(float)); }

static void deq_f16(const void *src, float *y, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) y[i] = f16(s[i]);
}

static void deq_bf16(const void *src, float *y, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) y[i] = hkv_bf16_to_f32(s[i]);
}

static void deq_q8_0(const void *src, float *y, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, y += QK8_0) {
        float d = f16(b[i].d);
        for (int j = 0; j < QK8_0; j++) y[j] = d * (float)b[i].qs[j];
    }
}

static void deq_q4_0(const void *src, float *y, int64_t n) {
    const block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, y += QK4_0) {
        float d = f16(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
            y[j + QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void deq_q5_0(const void *src, float *y, int64_t n) {
    const block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++, y += QK5_0) {
        float d = f16(b[i].d);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4); /* little-endian bit j = 5th bit of element j */
        for (int j = 0; j < QK5_0 / 2; j++) {
            int lo = (b[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (float)(lo - 16);
            y[j + QK5_0 / 2] = d * (float)(hi - 16);
        }
    }
}

/* Unpacks sub-block j's 6-bit scale and min from the 12-byte K-quant scales field. */
static void k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void deq_q4_k(const void *src, float *y, int64_t n) {
    const block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = f16(b[i].d), dmin = f16(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int c = 0; c < 4; c++, q += 32) { /* 64 elements per 32 bytes of qs */
            int sc0, m0, sc1, m1;
            k_scale_min(2 * c, b[i].scales, &sc0, &m0);
            k_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
            float d0 = d * (float)sc0, mm0 = dmin * (float)m0, d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            for (int l = 0; l < 32; l++) *y++ = d0 * (float)(q[l] & 0x0f) - mm0;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] >> 4) - mm1;
        }
    }
}

static void deq_q5_k(const void *src, float *y, int64_t n) {
    const block_q5_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = f16(b[i].d), dmin = f16(b[i].dmin);
        const uint8_t *q = b[i].qs, *qh = b[i].qh;
        for (int c = 0; c < 4; c++, q += 32) {
            int sc0, m0, sc1, m1;
            k_scale_min(2 * c, b[i].scales, &sc0, &m0);
            k_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
            float d0 = d * (float)sc0, mm0 = dmin * (float)m0, d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            for (int l = 0; l < 32; l++) *y++ = d0 * (float)((q[l] & 0x0f) | (((qh[l] >> (2 * c)) & 1) << 4)) - mm0;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4)) - mm1;
        }
    }
}

static void deq_q6_k(const void *src, float *y, int64_t n) {
    const block_q6_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = f16(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128) { /* two halves of 128 */
            for (int g = 0; g < 4; g++) { /* 4 groups of 32: low/high nibble of ql[0..31] / ql[32..63] */
                const uint8_t *qlg = ql + (g & 1) * 32;
                int nshift = (g >> 1) * 4, hshift = g * 2;
                for (int l = 0; l < 32; l++) {
                    int q = (((qlg[l] >> nshift) & 0x0f) | (((qh[l] >> hshift) & 3) << 4)) - 32;
                    float ds = d * (float)sc[2 * g + l / 16];
                    y[32 * g + l] = ds * (float)q;
                }
            }
        }
    }
}

hkv_dequant_fn hkv_dequant_ref_fn(int type) {
    switch (type) {
    case HKV_TYPE_F32: return deq_f32;
    case HKV_TYPE_F16: return deq_f16;
    case HKV_TYPE_BF16: return deq_bf16;
    case HKV_TYPE_Q8_0: return deq_q8_0;
    case HKV_TYPE_Q4_0: return deq_q4_0;
    case HKV_TYPE_Q5_0: return deq_q5_0;
    case HKV_TYPE_Q4_K: return deq_q4_k;
    case HKV_TYPE_Q5_K: return deq_q5_k;
    case HKV_TYPE_Q6_K: return deq_q6_k;
    default: return NULL;
    }
}

void hkv_dequant_row_ref(int type, const void *src, float *dst, int64_t n) {
    hkv_dequant_fn f = hkv_dequant_ref_fn(type);
    if (f && hkv_row_size(type, n) > 0) f(src, dst, n);
}

/* Products are exact in double; accumulating in double makes this the accuracy reference. */
static double dot_f32_ref(double s, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

float hkv_dot_ref(int type, const void *row, const float *x, int64_t n) {
    hkv_dequant_fn f = hkv_dequant_ref_fn(type);
    size_t rs = hkv_row_size(type, n);
    if (!f || rs == 0) return 0.0f;
    if (type == HKV_TYPE_F32) return (float)dot_f32_ref(0.0, row, x, n);
    /* Dequantize one block (or 256 elements for float types) at a time into a stack buffer. */
    int bs = hkv_type_get(type)->block_size, chunk = bs == 1 ? 256 : bs;
    size_t chunk_bytes = hkv_row_size(type, chunk);
    const uint8_t *p = row;
    float buf[256];
    double s = 0;
    for (int64_t i = 0; i < n; i += chunk, p += chunk_bytes) {
        int m = n - i < chunk ? (int)(n - i) : chunk;
        f(p, buf, m);
        s = dot_f32_ref(s, buf, x + i, m); /* one running sum: same bits as over the whole row */
    }
    return (float)s;
}

/* ---------------------------------------------------------------- quantization */

static int nearest_int(float v) { return (int)lrintf(v); }
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* d rounded to f16 as it will be stored, kept finite. The quantizers divide by the stored value so that
 * the dequantization error is at most half a step of the scale the reader actually sees. */
static uint16_t f16_scale(float d) {
    uint16_t h = hkv_f32_to_f16(d);
    return (h & 0x7fff) >= 0x7c00 ? (uint16_t)((h & 0x8000) | 0x7bff) : h;
}

static void quant_q8_0(const float *x, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        b[i].d = f16_scale(amax / 127.0f);
        float d = f16(b[i].d), id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < QK8_0; j++) b[i].qs[j] = (int8_t)clampi(nearest_int(x[j] * id), -127, 127);
    }
}

/* Signed value of largest magnitude: Q4_0/Q5_0 map it to the extreme code -8 / -16, gaining one level. */
static float signed_absmax(const float *x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    return max;
}

static void quant_q4_0(const float *x, void *dst, int64_t n) {
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        b[i].d = f16_scale(signed_absmax(x, QK4_0) / -8.0f);
        float d = f16(b[i].d), id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = clampi(nearest_int(x[j] * id) + 8, 0, 15);
            int q1 = clampi(nearest_int(x[j + QK4_0 / 2] * id) + 8, 0, 15);
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q5_0(const float *x, void *dst, int64_t n) {
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK5_0; i++, x += QK5_0) {
        b[i].d = f16_scale(signed_absmax(x, QK5_0) / -16.0f);
        float d = f16(b[i].d), id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = clampi(nearest_int(x[j] * id) + 16, 0, 31);
            int q1 = clampi(nearest_int(x[j + QK5_0 / 2] * id) + 16, 0, 31);
            b[i].qs[j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        memcpy(b[i].qh, &qh, 4);
    }
}

/* Asymmetric fit of n values to levels 0..nmax: x ~= scale*q - min with min >= 0 (the block's minimum
 * is clipped to <= 0 as in ggml, so min = 0 handles all-positive data). Tries a few candidate scales
 * around the range/nmax one, refits (scale, min) by least squares for each set of levels, keeps the
 * best squared error. */
static void fit_scale_min(const float *x, int n, int nmax, float *scale, float *min) {
    float lo = 0, hi = x[0];
    for (int j = 0; j < n; j++) { lo = fminf(lo, x[j]); hi = fmaxf(hi, x[j]); }
    *scale = hi > lo ? (hi - lo) / (float)nmax : 0.0f;
    *min = -lo;
    if (hi <= lo) return;
    float best = INFINITY;
    for (int step = -6; step <= 6; step++) {
        float iscale = ((float)nmax + 0.1f * (float)step) / (hi - lo);
        double sl = 0, sll = 0, sx = 0, slx = 0;
        for (int j = 0; j < n; j++) {
            int q = clampi(nearest_int(iscale * (x[j] - lo)), 0, nmax);
            sl += q; sll += (double)q * q; sx += x[j]; slx += (double)q * x[j];
        }
        double det = n * sll - sl * sl;
        if (det <= 0) continue;
        double s = (n * slx - sl * sx) / det, m = (sl * slx - sll * sx) / det; /* x ~= s*q - m */
        if (m < 0) { m = 0; s = sll > 0 ? slx / sll : 0; }
        if (s <= 0) continue;
        double err = 0;
        for (int j = 0; j < n; j++) {
            double e = s * clampi(nearest_int((float)((x[j] + m) / s)), 0, nmax) - m - x[j];
            err += e * e;
        }
        if (err < best) { best = err; *scale = (float)s; *min = (float)m; }
    }
}

/* Shared by Q4_K / Q5_K: fits 8 sub-blocks of 32, stores 6-bit scales/mins relative to super-block d/dmin,
 * then recomputes the levels L[256] (0..nmax) against the scales as they will be dequantized. */
static void quant_k_scales(const float *x, int nmax, uint16_t *dh, uint16_t *dminh, uint8_t *scales, uint8_t *L) {
    float sc[8], mn[8], max_sc = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        fit_scale_min(x + 32 * j, 32, nmax, &sc[j], &mn[j]);
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    *dh = f16_scale(max_sc / 63.0f);
    *dminh = f16_scale(max_mn / 63.0f);
    float d = f16(*dh), dmin = f16(*dminh);
    memset(scales, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        int ls = d > 0 ? clampi(nearest_int(sc[j] / d), 0, 63) : 0;
        int lm = dmin > 0 ? clampi(nearest_int(mn[j] / dmin), 0, 63) : 0;
        if (j < 4) {
            scales[j] = (uint8_t)ls;
            scales[j + 4] = (uint8_t)lm;
        } else {
            scales[j + 4] = (uint8_t)((ls & 0x0f) | ((lm & 0x0f) << 4));
            scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    for (int j = 0; j < 8; j++) {
        int ls, lm;
        k_scale_min(j, scales, &ls, &lm);
        float ds = d * (float)ls, dm = dmin * (float)lm;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)(ds > 0 ? clampi(nearest_int((x[32 * j + l] + dm) / ds), 0, nmax) : 0);
    }
}

static void quant_q4_k(const float *x, void *dst, int64_t n) {
    block_q4_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        quant_k_scales(x, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) b[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

static void quant_q5_k(const float *x, void *dst, int64_t n) {
    block_q5_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        quant_k_scales(x, 31, &b[i].d, &b[i].dmin, b[i].scales, L);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
                b[i].qs[32 * c + l] = (uint8_t)((lo & 0x0f) | ((hi & 0x0f) << 4));
                b[i].qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
    }
}

/* Symmetric fit of n values to levels -nmax..nmax-1: scale = signed absmax / -nmax (the extreme maps to
 * -nmax), then candidate scales around it are refit by least squares; returns the best scale. */
static float fit_scale_sym(const float *x, int n, int nmax) {
    float max = signed_absmax(x, n);
    if (max == 0) return 0;
    float best_s = max / (float)-nmax, best = INFINITY;
    for (int step = -6; step <= 6; step++) {
        float iscale = -((float)nmax + 0.1f * (float)step) / max;
        double slx = 0, sll = 0;
        for (int j = 0; j < n; j++) {
            int q = clampi(nearest_int(iscale * x[j]), -nmax, nmax - 1);
            slx += (double)q * x[j]; sll += (double)q * q;
        }
        if (sll <= 0) continue;
        float s = (float)(slx / sll);
        double err = 0;
        for (int j = 0; j < n; j++) {
            double e = (double)s * clampi(nearest_int(x[j] / s), -nmax, nmax - 1) - x[j];
            err += e * e;
        }
        if (err < best) { best = err; best_s = s; }
    }
    return best_s;
}

static void quant_q6_k(const float *x, void *dst, int64_t n) {
    block_q6_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float sc[16], max_sc = 0;
        for (int j = 0; j < 16; j++) {
            sc[j] = fit_scale_sym(x + 16 * j, 16, 32);
            if (fabsf(sc[j]) > fabsf(max_sc)) max_sc = sc[j];
        }
        /* int8 sub-scales relative to d; max_sc maps to -128 (int8 range is asymmetric, like Q4_0) */
        b[i].d = f16_scale(max_sc / -128.0f);
        float d = f16(b[i].d);
        uint8_t L[QK_K];
        for (int j = 0; j < 16; j++) {
            int s = d != 0 ? clampi(nearest_int(sc[j] / d), -128, 127) : 0;
            b[i].scales[j] = (int8_t)s;
            float ds = d * (float)s;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)(ds != 0 ? clampi(nearest_int(x[16 * j + l] / ds), -32, 31) + 32 : 32);
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *Lh = L + 128 * h;
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
                ql[l] = (uint8_t)((q1 & 0x0f) | ((q3 & 0x0f) << 4));
                ql[l + 32] = (uint8_t)((q2 & 0x0f) | ((q4 & 0x0f) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

size_t hkv_quantize_row(int type, const float *src, void *dst, int64_t n) {
    size_t rs = hkv_row_size(type, n);
    if (rs == 0 || !hkv_type_supported(type)) return 0;
    switch (type) {
    case HKV_TYPE_F32: memcpy(dst, src, rs); break;
    case HKV_TYPE_F16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = hkv_f32_to_f16(src[i]); break;
    case HKV_TYPE_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = hkv_f32_to_bf16(src[i]); break;
    case HKV_TYPE_Q8_0: quant_q8_0(src, dst, n); break;
    case HKV_TYPE_Q4_0: quant_q4_0(src, dst, n); break;
    case HKV_TYPE_Q5_0: quant_q5_0(src, dst, n); break;
    case HKV_TYPE_Q4_K: quant_q4_k(src, dst, n); break;
    case HKV_TYPE_Q5_K: quant_q5_k(src, dst, n); break;
    case HKV_TYPE_Q6_K: quant_q6_k(src, dst, n); break;
    default: return 0;
    }
    return rs;
}

/* ---------------------------------------------------------------- integer path: activations + reference */

/* One block of 32: levels u = q + 128 with q = round(x / d), d = absmax / 127; *s = d * sum(q). */
static void quantize_qx_block(const float *x, uint8_t *u, float *d, float *s) {
    float amax = 0;
    int bad = 0;
    for (int j = 0; j < HKV_QX_BLOCK; j++) {
        float a = fabsf(x[j]);
        if (!(a <= FLT_MAX)) bad = 1; /* inf or NaN */
        else if (a > amax) amax = a;
    }
    if (bad || amax < 1e-30f) { /* tiny blocks count as zero: 1/d must stay finite */
        memset(u, 128, HKV_QX_BLOCK);
        *d = *s = bad ? NAN : 0.0f;
        return;
    }
    float db = amax / 127.0f, id = 1.0f / db;
    int32_t sum = 0;
    for (int j = 0; j < HKV_QX_BLOCK; j++) {
        int v = clampi(nearest_int(x[j] * id), -127, 127);
        u[j] = (uint8_t)(v + 128);
        sum += v;
    }
    *d = db;
    *s = db * (float)sum;
}

void hkv_quantize_qx_ref(const float *x, uint8_t *u, float *d, float *s, float *dl, int64_t n) {
    for (int64_t b = 0; b < n / HKV_QX_BLOCK; b++) {
        quantize_qx_block(x + HKV_QX_BLOCK * b, u + HKV_QX_BLOCK * b, d + b, s + b);
        for (int l = 0; l < HKV_QX_BLOCK / 4; l++) dl[HKV_QX_BLOCK / 4 * b + l] = d[b];
    }
}

/* The K-quant format: one scale per 256-element super-block, int8 levels, int16 sums of each 16. */
void hkv_quantize_qk_ref(const float *x, int8_t *q, float *d, int16_t *bs, int64_t n) {
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, q += QK_K, bs += 16) {
        float amax = 0;
        int bad = 0;
        for (int j = 0; j < QK_K; j++) {
            float a = fabsf(x[j]);
            if (!(a <= FLT_MAX)) bad = 1; /* inf or NaN */
            else if (a > amax) amax = a;
        }
        if (bad || amax < 1e-30f) { /* tiny super-blocks count as zero: 1/d must stay finite */
            memset(q, 0, QK_K);
            memset(bs, 0, 16 * sizeof *bs);
            d[i] = bad ? NAN : 0.0f;
            continue;
        }
        float db = amax / 127.0f, id = 1.0f / db;
        for (int g = 0; g < 16; g++) {
            int sum = 0; /* |sum| <= 16 * 127: fits int16 */
            for (int j = 16 * g; j < 16 * g + 16; j++) {
                q[j] = (int8_t)clampi(nearest_int(x[j] * id), -127, 127);
                sum += q[j];
            }
            bs[g] = (int16_t)sum;
        }
        d[i] = db;
    }
}

/* Running sums of one qdot call (32-element weight types): 16 lanes per token. */
typedef struct { float acc[HKV_QX_MAX_TOK][16]; } qacc_ref;

/* One chunk of 64 weight levels w (activation blocks 2k and 2k+1) with per-lane scales fw, against each
 * token; lanes < nl only (8 for the last chunk of an odd block count). */
static void qchunk_ref(qacc_ref *a, const int8_t *w, const float *fw, const hkv_qx *x, int nx, int64_t k, int nl) {
    for (int t = 0; t < nx; t++) {
        const uint8_t *u = x[t].u + 64 * k;
        for (int l = 0; l < nl; l++) {
            int32_t p = 0;
            for (int i = 4 * l; i < 4 * l + 4; i++) p += (int32_t)w[i] * ((int32_t)u[i] - 128);
            a->acc[t][l] = fmaf((float)p, fw[l] * x[t].d[2 * k + l / 8], a->acc[t][l]);
        }
    }
}

/* Pairwise tree a[i] + a[i + n/2] down to one value: the order of the SIMD horizontal sums. */
static float hsum_tree(const float *a, int n) {
    float b[16];
    memcpy(b, a, (size_t)n * sizeof *b);
    for (int h = n / 2; h >= 1; h /= 2)
        for (int i = 0; i < h; i++) b[i] = b[i] + b[i + h];
    return b[0];
}

static void qfinish_ref(const qacc_ref *a, int nx, float *out) {
    for (int t = 0; t < nx; t++) out[t] = hsum_tree(a->acc[t], 16);
}

/* Levels of one 32-element block (offsets applied); returns the block scale. */
typedef float (*lv32_fn)(const void *blk, int8_t *w);

static float lv_q8_0(const void *blk, int8_t *w) {
    const block_q8_0 *b = blk;
    memcpy(w, b->qs, 32);
    return f16(b->d);
}

static float lv_q4_0(const void *blk, int8_t *w) {
    const block_q4_0 *b = blk;
    for (int j = 0; j < 16; j++) {
        w[j] = (int8_t)((b->qs[j] & 0x0f) - 8);
        w[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
    }
    return f16(b->d);
}

static float lv_q5_0(const void *blk, int8_t *w) {
    const block_q5_0 *b = blk;
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    for (int j = 0; j < 16; j++) {
        w[j] = (int8_t)(((b->qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4)) - 16);
        w[j + 16] = (int8_t)(((b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16);
    }
    return f16(b->d);
}

/* 32-element block types: blocks go in pairs (one 64-element chunk); an odd last block fills lanes 0..7. */
static void qdot32_ref(lv32_fn lv, size_t bsize, const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    qacc_ref a = {0};
    int8_t w[64];
    float fw[16];
    int64_t nb = n / 32;
    for (int64_t k = 0; 2 * k < nb; k++) {
        int two = 2 * k + 1 < nb;
        float d0 = lv((const uint8_t *)row + (size_t)(2 * k) * bsize, w);
        float d1 = two ? lv((const uint8_t *)row + (size_t)(2 * k + 1) * bsize, w + 32) : 0.0f;
        for (int l = 0; l < 16; l++) fw[l] = l < 8 ? d0 : d1;
        qchunk_ref(&a, w, fw, x, nx, k, two ? 16 : 8);
    }
    qfinish_ref(&a, nx, out);
}

/* One 256-element super-block of a K-quant row for the K-format integer path (kernels.h): unsigned levels
 * w, the integer scale of each element's sub-block, the 16 block-sum coefficients (mi[j] = coef[2j] bk[2j]
 * + coef[2j+1] bk[2j+1]), and the float factors d (of isum) and dm (of mi). */
typedef struct { uint8_t w[QK_K]; int32_t sc[QK_K]; int32_t coef[16]; float d, dm; } ksb_ref;
typedef void (*lvk_fn)(const void *blk, ksb_ref *k);

static void lv_k45(const block_q4_K *b4, const block_q5_K *b5, ksb_ref *k) {
    const uint8_t *scales = b4 ? b4->scales : b5->scales, *qs = b4 ? b4->qs : b5->qs;
    k->d = f16(b4 ? b4->d : b5->d);
    k->dm = f16(b4 ? b4->dmin : b5->dmin);
    for (int j = 0; j < 8; j++) { /* sub-block j = elements 32j..32j+31 */
        int sc, m;
        k_scale_min(j, scales, &sc, &m);
        for (int e = 0; e < 32; e++) k->sc[32 * j + e] = sc;
        k->coef[2 * j] = k->coef[2 * j + 1] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int lo = qs[32 * c + l] & 0x0f, hi = qs[32 * c + l] >> 4;
            if (b5) {
                lo |= ((b5->qh[l] >> (2 * c)) & 1) << 4;
                hi |= ((b5->qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            k->w[64 * c + l] = (uint8_t)lo;
            k->w[64 * c + 32 + l] = (uint8_t)hi;
        }
}

static void lv_q4_k(const void *blk, ksb_ref *k) { lv_k45(blk, NULL, k); }
static void lv_q5_k(const void *blk, ksb_ref *k) { lv_k45(NULL, blk, k); }

/* Q6_K: x = d sc (w - 32) with w in 0..63, so sum x q = d (sum sc w q - 32 sum_g sc_g bk[g]). */
static void lv_q6_k(const void *blk, ksb_ref *k) {
    const block_q6_K *b = blk;
    k->d = k->dm = f16(b->d);
    for (int e = 0; e < QK_K; e++) { /* element e: half h, group g (32 wide), lane l, as in deq_q6_k */
        int h = e / 128, g = (e % 128) / 32, l = e % 32;
        int low = (b->ql[64 * h + 32 * (g & 1) + l] >> (4 * (g >> 1))) & 0x0f;
        int high = (b->qh[32 * h + l] >> (2 * g)) & 3;
        k->w[e] = (uint8_t)(low | (high << 4));
        k->sc[e] = b->scales[e / 16];
    }
    for (int g = 0; g < 16; g++) k->coef[g] = 32 * b->scales[g];
}

static void qdotk_ref(lvk_fn lv, size_t bsize, const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    float acc[HKV_QX_MAX_TOK][16];
    memset(acc, 0, sizeof acc);
    ksb_ref k;
    for (int64_t i = 0; i < n / QK_K; i++) {
        lv((const uint8_t *)row + (size_t)i * bsize, &k);
        for (int t = 0; t < nx; t++) {
            const int8_t *q = x[t].qk + QK_K * i;
            const int16_t *bk = x[t].bk + 16 * i;
            float fd = k.d * x[t].dk[i], fm = k.dm * x[t].dk[i];
            for (int l = 0; l < 16; l++) {
                int32_t isum = 0;
                for (int c = 0; c < 4; c++)
                    for (int e = 64 * c + 4 * l; e < 64 * c + 4 * l + 4; e++) isum += k.sc[e] * (int32_t)k.w[e] * q[e];
                acc[t][l] = fmaf((float)isum, fd, acc[t][l]);
            }
            for (int j = 0; j < 8; j++) {
                int32_t mi = k.coef[2 * j] * bk[2 * j] + k.coef[2 * j + 1] * bk[2 * j + 1];
                acc[t][j] = fmaf(-(float)mi, fm, acc[t][j]);
            }
        }
    }
    for (int t = 0; t < nx; t++) out[t] = hsum_tree(acc[t], 16);
}

static void qdot_q8_0_ref(const void *r, const hkv_qx *x, int nx, float *o, int64_t n) { qdot32_ref(lv_q8_0, sizeof(block_q8_0), r, x, nx, o, n); }
static void qdot_q4_0_ref(const void *r, const hkv_qx *x, int nx, float *o, int64_t n) { qdot32_ref(lv_q4_0, sizeof(block_q4_0), r, x, nx, o, n); }
static void qdot_q5_0_ref(const void *r, const hkv_qx *x, int nx, float *o, int64_t n) { qdot32_ref(lv_q5_0, sizeof(block_q5_0), r, x, nx, o, n); }
static void qdot_q4_k_ref(const void *r, const hkv_qx *x, int nx, float *o, int64_t n) { qdotk_ref(lv_q4_k, sizeof(block_q4_K), r, x, nx, o, n); }
static void qdot_q5_k_ref(const void *r, const hkv_qx *x, int nx, float *o, int64_t n) { qdotk_ref(lv_q5_k, sizeof(block_q5_K), r, x, nx, o, n); }
static void qdot_q6_k_ref(const void *r, const hkv_qx *x, int nx, float *o, int64_t n) { qdotk_ref(lv_q6_k, sizeof(block_q6_K), r, x, nx, o, n); }

int hkv_qdot_uses_qk(int type) { return type == HKV_TYPE_Q4_K || type == HKV_TYPE_Q5_K || type == HKV_TYPE_Q6_K; }

hkv_qdot_fn hkv_qdot_ref_fn(int type) {
    switch (type) {
    case HKV_TYPE_Q8_0: return qdot_q8_0_ref;
    case HKV_TYPE_Q4_0: return qdot_q4_0_ref;
    case HKV_TYPE_Q5_0: return qdot_q5_0_ref;
    case HKV_TYPE_Q4_K: return qdot_q4_k_ref;
    case HKV_TYPE_Q5_K: return qdot_q5_k_ref;
    case HKV_TYPE_Q6_K: return qdot_q6_k_ref;
    default: return NULL;
    }
}

/* ---------------------------------------------------------------- dispatch */

static float scalar_dot_f32(const float *a, const float *b, int64_t n) { return (float)dot_f32_ref(0.0, a, b, n); }

static void scalar_axpy_f32(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static hkv_kernel_set g_simd;         /* filled once by init_kernels (the one-time CPU detection) */
static int g_simd_ok;                 /* 1: g_simd is usable on this CPU and not disabled by env */
static atomic_int g_force_scalar;     /* hkv_kernels_force_scalar */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#if !defined(__x86_64__)
hkv_cpu_caps hkv_cpu_detect(void) { hkv_cpu_caps c = {0, 0, 0, 0}; return c; }
#else
/* CPU features from CPUID, checked against what the OS saves on a context switch (XGETBV), so the same test
 * works with gcc and clang (clang-14's __builtin_cpu_supports does not know "f16c"). */
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

hkv_cpu_caps hkv_cpu_detect(void) {
    hkv_cpu_caps c = {0, 0, 0, 0};
    unsigned a, b, cx, d;
    if (!__get_cpuid(1, &a, &b, &cx, &d)) return c;
    int osxsave = cx >> 27 & 1, avx = cx >> 28 & 1, fma = cx >> 12 & 1, f16c = cx >> 29 & 1;
    if (!osxsave || !avx) return c;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return c;                     /* XMM and YMM state saved */
    if (__get_cpuid_max(0, NULL) < 7) return c;
    __cpuid_count(7, 0, a, b, cx, d);
    c.avx2_fma_f16c = (b >> 5 & 1) && fma && f16c;
    int zmm_os = (xcr0 & 0xE6) == 0xE6;                    /* opmask + ZMM state saved */
    c.avx512 = c.avx2_fma_f16c && zmm_os && (b >> 16 & 1) && (b >> 30 & 1) && (b >> 31 & 1); /* F, BW, VL */
    c.avx512vnni = c.avx512 && (cx >> 11 & 1);
    __cpuid_count(7, 1, a, b, cx, d);
    c.avxvnni = c.avx2_fma_f16c && (a >> 4 & 1);
    return c;
}
#endif

static void init_kernels(void) {
    const char *env = getenv("HEAVYKV_NO_SIMD");
    if (env && env[0] && strcmp(env, "0") != 0) return;
#if defined(__x86_64__)
    hkv_cpu_caps caps = hkv_cpu_detect();
    if (caps.avx2_fma_f16c) {
        if (caps.avx512)
            hkv_kernels_avx512_init(&g_simd, caps.avx512vnni);
        else if (caps.avxvnni)
            hkv_kernels_avxvnni_init(&g_simd);
        else
            hkv_kernels_avx2_init(&g_simd);
        g_simd_ok = 1;
    }
#endif
}

static const hkv_kernel_set *simd(void) {
    pthread_once(&g_once, init_kernels);
    return g_simd_ok && !atomic_load_explicit(&g_force_scalar, memory_order_relaxed) ? &g_simd : NULL;
}

void hkv_kernels_force_scalar(int on) { atomic_store(&g_force_scalar, on ? 1 : 0); }

const char *hkv_kernel_name(void) {
    const hkv_kernel_set *ks = simd();
    return ks ? ks->name : "scalar";
}

const char *hkv_cpu_features(void) {
    const hkv_kernel_set *ks = simd();
    return ks ? ks->features : "scalar";
}

void hkv_dequant_row(int type, const void *src, float *dst, int64_t n) {
    const hkv_kernel_set *ks = simd();
    if (ks && type >= 0 && type < HKV_TYPE_COUNT && ks->dequant[type] && hkv_row_size(type, n) > 0)
        ks->dequant[type](src, dst, n);
    else
        hkv_dequant_row_ref(type, src, dst, n);
}

float hkv_dot(int type, const void *row, const float *x, int64_t n) {
    const hkv_kernel_set *ks = simd();
    if (!ks) return hkv_dot_ref(type, row, x, n);
    if (hkv_row_size(type, n) == 0 || !hkv_type_supported(type)) return 0.0f;
    return ks->dot[type] ? ks->dot[type](row, x, n) : hkv_dot_ref(type, row, x, n);
}

float hkv_dot_f32(const float *a, const float *b, int64_t n) {
    const hkv_kernel_set *ks = simd();
    return ks ? ks->dot_f32(a, b, n) : scalar_dot_f32(a, b, n);
}

void hkv_axpy_f32(float *y, float a, const float *x, int64_t n) {
    const hkv_kernel_set *ks = simd();
    if (ks) ks->axpy_f32(y, a, x, n);
    else scalar_axpy_f32(y, a, x, n);
}

hkv_qdot_fn hkv_qdot_fn_get(int type) {
    const hkv_kernel_set *ks = simd();
    if (type < 0 || type >= HKV_TYPE_COUNT) return NULL;
    return ks && ks->qdot[type] ? ks->qdot[type] : hkv_qdot_ref_fn(type);
}

hkv_qdot2_fn hkv_qdot2_fn_get(int type) {
    const hkv_kernel_set *ks = simd();
    if (type < 0 || type >= HKV_TYPE_COUNT || !ks) return NULL;
    return ks->qdot2[type];
}

hkv_qdotr_fn hkv_qdotr_fn_get(int type) {
    const hkv_kernel_set *ks = simd();
    if (type < 0 || type >= HKV_TYPE_COUNT || !ks) return NULL;
    return ks->qdotr[type];
}

void hkv_quantize_qk(const float *x, int8_t *q, float *d, int16_t *bs, int64_t n) {
    const hkv_kernel_set *ks = simd();
    if (ks && ks->quantize_qk) ks->quantize_qk(x, q, d, bs, n);
    else hkv_quantize_qk_ref(x, q, d, bs, n);
}

double hkv_int8_peak_macs(long n) {
    const hkv_kernel_set *ks = simd();
    return ks && ks->int8_peak ? ks->int8_peak(n) : 0.0;
}

void hkv_quantize_qx(const float *x, uint8_t *u, float *d, float *s, float *dl, int64_t n) {
    const hkv_kernel_set *ks = simd();
    if (ks && ks->quantize_qx) ks->quantize_qx(x, u, d, s, dl, n);
    else hkv_quantize_qx_ref(x, u, d, s, dl, n);
}
