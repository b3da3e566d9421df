/* Model: architecture table (llama, qwen2, qwen3), weights as views into the GGUF mapping, forward pass.
 * The forward pass writes K/V into and attends through the KV cache (kvcache.h); it never owns K/V storage. */
#ifndef HKV_MODEL_H
#define HKV_MODEL_H
#include <stdint.h>
#include "heavykv.h"
#include "gguf.h"
#include "tensor.h"
#include "tokenizer.h"

typedef enum hkv_arch { ARCH_LLAMA = 0, ARCH_QWEN2 = 1, ARCH_QWEN3 = 2 } hkv_arch;

/* A weight matrix: rows = output features, cols = input features (GGUF ne[0] = cols). */
typedef struct hkv_weight {
    int type;                /* hkv_type */
    const void *data;        /* rows * hkv_row_size(type, cols) bytes, inside the mapping */
    int64_t rows, cols;
} hkv_weight;

typedef struct hkv_layer_w {
    float *attn_norm;        /* [n_embd] (dequantized at load) */
    hkv_weight wq;           /* [n_head*head_dim][n_embd] */
    hkv_weight wk, wv;       /* [n_head_kv*head_dim][n_embd] */
    hkv_weight wo;           /* [n_embd][n_head*head_dim] */
    float *bq, *bk, *bv;     /* qwen2 biases [n_head*head_dim] / [n_head_kv*head_dim], else NULL */
    float *q_norm, *k_norm;  /* qwen3 per-head RMSNorm weights [head_dim], else NULL */
    float *ffn_norm;         /* [n_embd] */
    hkv_weight w_gate, w_up; /* [n_ff][n_embd] */
    hkv_weight w_down;       /* [n_embd][n_ff] */
} hkv_layer_w;

typedef struct hkv_hparams {
    hkv_arch arch;
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int rope_neox;           /* 1: rotate pairs (i, i+d/2) (qwen*); 0: pairs (2i, 2i+1) (llama GGUF) */
    int n_rot;               /* rotated dimensions per head (= head_dim normally) */
    float rope_theta, rms_eps;
    float rope_freq_scale;   /* linear scaling: positions multiplied by this (1 = off) */
} hkv_hparams;

struct hkv_model {
    gguf_file *g;            /* owns the mapping all weights point into */
    hkv_tokenizer *tok;
    hkv_hparams hp;
    hkv_weight tok_embd;     /* [n_vocab][n_embd] */
    float *out_norm;         /* [n_embd] */
    hkv_weight output;       /* [n_vocab][n_embd] (== tok_embd when tied) */
    float *rope_freqs;       /* [n_rot/2] llama3 frequency divisors, or NULL */
    hkv_layer_w *layers;     /* [n_layer] */
    float **owned;           /* small dequantized vectors to free */
    int n_owned;
    char name[128];
    char arch_name[16];
    uint64_t n_params, weight_bytes;
    int n_threads;
};

const char *hkv_arch_name(hkv_arch a);
/* Rotate one head vector x[head_dim] in place for position pos. */
void hkv_rope(const hkv_hparams *hp, const float *freqs, float *x, int32_t pos);
void hkv_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
#endif
