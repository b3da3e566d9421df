/* AVX2 + FMA + F16C attention kernels over K/V rows (this file alone is compiled with -mavx2 -mfma -mf16c;
 * kvrow.c only calls it after the CPU check). Layouts and kernel definitions: kvrow.h.
 *
 * Every row type is read 8 elements at a time and converted in registers (f16: vcvtph2ps, bf16: a 16-bit
 * shift, Q8_0/Q4_0: integer widening then * d in f32, the same operation as the scalar decoder, so the
 * converted values are bit-identical to kvrow_load). kdot keeps 4 query rows' accumulators in registers so
 * each loaded key chunk serves 4 dot products; vaxpy converts a value chunk once and adds it to every row.
 * The softmax and the policy's probabilities use an 8-wide polynomial exp (exp8). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kvrow.h"

static inline float hsum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

static inline float f16_scale(const uint8_t *blk) {
    uint16_t dh;
    memcpy(&dh, blk, 2);
    return _cvtsh_ss(dh);
}

/* Elements c..c+7 of a row (c a multiple of 8). */
static inline __m256 ld_f32(const void *row, int c, int b) {
    (void)b;
    return _mm256_loadu_ps((const float *)row + c);
}
static inline __m256 ld_f16(const void *row, int c, int b) {
    (void)b;
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + c)));
}
static inline __m256 ld_bf16(const void *row, int c, int b) {
    (void)b;
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + c)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline __m256 ld_q8_0(const void *row, int c, int b) {
    const uint8_t *blk = (const uint8_t *)row + (size_t)(c / b) * (2 + b);
    __m128i q = _mm_loadl_epi64((const __m128i *)(blk + 2 + c % b));
    __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    return _mm256_mul_ps(x, _mm256_set1_ps(f16_scale(blk)));
}
/* 8 nibbles of a Q4_0 block as bytes: block elements e..e+7 are the low nibbles of bytes e.. (e < b/2) or the
 * high nibbles of bytes e-b/2.. ; with b == 8 they are the 4 low then the 4 high nibbles of bytes 0..3. */
static inline __m256 ld_q4_0(const void *row, int c, int b) {
    const uint8_t *blk = (const uint8_t *)row + (size_t)(c / b) * (2 + b / 2), *qs = blk + 2;
    int e = c % b;
    uint64_t u;
    if (b == 8) {
        uint32_t w;
        memcpy(&w, qs, 4);
        u = (uint64_t)(w & 0x0F0F0F0Fu) | (uint64_t)((w >> 4) & 0x0F0F0F0Fu) << 32;
    } else if (e < b / 2) {
        memcpy(&u, qs + e, 8);
        u &= 0x0F0F0F0F0F0F0F0Full;
    } else {
        memcpy(&u, qs + e - b / 2, 8);
        u = (u >> 4) & 0x0F0F0F0F0F0F0F0Full;
    }
    __m256i w8 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)u)), _mm256_set1_epi32(8));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(w8), _mm256_set1_ps(f16_scale(blk)));
}

#define AVX2_KERNELS(NAME, LOAD)                                                                         \
    static void kdot_##NAME(const void *row, const float *q, int nr, int hd, float *s, size_t ss) {      \
        int b = kvrow_block(HKV_KV_##NAME##_T, hd), r = 0;                                               \
        for (; r + 4 <= nr; r += 4) {                                                                    \
            const float *q0 = q + (size_t)r * hd;                                                        \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                  \
            for (int c = 0; c < hd; c += 8) {                                                            \
                __m256 k = LOAD(row, c, b);                                                              \
                a0 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q0 + c), a0);                                    \
                a1 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q0 + hd + c), a1);                               \
                a2 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q0 + 2 * hd + c), a2);                           \
                a3 = _mm256_fmadd_ps(k, _mm256_loadu_ps(q0 + 3 * hd + c), a3);                           \
            }                                                                                            \
            s[(size_t)r * ss] = hsum8(a0);                                                               \
            s[(size_t)(r + 1) * ss] = hsum8(a1);                                                         \
            s[(size_t)(r + 2) * ss] = hsum8(a2);                                                         \
            s[(size_t)(r + 3) * ss] = hsum8(a3);                                                         \
        }                                                                                                \
        for (; r < nr; r++) {                                                                            \
            const float *q0 = q + (size_t)r * hd;                                                        \
            __m256 a0 = _mm256_setzero_ps();                                                             \
            for (int c = 0; c < hd; c += 8) a0 = _mm256_fmadd_ps(LOAD(row, c, b), _mm256_loadu_ps(q0 + c), a0); \
            s[(size_t)r * ss] = hsum8(a0);                                                               \
        }                                                                                                \
    }                                                                                                    \
    static void vaxpy_##NAME(const void *row, const float *p, size_t ps, int nr, float *o, int hd) {     \
        int b = kvrow_block(HKV_KV_##NAME##_T, hd);                                                      \
        for (int c = 0; c < hd; c += 8) {                                                                \
            __m256 v = LOAD(row, c, b);                                                                  \
            for (int r = 0; r < nr; r++) {                                                               \
                float *oc = o + (size_t)r * hd + c;                                                      \
                _mm256_storeu_ps(oc, _mm256_fmadd_ps(_mm256_set1_ps(p[(size_t)r * ps]), v, _mm256_loadu_ps(oc))); \
            }                                                                                            \
        }                                                                                                \
    }

/* exp of 8 floats: Cody-Waite reduction x = n ln2 + r (|r| <= ln2/2, ln2 split in two so n * C1 is exact),
 * Cephes' degree-7 polynomial for e^r, then 2^n built in the exponent field (as 2^(n/2) * 2^(n - n/2) so
 * n = 128 and -126 stay normal factors). Within 2 ulp of expf for x >= -87.33 (tested); below, 0 (expf gives
 * subnormals < 1.2e-38 there); NaN stays NaN. */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(89.0f);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q), under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 t = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256i b = _mm256_set1_epi32(127);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, b), 23)));
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, b), 23)));
    return _mm256_blendv_ps(_mm256_andnot_ps(under, y), x, nan);
}

void kvrow_exp_avx2(const float *x, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float buf[8] = {0};
        memcpy(buf, x + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(buf, exp8(_mm256_loadu_ps(buf)));
        memcpy(y + i, buf, sizeof(float) * (size_t)(n - i));
    }
}

static inline float hmax8(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* kvrow_softmax_fn: a tail shorter than 8 goes through a buffer padded with -inf (exp -> 0). */
static float softmax_avx2(float *s, int n, float scale, float *m, float *keep) {
    const __m256 vs = _mm256_set1_ps(scale);
    __m256 vmx = _mm256_set1_ps(*m);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + i), vs);
        _mm256_storeu_ps(s + i, x);
        vmx = _mm256_max_ps(vmx, x);
    }
    float mx = hmax8(vmx);
    for (int k = i; k < n; k++) {
        s[k] *= scale;
        if (s[k] > mx) mx = s[k];
    }
    if (keep) memcpy(keep, s, sizeof(float) * (size_t)n);
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (i < n) {
        float buf[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        memcpy(buf, s + i, sizeof(float) * (size_t)(n - i));
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(buf), vm));
        _mm256_storeu_ps(buf, e);
        memcpy(s + i, buf, sizeof(float) * (size_t)(n - i));
        acc = _mm256_add_ps(acc, e);
    }
    *m = mx;
    return hsum8(acc);
}

static void exp_acc_avx2(const float *s, int n, float scale, float m, float w, float *a) {
    const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(m), vw = _mm256_set1_ps(w);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(s + i), vs), vm));
        _mm256_storeu_ps(a + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_mul_ps(e, vw)));
    }
    if (i < n) {
        float bs[8] = {0}, ba[8] = {0};
        memcpy(bs, s + i, sizeof(float) * (size_t)(n - i));
        memcpy(ba, a + i, sizeof(float) * (size_t)(n - i));
        __m256 e = exp8(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(bs), vs), vm));
        _mm256_storeu_ps(ba, _mm256_add_ps(_mm256_loadu_ps(ba), _mm256_mul_ps(e, vw)));
        memcpy(a + i, ba, sizeof(float) * (size_t)(n - i));
    }
}

#define HKV_KV_f32_T HKV_KV_F32
#define HKV_KV_f16_T HKV_KV_F16
#define HKV_KV_bf16_T HKV_KV_BF16
#define HKV_KV_q8_0_T HKV_KV_Q8_0
#define HKV_KV_q4_0_T HKV_KV_Q4_0

AVX2_KERNELS(f32, ld_f32)
AVX2_KERNELS(f16, ld_f16)
AVX2_KERNELS(bf16, ld_bf16)
AVX2_KERNELS(q8_0, ld_q8_0)
AVX2_KERNELS(q4_0, ld_q4_0)

kvrow_kernels kvrow_kernels_avx2(int type, int hd) {
    kvrow_kernels k = {NULL, NULL, NULL, NULL, softmax_avx2, exp_acc_avx2};
    if (hd % 8 != 0 || !kvrow_block(type, hd)) return k;
    switch (type) {
    case HKV_KV_F32: k.kdot = kdot_f32; k.vaxpy = vaxpy_f32; break;
    case HKV_KV_F16: k.kdot = kdot_f16; k.vaxpy = vaxpy_f16; break;
    case HKV_KV_BF16: k.kdot = kdot_bf16; k.vaxpy = vaxpy_bf16; break;
    case HKV_KV_Q8_0: k.kdot = kdot_q8_0; k.vaxpy = vaxpy_q8_0; break;
    case HKV_KV_Q4_0: k.kdot = kdot_q4_0; k.vaxpy = vaxpy_q4_0; break;
    default: break;
    }
    return k;
}
#else
/* keeps the translation unit non-empty off x86-64 (ISO C) */
typedef int hkv_attn_kernels_avx2_unused;
#endif
