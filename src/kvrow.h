/* K/V row formats of the cache and the two kernels attention runs on them.
 *
 * A row is one token's key (or value) for one KV head: head_dim elements stored as
 *   F32, F16, BF16            head_dim * 4 / 2 / 2 bytes
 *   Q8_0                      head_dim / B blocks of {f16 d; int8 q[B]}      x = q * d
 *   Q4_0                      head_dim / B blocks of {f16 d; uint8 q[B/2]}   x = (nibble - 8) * d, low nibbles
 *                             hold elements 0..B/2-1 of the block, high nibbles B/2..B-1
 * The block B is 32 (the GGML Q8_0/Q4_0 block, byte for byte) when head_dim % 32 == 0; otherwise the largest
 * of 16 and 8 that divides head_dim (a deviation from GGML, which has no blocks shorter than 32: a block never
 * straddles two rows, so rows stay independently addressable and a tiny head_dim such as stories260K's 8 still
 * works, at one f16 scale per 8 elements). Quantized types need head_dim % 8 == 0.
 *
 * Kernels (converted in registers, no per-row conversion buffer; the SIMD set is attn_kernels_avx2.c):
 *   kdot:  s[r * ss] = sum_i Q[r][i] * row[i]   for r < nr (Q rows contiguous, head_dim apart)
 *   vaxpy: O[r][i] += p[r * ps] * row[i]        for r < nr (O rows contiguous)
 * A key row is loaded once and used by every query row of the tile. The converted element values are the
 * same bits in every kernel set (x = q * d in f32, f16/bf16 exact), only the summation order differs.
 * Within one set, a dot product's or an output element's arithmetic does not depend on how many rows or keys a
 * call covers (tile forms == row forms bit for bit), so attention's results do not depend on query blocking.
 * Sets: scalar (kvrow.c), AVX2 (attn_kernels_avx2.c), AVX-512 (attn_kernels_avx512.c: 4 query rows x 4 keys
 * per register block, 16 dots reduced together; 4 output rows x 64 columns held in registers over a tile). */
#ifndef HKV_KVROW_H
#define HKV_KVROW_H
#include <stddef.h>
#include <stdint.h>
#include "heavykv.h"

typedef void (*kvrow_kdot_fn)(const void *row, const float *q, int nr, int hd, float *s, size_t ss);
typedef void (*kvrow_vaxpy_fn)(const void *row, const float *p, size_t ps, int nr, float *o, int hd);
/* Tile forms over nk rows (rows[jj]): s[r * ss + jj] = Q[r] . row_jj, and O[r] += sum_jj p[r * ps + jj] * row_jj
 * added in jj order (the same rounding as nk vaxpy calls). NULL: attention loops over the row kernels. */
typedef void (*kvrow_kdot_tile_fn)(const void *const *rows, int nk, const float *q, int nr, int hd, float *s,
                                   size_t ss);
typedef void (*kvrow_vaxpy_tile_fn)(const void *const *rows, int nk, const float *p, size_t ps, int nr, float *o,
                                    int hd);
/* One online-softmax step on a row of n raw scores: s[i] *= scale (copied to keep[i] when keep is not NULL),
 * *m = max(*m, s[i]), s[i] = exp(s[i] - *m); returns the sum of the new s[i]. */
typedef float (*kvrow_softmax_fn)(float *s, int n, float scale, float *m, float *keep);
/* a[i] += exp(s[i] * scale - m) * w for i < n (the policy's probabilities; same exp as the softmax). */
typedef void (*kvrow_exp_acc_fn)(const float *s, int n, float scale, float m, float w, float *a);

typedef struct kvrow_kernels {   /* one K/V type at one head_dim */
    kvrow_kdot_fn kdot;
    kvrow_vaxpy_fn vaxpy;
    kvrow_kdot_tile_fn kdot_tile;     /* may be NULL */
    kvrow_vaxpy_tile_fn vaxpy_tile;   /* may be NULL */
    kvrow_softmax_fn softmax;
    kvrow_exp_acc_fn exp_acc;
} kvrow_kernels;

/* Name of a K/V type ("f16", "q8_0", ...); NULL for an unknown value. */
const char *kvrow_type_name(int type);
/* Elements per quantization block for head_dim (1 for float types); 0 when the type cannot hold such rows. */
int kvrow_block(int type, int hd);
/* Bytes of one row; 0 when the type cannot hold rows of hd elements. */
size_t kvrow_bytes(int type, int hd);
/* Write hd floats as one row / read one row back as floats (scalar, exact decoding). */
void kvrow_store(int type, int hd, const float *x, void *row);
void kvrow_load(int type, int hd, const void *row, float *x);
/* The kernels for rows of (type, hd): SIMD when the CPU has it and scalar is not forced, else scalar. */
kvrow_kernels kvrow_kernels_get(int type, int hd);
/* The scalar reference kernels (tests compare against them). */
kvrow_kernels kvrow_kernels_ref(int type, int hd);

/* y[i] = exp(x[i]) for i < n (y may alias x) with the vector exp of the set kvrow_kernels_get would use
 * (expf when scalar): the SwiGLU of the feed-forward layers uses it, so its bits follow the kernel set like
 * the attention's softmax, and do not depend on the thread count. */
void kvrow_exp(const float *x, float *y, int n);

/* Test hook (like hkv_kernels_force_scalar): 1 makes kvrow_kernels_get skip the AVX-512 set, so tests can run
 * attention on the AVX2 kernels of an AVX-512 machine. Process-wide; 0 restores the default. */
void kvrow_force_avx2(int on);

#if defined(__x86_64__)
/* AVX2+FMA+F16C kernels (attn_kernels_avx2.c); only call when the CPU has them. NULL kdot: unsupported. */
kvrow_kernels kvrow_kernels_avx2(int type, int hd);
/* AVX-512F/BW/VL kernels (attn_kernels_avx512.c, head_dim % 16 == 0); only call when the CPU has them. */
kvrow_kernels kvrow_kernels_avx512(int type, int hd);
/* The vector exp of each set on n floats (y may alias x), for the accuracy test: polynomial after
 * Cody-Waite range reduction, within 2 ulp of expf for x >= -87.33 (the normal range); below it the AVX2
 * version returns 0 (expf's results there are subnormal, < 1.2e-38), the AVX-512 one subnormals (vscalefps). */
void kvrow_exp_avx2(const float *x, float *y, int n);
void kvrow_exp_avx512(const float *x, float *y, int n);
#endif
#endif
