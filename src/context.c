/* hkv_context: sequences, their bounded KV caches, scratch buffers and the forward pass over a batch of tokens.
 *
 * One forward chunk: embed -> for each layer: RMSNorm, Q/K/V projections (+bias, +per-head norm), RoPE,
 * write K/V into the cache (the policy picks slots), attention per (sequence, KV head) over the cache, trim the
 * head back to its budget, output projection + residual, SwiGLU FFN + residual -> final norm -> logits. */
#include "alloc.h"
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "attention.h"
#include "kvrow.h"
#include "kvcache.h"
#include "model.h"

typedef struct attn_item_def { int t0, n, seq; } attn_item_def; /* query block: tokens t0.. of seq */

struct hkv_context {
    hkv_model *m;
    hkv_context_params p;
    hkv_budget budget;         /* the largest layer budget (sizes the cache) */
    const hkv_policy_ops *kv_ops;
    int evict_first;           /* the policy evicts before writing (FlexGen order) */
    kv_cache *kv;
    hkv_pool *pool;
    int n_ctx, n_seq, chunk;   /* chunk: max tokens of one sequence per forward pass (eviction granularity) */
    int rows;                  /* scratch rows = max tokens per forward pass: chunk + n_seq (hkv_batch_limits) */
    int32_t *n_past;           /* [n_seq] */
    uint8_t *has_logits;       /* [n_seq] 1: logits_last[seq] holds the logits of seq's last token */
    int *seq_cnt;              /* [n_seq] tokens of each sequence in the current call; 0 between calls */
    int *seq_list;             /* [n_seq] distinct sequences of the current call */
    /* scratch, [rows][...] */
    float *x, *xb, *xb2;       /* [rows][n_embd] */
    float *q;                  /* [rows][n_head*head_dim] (attention output reuses att) */
    float *k, *v;              /* [rows][n_head_kv*head_dim] */
    float *att;                /* [rows][n_head*head_dim] */
    float *hb, *hb2;           /* [rows][n_ff] */
    float *att_scratch;        /* [n_threads][attn_scratch_floats(group, scratch_cap, head_dim)] */
    float *att_ml;             /* [rows][n_head][2] softmax max and sum of each query row (attention.h) */
    attn_item_def *att_blocks; /* [rows] query blocks of one forward chunk */
    size_t att_scratch_per;
    int scratch_cap;           /* capacity att_scratch was sized for */
    int capacity_peak;         /* largest cache capacity so far (hkv_kv_stats.capacity_peak) */
    float *logits_last;        /* [n_seq][n_vocab] */
    float *logits_batch;       /* [logits_batch_cap][n_vocab] requested rows of the last hkv_decode_tokens */
    int logits_batch_cap;
    int *batch_row;            /* [rows] row in logits_batch of token i of that call, -1: not requested */
    int batch_n;               /* tokens of that call (0: none) */
    int32_t *chunk_pos;        /* [rows] positions of one forward chunk */
    int *chunk_seq;            /* [rows] its sequence ids */
    int (*abort_cb)(void *);   /* hkv_set_abort_callback */
    void *abort_user;
    float *logits_all;         /* [logits_all_cap][n_vocab] rows of the last hkv_decode */
    int logits_all_cap, logits_all_n, logits_all_seq;
    FILE *trace;
    char err[256];
};

hkv_context_params hkv_context_default_params(void) {
    hkv_context_params p;
    memset(&p, 0, sizeof p);
    p.n_seq = 1;
    p.kv = hkv_kv_default_config();
    return p;
}

const char *hkv_last_error(const hkv_context *c) { return c ? c->err : "no context"; }

static void ctx_free_buffers(hkv_context *c) {
    hkv_free(c->x); hkv_free(c->xb); hkv_free(c->xb2); hkv_free(c->q); hkv_free(c->k); hkv_free(c->v); hkv_free(c->att);
    hkv_free(c->hb); hkv_free(c->hb2); hkv_free(c->att_scratch); hkv_free(c->att_ml); hkv_free(c->att_blocks); hkv_free(c->logits_last); hkv_free(c->logits_all); hkv_free(c->n_past);
    hkv_free(c->logits_batch); hkv_free(c->chunk_pos); hkv_free(c->chunk_seq); hkv_free(c->has_logits);
    hkv_free(c->seq_cnt); hkv_free(c->seq_list); hkv_free(c->batch_row);
}

void hkv_context_free(hkv_context *c) {
    if (!c) return;
    kv_free(c->kv);
    hkv_pool_free(c->pool);
    if (c->trace) fclose(c->trace);
    ctx_free_buffers(c);
    hkv_free(c);
}

/* The widest input of any matmul of the forward pass (wq/wk/wv/gate/up and the output: n_embd; wo: the
 * attention output; down: n_ff). */
static int matmul_cols(const hkv_hparams *hp) {
    int qd = hp->n_head * hp->head_dim, w = hp->n_embd > qd ? hp->n_embd : qd;
    return w > hp->n_ff ? w : hp->n_ff;
}

static int alloc_scratch(hkv_context *c) {
    const hkv_hparams *hp = &c->m->hp;
    size_t n = (size_t)c->rows, qd = (size_t)hp->n_head * hp->head_dim, kd = (size_t)hp->n_head_kv * hp->head_dim;
    int group = hp->n_head / hp->n_head_kv;
    c->x = hkv_malloc(sizeof(float) * n * hp->n_embd);
    c->xb = hkv_malloc(sizeof(float) * n * hp->n_embd);
    c->xb2 = hkv_malloc(sizeof(float) * n * hp->n_embd);
    c->q = hkv_malloc(sizeof(float) * n * qd);
    c->att = hkv_malloc(sizeof(float) * n * qd);
    c->k = hkv_malloc(sizeof(float) * n * kd);
    c->v = hkv_malloc(sizeof(float) * n * kd);
    c->hb = hkv_malloc(sizeof(float) * n * hp->n_ff);
    c->hb2 = hkv_malloc(sizeof(float) * n * hp->n_ff);
    c->scratch_cap = c->kv->capacity;
    c->att_scratch_per = attn_scratch_floats(group, c->scratch_cap, hp->head_dim);
    c->att_scratch = hkv_malloc(sizeof(float) * c->att_scratch_per * (size_t)hkv_pool_size(c->pool));
    c->att_ml = hkv_malloc(sizeof(float) * n * hp->n_head * 2);
    c->att_blocks = hkv_malloc(sizeof(*c->att_blocks) * n);
    c->logits_last = hkv_calloc((size_t)c->n_seq * hp->n_vocab, sizeof(float));
    c->n_past = hkv_calloc((size_t)c->n_seq, sizeof(int32_t));
    c->chunk_pos = hkv_malloc(sizeof(int32_t) * n);
    c->chunk_seq = hkv_malloc(sizeof(int) * n);
    c->batch_row = hkv_malloc(sizeof(int) * n);
    c->has_logits = hkv_calloc((size_t)c->n_seq, 1);
    c->seq_cnt = hkv_calloc((size_t)c->n_seq, sizeof(int));
    c->seq_list = hkv_malloc(sizeof(int) * (size_t)c->n_seq);
    /* the matmuls' quantized activations for the largest matmul: none of the forward pass allocates them */
    if (!hkv_pool_scratch(c->pool, hkv_matmul_acts_bytes(c->rows, matmul_cols(hp)))) return 0;
    return c->x && c->xb && c->xb2 && c->q && c->att && c->k && c->v && c->hb && c->hb2 && c->att_scratch && c->att_ml && c->att_blocks &&
           c->logits_last && c->n_past && c->chunk_pos && c->chunk_seq && c->batch_row && c->has_logits &&
           c->seq_cnt && c->seq_list;
}

static int n_threads_of(const hkv_context_params *p, const hkv_model *m) {
    int t = p->n_threads > 0 ? p->n_threads : m->n_threads;
    if (t <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        t = n > 0 ? (int)n : 1;
    }
    return t > 256 ? 256 : t;
}

/* Slots per head while decoding k tokens at once: append-then-evict needs the budget plus the new tokens
 * (FlexGen's replace order evicts first, so single steps need only the budget). `full` never evicts. */
static int capacity_for(const hkv_context *c, int k) {
    if (c->kv_ops->never_evicts) return c->n_ctx;
    if (c->p.lazy_seqs) k = c->chunk; /* fixed at the prefill size: no resize of every sequence per chunk */
    long cap = (long)c->budget.total + (c->evict_first && k == 1 ? 0 : k);
    return cap > c->n_ctx ? c->n_ctx : (int)cap;
}

/* Grow or shrink the cache (and the attention scratch sized by it). The scratch grows first: it is only ever
 * too big, never too small, so a failure at either step leaves a consistent context (an earlier version
 * resized the cache first and, when the scratch realloc then failed, the next call saw an unchanged capacity,
 * returned early and overflowed the scratch). */
static hkv_status set_capacity(hkv_context *c, int cap) {
    if (c->kv->simulate) return HKV_OK;
    if (cap > c->scratch_cap) {
        int group = c->m->hp.n_head / c->m->hp.n_head_kv;
        size_t per = attn_scratch_floats(group, cap, c->m->hp.head_dim);
        float *p = hkv_realloc(c->att_scratch, sizeof(float) * per * (size_t)hkv_pool_size(c->pool));
        if (!p) { snprintf(c->err, sizeof c->err, "out of memory for attention scratch"); return HKV_ERR_NOMEM; }
        c->att_scratch = p;
        c->att_scratch_per = per;
        c->scratch_cap = cap;
    }
    if (cap == c->kv->capacity) return HKV_OK;
    hkv_status st = kv_resize(c->kv, cap);
    if (st) snprintf(c->err, sizeof c->err, "cannot resize the KV cache to %d slots per head", cap);
    else if (cap > c->capacity_peak) c->capacity_peak = cap;
    return st;
}

/* Bytes hkv_context_new is about to allocate for c (cache, its metadata, scratch, logits), in 64 bits so an
 * absurd n_ctx cannot wrap; checked against the machine's memory before anything large is allocated (-c 16M
 * used to calloc gigabytes per sequence and fail, or worse succeed lazily, before a token was read). */
static uint64_t context_bytes(const hkv_context *c, const hkv_policy_ops *ops, int n_threads) {
    const hkv_hparams *hp = &c->m->hp;
    uint64_t cap = c->p.kv.simulate ? (uint64_t)c->n_ctx : (uint64_t)capacity_for(c, 1);
    uint64_t elt = c->p.kv.type == HKV_KV_F32 ? 4 : 2;
    uint64_t heads = (uint64_t)c->n_seq * hp->n_layer * hp->n_head_kv;
    uint64_t per_slot = 2 * (uint64_t)hp->head_dim * elt + 3 * sizeof(int32_t) + sizeof(float) * (uint64_t)ops->state_floats;
    uint64_t qd = (uint64_t)hp->n_head * hp->head_dim, kd = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t rows = (uint64_t)c->chunk * (3 * (uint64_t)hp->n_embd + 2 * qd + 2 * kd + 2 * (uint64_t)hp->n_ff);
    uint64_t att = (uint64_t)(hp->n_head / hp->n_head_kv + 2) * cap * (uint64_t)n_threads;
    uint64_t logits = (uint64_t)c->n_seq * hp->n_vocab * 2 + (c->p.logits_all ? (uint64_t)c->chunk * hp->n_vocab : 0);
    uint64_t mm = hkv_matmul_acts_bytes(c->chunk + c->n_seq, matmul_cols(hp)) * 3 / 2; /* pool scratch growth */
    return heads * cap * per_slot + sizeof(float) * (rows + att + logits) + mm;
}

static uint64_t physical_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : UINT64_MAX;
}

/* Cache-position mode: the rotation table covers every cache index a head can reach (its largest capacity). */
static int rope_table(hkv_context *c) {
    int len = c->kv->simulate ? c->n_ctx : capacity_for(c, c->chunk);
    if (capacity_for(c, 1) > len) len = capacity_for(c, 1);
    return attn_set_rope(c->kv, &c->m->hp, c->m->rope_freqs, len) == HKV_OK;
}

/* The policy of p (table or custom), its per-layer configs and budgets; c->budget = the largest layer's budget,
 * which sizes the cache (all layers get the same slot count). */
static hkv_status policy_setup(hkv_context *c, const hkv_context_params *p, int n_layer, hkv_policy_cfg *cfg,
                               char *err, size_t errlen) {
    const hkv_policy_ops *ops = hkv_policy_of(&p->kv, err, errlen);
    if (!ops) return HKV_ERR_ARG;
    if (!ops->never_evicts && !ops->victim) {
        snprintf(err, errlen, "KV policy '%s' has no victim callback (only a never-evicting policy may omit it)",
                 ops->name ? ops->name : "");
        return HKV_ERR_ARG;
    }
    if (!ops->name || ops->state_floats < 0 || ops->state_floats > HKV_POLICY_MAX_STATE) {
        snprintf(err, errlen, "KV policy '%s' asks for %d floats of state (at most %d) or has no name",
                 ops->name ? ops->name : "", ops->state_floats, HKV_POLICY_MAX_STATE);
        return HKV_ERR_ARG;
    }
    hkv_budget *lb = hkv_malloc(sizeof(hkv_budget) * (size_t)n_layer);
    if (!lb) return HKV_ERR_NOMEM;
    hkv_status st = hkv_layer_budgets(&p->kv, p->ref_len, p->n_ctx, n_layer, lb, err, errlen);
    if (!st) {
        int opt[HKV_POLICY_MAX_OPTIONS];
        st = hkv_policy_options(ops, p->kv.options, opt, err, errlen);
        c->budget = lb[0];
        for (int l = 0; !st && l < n_layer; l++) {
            cfg[l].b = lb[l];
            cfg[l].layer = l;
            cfg[l].n_layer = n_layer;
            memcpy(cfg[l].opt, opt, sizeof opt);
            cfg[l].user = p->kv.custom_user;
            if (lb[l].total > c->budget.total) c->budget = lb[l];
        }
    }
    hkv_free(lb);
    if (st) return st;
    c->kv_ops = ops;
    c->evict_first = p->kv.replace_order && !ops->never_evicts;
    return HKV_OK;
}

hkv_status hkv_context_new(hkv_model *m, const hkv_context_params *pp, hkv_context **out, char *err, size_t errlen) {
    *out = NULL;
    hkv_context_params p = pp ? *pp : hkv_context_default_params();
    const hkv_hparams *hp = &m->hp;
    if (p.n_ctx < 0 || p.n_seq < 0 || p.n_seq > 4096 || p.kv.prefill_chunk < 0) {
        snprintf(err, errlen, "invalid context parameters (negative n_ctx, n_seq or prefill chunk)");
        return HKV_ERR_ARG;
    }
    if (p.n_ctx == 0) {
        hkv_model_info mi;
        hkv_model_get_info(m, &mi);
        p.n_ctx = mi.n_ctx_default;
    }
    if (p.n_seq == 0) p.n_seq = 1;
    if (p.n_ctx > hp->n_ctx_train && !p.kv.allow_long_ctx) {
        snprintf(err, errlen, "context length %d is above the model's training context %d (positions past it "
                 "were never trained; set kv.allow_long_ctx, --allow-long-context on the command line, to go beyond)",
                 p.n_ctx, hp->n_ctx_train);
        return HKV_ERR_ARG;
    }
    hkv_context *c = hkv_calloc(1, sizeof *c);
    hkv_policy_cfg *cfg = hkv_calloc((size_t)hp->n_layer, sizeof *cfg);
    hkv_status st = c && cfg ? policy_setup(c, &p, hp->n_layer, cfg, err, errlen) : HKV_ERR_NOMEM;
    if (st) {
        if (st == HKV_ERR_NOMEM) snprintf(err, errlen, "out of memory");
        hkv_free(cfg);
        hkv_free(c);
        return st;
    }
    c->m = m; c->p = p; c->n_ctx = p.n_ctx; c->n_seq = p.n_seq;
    int chunk = p.kv.prefill_chunk > 0 ? p.kv.prefill_chunk : (p.ref_len > 0 ? p.ref_len : 512);
    if (c->kv_ops->never_evicts && chunk > 512) chunk = 512; /* no eviction: chunking changes nothing */
    if (chunk > p.n_ctx) chunk = p.n_ctx;
    c->chunk = chunk < p.n_seq ? p.n_seq : chunk;
    c->rows = c->chunk + p.n_seq;
    uint64_t need = context_bytes(c, c->kv_ops, n_threads_of(&p, m)), have = physical_memory();
    if (need > have) {
        snprintf(err, errlen, "a context of %d positions x %d sequences needs %.1f GiB, more than the %.1f GiB of "
                 "memory of this machine (lower n_ctx, the number of sequences or the KV budget)", p.n_ctx, p.n_seq,
                 (double)need / (1 << 30), (double)have / (1 << 30));
        hkv_free(cfg);
        hkv_free(c);
        return HKV_ERR_NOMEM;
    }
    c->pool = hkv_pool_new(n_threads_of(&p, m));
    st = c->pool ? kv_new_lazy(&c->kv, p.n_seq, hp->n_layer, hp->n_head_kv, hp->head_dim, capacity_for(c, 1), p.n_ctx,
                               p.kv.type, p.kv.simulate, p.lazy_seqs != 0, c->kv_ops, cfg, err, errlen)
                 : HKV_ERR_NOMEM;
    hkv_free(cfg);
    if (!st && !alloc_scratch(c)) st = HKV_ERR_NOMEM;
    if (!st && p.kv.positions_cache && !rope_table(c)) st = HKV_ERR_NOMEM;
    if (!st && p.trace_path && !(c->trace = fopen(p.trace_path, "w"))) {
        snprintf(err, errlen, "cannot open trace file '%s' for writing", p.trace_path);
        st = HKV_ERR_IO;
    }
    if (st) {
        if (st == HKV_ERR_NOMEM) snprintf(err, errlen, "out of memory creating the context");
        hkv_context_free(c);
        return st;
    }
    *out = c;
    return HKV_OK;
}

/* ---------------------------------------------------------------- forward pass */

typedef struct fwd_batch {        /* one forward chunk */
    const int32_t *tokens;        /* [n] */
    const int *seqs;              /* [n] sequence of each token */
    const int32_t *pos;           /* [n] position of each token */
    int n;
    int layer;
    const int *cnt;               /* [n_seq] tokens of each sequence in this chunk: FlexGen's replace order
                                     (make room before writing) applies to a sequence with one token */
    int items_seq[4096];          /* distinct sequences in the chunk, in first-appearance order */
    int n_items_seq;
} fwd_batch;

/* Attention of one layer in two parallel stages:
 *   1. items (query block, KV head): tiled attention of up to attn_block_queries tokens of one sequence
 *      (consecutive in the chunk) over the head's cache; independent of policy state, so the blocks of one
 *      head run on any thread;
 *   2. items (sequence, KV head): the policy's report in query order (attn_report) and the trim back to the
 *      budget — one head per item keeps policy state updates free of races and in query order.
 * When every sequence has a single block (decode steps), one stage does both. */
typedef struct attn_job {
    hkv_context *c;
    fwd_batch *b;
    attn_item_def *blocks;       /* [n_blocks] query blocks */
    int n_blocks, fused;
} attn_job;

static attn_block block_of(hkv_context *c, int t0, int n, int h) {
    const hkv_hparams *hp = &c->m->hp;
    int group = hp->n_head / hp->n_head_kv, hd = hp->head_dim, qd = hp->n_head * hd;
    size_t qo = (size_t)t0 * qd + (size_t)h * group * hd;
    attn_block ab = {.q = c->q + qo, .out = c->att + qo, .stride = (size_t)qd, .n = n, .group = group,
                     .ml = c->att_ml + ((size_t)t0 * hp->n_head + (size_t)h * group) * 2,
                     .ml_stride = (size_t)hp->n_head * 2};
    return ab;
}

/* keep: attn_forward of this sequence's only block ran just before on this scratch, with keep_scores set when
 * the block is a single query (decode), so its scores are reused. */
static void report_and_trim(hkv_context *c, fwd_batch *b, int seq, int h, float *scratch, int keep) {
    kv_layer *L = kv_layer_of(c->kv, seq, b->layer);
    if (c->kv->ops->needs_probs)
        for (int t = 0; t < b->n; t++) {
            if (b->seqs[t] != seq) continue;
            int e = t;
            while (e + 1 < b->n && b->seqs[e + 1] == seq) e++;
            attn_block ab = block_of(c, t, e - t + 1, h);
            ab.pos = b->pos + t;
            ab.keep_scores = keep && e == t;
            attn_report(c->kv, L, h, &ab, c->p.kv.gqa_mean, scratch);
            t = e;
        }
    int n_new = 0;
    for (int t = 0; t < b->n; t++) n_new += b->seqs[t] == seq;
    kv_trim(c->kv, L, h, n_new);
}

static void attn_stage1(void *arg, int i, int thread) {
    attn_job *j = arg;
    hkv_context *c = j->c;
    int nh = c->m->hp.n_head_kv, h = i % nh;
    const attn_item_def *d = &j->blocks[i / nh];
    float *scratch = c->att_scratch + c->att_scratch_per * (size_t)thread;
    attn_block ab = block_of(c, d->t0, d->n, h);
    ab.pos = j->b->pos + d->t0;
    ab.keep_scores = j->fused && d->n == 1 && c->kv->ops->needs_probs;
    attn_forward(c->kv, kv_layer_of(c->kv, d->seq, j->b->layer), h, &ab, scratch);
    if (j->fused) report_and_trim(c, j->b, d->seq, h, scratch, 1);
}

static void attn_stage2(void *arg, int i, int thread) {
    attn_job *j = arg;
    hkv_context *c = j->c;
    int nh = c->m->hp.n_head_kv;
    report_and_trim(c, j->b, j->b->items_seq[i / nh], i % nh, c->att_scratch + c->att_scratch_per * (size_t)thread, 0);
}

/* Splits the chunk into query blocks: runs of consecutive tokens of one sequence, cut every bq tokens. */
static void attention(hkv_context *c, fwd_batch *b) {
    const hkv_hparams *hp = &c->m->hp;
    int bq = attn_block_queries(hp->n_head / hp->n_head_kv), nb = 0;
    attn_item_def *blocks = c->att_blocks;
    for (int t = 0; t < b->n;) {
        int e = t + 1;
        while (e < b->n && e - t < bq && b->seqs[e] == b->seqs[t]) e++;
        blocks[nb++] = (attn_item_def){t, e - t, b->seqs[t]};
        t = e;
    }
    attn_job job = {c, b, blocks, nb, nb == b->n_items_seq}; /* one block per sequence: fuse the stages */
    hkv_pool_run(c->pool, attn_stage1, &job, nb * hp->n_head_kv);
    if (!job.fused) hkv_pool_run(c->pool, attn_stage2, &job, b->n_items_seq * hp->n_head_kv);
}

static void qk_prepare(hkv_context *c, const hkv_layer_w *w, fwd_batch *b) {
    const hkv_hparams *hp = &c->m->hp;
    int hd = hp->head_dim, qd = hp->n_head * hd, kd = hp->n_head_kv * hd;
    for (int t = 0; t < b->n; t++) {
        float *q = c->q + (size_t)t * qd, *k = c->k + (size_t)t * kd, *v = c->v + (size_t)t * kd;
        if (w->bq) {
            for (int i = 0; i < qd; i++) q[i] += w->bq[i];
            for (int i = 0; i < kd; i++) { k[i] += w->bk[i]; v[i] += w->bv[i]; }
        }
        for (int h = 0; h < hp->n_head; h++) {
            if (w->q_norm) hkv_rmsnorm(q + h * hd, q + h * hd, w->q_norm, hd, hp->rms_eps);
            if (!c->kv->rope) hkv_rope(hp, c->m->rope_freqs, q + h * hd, b->pos[t]); /* else: at attention */
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (w->k_norm) hkv_rmsnorm(k + h * hd, k + h * hd, w->k_norm, hd, hp->rms_eps);
            if (!c->kv->rope) hkv_rope(hp, c->m->rope_freqs, k + h * hd, b->pos[t]);
        }
    }
}

static hkv_status kv_write(hkv_context *c, fwd_batch *b) {
    const hkv_hparams *hp = &c->m->hp;
    int hd = hp->head_dim, kd = hp->n_head_kv * hd;
    for (int t = 0; t < b->n; t++) {
        kv_layer *L = kv_layer_of(c->kv, b->seqs[t], b->layer);
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (c->evict_first && b->cnt[b->seqs[t]] == 1) kv_make_room(c->kv, L, h, b->pos[t]);
            hkv_status st = kv_insert(c->kv, L, h, b->pos[t], c->k + (size_t)t * kd + h * hd, c->v + (size_t)t * kd + h * hd);
            if (st) {
                snprintf(c->err, sizeof c->err, "KV cache of sequence %d is full at position %d", b->seqs[t], b->pos[t]);
                return st;
            }
        }
    }
    return HKV_OK;
}

typedef struct { float *g; const float *u; size_t n_ff; } swiglu_job;

/* SwiGLU of token t: g = silu(gate) * up = gate / (1 + exp(-gate)) * up, element by element (the same bits
 * on any thread), with the kernel set's vector exp on pieces that stay in L1 (libm's expf was ~2% of a
 * prefill). exp(-g) overflows to inf for g < -88.7, giving g / inf = -0, silu's limit. */
#define SWIGLU_PIECE 256
static void swiglu_token(void *v, int t, int thread) {
    const swiglu_job *j = v;
    float *g = j->g + (size_t)t * j->n_ff, e[SWIGLU_PIECE];
    const float *u = j->u + (size_t)t * j->n_ff;
    (void)thread;
    for (size_t i0 = 0; i0 < j->n_ff; i0 += SWIGLU_PIECE) {
        int n = j->n_ff - i0 < SWIGLU_PIECE ? (int)(j->n_ff - i0) : SWIGLU_PIECE;
        for (int i = 0; i < n; i++) e[i] = -g[i0 + i];
        kvrow_exp(e, e, n);
        for (int i = 0; i < n; i++) g[i0 + i] = g[i0 + i] / (1.0f + e[i]) * u[i0 + i];
    }
}

static hkv_status layer_forward(hkv_context *c, fwd_batch *b) {
    const hkv_hparams *hp = &c->m->hp;
    const hkv_layer_w *w = &c->m->layers[b->layer];
    int n = b->n, e = hp->n_embd, qd = hp->n_head * hp->head_dim, kd = hp->n_head_kv * hp->head_dim;
    for (int t = 0; t < n; t++) hkv_rmsnorm(c->xb + (size_t)t * e, c->x + (size_t)t * e, w->attn_norm, e, hp->rms_eps);
    hkv_mm qkv[3] = {{c->q, w->wq.type, w->wq.data, qd}, {c->k, w->wk.type, w->wk.data, kd}, {c->v, w->wv.type, w->wv.data, kd}};
    hkv_matmul_multi(c->pool, qkv, 3, c->xb, e, n);
    qk_prepare(c, w, b);
    hkv_status st = kv_write(c, b);
    if (st) return st;
    attention(c, b);
    hkv_matmul(c->pool, c->xb2, w->wo.type, w->wo.data, c->att, e, qd, n);
    for (size_t i = 0; i < (size_t)n * e; i++) c->x[i] += c->xb2[i];
    for (int t = 0; t < n; t++) hkv_rmsnorm(c->xb + (size_t)t * e, c->x + (size_t)t * e, w->ffn_norm, e, hp->rms_eps);
    hkv_mm gate_up[2] = {{c->hb, w->w_gate.type, w->w_gate.data, hp->n_ff}, {c->hb2, w->w_up.type, w->w_up.data, hp->n_ff}};
    hkv_matmul_multi(c->pool, gate_up, 2, c->xb, e, n);
    swiglu_job sj = {c->hb, c->hb2, (size_t)hp->n_ff};
    hkv_pool_run(n > 1 ? c->pool : NULL, swiglu_token, &sj, n); /* a prefill's expf work is split too */
    hkv_matmul(c->pool, c->xb2, w->w_down.type, w->w_down.data, c->hb, e, hp->n_ff, n);
    for (size_t i = 0; i < (size_t)n * e; i++) c->x[i] += c->xb2[i];
    return HKV_OK;
}

/* Logits of rows [r0, r0+nr) of the chunk into out[nr][n_vocab]. */
static void output_logits(hkv_context *c, int r0, int nr, float *out) {
    const hkv_model *m = c->m;
    int e = m->hp.n_embd;
    for (int t = 0; t < nr; t++) hkv_rmsnorm(c->xb + (size_t)t * e, c->x + (size_t)(r0 + t) * e, m->out_norm, e, m->hp.rms_eps);
    hkv_matmul(c->pool, out, m->output.type, m->output.data, c->xb, m->hp.n_vocab, e, nr);
}

static hkv_status forward_chunk(hkv_context *c, fwd_batch *b) {
    const hkv_hparams *hp = &c->m->hp;
    for (int t = 0; t < b->n; t++) {
        const hkv_weight *te = &c->m->tok_embd;
        size_t rs = hkv_row_size(te->type, te->cols);
        hkv_dequant_row(te->type, (const uint8_t *)te->data + rs * (size_t)b->tokens[t], c->x + (size_t)t * hp->n_embd, hp->n_embd);
    }
    b->n_items_seq = 0;
    for (int t = 0; t < b->n; t++) {
        int seen = 0;
        for (int i = 0; i < b->n_items_seq && !seen; i++) seen = b->items_seq[i] == b->seqs[t];
        if (!seen) b->items_seq[b->n_items_seq++] = b->seqs[t];
    }
    for (int l = 0; l < hp->n_layer; l++) {
        if (c->abort_cb && c->abort_cb(c->abort_user)) {
            snprintf(c->err, sizeof c->err, "decode aborted by the abort callback (before layer %d)", l);
            return HKV_ERR_ABORTED;
        }
        b->layer = l;
        hkv_status st = layer_forward(c, b);
        if (st) return st;
    }
    for (int t = 0; t < b->n; t++) kv_set_newest(c->kv, b->seqs[t], b->pos[t]);
    return HKV_OK;
}

/* Positions a sequence may reach. Cache-position mode with a bounded, real-drop cache never rotates by more
 * than the capacity, so the sequence is endless (up to int32 positions); otherwise the context length. */
static long position_limit(const hkv_context *c) {
    if (c->p.kv.positions_cache && !c->kv->simulate && !c->kv_ops->never_evicts) return INT32_MAX;
    return c->n_ctx;
}

static hkv_status check_tokens(hkv_context *c, const int32_t *tokens, int n) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->m->hp.n_vocab) {
            snprintf(c->err, sizeof c->err, "token id %d is out of range [0, %d)", tokens[i], c->m->hp.n_vocab);
            return HKV_ERR_ARG;
        }
    return HKV_OK;
}

static hkv_status grow_logits_all(hkv_context *c, int n) {
    if (n <= c->logits_all_cap) return HKV_OK;
    float *p = hkv_realloc(c->logits_all, sizeof(float) * (size_t)n * c->m->hp.n_vocab);
    if (!p) { snprintf(c->err, sizeof c->err, "out of memory for %d rows of logits", n); return HKV_ERR_NOMEM; }
    c->logits_all = p;
    c->logits_all_cap = n;
    return HKV_OK;
}

static hkv_status grow_logits_batch(hkv_context *c, int n) {
    if (n <= c->logits_batch_cap) return HKV_OK;
    float *p = hkv_realloc(c->logits_batch, sizeof(float) * (size_t)n * c->m->hp.n_vocab);
    if (!p) { snprintf(c->err, sizeof c->err, "out of memory for %d rows of logits", n); return HKV_ERR_NOMEM; }
    c->logits_batch = p;
    c->logits_batch_cap = n;
    return HKV_OK;
}

/* Logits of the chunk rows rows[0..nr) into out[nr][n_vocab]. */
static void output_rows(hkv_context *c, const int32_t *rows, int nr, float *out) {
    const hkv_model *m = c->m;
    int e = m->hp.n_embd;
    for (int t = 0; t < nr; t++) hkv_rmsnorm(c->xb + (size_t)t * e, c->x + (size_t)rows[t] * e, m->out_norm, e, m->hp.rms_eps);
    hkv_matmul(c->pool, out, m->output.type, m->output.data, c->xb, m->hp.n_vocab, e, nr);
}

/* A decode call in three steps, so that a failure leaves every sequence exactly as before the call:
 *   call_begin  allocates all the call needs (cache slots for kmax tokens of one sequence per forward pass,
 *               and an undo record of each sequence in c->seq_list[0..nt) for c->seq_cnt[seq] tokens);
 *               nothing observable changes before it succeeds (a resize only moves rows between slots);
 *   the forward passes (may fail: cache full, abort callback);
 *   call_end    drops the undo records, or on failure puts every sequence back (kv_snap_restore).
 * n_past, logits and the trace change only after every forward pass succeeded. */
static hkv_status call_begin(hkv_context *c, int nt, int kmax) {
    hkv_status st = set_capacity(c, capacity_for(c, kmax));
    /* lazy_seqs: a sequence gets its storage at its first decode (kept should the call fail: still empty) */
    for (int i = 0; i < nt && !st; i++)
        if (kv_seq_alloc(c->kv, c->seq_list[i])) {
            snprintf(c->err, sizeof c->err, "out of memory for the K/V of sequence %d", c->seq_list[i]);
            st = HKV_ERR_NOMEM;
        }
    for (int i = 0; i < nt && !st; i++) {
        st = kv_snap_begin(c->kv, c->seq_list[i], c->seq_cnt[c->seq_list[i]]);
        if (st) {
            while (i-- > 0) kv_snap_end(c->kv, c->seq_list[i]);
            snprintf(c->err, sizeof c->err, "out of memory for the decode's undo record");
        }
    }
    return st;
}

static void call_end(hkv_context *c, int nt, hkv_status st) {
    for (int i = 0; i < nt; i++) {
        int s = c->seq_list[i];
        if (st) kv_snap_restore(c->kv, s);
        else kv_snap_end(c->kv, s);
        c->seq_cnt[s] = 0;
    }
    /* back to the decode footprint; if that allocation fails the larger cache stays, which is still valid */
    if (!st) set_capacity(c, capacity_for(c, 1));
}

static hkv_status check_seq(hkv_context *c, int seq) {
    if (seq >= 0 && seq < c->n_seq) return HKV_OK;
    snprintf(c->err, sizeof c->err, "sequence %d does not exist (n_seq = %d)", seq, c->n_seq);
    return HKV_ERR_ARG;
}

hkv_status hkv_decode(hkv_context *c, int seq, const int32_t *tokens, int n) {
    hkv_status st = check_seq(c, seq);
    if (st) return st;
    if (n <= 0 || !tokens) { snprintf(c->err, sizeof c->err, "nothing to decode (0 tokens)"); return HKV_ERR_ARG; }
    if ((st = check_tokens(c, tokens, n))) return st;
    if ((long)c->n_past[seq] + n > position_limit(c)) {
        snprintf(c->err, sizeof c->err, "sequence would reach %ld tokens, more than the context length %ld",
                 (long)c->n_past[seq] + n, position_limit(c));
        return HKV_ERR_CONTEXT;
    }
    if (c->p.logits_all && (st = grow_logits_all(c, n))) return st;
    c->seq_list[0] = seq;
    c->seq_cnt[seq] = n;
    if ((st = call_begin(c, 1, n < c->chunk ? n : c->chunk))) { c->seq_cnt[seq] = 0; return st; }
    int32_t *pos = c->chunk_pos;
    int *seqs = c->chunk_seq;
    for (int i = 0; i < c->chunk; i++) seqs[i] = seq;
    int V = c->m->hp.n_vocab;
    for (int done = 0; done < n && !st;) {
        int k = n - done < c->chunk ? n - done : c->chunk;
        for (int i = 0; i < k; i++) pos[i] = c->n_past[seq] + done + i;
        c->seq_cnt[seq] = k;
        fwd_batch b = {.tokens = tokens + done, .seqs = seqs, .pos = pos, .n = k, .cnt = c->seq_cnt};
        if ((st = forward_chunk(c, &b))) break;
        /* per-token rows go to logits_all as they come; they describe this call only once it succeeded */
        if (c->p.logits_all) output_logits(c, 0, k, c->logits_all + (size_t)done * V);
        else if (done + k == n) {
            int32_t last = k - 1;
            output_rows(c, &last, 1, c->logits_last + (size_t)seq * V);
        }
        done += k;
    }
    call_end(c, 1, st);
    if (st) {
        if (c->p.logits_all) c->logits_all_n = 0; /* partly overwritten */
        return st;
    }
    c->n_past[seq] += n;
    c->has_logits[seq] = 1;
    if (c->p.logits_all) {
        memcpy(c->logits_last + (size_t)seq * V, c->logits_all + (size_t)(n - 1) * V, sizeof(float) * V);
        c->logits_all_n = n;
        c->logits_all_seq = seq;
    }
    if (c->trace) kv_trace_write(c->kv, seq, c->trace, c->p.trace_scores);
    return HKV_OK;
}

/* The multi-sequence path behind hkv_decode_tokens and hkv_decode_batch: one forward pass, all arguments
 * already valid and counted in seq_cnt / seq_list (nt sequences, at most kmax tokens of one). */
static hkv_status decode_one_pass(hkv_context *c, const int32_t *tokens, const int *seqs, const int8_t *want,
                                  int n, int nt, int kmax) {
    int32_t *pos = c->chunk_pos;
    int n_rows = 0, V = c->m->hp.n_vocab;
    for (int i = 0; i < n; i++) n_rows += want ? want[i] != 0 : 1;
    hkv_status st = grow_logits_batch(c, n_rows);
    if (st) {
        for (int i = 0; i < nt; i++) c->seq_cnt[c->seq_list[i]] = 0;
        return st;
    }
    /* positions: each sequence continues from its n_past in call order */
    for (int i = 0; i < nt; i++) c->seq_cnt[c->seq_list[i]] = 0;
    for (int i = 0; i < n; i++) pos[i] = c->n_past[seqs[i]] + c->seq_cnt[seqs[i]]++;
    if ((st = call_begin(c, nt, kmax))) {
        for (int i = 0; i < nt; i++) c->seq_cnt[c->seq_list[i]] = 0;
        return st;
    }
    fwd_batch b = {.tokens = tokens, .seqs = seqs, .pos = pos, .n = n, .cnt = c->seq_cnt};
    st = forward_chunk(c, &b);
    call_end(c, nt, st);
    if (st) return st;
    /* the requested rows, gathered into one output matmul (pos is free again: it holds their indices) */
    for (int i = 0, r = 0; i < n; i++) {
        c->batch_row[i] = (want ? want[i] != 0 : 1) ? r : -1;
        if (c->batch_row[i] >= 0) pos[r++] = i;
    }
    if (n_rows) output_rows(c, pos, n_rows, c->logits_batch);
    c->batch_n = n;
    c->logits_all_n = 0; /* rows of an earlier hkv_decode no longer describe the sequences */
    for (int i = 0; i < n; i++) c->n_past[seqs[i]]++;
    /* each sequence's last token: its logits become hkv_get_logits(seq, -1) when they were requested */
    for (int i = n - 1; i >= 0; i--) {
        int s = seqs[i];
        if (c->seq_cnt[s] == -1) continue;
        c->seq_cnt[s] = -1;
        c->has_logits[s] = c->batch_row[i] >= 0;
        if (c->has_logits[s])
            memcpy(c->logits_last + (size_t)s * V, c->logits_batch + (size_t)c->batch_row[i] * V, sizeof(float) * V);
    }
    for (int i = 0; i < nt; i++) {
        c->seq_cnt[c->seq_list[i]] = 0;
        if (c->trace) kv_trace_write(c->kv, c->seq_list[i], c->trace, c->p.trace_scores);
    }
    return HKV_OK;
}

/* Counts each sequence's tokens into seq_cnt / seq_list; checks ids and lengths. */
static hkv_status count_seqs(hkv_context *c, const int *seqs, int n, int distinct, int *nt, int *kmax) {
    hkv_status st = HKV_OK;
    *nt = 0;
    *kmax = 0;
    for (int i = 0; i < n && !st; i++) {
        if ((st = check_seq(c, seqs[i]))) break;
        int s = seqs[i];
        if (c->seq_cnt[s] == 0) c->seq_list[(*nt)++] = s;
        else if (distinct) { snprintf(c->err, sizeof c->err, "sequence %d appears twice in one batch", s); st = HKV_ERR_ARG; break; }
        if (++c->seq_cnt[s] > *kmax) *kmax = c->seq_cnt[s];
        if (c->seq_cnt[s] > c->chunk) {
            snprintf(c->err, sizeof c->err, "sequence %d has more than %d tokens in one batch (the prefill chunk)", s, c->chunk);
            st = HKV_ERR_ARG;
        } else if ((long)c->n_past[s] + c->seq_cnt[s] > position_limit(c)) {
            snprintf(c->err, sizeof c->err, "sequence %d would exceed the context length %ld", s, position_limit(c));
            st = HKV_ERR_CONTEXT;
        }
    }
    if (st) for (int i = 0; i < *nt; i++) c->seq_cnt[c->seq_list[i]] = 0;
    return st;
}

hkv_status hkv_decode_batch(hkv_context *c, const int *seqs, const int32_t *tokens, int n) {
    if (n <= 0 || n > c->n_seq || !seqs || !tokens) {
        snprintf(c->err, sizeof c->err, "batch of %d tokens is invalid (1..%d sequences)", n, c->n_seq);
        return HKV_ERR_ARG;
    }
    hkv_status st = check_tokens(c, tokens, n);
    int nt, kmax;
    if (st || (st = count_seqs(c, seqs, n, 1, &nt, &kmax))) return st;
    return decode_one_pass(c, tokens, seqs, NULL, n, nt, kmax);
}

hkv_status hkv_decode_tokens(hkv_context *c, const hkv_batch *b) {
    if (!b || b->n_tokens <= 0 || b->n_tokens > c->rows || !b->token || !b->seq) {
        snprintf(c->err, sizeof c->err, "batch of %d tokens is invalid (1..%d tokens, token and seq arrays required)",
                 b ? b->n_tokens : 0, c->rows);
        return HKV_ERR_ARG;
    }
    hkv_status st = check_tokens(c, b->token, b->n_tokens);
    int nt, kmax;
    if (st || (st = count_seqs(c, b->seq, b->n_tokens, 0, &nt, &kmax))) return st;
    return decode_one_pass(c, b->token, b->seq, b->logits, b->n_tokens, nt, kmax);
}

const float *hkv_get_logits_ith(hkv_context *c, int i) {
    if (i < 0 || i >= c->batch_n || c->batch_row[i] < 0) return NULL;
    return c->logits_batch + (size_t)c->batch_row[i] * c->m->hp.n_vocab;
}

void hkv_batch_limits(const hkv_context *c, int *max_tokens, int *max_per_seq) {
    if (max_tokens) *max_tokens = c->rows;
    if (max_per_seq) *max_per_seq = c->chunk;
}

void hkv_set_abort_callback(hkv_context *c, int (*cb)(void *user), void *user) {
    c->abort_cb = cb;
    c->abort_user = user;
}

const float *hkv_get_logits(hkv_context *c, int seq, int i) {
    if (seq < 0 || seq >= c->n_seq) return NULL;
    if (i < 0) return c->n_past[seq] && c->has_logits[seq] ? c->logits_last + (size_t)seq * c->m->hp.n_vocab : NULL;
    if (!c->p.logits_all || seq != c->logits_all_seq || i >= c->logits_all_n) return NULL;
    return c->logits_all + (size_t)i * c->m->hp.n_vocab;
}

int hkv_n_past(const hkv_context *c, int seq) { return seq >= 0 && seq < c->n_seq ? c->n_past[seq] : -1; }

void hkv_seq_reset(hkv_context *c, int seq) {
    if (seq < 0 || seq >= c->n_seq) return;
    kv_seq_reset(c->kv, seq);
    c->n_past[seq] = 0;
    c->has_logits[seq] = 0;
    if (c->logits_all_seq == seq) c->logits_all_n = 0;
}

hkv_status hkv_seq_rm(hkv_context *c, int seq) {
    hkv_status st = check_seq(c, seq);
    if (st) return st;
    hkv_seq_reset(c, seq);
    if (c->p.lazy_seqs) kv_seq_release(c->kv, seq); /* its K/V memory goes back */
    return HKV_OK;
}

hkv_status hkv_seq_cp(hkv_context *c, int src, int dst) {
    hkv_status st = check_seq(c, src);
    if (st || (st = check_seq(c, dst)) || src == dst) return st;
    int V = c->m->hp.n_vocab;
    if (kv_seq_copy(c->kv, src, dst)) {
        snprintf(c->err, sizeof c->err, "out of memory for the K/V of sequence %d", dst);
        return HKV_ERR_NOMEM;
    }
    c->n_past[dst] = c->n_past[src];
    c->has_logits[dst] = c->has_logits[src];
    memcpy(c->logits_last + (size_t)dst * V, c->logits_last + (size_t)src * V, sizeof(float) * V);
    if (c->logits_all_seq == dst) c->logits_all_n = 0;
    return HKV_OK;
}

/* ---------------------------------------------------------------- sequence state files
 *
 * Layout (host byte order, little-endian on x86-64):
 *   state_header (below, all int32 and char arrays: no padding)
 *   float logits[n_vocab]               logits of the last token (has_logits)
 *   per layer, per KV head (kv_seq_write): int32 n_live, uint64 evictions, n_live records of
 *     int32 position, K row, V row (head_dim elements of kv_type each), state_floats floats of policy state
 * The header must match the loading context exactly where it decides the continuation: model shape, K/V type,
 * policy with its budget and options, and the cache capacity. */
#define HKV_STATE_MAGIC "HKVSEQ1\n"
#define HKV_STATE_VERSION 1

typedef struct state_header {
    char magic[8];
    int32_t version;
    char arch[16];
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim;
    int32_t kv_type, simulate, capacity, n_ctx;
    char policy[16];
    int32_t budget_total, budget_heavy, budget_recent, budget_sink;
    int32_t replace_order, gqa_mean, state_floats;
    int32_t opt[HKV_POLICY_MAX_OPTIONS];   /* the policy's option values */
    int32_t n_past, newest, has_logits;
} state_header;   /* followed by hkv_budget[n_layer] (4 int32 each): every layer's budget */

static void header_of(const hkv_context *c, int seq, state_header *h) {
    const hkv_hparams *hp = &c->m->hp;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, HKV_STATE_MAGIC, 8);
    h->version = HKV_STATE_VERSION;
    snprintf(h->arch, sizeof h->arch, "%s", c->m->arch_name);
    h->n_vocab = hp->n_vocab; h->n_embd = hp->n_embd; h->n_layer = hp->n_layer; h->n_head = hp->n_head;
    h->n_head_kv = hp->n_head_kv; h->head_dim = hp->head_dim;
    h->kv_type = c->kv->type; h->simulate = c->kv->simulate;
    h->capacity = c->kv->simulate ? c->kv->capacity : capacity_for(c, 1);
    h->n_ctx = c->n_ctx;
    snprintf(h->policy, sizeof h->policy, "%s", c->kv->ops->name);
    h->budget_total = c->budget.total; h->budget_heavy = c->budget.heavy;
    h->budget_recent = c->budget.recent; h->budget_sink = c->budget.sink;
    h->replace_order = c->evict_first; h->gqa_mean = c->p.kv.gqa_mean;
    for (int i = 0; i < HKV_POLICY_MAX_OPTIONS; i++) h->opt[i] = c->kv->cfg[0].opt[i];
    h->state_floats = c->kv->ops->state_floats;
    h->n_past = c->n_past[seq];
    h->newest = c->kv->newest[seq];
    h->has_logits = c->has_logits[seq];
}

/* Layer l's budget as the 4 int32 of the state file. */
static const int32_t *layer_budget(const hkv_context *c, int l) {
    static_assert(sizeof(hkv_budget) == 4 * sizeof(int32_t), "hkv_budget is 4 ints");
    return (const int32_t *)&c->kv->cfg[l].b;
}

hkv_status hkv_seq_state_save(hkv_context *c, int seq, const char *path) {
    hkv_status st = check_seq(c, seq);
    if (st) return st;
    FILE *f = path ? fopen(path, "wb") : NULL;
    if (!f) { snprintf(c->err, sizeof c->err, "cannot open state file '%s' for writing", path ? path : "(null)"); return HKV_ERR_IO; }
    state_header h;
    header_of(c, seq, &h);
    int V = c->m->hp.n_vocab;
    int ok = fwrite(&h, sizeof h, 1, f) == 1;
    for (int l = 0; l < c->kv->n_layer && ok; l++) ok = fwrite(layer_budget(c, l), sizeof(int32_t), 4, f) == 4;
    ok = ok && fwrite(c->logits_last + (size_t)seq * V, sizeof(float) * V, 1, f) == 1 &&
             kv_seq_write(c->kv, seq, f) == HKV_OK;
    ok &= fclose(f) == 0;
    if (!ok) { snprintf(c->err, sizeof c->err, "cannot write state file '%s'", path); return HKV_ERR_IO; }
    return HKV_OK;
}

/* First difference between the file's header and this context's, as an error message; 0 if they agree. */
static int header_mismatch(const state_header *f, const state_header *c, char *err, size_t errlen) {
#define HKV_CMP(field, what) if (f->field != c->field) { \
        snprintf(err, errlen, "state file was saved with %s %d, this context has %d", what, (int)f->field, (int)c->field); \
        return 1; }
    if (strncmp(f->arch, c->arch, sizeof f->arch)) {
        snprintf(err, errlen, "state file is for a '%.16s' model, this model is '%.16s'", f->arch, c->arch);
        return 1;
    }
    HKV_CMP(n_vocab, "n_vocab") HKV_CMP(n_embd, "n_embd") HKV_CMP(n_layer, "n_layer") HKV_CMP(n_head, "n_head")
    HKV_CMP(n_head_kv, "n_head_kv") HKV_CMP(head_dim, "head_dim")
    HKV_CMP(kv_type, "KV type (0 = f16, 1 = f32)")
    if (strncmp(f->policy, c->policy, sizeof f->policy)) {
        snprintf(err, errlen, "state file was saved with KV policy '%.16s', this context uses '%.16s'", f->policy, c->policy);
        return 1;
    }
    HKV_CMP(simulate, "simulate") HKV_CMP(budget_total, "budget") HKV_CMP(budget_heavy, "heavy budget")
    HKV_CMP(budget_recent, "recent budget") HKV_CMP(budget_sink, "sink budget") 
    HKV_CMP(replace_order, "replace_order") HKV_CMP(gqa_mean, "gqa_mean") HKV_CMP(state_floats, "policy state floats")
    HKV_CMP(capacity, "cache capacity (slots per head)")
    for (int i = 0; i < HKV_POLICY_MAX_OPTIONS; i++) HKV_CMP(opt[i], "a policy option value")
#undef HKV_CMP
    return 0;
}

static hkv_status check_layer_budgets(hkv_context *c, const unsigned char *p) {
    for (int l = 0; l < c->kv->n_layer; l++) {
        int32_t b[4];
        memcpy(b, p + (size_t)l * sizeof b, sizeof b);
        if (memcmp(b, layer_budget(c, l), sizeof b)) {
            snprintf(c->err, sizeof c->err, "state file was saved with budget %d for layer %d, this context has %d",
                     (int)b[0], l, (int)layer_budget(c, l)[0]);
            return HKV_ERR_STATE;
        }
    }
    return HKV_OK;
}

hkv_status hkv_seq_state_load(hkv_context *c, int seq, const char *path) {
    hkv_status st = check_seq(c, seq);
    if (st) return st;
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) { snprintf(c->err, sizeof c->err, "cannot open state file '%s'", path ? path : "(null)"); return HKV_ERR_IO; }
    unsigned char *buf = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = hkv_malloc(len ? (size_t)len : 1);
        if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) len = -1;
    }
    fclose(f);
    if (!buf || len < 0) {
        hkv_free(buf);
        snprintf(c->err, sizeof c->err, buf || len < 0 ? "cannot read state file '%s'" : "out of memory reading '%s'", path);
        return buf || len < 0 ? HKV_ERR_IO : HKV_ERR_NOMEM;
    }
    state_header h, mine;
    int V = c->m->hp.n_vocab;
    size_t lb = (size_t)c->kv->n_layer * 4 * sizeof(int32_t), off = sizeof h + lb + sizeof(float) * (size_t)V, used = 0;
    header_of(c, seq, &mine);
    if ((size_t)len < sizeof h || memcmp(buf, HKV_STATE_MAGIC, 7)) {
        snprintf(c->err, sizeof c->err, "'%s' is not a heavykv sequence state file", path);
        st = HKV_ERR_FORMAT;
    } else if (memcpy(&h, buf, sizeof h), h.version != HKV_STATE_VERSION || memcmp(buf, HKV_STATE_MAGIC, 8)) {
        snprintf(c->err, sizeof c->err, "state file '%s' has version %d; this library reads version %d", path, (int)h.version,
                 HKV_STATE_VERSION);
        st = HKV_ERR_UNSUPPORTED;
    } else if (header_mismatch(&h, &mine, c->err, sizeof c->err)) {
        st = HKV_ERR_STATE;
    } else if (h.n_past < 0 || h.n_past > c->n_ctx || h.newest >= h.n_past || h.newest < -1) {
        snprintf(c->err, sizeof c->err, "state file holds %d positions; this context allows %d", (int)h.n_past, c->n_ctx);
        st = h.n_past > c->n_ctx ? HKV_ERR_CONTEXT : HKV_ERR_FORMAT;
    } else if ((size_t)len < off) {
        snprintf(c->err, sizeof c->err, "state file '%s' is truncated (%ld bytes)", path, len);
        st = HKV_ERR_FORMAT;
    } else if ((st = check_layer_budgets(c, buf + sizeof h))) {
    } else if ((st = kv_seq_read(c->kv, seq, buf + off, (size_t)len - off, &used, c->err, sizeof c->err)) == HKV_OK) {
        /* kv_seq_read validated everything before writing; from here nothing can fail */
        c->n_past[seq] = h.n_past;
        kv_set_newest(c->kv, seq, h.newest);
        c->has_logits[seq] = h.has_logits != 0;
        memcpy(c->logits_last + (size_t)seq * V, buf + sizeof h + lb, sizeof(float) * V);
        if (c->logits_all_seq == seq) c->logits_all_n = 0;
    }
    hkv_free(buf);
    return st;
}

hkv_budget hkv_context_budget(const hkv_context *c) { return c->budget; }

/* ---------------------------------------------------------------- introspection */

void hkv_get_kv_stats(const hkv_context *c, hkv_kv_stats *s) {
    const kv_cache *kv = c->kv;
    memset(s, 0, sizeof *s);
    s->n_layer = kv->n_layer; s->n_head_kv = kv->n_head_kv; s->head_dim = kv->head_dim;
    s->capacity = kv->capacity;
    s->budget = c->budget;
    s->kv_bytes = kv->kv_bytes;
    s->capacity_peak = c->capacity_peak > kv->capacity ? c->capacity_peak : kv->capacity;
    s->kv_bytes_peak = kv->capacity ? kv->kv_bytes / (uint64_t)kv->capacity * (uint64_t)s->capacity_peak : 0;
    s->meta_bytes = kv->meta_bytes;
    s->occupancy_min = kv->capacity;
    s->type = kv->type;
    s->row_bytes = (int)kv->row_bytes;
    s->positions_cache = kv->rope != NULL;
    for (int i = 0; i < kv->n_seq * kv->n_layer; i++)
        for (int h = 0; h < kv->n_head_kv; h++) {
            const kv_layer *L = &kv->layers[i];
            s->evictions += L->evictions[h];
            s->kv_bytes_used += 2 * (uint64_t)L->n_live[h] * kv->row_bytes;
            if (i >= kv->n_layer) continue; /* occupancy: seq 0 */
            if (L->n_live[h] < s->occupancy_min) s->occupancy_min = L->n_live[h];
            if (L->n_live[h] > s->occupancy_max) s->occupancy_max = L->n_live[h];
        }
}

hkv_status hkv_get_kv_layer_stats(const hkv_context *c, int layer, int *occupancy_sum, uint64_t *evictions) {
    if (layer < 0 || layer >= c->kv->n_layer) return HKV_ERR_ARG;
    const kv_layer *L = &c->kv->layers[layer];
    *occupancy_sum = 0;
    *evictions = 0;
    for (int h = 0; h < c->kv->n_head_kv; h++) { *occupancy_sum += L->n_live[h]; *evictions += L->evictions[h]; }
    return HKV_OK;
}

int hkv_kv_positions(const hkv_context *c, int seq, int layer, int kv_head, int32_t *out, int max) {
    if (seq < 0 || seq >= c->n_seq || layer < 0 || layer >= c->kv->n_layer || kv_head < 0 || kv_head >= c->kv->n_head_kv)
        return 0;
    return kv_positions(c->kv, seq, layer, kv_head, out, max);
}

int hkv_kv_scores(const hkv_context *c, int seq, int layer, int kv_head, float *out, int max) {
    if (seq < 0 || seq >= c->n_seq || layer < 0 || layer >= c->kv->n_layer || kv_head < 0 || kv_head >= c->kv->n_head_kv)
        return 0;
    return kv_scores(c->kv, seq, layer, kv_head, out, max);
}

hkv_budget hkv_context_layer_budget(const hkv_context *c, int layer) {
    if (layer < 0 || layer >= c->kv->n_layer) return c->budget;
    return c->kv->cfg[layer].b;
}

/* ---------------------------------------------------------------- model-level wrappers */

int hkv_tokenize(const hkv_model *m, const char *text, int add_bos, int parse_special, int32_t *tokens, int max) {
    return tok_encode(m->tok, text, add_bos, parse_special, tokens, max);
}
int hkv_token_to_piece(const hkv_model *m, int32_t token, char *buf, int buflen) { return tok_piece(m->tok, token, buf, buflen); }
int hkv_detokenize(const hkv_model *m, const int32_t *tokens, int n, char *buf, int buflen) {
    return tok_decode(m->tok, tokens, n, buf, buflen);
}
int hkv_token_is_eog(const hkv_model *m, int32_t token) { return tok_is_eog(m->tok, token); }
int hkv_utf8_stream_push(hkv_utf8_stream *s, const hkv_model *m, int32_t token, char *out, int outlen) {
    int n = tok_utf8_stream_push(s, m->tok, token, out, outlen);
    if (n > 0 && s->strip_space) {
        s->strip_space = 0;
        if (out[0] == ' ') { memmove(out, out + 1, (size_t)n); n--; }
    }
    return n;
}

const char *hkv_status_str(hkv_status s) {
    switch (s) {
    case HKV_OK: return "ok";
    case HKV_ERR_IO: return "I/O error";
    case HKV_ERR_FORMAT: return "malformed input";
    case HKV_ERR_UNSUPPORTED: return "unsupported";
    case HKV_ERR_ARG: return "invalid argument";
    case HKV_ERR_NOMEM: return "out of memory";
    case HKV_ERR_CONTEXT: return "context length exceeded";
    case HKV_ERR_STATE: return "invalid state";
    case HKV_ERR_ABORTED: return "aborted";
    }
    return "unknown error";
}

const char *hkv_version(void) { return HKV_VERSION_STRING; }
