/* Attention of one query position over one KV head's kept rows. The cache (kvcache.c) stores the rows and
 * lists the slots a query may see; this file computes softmax(q.k / sqrt(d)) v over them and reports the
 * post-softmax probabilities (aggregated over the KV group's query heads) back through kv_observe, which
 * is all a policy ever sees of attention. */
#include "attention.h"
#include <math.h>
#include <string.h>
#include "tensor.h"

/* Key/value row of a slot as F32 (dst used only when a conversion is needed). */
static const float *row_f32(const kv_cache *kv, const void *base, size_t idx, float *dst) {
    if (kv->type == HKV_KV_F32) return (const float *)base + idx * kv->head_dim;
    hkv_dequant_row(HKV_TYPE_F16, (const uint16_t *)base + idx * kv->head_dim, dst, kv->head_dim);
    return dst;
}

/* Small head dims (tiny models) lose more to a kernel call than they gain from SIMD. */
static inline float dot_hd(const float *a, const float *b, int n) {
    if (n >= 32) return hkv_dot_f32(a, b, n);
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy_hd(float *y, float a, const float *x, int n) {
    if (n >= 32) { hkv_axpy_f32(y, a, x, n); return; }
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void attn_head(kv_cache *kv, kv_layer *L, int h, const float *q, int group, int gqa_mean, int32_t qpos,
               float *out, float *scratch) {
    const int hd = kv->head_dim, cap = kv->capacity;
    const size_t base = (size_t)h * cap;
    int32_t *vis = (int32_t *)(scratch + (size_t)(group + 1) * cap); /* caller gives room: see context.c */
    float *agg = scratch + (size_t)group * cap;
    float tmp[512];
    int n = kv_visible_slots(kv, L, h, qpos, vis);
    const float scale = 1.0f / sqrtf((float)hd);
    /* scores: each key row is converted once and used by every query head of the group */
    for (int j = 0; j < n; j++) {
        const float *kr = row_f32(kv, L->k, base + vis[j], tmp);
        for (int g = 0; g < group; g++) scratch[(size_t)g * cap + j] = dot_hd(q + (size_t)g * hd, kr, hd) * scale;
    }
    for (int g = 0; g < group; g++) {
        float *att = scratch + (size_t)g * cap, mx = -INFINITY, sum = 0.0f;
        for (int j = 0; j < n; j++) if (att[j] > mx) mx = att[j];
        for (int j = 0; j < n; j++) { att[j] = expf(att[j] - mx); sum += att[j]; }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) att[j] *= inv;
        memset(out + (size_t)g * hd, 0, sizeof(float) * hd);
    }
    for (int j = 0; j < n; j++) {
        const float *vr = row_f32(kv, L->v, base + vis[j], tmp);
        for (int g = 0; g < group; g++) axpy_hd(out + (size_t)g * hd, scratch[(size_t)g * cap + j], vr, hd);
    }
    if (!kv->ops->needs_probs) return;
    for (int j = 0; j < n; j++) {
        float a = 0.0f;
        for (int g = 0; g < group; g++) a += scratch[(size_t)g * cap + j];
        agg[j] = gqa_mean ? a / (float)group : a;
    }
    kv_observe(kv, L, h, agg, n, qpos);
}

