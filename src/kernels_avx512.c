/* AVX-512 (F, BW, VL) integer-path kernels; this file alone is compiled with -mavx512f -mavx512bw
 * -mavx512vl -mfma -mf16c and tensor.c only calls it after checking the CPU. The float kernels are the
 * AVX2 ones (hkv_kernels_avx2_init); here only qdot is replaced.
 *
 * The 16 lanes of the reference definition (kernels.h) are the 16 lanes of one zmm register:
 * _mm512_madd_epi16 on a 32-element group gives lane l = w[2l]q[2l] + w[2l+1]q[2l+1], and the float steps
 * are the reference's lane by lane, so the results are bit-identical to the scalar and AVX2 kernels. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>
#include "kernels.h"

#define QX_INLINE static inline __attribute__((always_inline))

QX_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* Group g of 32 int16 levels w with per-lane scales f against each token: one zmm accumulator each. */
QX_INLINE void qgroup(__m512 *acc, __m512i w, __m512 f, const hkv_qx *x, int nx, int64_t g) {
    for (int t = 0; t < nx; t++) {
        __m512i p = _mm512_madd_epi16(w, _mm512_loadu_si512(x[t].q + HKV_QX_BLOCK * g));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(f, _mm512_set1_ps(x[t].d[g])), acc[t]);
    }
}

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

/* 32 small unsigned bytes -> 32 int16 minus off. */
QX_INLINE __m512i widen_u8(__m256i v, int off) {
    return _mm512_sub_epi16(_mm512_cvtepu8_epi16(v), _mm512_set1_epi16((short)off));
}

QX_INLINE void k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

QX_INLINE void qdot_q8_0_n(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    const block_q8_0 *b = row;
    __m512 acc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)b[i].qs));
        qgroup(acc, w, _mm512_set1_ps(h2f(b[i].d)), x, nx, i);
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]);
}

QX_INLINE void qdot_q4_0_n(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    const block_q4_0 *b = row;
    __m512 acc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK4_0; i++)
        qgroup(acc, widen_u8(nibbles16(b[i].qs), 8), _mm512_set1_ps(h2f(b[i].d)), x, nx, i);
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]);
}

QX_INLINE void qdot_q5_0_n(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    const block_q5_0 *b = row;
    __m512 acc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK5_0; i++) {
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        /* element e's 5th bit is qh bit e: used directly as the byte mask that adds 16 */
        __m256i v = nibbles16(b[i].qs);
        v = _mm256_mask_add_epi8(v, (__mmask32)qh, v, _mm256_set1_epi8(16));
        qgroup(acc, widen_u8(v, 16), _mm512_set1_ps(h2f(b[i].d)), x, nx, i);
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]);
}

/* Q4_K (has_qh 0) / Q5_K super-blocks: groups 2c / 2c+1 are the low / high nibbles of qs[32c..32c+31]. */
QX_INLINE void qdot_k45_n(const uint8_t *blocks, size_t bsize, int has_qh, const hkv_qx *x, int nx, float *out,
                          int64_t n) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), b16 = _mm256_set1_epi8(16);
    __m512 acc[HKV_QX_MAX_TOK];
    __m256 macc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) { acc[t] = _mm512_setzero_ps(); macc[t] = _mm256_setzero_ps(); }
    for (int64_t i = 0; i < n / QK_K; i++) {
        const block_q4_K *b4 = (const block_q4_K *)(blocks + (size_t)i * bsize);
        const block_q5_K *b5 = (const block_q5_K *)b4;
        const uint8_t *qs = has_qh ? b5->qs : b4->qs;
        float d = h2f(b4->d), dmin = h2f(b4->dmin);  /* same offsets in both layouts */
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) k_scale_min(j, b4->scales, &sc[j], &m[j]);
        __m256i vqh = has_qh ? _mm256_loadu_si256((const __m256i *)b5->qh) : _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (has_qh) { /* bit 2c / 2c+1 of qh[l] is the 5th bit of element l of the two groups */
                lo = _mm256_mask_add_epi8(lo, _mm256_test_epi8_mask(vqh, _mm256_set1_epi8((char)(1 << (2 * c)))), lo, b16);
                hi = _mm256_mask_add_epi8(hi, _mm256_test_epi8_mask(vqh, _mm256_set1_epi8((char)(2 << (2 * c)))), hi, b16);
            }
            qgroup(acc, widen_u8(lo, 0), _mm512_set1_ps(d * (float)sc[2 * c]), x, nx, 8 * i + 2 * c);
            qgroup(acc, widen_u8(hi, 0), _mm512_set1_ps(d * (float)sc[2 * c + 1]), x, nx, 8 * i + 2 * c + 1);
        }
        __m256 mf = _mm256_mul_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)m)));
        for (int t = 0; t < nx; t++) macc[t] = _mm256_fmadd_ps(mf, _mm256_loadu_ps(x[t].s + 8 * i), macc[t]);
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]) - hsum8(macc[t]);
}

QX_INLINE void qdot_q4_k_n(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    qdot_k45_n(row, sizeof(block_q4_K), 0, x, nx, out, n);
}

QX_INLINE void qdot_q5_k_n(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    qdot_k45_n(row, sizeof(block_q5_K), 1, x, nx, out, n);
}

/* Lanes 0..7 get a, lanes 8..15 get b. */
QX_INLINE __m512 two_scales(float a, float b) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(a)), _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

QX_INLINE void qdot_q6_k_n(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    const block_q6_K *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), c32 = _mm256_set1_epi8(32);
    __m512 acc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = h2f(b[i].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            __m256i low[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                              _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
            for (int g = 0; g < 4; g++) {
                __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), m2);
                __m256i q = _mm256_sub_epi8(_mm256_or_si256(low[g], _mm256_slli_epi16(hb, 4)), c32);
                qgroup(acc, _mm512_cvtepi8_epi16(q), two_scales(d * (float)sc[2 * g], d * (float)sc[2 * g + 1]), x, nx,
                       8 * i + 4 * h + g);
            }
        }
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]);
}

/* One entry point per type; the switch picks the unrolled copy for nx. */
#define QDOT_ENTRY(NAME)                                                                   \
    static void qdot_##NAME(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) { \
        switch (nx) {                                                                      \
        case 1: qdot_##NAME##_n(row, x, 1, out, n); break;                                 \
        case 2: qdot_##NAME##_n(row, x, 2, out, n); break;                                 \
        case 3: qdot_##NAME##_n(row, x, 3, out, n); break;                                 \
        case 4: qdot_##NAME##_n(row, x, 4, out, n); break;                                 \
        case 5: qdot_##NAME##_n(row, x, 5, out, n); break;                                 \
        case 6: qdot_##NAME##_n(row, x, 6, out, n); break;                                 \
        case 7: qdot_##NAME##_n(row, x, 7, out, n); break;                                 \
        default: qdot_##NAME##_n(row, x, 8, out, n); break;                                \
        }                                                                                  \
    }

QDOT_ENTRY(q8_0)
QDOT_ENTRY(q4_0)
QDOT_ENTRY(q5_0)
QDOT_ENTRY(q4_k)
QDOT_ENTRY(q5_k)
QDOT_ENTRY(q6_k)

void hkv_kernels_avx512_init(hkv_kernel_set *ks) {
    hkv_kernels_avx2_init(ks);
    ks->name = "avx512";
    ks->features = "avx512f avx512bw avx512vl avx2 fma f16c";
    ks->qdot[HKV_TYPE_Q8_0] = qdot_q8_0;
    ks->qdot[HKV_TYPE_Q4_0] = qdot_q4_0;
    ks->qdot[HKV_TYPE_Q5_0] = qdot_q5_0;
    ks->qdot[HKV_TYPE_Q4_K] = qdot_q4_k;
    ks->qdot[HKV_TYPE_Q5_K] = qdot_q5_k;
    ks->qdot[HKV_TYPE_Q6_K] = qdot_q6_k;
}
#else
/* Not x86-64: no SIMD kernels, tensor.c uses the scalar code. ISO C needs at least one declaration. */
typedef int hkv_kernels_avx512_unused;
#endif
