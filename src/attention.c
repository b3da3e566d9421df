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
 * -t 1 and -t 2 and any prefill chunking that evicts nothing.
 *
 * Cache-position mode (kv->rope set, StreamingLLM's position rolling): keys are stored before RoPE; the key
 * at visible index j is rotated by j when its tile is loaded (decoded into a small F32 tile, then the F32
 * kernels), and a query that sees n rows is rotated by n - 1, its own index. */
#include "attention.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "alloc.h"
#include "kvrow.h"

int attn_block_queries(int group) {
    int q = 64 / (group > 0 ? group : 1);
    return q < 4 ? 4 : q;
}

/* Offset of the kept scores of a single query (attn_block.keep_scores): [group][capacity] at the end. */
static size_t scores_offset(int group, int capacity, int head_dim) {
    size_t rows = (size_t)attn_block_queries(group) * group;
    /* vis + agg/probs, nvis, Qb + acc, S, m + l, one rotated key tile */
    return 2 * (size_t)capacity + (size_t)attn_block_queries(group) + rows * (2 * (size_t)head_dim + ATTN_BK + 2) +
           (size_t)ATTN_BK * head_dim + 64;
}

size_t attn_scratch_floats(int group, int capacity, int head_dim) {
    return scores_offset(group, capacity, head_dim) + (size_t)group * capacity;
}

static inline const void *row_at(const kv_cache *kv, const void *base, int h, int32_t slot) {
    return (const char *)base + ((size_t)h * kv->capacity + (size_t)slot) * kv->row_bytes;
}

/* RoPE of cache index idx applied to x[head_dim], from the table (same pairs and arithmetic as hkv_rope). */
static void rotate(const kv_cache *kv, float *x, int idx) {
    const float *t = kv->rope + (size_t)idx * kv->head_dim;
    int half = kv->n_rot / 2;
    for (int i = 0; i < half; i++) {
        int a = kv->rope_neox ? i : 2 * i, b = kv->rope_neox ? i + half : 2 * i + 1;
        float x0 = x[a], x1 = x[b], c = t[a], s = t[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

hkv_status attn_set_rope(kv_cache *kv, const hkv_hparams *hp, const float *freqs, int len) {
    int hd = kv->head_dim, half = hp->n_rot / 2;
    float *tab = hkv_malloc(sizeof(float) * (size_t)len * hd);
    if (!tab) return HKV_ERR_NOMEM;
    for (int i = 0; i < len; i++) {
        float *t = tab + (size_t)i * hd;
        memset(t, 0, sizeof(float) * (size_t)hd);
        for (int k = 0; k < half; k++) t[hp->rope_neox ? k : 2 * k] = 1.0f; /* (1, 0) -> (cos, sin) */
        hkv_rope(hp, freqs, t, i);
    }
    hkv_free(kv->rope);
    kv->rope = tab;
    kv->rope_len = len;
    kv->n_rot = hp->n_rot;
    kv->rope_neox = hp->rope_neox;
    return HKV_OK;
}

/* The tile forms of the row kernels, or a loop over the rows where a set has none (same arithmetic). */
static void kdot_tile(const kvrow_kernels *K, const void *const *rows, int nk, const float *q, int nr, int hd,
                      float *s, size_t ss) {
    if (K->kdot_tile) {
        K->kdot_tile(rows, nk, q, nr, hd, s, ss);
        return;
    }
    for (int jj = 0; jj < nk; jj++) K->kdot(rows[jj], q, nr, hd, s + jj, ss);
}

static void vaxpy_tile(const kvrow_kernels *K, const void *const *rows, int nk, const float *p, size_t ps, int nr,
                       float *o, int hd) {
    if (K->vaxpy_tile) {
        K->vaxpy_tile(rows, nk, p, ps, nr, o, hd);
        return;
    }
    for (int jj = 0; jj < nk; jj++) K->vaxpy(rows[jj], p + jj, ps, nr, o, hd);
}

/* Scores of the nr contiguous query rows Qb against visible keys j0..j0+nk-1: S[r * ATTN_BK + jj]. In
 * cache-position mode each key is decoded into Kt and rotated by its index first. */
static void score_tile(const kv_cache *kv, const kv_layer *L, int h, const int32_t *vis, int j0, int nk,
                       const float *Qb, int nr, float *S, float *Kt, const kvrow_kernels *K) {
    const int hd = kv->head_dim;
    const void *rows[ATTN_BK];
    if (!kv->rope) {
        for (int jj = 0; jj < nk; jj++) rows[jj] = row_at(kv, L->k, h, vis[j0 + jj]);
        kdot_tile(K, rows, nk, Qb, nr, hd, S, ATTN_BK);
        return;
    }
    kvrow_kernels F = kvrow_kernels_get(HKV_KV_F32, hd);
    for (int jj = 0; jj < nk; jj++) {
        float *kr = Kt + (size_t)jj * hd;
        kvrow_load(kv->type, hd, row_at(kv, L->k, h, vis[j0 + jj]), kr);
        rotate(kv, kr, j0 + jj);
        rows[jj] = kr;
    }
    kdot_tile(&F, rows, nk, Qb, nr, hd, S, ATTN_BK);
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
    float *Kt = l + rows;
    /* a single query's scaled scores, kept for attn_report ([group][capacity]) */
    float *keep = b->keep_scores && b->n == 1 ? scratch + scores_offset(G, cap, hd) : NULL;
    const void *vrows[ATTN_BK];
    int n = visible_prefixes(kv, L, h, b->pos, b->n, vis, nvis);
    for (int i = 0; i < b->n; i++) {
        memcpy(Qb + (size_t)i * G * hd, b->q + (size_t)i * b->stride, sizeof(float) * (size_t)G * hd);
        if (kv->rope)
            for (int g = 0; g < G; g++) rotate(kv, Qb + ((size_t)i * G + g) * hd, nvis[i] - 1);
    }
    memset(acc, 0, sizeof(float) * (size_t)rows * hd);
    for (int r = 0; r < rows; r++) { m[r] = -INFINITY; l[r] = 0.0f; }
    for (int j0 = 0; j0 < n; j0 += ATTN_BK) {
        int nk = n - j0 < ATTN_BK ? n - j0 : ATTN_BK;
        score_tile(kv, L, h, vis, j0, nk, Qb, rows, S, Kt, &K);
        for (int r = 0; r < rows; r++) {
            float *sr = S + (size_t)r * ATTN_BK, mx = m[r];
            int lim = nvis[r / G] - j0;
            if (lim > nk) lim = nk;
            if (lim < 0) lim = 0;
            /* scale, new running max, exp(s - max) in place (the kernel set's vector exp) */
            float sum = K.softmax(sr, lim, scale, &mx, keep ? keep + (size_t)r * cap + j0 : NULL);
            if (mx > m[r] && m[r] != -INFINITY) { /* the max grew: rescale what was accumulated under the old one */
                float corr = expf(m[r] - mx);
                l[r] *= corr;
                for (int i = 0; i < hd; i++) acc[(size_t)r * hd + i] *= corr;
            }
            m[r] = mx;
            for (int jj = lim; jj < nk; jj++) sr[jj] = 0.0f; /* not visible to this query */
            l[r] += sum;
        }
        for (int jj = 0; jj < nk; jj++) vrows[jj] = row_at(kv, L->v, h, vis[j0 + jj]);
        vaxpy_tile(&K, vrows, nk, S, ATTN_BK, rows, acc, hd);
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
    float *S = Qb + (size_t)G * hd, *mi = S + (size_t)G * ATTN_BK; /* mi: max and 1/sum per head of the group */
    float *Kt = mi + 2 * (size_t)G;
    int n = kv_visible_slots(kv, L, h, b->pos[b->n - 1], vis), nv = 0;
    const int32_t *pos = L->pos + (size_t)h * cap;
    if (b->keep_scores && b->n == 1) { /* decode: attn_forward kept this query's scaled scores */
        const float *keep = scratch + scores_offset(G, cap, hd);
        while (nv < n && pos[vis[nv]] <= b->pos[0]) nv++;
        memset(agg, 0, sizeof(float) * (size_t)nv);
        for (int g = 0; g < G; g++) {
            float lg = b->ml[2 * (size_t)g + 1];
            K.exp_acc(keep + (size_t)g * cap, nv, 1.0f, b->ml[2 * (size_t)g], lg > 0.0f ? 1.0f / lg : 0.0f, agg);
        }
        if (gqa_mean)
            for (int j = 0; j < nv; j++) agg[j] /= (float)G;
        kv_observe(kv, L, h, agg, nv, b->pos[0]);
        return;
    }
    for (int i = 0; i < b->n; i++) {
        while (nv < n && pos[vis[nv]] <= b->pos[i]) nv++;
        memcpy(Qb, b->q + (size_t)i * b->stride, sizeof(float) * (size_t)G * hd);
        if (kv->rope)
            for (int g = 0; g < G; g++) rotate(kv, Qb + (size_t)g * hd, nv - 1);
        for (int g = 0; g < G; g++) {
            float lg = b->ml[(size_t)i * b->ml_stride + 2 * (size_t)g + 1];
            mi[2 * g] = b->ml[(size_t)i * b->ml_stride + 2 * (size_t)g];
            mi[2 * g + 1] = lg > 0.0f ? 1.0f / lg : 0.0f;
        }
        for (int j0 = 0; j0 < nv; j0 += ATTN_BK) {
            int nk = nv - j0 < ATTN_BK ? nv - j0 : ATTN_BK;
            score_tile(kv, L, h, vis, j0, nk, Qb, G, S, Kt, &K);
            memset(agg + j0, 0, sizeof(float) * (size_t)nk);
            for (int g = 0; g < G; g++) K.exp_acc(S + (size_t)g * ATTN_BK, nk, scale, mi[2 * g], mi[2 * g + 1], agg + j0);
            if (gqa_mean)
                for (int jj = 0; jj < nk; jj++) agg[j0 + jj] /= (float)G;
        }
        kv_observe(kv, L, h, agg, nv, b->pos[i]);
    }
}

int attn_reference(kv_cache *kv, kv_layer *L, int h, const float *q, int group, int gqa_mean, int32_t qpos,
                   float *out, float *probs, float *scratch) {
    const int hd = kv->head_dim, cap = kv->capacity;
    kvrow_kernels K = kvrow_kernels_ref(kv->type, hd);
    int32_t *vis = (int32_t *)scratch;
    float *att = scratch + cap; /* one head at a time, probabilities summed over the group */
    float *qr = att + cap, *kr = qr + hd;
    int n = kv_visible_slots(kv, L, h, qpos, vis);
    const float scale = 1.0f / sqrtf((float)hd);
    if (probs) memset(probs, 0, sizeof(float) * (size_t)n);
    for (int g = 0; g < group; g++) {
        const float *qg = q + (size_t)g * hd;
        float *o = out + (size_t)g * hd, mx = -INFINITY, sum = 0.0f;
        if (kv->rope) { /* cache positions: the query at its own index, each key at its index */
            memcpy(qr, qg, sizeof(float) * (size_t)hd);
            rotate(kv, qr, n - 1);
            qg = qr;
        }
        for (int j = 0; j < n; j++) {
            if (kv->rope) {
                kvrow_load(kv->type, hd, row_at(kv, L->k, h, vis[j]), kr);
                rotate(kv, kr, j);
                kvrow_kernels_ref(HKV_KV_F32, hd).kdot(kr, qg, 1, hd, att + j, 1);
            } else
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
