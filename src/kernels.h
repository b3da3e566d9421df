/* Internal contract between tensor.c (dispatch + scalar reference) and the SIMD kernel files.
 *
 * A kernel set is a table of optional function pointers; NULL entries fall back to the scalar code.
 * Float path: within one set, dot[type](row, x) must return exactly the same bits as
 * dot_f32(dequant(row), x). The SIMD files get that by dequantizing in registers with the same float
 * operations as the scalar dequantizer and accumulating in the same lane/accumulator order as dot_f32.
 *
 * Integer path (hkv_matmul with quantized weights): the activations are quantized once per matmul, in the
 * format the weight type needs (a matmul over several matrices may need both).
 *
 * Q8_0 / Q4_0 / Q5_0 (32-element weight blocks): blocks of 32 int8 levels q in -127..127 with one f32
 * scale (hkv_qx u, d, s, dl; stored as u = q + 128, the unsigned operand of vpdpbusd / maddubs), like
 * llama.cpp's Q8 activations. qdot[type] is defined exactly by the scalar reference in tensor.c, which
 * mirrors 16 SIMD lanes of 4 int8 products each:
 *   the row is cut in chunks k of 64 elements (activation blocks 2k, 2k+1); with integer weight levels w
 *   (offsets applied) and per-lane weight scales fw[16] (block d; lanes 0..7 lie in block 2k, lanes
 *   8..15 in block 2k+1):
 *     p[l] = w[4l] q[4l] + ... + w[4l+3] q[4l+3]                     (exact int32)
 *     acc[l] = fmaf((float)p[l], fw[l] * xd[2k + l / 8], acc[l])      (l = 0..15)
 *   a row with an odd block count ends with a half chunk: lanes 0..7 only.   result = hsum16(acc)
 *
 * Q4_K / Q5_K / Q6_K (256-element super-blocks): the activations get ONE f32 scale per super-block (hkv_qx
 * qk, dk, bk: int8 q in -127..127 in element order, dk = absmax / 127, and bk = the sums of each 16 q as
 * int16, like the published Q8_K block), so that a whole super-block accumulates in int32 and the float
 * work is per super-block instead of per 32 elements. With the weight levels w UNSIGNED (Q4_K 0..15,
 * Q5_K 0..31, Q6_K 0..63: Q6_K's -32 offset and the K-quant mins go to a separate block-sum term) and the
 * integer sub-block scale sc(e) of element e (Q4_K / Q5_K: the 6-bit scale of its 32-block, Q6_K: the int8
 * scale of its 16-block), per super-block of every (row, token):
 *     isum[l] = sum over chunks c = 0..3 of sum_{e = 64c + 4l .. 64c + 4l + 3} sc(e) * w[e] * q[e]  (l < 16)
 *     mi[j]   = Q4_K / Q5_K: m_j * (bk[2j] + bk[2j+1]);  Q6_K: 32 * (sc_2j bk[2j] + sc_2j+1 bk[2j+1])  (j < 8)
 *     fd = d * dk;  fm = dmin * dk (Q4_K / Q5_K) or fd (Q6_K)                 (f32 products)
 *     acc[l] = fmaf((float)isum[l], fd, acc[l])            l = 0..15, then
 *     acc[j] = fmaf(-(float)mi[j], fm, acc[j])             j = 0..7
 *   result = hsum16(acc). Integer bounds: maddubs' int16 pairs are at most 2 * 63 * 127 = 16002 (no
 *   saturation); |isum[l]| <= 4 chunks * 4 products * 128 * 63 * 127 < 2^24 (so even the int -> float
 *   conversion is exact); |mi[j]| <= 32 * 2 * 128 * 2032 < 2^24. The SIMD kernels form isum as
 *   maddubs(w, q) (u8 x s8 -> int16 pairs) then madd / vpdpwssd with sc as int16 -> int32 lanes.
 *
 * Sums are the tree a[i] + a[i + half] down to one lane.
 * The int32 p is exact in every kernel (VNNI: dpbusd(u, w) minus 128 * sum(w) folded into the accumulator;
 * AVX2 / AVX-512BW: maddubs(|w|, sign(q, w)), which cannot saturate with |q| <= 127), as are isum and mi,
 * and the float steps are the reference's lane by lane, so every set produces the same bits as the
 * reference (tests compare): results do not depend on the CPU's kernel set, on the thread count or on how
 * many tokens a call handles. */
#ifndef HKV_KERNELS_H
#define HKV_KERNELS_H
#include <stdint.h>
#include "tensor.h"

#define HKV_QX_BLOCK 32     /* activation block of the integer path */
#define HKV_QX_MAX_TOK 8    /* tokens one qdot call handles (AVX-512: one pass over the weight row) */

/* One token's activations, quantized in one or both formats (a format's pointers are NULL when the
 * matmul does not need it): x[i] ~= d[i / 32] * (u[i] - 128) ~= dk[i / 256] * qk[i]. */
typedef struct hkv_qx {
    const uint8_t *u;   /* [n] levels + 128, in 1..255 (32-element weight types) */
    const float *d;     /* [n / 32] block scales (NaN if the block held inf / NaN) */
    const float *s;     /* [n / 32] d * (sum of the block's q) */
    const float *dl;    /* [n / 4] d of each 4-element lane (d[i / 8]): one vector load per chunk (AVX-512) */
    const int8_t *qk;   /* [n] levels in -127..127 (K-quant weight types) */
    const float *dk;    /* [n / 256] super-block scales (NaN if the super-block held inf / NaN) */
    const int16_t *bk;  /* [n / 16] sums of 16 consecutive qk */
} hkv_qx;

/* out[t] = sum_i row[i] * x[t][i] for t < nx (1..HKV_QX_MAX_TOK); n a multiple of the type's block. The nx
 * tokens' arrays are consecutive, x[t].u = x[0].u + t * n and x[t].dl = x[0].dl + t * n / 4 (the matmul's
 * layout), so a kernel may address them from x[0] alone. */
typedef void (*hkv_qdot_fn)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n);
/* Two rows at once (row and row + stride bytes), so that each loaded activation chunk serves both rows:
 * out[t] = row 0 . x[t], out[nx + t] = row 1 . x[t], each exactly what qdot gives for that row. */
typedef void (*hkv_qdot2_fn)(const void *row, size_t stride, const hkv_qx *x, int nx, float *out, int64_t n);
/* One token against nrows consecutive rows (row + r * stride): out[r] = what qdot gives for row r and x[0].
 * A decode's matmul block in one call, so one row's final sum overlaps the next row's loads instead of
 * waiting for a return per row (the per-row call was ~5% of a one-thread Qwen2.5-0.5B decode). */
typedef void (*hkv_qdotr_fn)(const void *row, size_t stride, int nrows, const hkv_qx *x, float *out, int64_t n);

typedef void (*hkv_quantize_qx_fn)(const float *x, uint8_t *u, float *d, float *s, float *dl, int64_t n);
typedef void (*hkv_quantize_qk_fn)(const float *x, int8_t *q, float *d, int16_t *bs, int64_t n);
typedef float (*hkv_dot_fn)(const void *row, const float *x, int64_t n);
typedef void (*hkv_dequant_fn)(const void *src, float *dst, int64_t n);

typedef struct hkv_kernel_set {
    const char *name;                         /* "avx2", ... */
    const char *features;                     /* CPU features it relies on, e.g. "avx2 fma f16c" */
    hkv_dot_fn dot[HKV_TYPE_COUNT];           /* per supported type (NULL: scalar reference) */
    hkv_dequant_fn dequant[HKV_TYPE_COUNT];   /* per type; NULL: scalar reference */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    hkv_qdot_fn qdot[HKV_TYPE_COUNT];         /* integer path per quantized type; NULL: scalar reference */
    hkv_qdot2_fn qdot2[HKV_TYPE_COUNT];       /* two-row form of qdot; NULL: qdot row by row */
    hkv_qdotr_fn qdotr[HKV_TYPE_COUNT];       /* one token, many rows; NULL: qdot row by row */
    hkv_quantize_qx_fn quantize_qx;           /* hkv_quantize_qx_ref's exact bits; NULL: the reference */
    hkv_quantize_qk_fn quantize_qk;           /* hkv_quantize_qk_ref's exact bits; NULL: the reference */
    /* int8 multiply-adds this set's dot instruction sustains on one core for n iterations of 12
     * independent register chains (vpdpbusd, or vpmaddubsw + vpmaddwd + add without VNNI): the compute
     * peak prefill is compared with. Returns the multiply-adds done; NULL: not measured (scalar). */
    double (*int8_peak)(long n);
} hkv_kernel_set;

/* Scalar dequantizer of one type (NULL for unsupported types); SIMD files may reuse them. */
hkv_dequant_fn hkv_dequant_ref_fn(int type);

/* Quantizes n floats (a multiple of 32) for the integer path into u[n], d[n / 32], s[n / 32], dl[n / 4]. A
 * block holding inf or NaN gets d = s = NaN and q = 0, so every dot with it is NaN. _ref is the scalar
 * definition; hkv_quantize_qx runs this CPU's kernel, which gives the same bits (tests compare). */
void hkv_quantize_qx_ref(const float *x, uint8_t *u, float *d, float *s, float *dl, int64_t n);
void hkv_quantize_qx(const float *x, uint8_t *u, float *d, float *s, float *dl, int64_t n);
/* The K-quant format: n floats (a multiple of 256) into q[n], d[n / 256], bs[n / 16] with d = absmax / 127
 * and q = round(x / d) per super-block; inf / NaN: d = NaN, q = 0; absmax < 1e-30: d = 0, q = 0. */
void hkv_quantize_qk_ref(const float *x, int8_t *q, float *d, int16_t *bs, int64_t n);
void hkv_quantize_qk(const float *x, int8_t *q, float *d, int16_t *bs, int64_t n);
/* 1 when type's integer path reads the K-quant activation format (qk, dk, bk), 0 when the 32-block one. */
int hkv_qdot_uses_qk(int type);
/* Scalar reference of the integer path (the definition above); NULL for float and unsupported types. */
hkv_qdot_fn hkv_qdot_ref_fn(int type);
/* Fastest integer-path kernel for type on this CPU (the reference when SIMD is off); NULL as above. */
hkv_qdot_fn hkv_qdot_fn_get(int type);
/* Two-row kernel of this CPU's set for type, or NULL (then the caller runs hkv_qdot_fn_get row by row). */
hkv_qdot2_fn hkv_qdot2_fn_get(int type);
/* This CPU's set's int8_peak(n) (multiply-adds done), 0 when the set has none. */
double hkv_int8_peak_macs(long n);
/* Many-rows one-token kernel of this CPU's set for type, or NULL (then qdot row by row). */
hkv_qdotr_fn hkv_qdotr_fn_get(int type);

#if defined(__x86_64__)
/* Fills every entry of ks; only call when the CPU supports AVX2, FMA and F16C. */
void hkv_kernels_avx2_init(hkv_kernel_set *ks);
/* The AVX2 set with AVX-VNNI integer-path kernels; only call when the CPU also has AVX-VNNI. */
void hkv_kernels_avxvnni_init(hkv_kernel_set *ks);
/* The AVX2 set with AVX-512 integer-path kernels; only call when the CPU also has AVX512F/BW/VL; vnni: use
 * vpdpbusd (only when the CPU has AVX512-VNNI). */
void hkv_kernels_avx512_init(hkv_kernel_set *ks, int vnni);
#endif
/* What this CPU (and OS) can run: AVX2+FMA+F16C, AVX-512 F/BW/VL on top, and the dot-product extensions
 * (AVX512-VNNI: vpdpbusd on zmm; AVX-VNNI: its VEX form on ymm). All zero off x86-64. */
typedef struct hkv_cpu_caps { int avx2_fma_f16c, avx512, avx512vnni, avxvnni; } hkv_cpu_caps;
hkv_cpu_caps hkv_cpu_detect(void);
#endif
