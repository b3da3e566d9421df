/* Tensor element types (ggml numbering, as stored in GGUF), block layouts, dequantization, quantization
 * and dot products. Scalar reference implementations live in tensor.c; SIMD variants in kernels_*.c are
 * picked at run time and must agree with the scalar ones (tests compare them). */
#ifndef HKV_TENSOR_H
#define HKV_TENSOR_H
#include <stddef.h>
#include <stdint.h>

typedef enum hkv_type {
    HKV_TYPE_F32 = 0, HKV_TYPE_F16 = 1, HKV_TYPE_Q4_0 = 2, HKV_TYPE_Q4_1 = 3,
    HKV_TYPE_Q5_0 = 6, HKV_TYPE_Q5_1 = 7, HKV_TYPE_Q8_0 = 8, HKV_TYPE_Q8_1 = 9,
    HKV_TYPE_Q2_K = 10, HKV_TYPE_Q3_K = 11, HKV_TYPE_Q4_K = 12, HKV_TYPE_Q5_K = 13, HKV_TYPE_Q6_K = 14,
    HKV_TYPE_Q8_K = 15, HKV_TYPE_BF16 = 30,
    HKV_TYPE_COUNT = 40
} hkv_type;

typedef struct hkv_type_traits {
    const char *name;   /* "F32", "Q4_K", ... NULL: unknown id */
    int block_size;     /* elements per block (1 for float types) */
    size_t type_size;   /* bytes per block */
    int supported;      /* 1: dequantize + dot implemented here */
} hkv_type_traits;

const hkv_type_traits *hkv_type_get(int type);   /* never NULL; .name NULL for an unknown id */
int hkv_type_supported(int type);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size or the type is unknown. */
size_t hkv_row_size(int type, int64_t n);

/* fp16 / bf16 conversions (scalar, exact round-to-nearest-even). */
float hkv_f16_to_f32(uint16_t h);
uint16_t hkv_f32_to_f16(float f);
float hkv_bf16_to_f32(uint16_t h);
uint16_t hkv_f32_to_bf16(float f);

/* Scalar references. n must be a multiple of the type's block size. */
void hkv_dequant_row_ref(int type, const void *src, float *dst, int64_t n);
float hkv_dot_ref(int type, const void *row, const float *x, int64_t n); /* sum_i row[i]*x[i] in f32/f64 */
/* Quantize n floats into type (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K). Returns bytes written or 0. */
size_t hkv_quantize_row(int type, const float *src, void *dst, int64_t n);

/* Dispatched versions (fastest available on this CPU). */
void hkv_dequant_row(int type, const void *src, float *dst, int64_t n);
float hkv_dot(int type, const void *row, const float *x, int64_t n);
float hkv_dot_f32(const float *a, const float *b, int64_t n);
/* y[i] += a * x[i] */
void hkv_axpy_f32(float *y, float a, const float *x, int64_t n);
const char *hkv_kernel_name(void);  /* "avx512vnni", "avx512", "avxvnni", "avx2", "scalar" */
/* Force the scalar path (tests; also env HEAVYKV_NO_SIMD=1). */
void hkv_kernels_force_scalar(int on);

/* Block layouts (GGUF / ggml). */
#define QK8_0 32
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;            /* d: f16 scale */
#define QK4_0 32
typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;       /* x = (q - 8) * d; low nibbles = first 16 */
#define QK5_0 32
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
#define QK_K 256
#define K_SCALE_SIZE 12
typedef struct { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } block_q6_K;

/* ---- thread pool + matmul: out[t][r] = sum_c W[r][c] * x[t][c] for r < rows, t < n_tok. */
typedef struct hkv_pool hkv_pool;
hkv_pool *hkv_pool_new(int n_threads);  /* n_threads <= 1: runs inline */
void hkv_pool_free(hkv_pool *p);
int hkv_pool_size(const hkv_pool *p);
/* Calls fn(arg, i) for i in [0, n) split across the pool's threads; returns when all are done. */
void hkv_pool_run(hkv_pool *p, void (*fn)(void *arg, int i, int thread), void *arg, int n);
/* A buffer of at least bytes owned by the pool (freed with it), valid until the next call;
 * the matmul keeps its quantized activations there. NULL without a pool or on allocation failure. */
void *hkv_pool_scratch(hkv_pool *p, size_t bytes);
/* The pool scratch a matmul of n_tok tokens x cols columns uses for its quantized activations. A context
 * reserves it for its largest matmul when it is created (hkv_pool_scratch), so no matmul of the forward pass
 * allocates it: a failure there used to switch the integer path to the float path mid-decode (other bits). */
size_t hkv_matmul_acts_bytes(int n_tok, int cols);
/* W: rows x cols of type (row-major, each row hkv_row_size(type, cols) bytes). */
void hkv_matmul(hkv_pool *p, float *out, int type, const void *W, const float *x, int rows, int cols, int n_tok);
/* Several matmuls over the same x[n_tok][cols] (q/k/v, gate/up) as one job: out_i = W_i x, each result
 * bit-identical to hkv_matmul's; the activations are quantized once and the threads meet once. */
typedef struct hkv_mm { float *out; int type; const void *W; int rows; } hkv_mm;
void hkv_matmul_multi(hkv_pool *p, const hkv_mm *mm, int n_mm, const float *x, int cols, int n_tok);
#endif
