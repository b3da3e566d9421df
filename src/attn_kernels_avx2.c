/* AVX2 + FMA + F16C attention kernels over K/V rows (this file alone is compiled with -mavx2 -mfma -mf16c;
 * kvrow.c only calls it after the CPU check). Layouts and kernel definitions: kvrow.h.
 *
 * Every row type is read 8 elements at a time and converted in registers (f16: vcvtph2ps, bf16: a 16-bit
 * shift, Q8_0/Q4_0: integer widening then * d in f32, the same operation as the scalar decoder, so the
 * converted values are bit-identical to kvrow_load). kdot keeps 4 query rows' accumulators in registers so
 * each loaded key chunk serves 4 dot products; vaxpy converts a value chunk once and adds it to every row. */
#if defined(__x86_64__)
#include <immintrin.h>
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
    kvrow_kernels k = {NULL, NULL};
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
