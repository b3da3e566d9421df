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

/* One entry point per type; the switch picks the unrolled copy for nx. */
#define QDOT_ENTRY(NAME)                                                                       \
    QV_ENTRY void QV(qdot_##NAME)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) { \
        switch (nx) {                                                                          \
        case 1: QV(qdot_##NAME##_n)(row, x, 1, out, n); break;                                 \
        case 2: QV(qdot_##NAME##_n)(row, x, 2, out, n); break;                                 \
        case 3: QV(qdot_##NAME##_n)(row, x, 3, out, n); break;                                 \
        case 4: QV(qdot_##NAME##_n)(row, x, 4, out, n); break;                                 \
        case 5: QV(qdot_##NAME##_n)(row, x, 5, out, n); break;                                 \
        case 6: QV(qdot_##NAME##_n)(row, x, 6, out, n); break;                                 \
        case 7: QV(qdot_##NAME##_n)(row, x, 7, out, n); break;                                 \
        default: QV(qdot_##NAME##_n)(row, x, 8, out, n); break;                                \
        }                                                                                      \
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

void hkv_kernels_avx512_init(hkv_kernel_set *ks, int vnni) {
    hkv_kernels_avx2_init(ks);
    ks->name = vnni ? "avx512vnni" : "avx512";
    ks->features = vnni ? "avx512f avx512bw avx512vl avx512vnni avx2 fma f16c" : "avx512f avx512bw avx512vl avx2 fma f16c";
#define SETQ(T, NAME) (ks->qdot[T] = vnni ? qdot_##NAME##_vnni : qdot_##NAME##_bw)
    SETQ(HKV_TYPE_Q8_0, q8_0);
    SETQ(HKV_TYPE_Q4_0, q4_0);
    SETQ(HKV_TYPE_Q5_0, q5_0);
    SETQ(HKV_TYPE_Q4_K, q4_k);
    SETQ(HKV_TYPE_Q5_K, q5_k);
    SETQ(HKV_TYPE_Q6_K, q6_k);
#undef SETQ
}
#else
/* Not x86-64: no SIMD kernels, tensor.c uses the scalar code. ISO C needs at least one declaration. */
typedef int hkv_kernels_avx512_unused;
#endif
