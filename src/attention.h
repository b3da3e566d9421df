/* Attention over the bounded KV cache (see attention.c). */
#ifndef HKV_ATTENTION_H
#define HKV_ATTENTION_H
#include <stdint.h>
#include "kvcache.h"

/* Attention of `group` query heads q[group][head_dim] at position qpos over KV head h of layer L; writes
 * out[group][head_dim]. scratch: [group + 1][capacity] floats plus [capacity] int32 (see context.c). Feeds
 * the policy the group-aggregated probabilities (sum, or mean when gqa_mean) when it needs them. */
void attn_head(kv_cache *kv, kv_layer *L, int h, const float *q, int group, int gqa_mean, int32_t qpos,
               float *out, float *scratch);
#endif
