/* An independent reference forward pass for the tests: every weight dequantized to F32 with the scalar
 * reference kernels, then plain loops in double accumulation (RMSNorm, RoPE normal/NEOX with Llama 3
 * divisors, GQA attention with full causal context, SwiGLU). It shares no code with src/context.c, so
 * agreement with hkv_decode is evidence that the engine computes the architecture, not its own mistakes.
 * Used by test_arch (logits of every architecture and weight type) and test_parity (per-token
 * log-probabilities, llama-perplexity scoring). */
#ifndef HKV_REFMODEL_H
#define HKV_REFMODEL_H
#include <stdint.h>
#include "gguf.h"

typedef struct ref_layer {
    float *attn_norm;          /* [e] */
    float *wq, *wk, *wv, *wo;  /* [q][e], [kv][e], [kv][e], [e][q] */
    float *bq, *bk, *bv;       /* qwen2 biases or NULL */
    float *q_norm, *k_norm;    /* qwen3 [hd] or NULL */
    float *ffn_norm;           /* [e] */
    float *wg, *wu, *wd;       /* [ff][e], [ff][e], [e][ff] */
} ref_layer;

typedef struct ref_model {
    int neox;                  /* 1: rotate (i, i + hd/2) pairs (qwen*); 0: (2i, 2i+1) (llama) */
    int n_vocab, e, n_layer, n_head, n_kv, hd, ff;
    float theta, eps;
    float *emb, *out_norm, *out; /* out == NULL when tied (the embedding is used) */
    float freq_div[256];       /* per-pair frequency divisors (Llama 3 scaling), 1 when absent */
    ref_layer L[8];
    int q8_acts;               /* 1 (caller sets it for quantized weights, where the engine's integer path runs):
                                  round the activations of every matmul to int8 blocks, scale absmax / 127,
                                  as the engine does: blocks of 32, or of 256 for K-quant weights */
    struct { const float *w; int block; } wblock[8 * 7 + 2]; /* each weight matrix's activation block */
    int n_wblock;
} ref_model;

/* Reads hyperparameters and dequantizes every tensor of an open GGUF (at most 8 layers); 0 on failure. */
int ref_load(const gguf_file *g, ref_model *m);
void ref_free(ref_model *m);
/* Logits [n][n_vocab] of tokens at positions 0..n-1 with full causal attention. */
void ref_forward(const ref_model *m, const int32_t *tok, int n, float *logits);
#endif
