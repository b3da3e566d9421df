/* Attention over one KV head's kept rows. The cache (kvcache.c) stores the rows and lists the slots a query
 * may see; this file computes softmax(q.k / sqrt(d)) v over them and reports the post-softmax probabilities
 * (aggregated over the KV group's query heads) back through kv_observe, which is all a policy ever sees of
 * attention.
 *
 * attn_forward is a tiled kernel: a block of queries (all query heads of the KV group, so up to ~64 query
 * rows) against tiles of ATTN_BK visible keys. Each key row is read once per tile by the row kernels
 * (kvrow.h: SIMD dot / axpy that convert F16/BF16/Q8_0/Q4_0 in registers) and serves every query row; the
 * softmax is online (running max m and sum l per row, the accumulator rescaled when the max grows).
 * Causality: query i sees the first nvis[i] visible rows; later rows of its last tiles get probability 0.
 *
 * Policies need every query's exact probability per key, in query order. attn_report does a second pass per
 * query: the same scores, exp(s - m) / l with attn_forward's final m and l. This keeps attn_forward free of
 * policy state, so query blocks of one head run on different threads (context.c), while the reports (which
 * update that state) run one thread per head in query order.
 *
 * Determinism: a query row's arithmetic depends only on its own visible rows, in visible order, tiled from
 * the first visible row — not on the block it is in, the thread, or the slots the rows live in. So real drop
 * and the masked simulation (same rows in the same order, different slots) are bit-identical, and so are
 * -t 1 and -t 2 and any prefill chunking that evicts nothing. */
#include "attention.h"
#include <math.h>
#include <string.h>
#include "kvrow.h"

int attn_block_queries(int group) {
    int q = 64 / (group > 0 ? group : 1);
    return q < 4 ? 4 : q;
}

size_t attn_scratch_floats(int group, int capacity, int head_dim) {
    size_t rows = (size_t)attn_block_queries(group) * group;
    /* vis + agg/probs, nvis, Qb + acc, S, m + l, one rotated key tile */
    return 2 * (size_t)capacity + (size_t)attn_block_queries(group) + rows * (2 * (size_t)head_dim + ATTN_BK + 2) +
           (size_t)ATTN_BK * head_dim + 64;
}

static inline const void *row_at(const kv_cache *kv, const void *base, int h, int32_t slot) {
    return (const char *)base + ((size_t)h * kv->capacity + (size_t)slot) * kv->row_bytes;
}

/* Visible rows of head h for queries up to the last position of b, and per query how many of them it sees
 * (visible rows are in ascending position, so each query sees a prefix). Returns the total. */
static int visible_prefixes(kv_cache *kv, kv_layer *L, int h, const int32_t *qpos, int nq, int32_t *vis,
                            int32_t *nvis) {
    int n = kv_visible_slots(kv, L, h, qpos[nq - 1], vis);
    const int32_t *pos = L->pos + (size_t)h * kv->capacity;
    int j = n;
    for (int i = nq - 1; i >= 0; i--) {
        while (j > 0 && pos[vis[j - 1]] > qpos[i]) j--;
        nvis[i] = j;
    }
    return n;
}

void attn_forward(kv_cache *kv, kv_layer *L, int h, const attn_block *b, float *scratch) {
    const int hd = kv->head_dim, G = b->group, cap = kv->capacity, rows = b->n * G;
    const float scale = 1.0f / sqrtf((float)hd);
    kvrow_kernels K = kvrow_kernels_get(kv->type, hd);
    int32_t *vis = (int32_t *)scratch;
    int32_t *nvis = vis + 2 * (size_t)cap;
    float *Qb = scratch + 2 * (size_t)cap + attn_block_queries(G);
    float *acc = Qb + (size_t)rows * hd, *S = acc + (size_t)rows * hd, *m = S + (size_t)rows * ATTN_BK, *l = m + rows;
    int n = visible_prefixes(kv, L, h, b->pos, b->n, vis, nvis);
    for (int i = 0; i < b->n; i++)
        memcpy(Qb + (size_t)i * G * hd, b->q + (size_t)i * b->stride, sizeof(float) * (size_t)G * hd);
    memset(acc, 0, sizeof(float) * (size_t)rows * hd);
    for (int r = 0; r < rows; r++) { m[r] = -INFINITY; l[r] = 0.0f; }
    for (int j0 = 0; j0 < n; j0 += ATTN_BK) {
        int nk = n - j0 < ATTN_BK ? n - j0 : ATTN_BK;
        for (int jj = 0; jj < nk; jj++) K.kdot(row_at(kv, L->k, h, vis[j0 + jj]), Qb, rows, hd, S + jj, ATTN_BK);
        for (int r = 0; r < rows; r++) {
            float *sr = S + (size_t)r * ATTN_BK, mx = m[r], sum = 0.0f;
            int lim = nvis[r / G] - j0;
            if (lim > nk) lim = nk;
            if (lim < 0) lim = 0;
            for (int jj = 0; jj < lim; jj++) {
                sr[jj] *= scale;
                if (sr[jj] > mx) mx = sr[jj];
            }
            if (mx > m[r]) { /* the running max grew: rescale what was accumulated under the old one */
                if (m[r] != -INFINITY) {
                    float corr = expf(m[r] - mx);
                    l[r] *= corr;
                    for (int i = 0; i < hd; i++) acc[(size_t)r * hd + i] *= corr;
                }
                m[r] = mx;
            }
            for (int jj = 0; jj < lim; jj++) {
                sr[jj] = expf(sr[jj] - mx);
                sum += sr[jj];
            }
            for (int jj = lim; jj < nk; jj++) sr[jj] = 0.0f; /* not visible to this query */
            l[r] += sum;
        }
        for (int jj = 0; jj < nk; jj++) K.vaxpy(row_at(kv, L->v, h, vis[j0 + jj]), S + jj, ATTN_BK, rows, acc, hd);
    }
    for (int i = 0; i < b->n; i++)
        for (int g = 0; g < G; g++) {
            int r = i * G + g;
            float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f, *o = b->out + (size_t)i * b->stride + (size_t)g * hd;
            for (int t = 0; t < hd; t++) o[t] = acc[(size_t)r * hd + t] * inv;
            b->ml[(size_t)i * b->ml_stride + 2 * (size_t)g] = m[r];
            b->ml[(size_t)i * b->ml_stride + 2 * (size_t)g + 1] = l[r];
        }
}

void attn_report(kv_cache *kv, kv_layer *L, int h, const attn_block *b, int gqa_mean, float *scratch) {
    const int hd = kv->head_dim, G = b->group, cap = kv->capacity;
    const float scale = 1.0f / sqrtf((float)hd);
    kvrow_kernels K = kvrow_kernels_get(kv->type, hd);
    int32_t *vis = (int32_t *)scratch;
    float *agg = scratch + cap, *Qb = scratch + 2 * (size_t)cap + attn_block_queries(G);
    float *S = Qb + (size_t)G * hd, minv[2 * 64];
    float *mi = G <= 64 ? minv : S + (size_t)G * ATTN_BK; /* max and 1/sum per head of the group */
    int n = kv_visible_slots(kv, L, h, b->pos[b->n - 1], vis), nv = 0;
    const int32_t *pos = L->pos + (size_t)h * cap;
    for (int i = 0; i < b->n; i++) {
        while (nv < n && pos[vis[nv]] <= b->pos[i]) nv++;
        memcpy(Qb, b->q + (size_t)i * b->stride, sizeof(float) * (size_t)G * hd);
        for (int g = 0; g < G; g++) {
            float lg = b->ml[(size_t)i * b->ml_stride + 2 * (size_t)g + 1];
            mi[2 * g] = b->ml[(size_t)i * b->ml_stride + 2 * (size_t)g];
            mi[2 * g + 1] = lg > 0.0f ? 1.0f / lg : 0.0f;
        }
        for (int j0 = 0; j0 < nv; j0 += ATTN_BK) {
            int nk = nv - j0 < ATTN_BK ? nv - j0 : ATTN_BK;
            for (int jj = 0; jj < nk; jj++) K.kdot(row_at(kv, L->k, h, vis[j0 + jj]), Qb, G, hd, S + jj, ATTN_BK);
            for (int jj = 0; jj < nk; jj++) {
                float a = 0.0f;
                for (int g = 0; g < G; g++) a += expf(S[(size_t)g * ATTN_BK + jj] * scale - mi[2 * g]) * mi[2 * g + 1];
                agg[j0 + jj] = gqa_mean ? a / (float)G : a;
            }
        }
        kv_observe(kv, L, h, agg, nv, b->pos[i]);
    }
}

int attn_reference(kv_cache *kv, kv_layer *L, int h, const float *q, int group, int gqa_mean, int32_t qpos,
                   float *out, float *probs, float *scratch) {
    const int hd = kv->head_dim, cap = kv->capacity;
    kvrow_kernels K = kvrow_kernels_ref(kv->type, hd);
    int32_t *vis = (int32_t *)scratch;
    float *att = scratch + cap; /* [group][cap] is not available: one head at a time, probabilities summed */
    int n = kv_visible_slots(kv, L, h, qpos, vis);
    const float scale = 1.0f / sqrtf((float)hd);
    if (probs) memset(probs, 0, sizeof(float) * (size_t)n);
    for (int g = 0; g < group; g++) {
        const float *qg = q + (size_t)g * hd;
        float *o = out + (size_t)g * hd, mx = -INFINITY, sum = 0.0f;
        for (int j = 0; j < n; j++) {
            K.kdot(row_at(kv, L->k, h, vis[j]), qg, 1, hd, att + j, 1);
            att[j] *= scale;
            if (att[j] > mx) mx = att[j];
        }
        for (int j = 0; j < n; j++) { att[j] = expf(att[j] - mx); sum += att[j]; }
        float inv = 1.0f / sum;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int j = 0; j < n; j++) {
            att[j] *= inv;
            K.vaxpy(row_at(kv, L->v, h, vis[j]), att + j, 1, 1, o, hd);
            if (probs) probs[j] += att[j];
        }
    }
    if (probs && gqa_mean)
        for (int j = 0; j < n; j++) probs[j] /= (float)group;
    return n;
}
