/* Attention over the bounded KV cache (see attention.c). */
#ifndef HKV_ATTENTION_H
#define HKV_ATTENTION_H
#include <stddef.h>
#include <stdint.h>
#include "kvcache.h"
#include "model.h"

#define ATTN_BK 32           /* keys per tile */

/* Consecutive queries of one sequence on one KV head. Query i, head g of the KV group (g < group):
 * q + i * stride + g * head_dim; the output goes to the same place in out. */
typedef struct attn_block {
    const float *q;          /* [n] query rows, see above */
    float *out;              /* [n] output rows, same layout */
    size_t stride;           /* floats from one query to the next */
    const int32_t *pos;      /* [n] positions, ascending */
    int n;                   /* queries (attn_forward: at most attn_block_queries(group)) */
    int group;               /* query heads per KV head */
    float *ml;               /* query i, head g: ml[i * ml_stride + 2 g] = softmax max, [... + 1] = sum */
    size_t ml_stride;
    int keep_scores;         /* n == 1 only: attn_forward keeps the scaled scores in its scratch and attn_report
                                (called next with the same scratch) reuses them instead of recomputing q.k */
} attn_block;

/* Queries per attn_forward call: about 64 query rows share every loaded key tile. */
int attn_block_queries(int group);
/* Scratch floats one thread needs for attn_forward / attn_report / attn_reference with this cache. */
size_t attn_scratch_floats(int group, int capacity, int head_dim);

/* Tiled attention of a block of queries over head h's visible rows (online softmax over key tiles); writes
 * the outputs and each query row's softmax max and sum (for attn_report). */
void attn_forward(kv_cache *kv, kv_layer *L, int h, const attn_block *b, float *scratch);
/* The policy's view, in query order: for each query of b (any n), the exact post-softmax probabilities
 * exp(s - max) / sum from attn_forward's statistics, aggregated over the group (sum, or mean when gqa_mean),
 * handed to kv_observe. Only call when kv->ops->needs_probs. */
void attn_report(kv_cache *kv, kv_layer *L, int h, const attn_block *b, int gqa_mean, float *scratch);

/* Switches kv to cache-position mode (keys stored before RoPE, rotated by their cache index at attention
 * time) with a rotation table for indices 0..len-1, made by hkv_rope itself on unit pairs so attention applies
 * exactly the model's cos/sin. HKV_ERR_NOMEM on allocation failure. */
hkv_status attn_set_rope(kv_cache *kv, const hkv_hparams *hp, const float *freqs, int len);

/* Scalar reference attention of one query (row by row, two-pass softmax, sequential sums): out[group][hd];
 * probs (if not NULL) gets the group-aggregated probabilities of the visible rows. Returns their count. */
int attn_reference(kv_cache *kv, kv_layer *L, int h, const float *q, int group, int gqa_mean, int32_t qpos,
                   float *out, float *probs, float *scratch);
#endif
