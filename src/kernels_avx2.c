/* AVX2 + FMA + F16C kernels (this file alone is compiled with -mavx2 -mfma -mf16c; tensor.c only calls it
 * after checking the CPU).
 *
 * Each quantized type has a block decoder that dequantizes one block into floats with the same float
 * operations as the scalar reference (so the values are bit-identical). Dot products decode a block into an
 * L1-resident buffer and accumulate it with exactly the loop structure of dot_f32: four 8-lane FMA
 * accumulators over 32-element steps, an 8-element tail into the first, a fixed reduction, then a scalar
 * tail. Hence dot(type, row, x) == dot_f32(dequant(row), x) bit for bit (the contract in kernels.h). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include "kernels.h"

/* ---------------------------------------------------------------- accumulation shared by all dots */

typedef struct { __m256 a0, a1, a2, a3; } acc4;

static inline acc4 acc_zero(void) {
    acc4 a = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    return a;
}

/* n a multiple of 32. */
static inline void acc_add(acc4 *a, const float *v, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 32) {
        a->a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i), _mm256_loadu_ps(x + i), a->a0);
        a->a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i + 8), _mm256_loadu_ps(x + i + 8), a->a1);
        a->a2 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i + 16), _mm256_loadu_ps(x + i + 16), a->a2);
        a->a3 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i + 24), _mm256_loadu_ps(x + i + 24), a->a3);
    }
}

/* Adds the last rem (< 32) products and reduces to one float. */
static inline float acc_finish(acc4 *a, const float *v, const float *x, int rem) {
    int i = 0;
    for (; i + 8 <= rem; i += 8) a->a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i), _mm256_loadu_ps(x + i), a->a0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(a->a0, a->a1), _mm256_add_ps(a->a2, a->a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float r = _mm_cvtss_f32(h);
    for (; i < rem; i++) r += v[i] * x[i];
    return r;
}

static float dot_f32(const float *a, const float *b, int64_t n) {
    acc4 acc = acc_zero();
    int64_t m = n - n % 32;
    acc_add(&acc, a, b, m);
    return acc_finish(&acc, a + m, b + m, (int)(n - m));
}

static void axpy_f32(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

/* ---------------------------------------------------------------- block decoders */

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 8 unsigned / signed bytes at the start of b -> 8 floats. */
static inline __m256 u8x8_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }

/* 32 bytes holding small ints -> 4 x 8 floats scaled as d * (q - off) (integer subtract first, as in the
 * scalar code), stored to y[0..31]. */
static inline void store_scaled(__m256i q, int off, float d, float *y) {
    __m256 vd = _mm256_set1_ps(d);
    __m256i voff = _mm256_set1_epi32(off);
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[k]), voff);
        _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(v)));
    }
}

/* Same for levels 0..31 with y = d*q - m (mul then sub, as in the scalar K-quant code). */
static inline void store_affine(__m256i q, float d, float m, float *y) {
    __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++)
        _mm256_storeu_ps(y + 8 * k, _mm256_sub_ps(_mm256_mul_ps(vd, u8x8_ps(parts[k])), vm));
}

static void dec_q8_0(const void *blk, float *y) {
    const block_q8_0 *b = blk;
    __m256 vd = _mm256_set1_ps(h2f(b->d));
    for (int k = 0; k < 4; k++) {
        __m128i q = _mm_loadl_epi64((const __m128i *)(b->qs + 8 * k));
        _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    }
}

/* 16 packed bytes -> 32 nibbles: low nibbles first (elements 0..15), then high nibbles (16..31). */
static inline __m256i nibbles16(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

static void dec_q4_0(const void *blk, float *y) {
    const block_q4_0 *b = blk;
    store_scaled(nibbles16(b->qs), 8, h2f(b->d), y);
}

/* Q5_0 quants as bytes 0..31: nibbles plus the 5th bit (subtract 16 to centre). */
static inline __m256i q5_0_bytes(const block_q5_0 *b) {
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    /* element e's 5th bit is qh bit e: expand the 32 bits to 32 bytes of 0 / 16 */
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), sel);
    __m256i hb = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit), _mm256_set1_epi8(16));
    return _mm256_or_si256(nibbles16(b->qs), hb);
}

static void dec_q5_0(const void *blk, float *y) {
    store_scaled(q5_0_bytes(blk), 16, h2f(((const block_q5_0 *)blk)->d), y);
}

static inline void k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K and Q5_K (qh NULL for Q4_K): per 64-element chunk c, two sub-blocks with their own scale / min. */
static inline void dec_k45(float d, float dmin, const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, float *y) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256i vqh = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++, qs += 32, y += 64) {
        int sc0, m0, sc1, m1;
        k_scale_min(2 * c, scales, &sc0, &m0);
        k_scale_min(2 * c + 1, scales, &sc1, &m1);
        __m256i q = _mm256_loadu_si256((const __m256i *)qs);
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (qh) {
            __m256i b0 = _mm256_and_si256(_mm256_srl_epi16(vqh, _mm_cvtsi32_si128(2 * c)), one);
            __m256i b1 = _mm256_and_si256(_mm256_srl_epi16(vqh, _mm_cvtsi32_si128(2 * c + 1)), one);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
        }
        store_affine(lo, d * (float)sc0, dmin * (float)m0, y);
        store_affine(hi, d * (float)sc1, dmin * (float)m1, y + 32);
    }
}

static void dec_q4_k(const void *blk, float *y) {
    const block_q4_K *b = blk;
    dec_k45(h2f(b->d), h2f(b->dmin), b->scales, b->qs, NULL, y);
}

static void dec_q5_k(const void *blk, float *y) {
    const block_q5_K *b = blk;
    dec_k45(h2f(b->d), h2f(b->dmin), b->scales, b->qs, b->qh, y);
}

/* 16 signed levels from the low / high 16 bytes of q -> 16 floats ds * q. */
static inline void store_i8x16(__m128i q, float ds, float *y) {
    __m256 vd = _mm256_set1_ps(ds);
    _mm256_storeu_ps(y, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)))));
}

static void dec_q6_k(const void *blk, float *y) {
    const block_q6_K *b = blk;
    float d = h2f(b->d);
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), c32 = _mm256_set1_epi8(32);
    for (int h = 0; h < 2; h++, y += 128) {
        const uint8_t *ql = b->ql + 64 * h;
        const int8_t *sc = b->scales + 8 * h;
        __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i low[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                          _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
        for (int g = 0; g < 4; g++) {
            __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), m2);
            __m256i q = _mm256_sub_epi8(_mm256_or_si256(low[g], _mm256_slli_epi16(hb, 4)), c32);
            store_i8x16(_mm256_castsi256_si128(q), d * (float)sc[2 * g], y + 32 * g);
            store_i8x16(_mm256_extracti128_si256(q, 1), d * (float)sc[2 * g + 1], y + 32 * g + 16);
        }
    }
}

/* ---------------------------------------------------------------- float-type decoders (any count) */

static void deq_f16(const void *src, float *y, int64_t n) {
    const uint16_t *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) y[i] = h2f(s[i]);
}

static void deq_bf16(const void *src, float *y, int64_t n) {
    const uint16_t *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; i++) y[i] = hkv_bf16_to_f32(s[i]);
}

static void deq_f32(const void *src, float *y, int64_t n) { memcpy(y, src, (size_t)n * sizeof(float)); }

/* Dot of a 2-byte float row: decode 256 at a time, then the tail exactly as dot_f32 does it. */
static inline float dot_half(void (*dec)(const void *, float *, int64_t), const uint16_t *row, const float *x,
                             int64_t n) {
    float buf[256];
    acc4 acc = acc_zero();
    int64_t m = n - n % 32, i = 0;
    for (; i < m; i += 256) {
        int64_t c = m - i < 256 ? m - i : 256;
        dec(row + i, buf, c);
        acc_add(&acc, buf, x + i, c);
    }
    dec(row + m, buf, n - m);
    return acc_finish(&acc, buf, x + m, (int)(n - m));
}

static float dot_f16(const void *row, const float *x, int64_t n) { return dot_half(deq_f16, row, x, n); }
static float dot_bf16(const void *row, const float *x, int64_t n) { return dot_half(deq_bf16, row, x, n); }
static float dot_f32_row(const void *row, const float *x, int64_t n) { return dot_f32(row, x, n); }

/* ---------------------------------------------------------------- quantized rows */

/* Per-type dequant and dot, generated from the block decoder; qk is 32 or 256, both multiples of 32. */
#define QUANT_KERNELS(NAME, BLOCK, QK)                                                      \
    static void deq_##NAME(const void *src, float *y, int64_t n) {                          \
        const BLOCK *b = src;                                                               \
        for (int64_t i = 0; i < n / (QK); i++) dec_##NAME(b + i, y + i * (QK));             \
    }                                                                                       \
    static float dot_##NAME(const void *row, const float *x, int64_t n) {                   \
        const BLOCK *b = row;                                                               \
        float buf[QK];                                                                      \
        acc4 acc = acc_zero();                                                              \
        for (int64_t i = 0; i < n / (QK); i++) {                                            \
            dec_##NAME(b + i, buf);                                                         \
            acc_add(&acc, buf, x + i * (QK), QK);                                           \
        }                                                                                   \
        return acc_finish(&acc, buf, x, 0);                                                 \
    }

QUANT_KERNELS(q8_0, block_q8_0, QK8_0)
QUANT_KERNELS(q4_0, block_q4_0, QK4_0)
QUANT_KERNELS(q5_0, block_q5_0, QK5_0)
QUANT_KERNELS(q4_k, block_q4_K, QK_K)
QUANT_KERNELS(q5_k, block_q5_K, QK_K)
QUANT_KERNELS(q6_k, block_q6_K, QK_K)

/* ---------------------------------------------------------------- integer path (see kernels.h)
 *
 * The kernel bodies are in kernels_avx2_qdot.h (two copies: maddubs and AVX-VNNI). Each is expanded for
 * nx = 1..4 so the token loops unroll and the accumulators stay in registers; a token's arithmetic is the
 * same whatever nx is. */

#define QX_INLINE static inline __attribute__((always_inline))

typedef struct { __m256 lo, hi; } qacc;    /* lanes 0..7 and 8..15 of one token */

/* Tree sum of 8 lanes: [i] + [i+4], [i] + [i+2], [0] + [1]. */
QX_INLINE float hsum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

QX_INLINE float hsum16(qacc a) { return hsum8(_mm256_add_ps(a.lo, a.hi)); }

/* The 32 signed levels of one Q8_0 / Q4_0 / Q5_0 block, offset removed. */
QX_INLINE __m256i lv32(const uint8_t *blk, int type) {
    if (type == HKV_TYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)blk)->qs);
    if (type == HKV_TYPE_Q4_0) return _mm256_sub_epi8(nibbles16(((const block_q4_0 *)blk)->qs), _mm256_set1_epi8(8));
    return _mm256_sub_epi8(q5_0_bytes((const block_q5_0 *)blk), _mm256_set1_epi8(16));
}

/* One entry point per type; the switch picks the unrolled copy for nx. More than 4 tokens would not fit
 * the 16 ymm registers, so they are done as passes of 4 (a token's arithmetic does not change). */
#define QDOT_ENTRY(NAME)                                                                       \
    QV_ENTRY void QV(qdot_##NAME)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) { \
        for (; nx > 4; nx -= 4, x += 4, out += 4) QV(qdot_##NAME##_n)(row, x, 4, out, n);      \
        switch (nx) {                                                                          \
        case 1: QV(qdot_##NAME##_n)(row, x, 1, out, n); break;                                 \
        case 2: QV(qdot_##NAME##_n)(row, x, 2, out, n); break;                                 \
        case 3: QV(qdot_##NAME##_n)(row, x, 3, out, n); break;                                 \
        default: QV(qdot_##NAME##_n)(row, x, 4, out, n); break;                                \
        }                                                                                      \
    }

/* AVX2 copy: maddubs */
#define QV_VNNI 0
#define QV(name) name##_mb
#define QV_FN QX_INLINE
#define QV_ENTRY static
#include "kernels_avx2_qdot.h"
#undef QV_VNNI
#undef QV
#undef QV_FN
#undef QV_ENTRY

/* AVX-VNNI copy: the VEX vpdpbusd */
#define QV_VNNI 1
#define QV(name) name##_vnni
#define QV_FN static inline __attribute__((always_inline, target("avxvnni")))
#define QV_ENTRY static __attribute__((target("avxvnni")))
#include "kernels_avx2_qdot.h"

/* hkv_quantize_qk_ref with 8 lanes: the same absmax and f32 products; cvtps rounds to nearest even like
 * lrintf. Each 16-block is two vectors of levels, whose sum is bs. */
static void quantize_qk_avx2(const float *x, int8_t *q, float *d, int16_t *bs, int64_t n) {
    const __m256 fmax = _mm256_set1_ps(FLT_MAX), sgn = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, q += QK_K, bs += 16) {
        __m256 m = _mm256_setzero_ps();
        int bad = 0;
        for (int g = 0; g < 32; g++) {
            __m256 a = _mm256_andnot_ps(sgn, _mm256_loadu_ps(x + 8 * g));
            bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, fmax, _CMP_NLE_UQ)); /* !(a <= FLT_MAX): inf or NaN */
            m = _mm256_max_ps(m, a);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        float amax = bad ? 0.0f : _mm_cvtss_f32(h);
        if (bad || amax < 1e-30f) {
            memset(q, 0, QK_K);
            memset(bs, 0, 16 * sizeof *bs);
            d[i] = bad ? NAN : 0.0f;
            continue;
        }
        float db = amax / 127.0f;
        __m256 id = _mm256_set1_ps(1.0f / db);
        for (int g = 0; g < 8; g++) { /* 32 levels: four vectors of 8, packed to bytes in element order */
            __m256i v[4];
            for (int k = 0; k < 4; k++)
                v[k] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8 * k), id)), lo), hi);
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            _mm256_storeu_si256((__m256i *)(q + 32 * g), _mm256_permutevar8x32_epi32(p, order));
            for (int k = 0; k < 2; k++) {
                __m256i s = _mm256_add_epi32(v[2 * k], v[2 * k + 1]);
                __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
                bs[2 * g + k] = (int16_t)_mm_cvtsi128_si32(t);
            }
        }
        d[i] = db;
    }
}

static void set_qdot(hkv_kernel_set *ks, int vnni) {
#define SETQ(T, NAME) (ks->qdot[T] = vnni ? qdot_##NAME##_vnni : qdot_##NAME##_mb)
    SETQ(HKV_TYPE_Q8_0, q8_0);
    SETQ(HKV_TYPE_Q4_0, q4_0);
    SETQ(HKV_TYPE_Q5_0, q5_0);
    SETQ(HKV_TYPE_Q4_K, q4_k);
    SETQ(HKV_TYPE_Q5_K, q5_k);
    SETQ(HKV_TYPE_Q6_K, q6_k);
#undef SETQ
}

/* Register-only int8 dot throughput (kernels.h int8_peak): 12 independent accumulators; the result
 * depends on the sums (a term that is always 0) so the loop is not removed. */
__attribute__((target("avxvnni"))) static double int8_peak_avxvnni(long n) {
    __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_epi32(i);
    for (long k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, b);
    for (int i = 1; i < 12; i++) acc[0] = _mm256_add_epi32(acc[0], acc[i]);
    return 12.0 * 32.0 * (double)n + (double)(_mm256_extract_epi32(acc[0], 0) == 0x7fffffff);
}

static double int8_peak_avx2(long n) {
    __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), one = _mm256_set1_epi16(1), acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_epi32(i);
    for (long k = 0; k < n; k++)
        for (int i = 0; i < 12; i++) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), one));
    for (int i = 1; i < 12; i++) acc[0] = _mm256_add_epi32(acc[0], acc[i]);
    return 12.0 * 32.0 * (double)n + (double)(_mm256_extract_epi32(acc[0], 0) == 0x7fffffff);
}

void hkv_kernels_avxvnni_init(hkv_kernel_set *ks) {
    hkv_kernels_avx2_init(ks);
    ks->name = "avxvnni";
    ks->features = "avxvnni avx2 fma f16c";
    set_qdot(ks, 1);
    ks->int8_peak = int8_peak_avxvnni;
}

void hkv_kernels_avx2_init(hkv_kernel_set *ks) {
    memset(ks, 0, sizeof *ks);
    ks->name = "avx2";
    ks->features = "avx2 fma f16c";
    ks->dot_f32 = dot_f32;
    ks->axpy_f32 = axpy_f32;
#define SET(T, NAME) (ks->dot[T] = dot_##NAME, ks->dequant[T] = deq_##NAME)
#define SETQ(T, NAME) SET(T, NAME)
    ks->dot[HKV_TYPE_F32] = dot_f32_row;
    ks->dequant[HKV_TYPE_F32] = deq_f32;
    SET(HKV_TYPE_F16, f16);
    SET(HKV_TYPE_BF16, bf16);
    SETQ(HKV_TYPE_Q8_0, q8_0);
    SETQ(HKV_TYPE_Q4_0, q4_0);
    SETQ(HKV_TYPE_Q5_0, q5_0);
    SETQ(HKV_TYPE_Q4_K, q4_k);
    SETQ(HKV_TYPE_Q5_K, q5_k);
    SETQ(HKV_TYPE_Q6_K, q6_k);
#undef SETQ
#undef SET
    set_qdot(ks, 0);
    ks->quantize_qk = quantize_qk_avx2;
    ks->int8_peak = int8_peak_avx2;
}
#else
/* Not x86-64: no SIMD kernels, tensor.c uses the scalar code. ISO C needs at least one declaration. */
typedef int hkv_kernels_avx2_unused;
#endif
