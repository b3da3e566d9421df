/* AVX-512 (F, BW, VL) attention kernels over K/V rows with head_dim % 16 == 0 (this file alone is compiled
 * with -mavx512f -mavx512bw -mavx512vl -mfma -mf16c; kvrow.c only calls it when the matmuls run AVX-512).
 * Layouts and kernel definitions: kvrow.h.
 *
 * Rows are read 16 elements at a time and converted in registers exactly like the scalar decoder (so a
 * quantized row and its F32 decoding give the same bits). Two register blocks do the work:
 *   kdot: 4 query rows x 4 keys = 16 accumulators over head_dim, then one 16-to-1 transpose-reduction gives
 *         the 16 dot products in one register. Rows or keys beyond the call's range repeat the last valid one
 *         and their results are dropped, so every dot product is computed by the same instruction sequence
 *         (and the same reduction tree: lanes i + 8, i + 4, i + 2, i + 1) whatever the call's size.
 *   vaxpy: 4 output rows x 64 columns (16 registers) stay in registers over all keys of the tile; each
 *         converted value chunk feeds 4 FMAs. Each output element gets o = fma(p_j, v_j, o) for j in order,
 *         the same rounding as one vaxpy call per key (and as the AVX2 set).
 * exp16 is the 16-wide polynomial exp of the softmax and the policy's probabilities (vscalefps for 2^n). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kvrow.h"

static inline float f16_scale(const uint8_t *blk) {
    uint16_t dh;
    memcpy(&dh, blk, 2);
    return _cvtsh_ss(dh);
}

/* Elements c..c+15 of a row (c a multiple of 16; quantized blocks b are 32 or 16 here). */
static inline __m512 ld_f32(const void *row, int c, int b) {
    (void)b;
    return _mm512_loadu_ps((const float *)row + c);
}
static inline __m512 ld_f16(const void *row, int c, int b) {
    (void)b;
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c)));
}
static inline __m512 ld_bf16(const void *row, int c, int b) {
    (void)b;
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline __m512 ld_q8_0(const void *row, int c, int b) {
    const uint8_t *blk = (const uint8_t *)row + (size_t)(c / b) * (2 + b);
    __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2 + c % b))));
    return _mm512_mul_ps(x, _mm512_set1_ps(f16_scale(blk)));
}
/* 16 nibbles of a Q4_0 block: b == 32: the low (elements 0..15) or high (16..31) nibbles of its 16 bytes;
 * b == 16: the low nibbles of its 8 bytes, then the high ones. */
static inline __m512 ld_q4_0(const void *row, int c, int b) {
    const uint8_t *blk = (const uint8_t *)row + (size_t)(c / b) * (2 + b / 2), *qs = blk + 2;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m128i v;
    if (b == 32) {
        __m128i q = _mm_loadu_si128((const __m128i *)qs);
        v = c % b == 0 ? _mm_and_si128(q, m4) : _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    } else {
        __m128i q = _mm_loadl_epi64((const __m128i *)qs);
        v = _mm_and_si128(_mm_unpacklo_epi64(q, _mm_srli_epi16(q, 4)), m4);
    }
    __m512i w = _mm512_sub_epi32(_mm512_cvtepu8_epi32(v), _mm512_set1_epi32(8));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(w), _mm512_set1_ps(f16_scale(blk)));
}

/* Sums each of v[0..15] into one register: lane 4 i + j = sum of v[4 j + i]. Every input goes through the same
 * pairing (lanes i + 8, then + 4, + 2, + 1), so its sum does not depend on its place among the 16. */
static inline __m512 reduce16(const __m512 *v) {
    __m512 x[8], y[4], z[2];
    for (int k = 0; k < 8; k++)
        x[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
    for (int k = 0; k < 4; k++)
        y[k] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], 0xDD));
    for (int k = 0; k < 2; k++)
        z[k] = _mm512_add_ps(_mm512_shuffle_ps(y[2 * k], y[2 * k + 1], 0x44),
                             _mm512_shuffle_ps(y[2 * k], y[2 * k + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], 0x88), _mm512_shuffle_ps(z[0], z[1], 0xDD));
}

#define AVX512_KERNELS(NAME, LOAD)                                                                         \
    static void kdot_tile_##NAME(const void *const *rows, int nk, const float *q, int nr, int hd, float *s,  \
                                 size_t ss) {                                                              \
        int b = kvrow_block(HKV_KV_##NAME##_T, hd);                                                        \
        for (int j = 0; j < nk; j += 4) {                                                                  \
            const void *k[4];                                                                              \
            int kn = nk - j < 4 ? nk - j : 4;                                                              \
            for (int t = 0; t < 4; t++) k[t] = rows[j + (t < kn ? t : kn - 1)];                            \
            for (int r = 0; r < nr; r += 4) {                                                              \
                const float *qr[4];                                                                        \
                int rn = nr - r < 4 ? nr - r : 4;                                                          \
                for (int t = 0; t < 4; t++) qr[t] = q + (size_t)(r + (t < rn ? t : rn - 1)) * hd;          \
                __m512 a[16];                                                                              \
                for (int t = 0; t < 16; t++) a[t] = _mm512_setzero_ps();                                   \
                for (int c = 0; c < hd; c += 16) {                                                         \
                    __m512 k0 = LOAD(k[0], c, b), k1 = LOAD(k[1], c, b), k2 = LOAD(k[2], c, b),            \
                           k3 = LOAD(k[3], c, b);                                                          \
                    for (int t = 0; t < 4; t++) {                                                          \
                        __m512 qv = _mm512_loadu_ps(qr[t] + c);                                            \
                        a[t] = _mm512_fmadd_ps(k0, qv, a[t]);                                              \
                        a[4 + t] = _mm512_fmadd_ps(k1, qv, a[4 + t]);                                      \
                        a[8 + t] = _mm512_fmadd_ps(k2, qv, a[8 + t]);                                      \
                        a[12 + t] = _mm512_fmadd_ps(k3, qv, a[12 + t]);                                    \
                    }                                                                                      \
                }                                                                                          \
                __m512 d = reduce16(a); /* lane 4 t + u: query row r + t, key j + u */                     \
                __mmask8 km = (__mmask8)((1u << kn) - 1);                                                  \
                float *s0 = s + (size_t)r * ss + j;                                                        \
                _mm_mask_storeu_ps(s0, km, _mm512_castps512_ps128(d));                                     \
                if (rn > 1) _mm_mask_storeu_ps(s0 + ss, km, _mm512_extractf32x4_ps(d, 1));                 \
                if (rn > 2) _mm_mask_storeu_ps(s0 + 2 * ss, km, _mm512_extractf32x4_ps(d, 2));             \
                if (rn > 3) _mm_mask_storeu_ps(s0 + 3 * ss, km, _mm512_extractf32x4_ps(d, 3));             \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
    static void vaxpy_tile_##NAME(const void *const *rows, int nk, const float *p, size_t ps, int nr,        \
                                  float *o, int hd) {                                                      \
        int b = kvrow_block(HKV_KV_##NAME##_T, hd), r = 0;                                                 \
        for (; r + 4 <= nr; r += 4) {                                                                      \
            int c = 0;                                                                                     \
            for (; c + 64 <= hd; c += 64) {                                                                \
                __m512 a[16];                                                                              \
                for (int t = 0; t < 4; t++)                                                                \
                    for (int u = 0; u < 4; u++) a[4 * t + u] = _mm512_loadu_ps(o + (size_t)(r + t) * hd + c + 16 * u); \
                for (int j = 0; j < nk; j++) {                                                             \
                    __m512 v0 = LOAD(rows[j], c, b), v1 = LOAD(rows[j], c + 16, b),                        \
                           v2 = LOAD(rows[j], c + 32, b), v3 = LOAD(rows[j], c + 48, b);                   \
                    for (int t = 0; t < 4; t++) {                                                          \
                        __m512 pv = _mm512_set1_ps(p[(size_t)(r + t) * ps + j]);                           \
                        a[4 * t] = _mm512_fmadd_ps(pv, v0, a[4 * t]);                                      \
                        a[4 * t + 1] = _mm512_fmadd_ps(pv, v1, a[4 * t + 1]);                              \
                        a[4 * t + 2] = _mm512_fmadd_ps(pv, v2, a[4 * t + 2]);                              \
                        a[4 * t + 3] = _mm512_fmadd_ps(pv, v3, a[4 * t + 3]);                              \
                    }                                                                                      \
                }                                                                                          \
                for (int t = 0; t < 4; t++)                                                                \
                    for (int u = 0; u < 4; u++) _mm512_storeu_ps(o + (size_t)(r + t) * hd + c + 16 * u, a[4 * t + u]); \
            }                                                                                              \
            for (; c < hd; c += 16) {                                                                      \
                __m512 a[4];                                                                               \
                for (int t = 0; t < 4; t++) a[t] = _mm512_loadu_ps(o + (size_t)(r + t) * hd + c);          \
                for (int j = 0; j < nk; j++) {                                                             \
                    __m512 v0 = LOAD(rows[j], c, b);                                                       \
                    for (int t = 0; t < 4; t++)                                                            \
                        a[t] = _mm512_fmadd_ps(_mm512_set1_ps(p[(size_t)(r + t) * ps + j]), v0, a[t]);     \
                }                                                                                          \
                for (int t = 0; t < 4; t++) _mm512_storeu_ps(o + (size_t)(r + t) * hd + c, a[t]);          \
            }                                                                                              \
        }                                                                                                  \
        for (; r < nr; r++) {                                                                              \
            float *orow = o + (size_t)r * hd;                                                              \
            for (int c = 0; c < hd; c += 16) {                                                             \
                __m512 a0 = _mm512_loadu_ps(orow + c);                                                     \
                for (int j = 0; j < nk; j++)                                                               \
                    a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[(size_t)r * ps + j]), LOAD(rows[j], c, b), a0);  \
                _mm512_storeu_ps(orow + c, a0);                                                            \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
    static void kdot_##NAME(const void *row, const float *q, int nr, int hd, float *s, size_t ss) {        \
        kdot_tile_##NAME(&row, 1, q, nr, hd, s, ss);                                                       \
    }                                                                                                      \
    static void vaxpy_##NAME(const void *row, const float *p, size_t ps, int nr, float *o, int hd) {       \
        vaxpy_tile_##NAME(&row, 1, p, ps, nr, o, hd);                                                      \
    }

#define HKV_KV_f32_T HKV_KV_F32
#define HKV_KV_f16_T HKV_KV_F16
#define HKV_KV_bf16_T HKV_KV_BF16
#define HKV_KV_q8_0_T HKV_KV_Q8_0
#define HKV_KV_q4_0_T HKV_KV_Q4_0

AVX512_KERNELS(f32, ld_f32)
AVX512_KERNELS(f16, ld_f16)
AVX512_KERNELS(bf16, ld_bf16)
AVX512_KERNELS(q8_0, ld_q8_0)
AVX512_KERNELS(q4_0, ld_q4_0)

/* exp of 16 floats: the reduction and polynomial of exp8 (attn_kernels_avx2.c), 2^n applied by vscalefps,
 * which also produces the subnormal results below -87.33 and +inf above 88.72. NaN stays NaN (max/min return
 * their second operand when one is NaN). */
static inline __m512 exp16(__m512 x) {
    __m512 t = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

void kvrow_exp_avx512(const float *x, float *y, int n) {
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, exp16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

static inline __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

static float softmax_avx512(float *s, int n, float scale, float *m, float *keep) {
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 vmx = _mm512_set1_ps(*m);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), vs);
        _mm512_mask_storeu_ps(s + i, k, x);
        if (keep) _mm512_mask_storeu_ps(keep + i, k, x);
        vmx = _mm512_mask_max_ps(vmx, k, vmx, x);
    }
    float mx = _mm512_reduce_max_ps(vmx);
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), vm));
        _mm512_mask_storeu_ps(s + i, k, e);
        acc = _mm512_mask_add_ps(acc, k, acc, e);
    }
    *m = mx;
    return _mm512_reduce_add_ps(acc);
}

static void exp_acc_avx512(const float *s, int n, float scale, float m, float w, float *a) {
    const __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(m), vw = _mm512_set1_ps(w);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), vs), vm));
        __m512 av = _mm512_maskz_loadu_ps(k, a + i);
        _mm512_mask_storeu_ps(a + i, k, _mm512_add_ps(av, _mm512_mul_ps(e, vw)));
    }
}

kvrow_kernels kvrow_kernels_avx512(int type, int hd) {
    kvrow_kernels k = {NULL, NULL, NULL, NULL, softmax_avx512, exp_acc_avx512};
    if (hd % 16 != 0 || !kvrow_block(type, hd)) return k;
#define SET(NAME)                                                                                          \
    k.kdot = kdot_##NAME; k.vaxpy = vaxpy_##NAME; k.kdot_tile = kdot_tile_##NAME; k.vaxpy_tile = vaxpy_tile_##NAME
    switch (type) {
    case HKV_KV_F32: SET(f32); break;
    case HKV_KV_F16: SET(f16); break;
    case HKV_KV_BF16: SET(bf16); break;
    case HKV_KV_Q8_0: SET(q8_0); break;
    case HKV_KV_Q4_0: SET(q4_0); break;
    default: break;
    }
#undef SET
    return k;
}
#else
/* keeps the translation unit non-empty off x86-64 (ISO C) */
typedef int hkv_attn_kernels_avx512_unused;
#endif
