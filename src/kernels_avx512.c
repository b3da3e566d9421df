/* AVX-512 (F, BW, VL) integer-path kernels; this file alone is compiled with -mavx512f -mavx512bw
 * -mavx512vl -mfma -mf16c and tensor.c only calls it after checking the CPU. The float kernels are the
 * AVX2 ones (hkv_kernels_avx2_init); here only qdot is replaced, by one of two copies of the kernels in
 * kernels_avx512_qdot.h: vpdpbusd (AVX512-VNNI, functions built for that target only) or maddubs.
 *
 * The 16 lanes of the reference definition (kernels.h) are the 16 int32 lanes of one zmm: each holds the
 * exact sum of 4 int8 products, and the float steps are the reference's lane by lane, so the results are
 * bit-identical to the scalar and AVX2 kernels. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include "kernels.h"

#define QX_INLINE static inline __attribute__((always_inline))

QX_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* Tree sums: 8 lanes [i] + [i+4], [i] + [i+2], [0] + [1]; 16 lanes first [i] + [i+8]. */
QX_INLINE float hsum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

QX_INLINE float hsum16(__m512 v) {
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), hi));
}

/* 16 packed bytes -> 32 nibbles: low nibbles first (elements 0..15), then high nibbles (16..31). */
QX_INLINE __m256i nibbles16(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

/* Lanes 0..7 get a, lanes 8..15 get b. */
QX_INLINE __m512 two_scales(float a, float b) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(a)), _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

/* Lanes 0..7 get the F16 scale at byte 0 of p, lanes 8..15 the one at byte 2 * w (w < 32): the d fields of
 * two consecutive blocks, from one masked load (nothing past word w is read) and one word permute instead of
 * two scalar conversions and broadcasts — a third fewer instructions per chunk in a Q8_0 decode, which is
 * what limits one thread's streaming rate. The same value as two_scales(h2f(d0), h2f(d1)). */
QX_INLINE __m512 pair_scales(const void *p, int w) {
    const __m512i sel = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set_m128i(_mm_set1_epi16((short)w), _mm_setzero_si128()), 0);
    __m512i v = _mm512_maskz_loadu_epi16((__mmask32)((2u << w) - 1), p);
    return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(sel, v)));
}

/* Entry points per type, one row and two rows; the switch picks the unrolled copy for nx. */
#define QDOT_CASES(NAME, ROW, STRIDE, R)                                                       \
        switch (nx) {                                                                          \
        case 1: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 1, out, n); break;                      \
        case 2: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 2, out, n); break;                      \
        case 3: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 3, out, n); break;                      \
        case 4: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 4, out, n); break;                      \
        case 5: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 5, out, n); break;                      \
        case 6: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 6, out, n); break;                      \
        case 7: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 7, out, n); break;                      \
        default: QV(qdot_##NAME##_n)(ROW, STRIDE, R, x, 8, out, n); break;                     \
        }
#define QDOT_ENTRY(NAME)                                                                       \
    QV_ENTRY void QV(qdot_##NAME)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) { \
        QDOT_CASES(NAME, (const uint8_t *)row, 0, 1)                                           \
    }                                                                                          \
    QV_ENTRY void QV(qdot2_##NAME)(const void *row, size_t stride, const hkv_qx *x, int nx, float *out, int64_t n) { \
        QDOT_CASES(NAME, (const uint8_t *)row, stride, 2)                                      \
    }                                                                                          \
    QV_ENTRY void QV(qdotr_##NAME)(const void *row, size_t stride, int nrows, const hkv_qx *x, float *out, int64_t n) { \
        for (int r = 0; r < nrows; r++) QV(qdot_##NAME##_n)((const uint8_t *)row + (size_t)r * stride, 0, 1, x, 1, out + r, n); \
    }

/* AVX-512BW copy: maddubs */
#define QV_VNNI 0
#define QV(name) name##_bw
#define QV_FN QX_INLINE
#define QV_ENTRY static
#include "kernels_avx512_qdot.h"
#undef QV_VNNI
#undef QV
#undef QV_FN
#undef QV_ENTRY

/* AVX512-VNNI copy: vpdpbusd */
#define QV_VNNI 1
#define QV(name) name##_vnni
#define QV_FN static inline __attribute__((always_inline, target("avx512vnni")))
#define QV_ENTRY static __attribute__((target("avx512vnni")))
#include "kernels_avx512_qdot.h"

/* hkv_quantize_qx_ref with 16 lanes: the same absmax (max is exact in any order), the same f32 products
 * x * (1 / d), and cvtps rounds to nearest even like lrintf in the default rounding mode. */
static void quantize_qx_avx512(const float *x, uint8_t *u, float *d, float *s, float *dl, int64_t n) {
    const __m512 fmax = _mm512_set1_ps(FLT_MAX);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), off = _mm512_set1_epi32(128);
    for (int64_t b = 0; b < n / HKV_QX_BLOCK; b++) {
        __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
        __m512 a0 = _mm512_abs_ps(x0), a1 = _mm512_abs_ps(x1);
        /* !(a <= FLT_MAX): inf or NaN */
        int bad = (_mm512_cmp_ps_mask(a0, fmax, _CMP_NLE_UQ) | _mm512_cmp_ps_mask(a1, fmax, _CMP_NLE_UQ)) != 0;
        float amax = bad ? 0.0f : _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        if (bad || amax < 1e-30f) { /* as the reference: tiny blocks count as zero */
            memset(u + 32 * b, 128, 32);
            d[b] = s[b] = bad ? NAN : 0.0f;
        } else {
            float db = amax / 127.0f;
            __m512 id = _mm512_set1_ps(1.0f / db);
            __m512i q0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x0, id)), lo), hi);
            __m512i q1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x1, id)), lo), hi);
            _mm_storeu_si128((__m128i *)(u + 32 * b), _mm512_cvtepi32_epi8(_mm512_add_epi32(q0, off)));
            _mm_storeu_si128((__m128i *)(u + 32 * b + 16), _mm512_cvtepi32_epi8(_mm512_add_epi32(q1, off)));
            d[b] = db;
            s[b] = db * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        }
        _mm256_storeu_ps(dl + 8 * b, _mm256_set1_ps(d[b]));
    }
}

/* hkv_quantize_qk_ref with 16 lanes: the same absmax and f32 products as the reference; each zmm of 16
 * levels is one 16-block, so its sum is bs. */
static void quantize_qk_avx512(const float *x, int8_t *q, float *d, int16_t *bs, int64_t n) {
    const __m512 fmax = _mm512_set1_ps(FLT_MAX);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, q += QK_K, bs += 16) {
        __m512 m = _mm512_setzero_ps();
        __mmask16 bad = 0;
        for (int g = 0; g < 16; g++) {
            __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + 16 * g));
            bad |= _mm512_cmp_ps_mask(a, fmax, _CMP_NLE_UQ); /* !(a <= FLT_MAX): inf or NaN */
            m = _mm512_max_ps(m, a);
        }
        float amax = bad ? 0.0f : _mm512_reduce_max_ps(m);
        if (bad || amax < 1e-30f) {
            memset(q, 0, QK_K);
            memset(bs, 0, 16 * sizeof *bs);
            d[i] = bad ? NAN : 0.0f;
            continue;
        }
        float db = amax / 127.0f;
        __m512 id = _mm512_set1_ps(1.0f / db);
        for (int g = 0; g < 16; g++) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * g), id));
            v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
            _mm_storeu_si128((__m128i *)(q + 16 * g), _mm512_cvtepi32_epi8(v));
            bs[g] = (int16_t)_mm512_reduce_add_epi32(v);
        }
        d[i] = db;
    }
}

/* Register-only int8 dot throughput: 12 independent accumulators (more than latency x ports), inputs that
 * never change; the result depends on the sums (never by more than nothing) so the loop is not removed. */
__attribute__((target("avx512vnni"))) static double int8_peak_vnni(long n) {
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2), acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i);
    for (long k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    for (int i = 1; i < 12; i++) acc[0] = _mm512_add_epi32(acc[0], acc[i]);
    return 12.0 * 64.0 * (double)n + (double)(_mm512_reduce_add_epi32(acc[0]) == 0x7fffffff);
}

static double int8_peak_bw(long n) {
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2), one = _mm512_set1_epi16(1), acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i);
    for (long k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) acc[i] = _mm512_add_epi32(acc[i], _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), one));
    for (int i = 1; i < 12; i++) acc[0] = _mm512_add_epi32(acc[0], acc[i]);
    return 12.0 * 64.0 * (double)n + (double)(_mm512_reduce_add_epi32(acc[0]) == 0x7fffffff);
}

void hkv_kernels_avx512_init(hkv_kernel_set *ks, int vnni) {
    hkv_kernels_avx2_init(ks);
    ks->name = vnni ? "avx512vnni" : "avx512";
    ks->features = vnni ? "avx512f avx512bw avx512vl avx512vnni avx2 fma f16c" : "avx512f avx512bw avx512vl avx2 fma f16c";
#define SETQ(T, NAME) (ks->qdot[T] = vnni ? qdot_##NAME##_vnni : qdot_##NAME##_bw, \
                       ks->qdot2[T] = vnni ? qdot2_##NAME##_vnni : qdot2_##NAME##_bw, \
                       ks->qdotr[T] = vnni ? qdotr_##NAME##_vnni : qdotr_##NAME##_bw)
    SETQ(HKV_TYPE_Q8_0, q8_0);
    SETQ(HKV_TYPE_Q4_0, q4_0);
    SETQ(HKV_TYPE_Q5_0, q5_0);
    SETQ(HKV_TYPE_Q4_K, q4_k);
    SETQ(HKV_TYPE_Q5_K, q5_k);
    SETQ(HKV_TYPE_Q6_K, q6_k);
#undef SETQ
    ks->quantize_qx = quantize_qx_avx512;
    ks->int8_peak = vnni ? int8_peak_vnni : int8_peak_bw;
    ks->quantize_qk = quantize_qk_avx512;
}
#else
/* Not x86-64: no SIMD kernels, tensor.c uses the scalar code. ISO C needs at least one declaration. */
typedef int hkv_kernels_avx512_unused;
#endif
