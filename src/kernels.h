/* Internal contract between tensor.c (dispatch + scalar reference) and the SIMD kernel files.
 *
 * A kernel set is a table of optional function pointers; NULL entries fall back to the scalar code.
 * Batch invariance: within one set, dot[type](row, x) must return exactly the same bits as
 * dot_f32(dequant(row), x), so hkv_matmul may use either path and results do not depend on n_tok.
 * The SIMD files get that by dequantizing in registers with the same float operations as the scalar
 * dequantizer and accumulating in the same lane/accumulator order as their dot_f32. */
#ifndef HKV_KERNELS_H
#define HKV_KERNELS_H
#include <stdint.h>
#include "tensor.h"

typedef float (*hkv_dot_fn)(const void *row, const float *x, int64_t n);
typedef void (*hkv_dequant_fn)(const void *src, float *dst, int64_t n);

typedef struct hkv_kernel_set {
    const char *name;                         /* "avx2", ... */
    const char *features;                     /* CPU features it relies on, e.g. "avx2 fma f16c" */
    hkv_dot_fn dot[HKV_TYPE_COUNT];           /* per supported type (NULL: scalar reference) */
    hkv_dequant_fn dequant[HKV_TYPE_COUNT];   /* per type; NULL: scalar reference */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
} hkv_kernel_set;

/* Scalar dequantizer of one type (NULL for unsupported types); SIMD files may reuse them. */
hkv_dequant_fn hkv_dequant_ref_fn(int type);

#if defined(__x86_64__)
/* Fills every entry of ks; only call when the CPU supports AVX2, FMA and F16C. */
void hkv_kernels_avx2_init(hkv_kernel_set *ks);
#endif
#endif
