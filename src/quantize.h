/* Quantization targets ("file types") and GGUF -> GGUF requantization, following llama.cpp's quantize:
 * every 2-D "*.weight" tensor is converted to the target (or, for the Q4_K_M mix, to a per-tensor choice),
 * 1-D tensors (norms, biases, rope_freqs) are copied unchanged, metadata is copied with general.file_type
 * updated. The synthetic model writer (synth.h) uses the same type choice and row conversion. */
#ifndef HKV_QUANTIZE_H
#define HKV_QUANTIZE_H
#include <stddef.h>
#include <stdint.h>
#include "heavykv.h"
#include "tensor.h"

/* What a whole file is converted to. */
typedef enum quant_ftype {
    QFT_F32 = 0, QFT_F16, QFT_Q8_0, QFT_Q4_0, QFT_Q5_0, QFT_Q4_K, QFT_Q5_K, QFT_Q6_K,
    QFT_Q4_K_M,          /* llama.cpp's mix: Q4_K, with Q6_K for output and some attn_v / ffn_down */
    QFT_COUNT
} quant_ftype;

/* Case-insensitive name ("q4_k_m") -> ftype. Returns 1 on success, 0 for an unknown name. */
int quant_ftype_parse(const char *name, quant_ftype *out);
const char *quant_ftype_name(quant_ftype f);   /* "Q4_K_M" */
const char *quant_ftype_list(void);             /* "F32, F16, Q8_0, ..." for help and error messages */
uint32_t quant_ftype_gguf(quant_ftype f);       /* llama.cpp general.file_type value (LLAMA_FTYPE_*) */

/* What the type choice needs to know about the whole model. */
typedef struct quant_layout {
    int n_layer;        /* number of blocks (blk.N.*) */
    int has_output;     /* 1: a separate output.weight exists; 0: tied, token_embd is treated as the output */
} quant_layout;

/* The type tensor `name` of shape ne[n_dims] gets under ftype. 1-D tensors: -1 (keep as they are).
 * A K-quant choice whose row length is not a multiple of 256 falls back like llama.cpp (Q4_K -> Q5_0,
 * Q5_K -> Q5_0, Q6_K -> Q8_0); a 32-block type that still does not fit falls back to F16. */
int quant_tensor_type(quant_ftype f, const quant_layout *lay, const char *name, int n_dims, const int64_t *ne);

/* Produces rows [r0, r0 + n) of a tensor as F32 into dst[n][cols]; called from several threads at once on
 * disjoint rows. */
typedef void (*quant_row_src)(void *arg, int64_t r0, int64_t n, float *dst);

/* Builds a rows x cols tensor of `type` from src, in parallel on pool (NULL: this thread). On success *out
 * is a malloc'ed buffer of *nbytes = rows * hkv_row_size(type, cols) bytes. */
hkv_status quant_convert(hkv_pool *pool, int type, int64_t rows, int64_t cols, quant_row_src src, void *arg,
                         void **out, size_t *nbytes, char *err, size_t errlen);

typedef struct quant_stats {
    int n_tensors;                  /* tensors in the file */
    int n_converted;                /* tensors whose type changed */
    uint64_t bytes_in, bytes_out;   /* tensor data, before and after */
    uint64_t n_params;              /* elements of all tensors */
    int n_of_type[HKV_TYPE_COUNT];  /* output tensors per type */
} quant_stats;

/* Requantizes the GGUF at in_path into out_path (must be a different file). n_threads <= 0: all CPUs. */
hkv_status quant_file(const char *in_path, const char *out_path, quant_ftype f, int n_threads, quant_stats *stats,
                      char *err, size_t errlen);
#endif
