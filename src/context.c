/* hkv_context: sequences, their bounded KV caches, scratch buffers and the forward pass over a batch of tokens.
 *
 * One forward chunk: embed -> for each layer: RMSNorm, Q/K/V projections (+bias, +per-head norm), RoPE,
 * write K/V into the cache (the policy picks slots), attention per (sequence, KV head) over the cache, trim the
 * head back to its budget, output projection + residual, SwiGLU FFN + residual -> final norm -> logits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "attention.h"
#include "kvcache.h"
#include "model.h"

struct hkv_context {
    hkv_model *m;
    hkv_context_params p;
    hkv_budget budget;         /* the largest layer budget (sizes the cache) */
    const hkv_policy_ops *kv_ops;
    int evict_first;           /* the policy evicts before writing (FlexGen order) */
    kv_cache *kv;
    hkv_pool *pool;
    int n_ctx, n_seq, chunk;   /* chunk: max tokens per forward pass (scratch rows) */
    int32_t *n_past;           /* [n_seq] */
    /* scratch, [chunk][...] */
    float *x, *xb, *xb2;       /* [chunk][n_embd] */
    float *q;                  /* [chunk][n_head*head_dim] (attention output reuses att) */
    float *k, *v;              /* [chunk][n_head_kv*head_dim] */
    float *att;                /* [chunk][n_head*head_dim] */
    float *hb, *hb2;           /* [chunk][n_ff] */
    float *att_scratch;        /* [n_threads][(group+2)*scratch_cap] */
    size_t att_scratch_per;
    int scratch_cap;           /* capacity att_scratch was sized for */
    float *logits_last;        /* [n_seq][n_vocab] */
    float *logits_batch;       /* [n_seq][n_vocab] rows of one hkv_decode_batch, in batch order */
    int32_t *chunk_pos;        /* [chunk] positions of one forward chunk of hkv_decode */
    int *chunk_seq;            /* [chunk] its sequence ids */
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
    free(c->x); free(c->xb); free(c->xb2); free(c->q); free(c->k); free(c->v); free(c->att);
    free(c->hb); free(c->hb2); free(c->att_scratch); free(c->logits_last); free(c->logits_all); free(c->n_past);
    free(c->logits_batch); free(c->chunk_pos); free(c->chunk_seq);
}

void hkv_context_free(hkv_context *c) {
    if (!c) return;
    kv_free(c->kv);
    hkv_pool_free(c->pool);
    if (c->trace) fclose(c->trace);
    ctx_free_buffers(c);
    free(c);
}

static int alloc_scratch(hkv_context *c) {
    const hkv_hparams *hp = &c->m->hp;
    size_t n = (size_t)c->chunk, qd = (size_t)hp->n_head * hp->head_dim, kd = (size_t)hp->n_head_kv * hp->head_dim;
    int group = hp->n_head / hp->n_head_kv;
    c->x = malloc(sizeof(float) * n * hp->n_embd);
    c->xb = malloc(sizeof(float) * n * hp->n_embd);
    c->xb2 = malloc(sizeof(float) * n * hp->n_embd);
    c->q = malloc(sizeof(float) * n * qd);
    c->att = malloc(sizeof(float) * n * qd);
    c->k = malloc(sizeof(float) * n * kd);
    c->v = malloc(sizeof(float) * n * kd);
    c->hb = malloc(sizeof(float) * n * hp->n_ff);
    c->hb2 = malloc(sizeof(float) * n * hp->n_ff);
    c->scratch_cap = c->kv->capacity;
    c->att_scratch_per = (size_t)(group + 2) * c->scratch_cap;
    c->att_scratch = malloc(sizeof(float) * c->att_scratch_per * (size_t)hkv_pool_size(c->pool));
    c->logits_last = calloc((size_t)c->n_seq * hp->n_vocab, sizeof(float));
    c->n_past = calloc((size_t)c->n_seq, sizeof(int32_t));
    c->logits_batch = malloc(sizeof(float) * (size_t)c->n_seq * hp->n_vocab);
    c->chunk_pos = malloc(sizeof(int32_t) * n);
    c->chunk_seq = malloc(sizeof(int) * n);
    return c->x && c->xb && c->xb2 && c->q && c->att && c->k && c->v && c->hb && c->hb2 && c->att_scratch &&
           c->logits_last && c->n_past && c->logits_batch && c->chunk_pos && c->chunk_seq;
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
    long cap = (long)c->budget.total + (c->evict_first && k == 1 ? 0 : k);
    return cap > c->n_ctx ? c->n_ctx : (int)cap;
}

/* Grow or shrink the cache (and the attention scratch sized by it). */
static hkv_status set_capacity(hkv_context *c, int cap) {
    if (c->kv->simulate || cap == c->kv->capacity) return HKV_OK;
    hkv_status st = kv_resize(c->kv, cap);
    if (st) {
        snprintf(c->err, sizeof c->err, "cannot resize the KV cache to %d slots per head", cap);
        return st;
    }
    if (cap > c->scratch_cap) {
        int group = c->m->hp.n_head / c->m->hp.n_head_kv;
        size_t per = (size_t)(group + 2) * cap;
        float *p = realloc(c->att_scratch, sizeof(float) * per * (size_t)hkv_pool_size(c->pool));
        if (!p) { snprintf(c->err, sizeof c->err, "out of memory for attention scratch"); return HKV_ERR_NOMEM; }
        c->att_scratch = p;
        c->att_scratch_per = per;
        c->scratch_cap = cap;
    }
    return HKV_OK;
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
    hkv_budget *lb = malloc(sizeof(hkv_budget) * (size_t)n_layer);
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
    free(lb);
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
    hkv_context *c = calloc(1, sizeof *c);
    hkv_policy_cfg *cfg = calloc((size_t)hp->n_layer, sizeof *cfg);
    hkv_status st = c && cfg ? policy_setup(c, &p, hp->n_layer, cfg, err, errlen) : HKV_ERR_NOMEM;
    if (st) {
        if (st == HKV_ERR_NOMEM) snprintf(err, errlen, "out of memory");
        free(cfg);
        free(c);
        return st;
    }
    c->m = m; c->p = p; c->n_ctx = p.n_ctx; c->n_seq = p.n_seq;
    int chunk = p.kv.prefill_chunk > 0 ? p.kv.prefill_chunk : (p.ref_len > 0 ? p.ref_len : 512);
    if (c->kv_ops->never_evicts && chunk > 512) chunk = 512; /* no eviction: chunking changes nothing */
    if (chunk > p.n_ctx) chunk = p.n_ctx;
    c->chunk = chunk < p.n_seq ? p.n_seq : chunk;
    c->pool = hkv_pool_new(n_threads_of(&p, m));
    st = c->pool ? kv_new(&c->kv, p.n_seq, hp->n_layer, hp->n_head_kv, hp->head_dim, capacity_for(c, 1), p.n_ctx,
                          p.kv.type, p.kv.simulate, c->kv_ops, cfg, err, errlen)
                 : HKV_ERR_NOMEM;
    free(cfg);
    if (!st && !alloc_scratch(c)) st = HKV_ERR_NOMEM;
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
    int replace;                  /* FlexGen order: make room before writing (decode steps only) */
    int items_seq[4096];          /* distinct sequences in the chunk, in first-appearance order */
    int n_items_seq;
} fwd_batch;

typedef struct attn_job { hkv_context *c; fwd_batch *b; } attn_job;

/* Work item i = (distinct sequence, KV head): all of that sequence's tokens attend in order, then the head is
 * trimmed. One head per item keeps policy state updates free of races and in query order. */
static void attn_item(void *arg, int i, int thread) {
    attn_job *j = arg;
    hkv_context *c = j->c;
    fwd_batch *b = j->b;
    const hkv_hparams *hp = &c->m->hp;
    int h = i % hp->n_head_kv, seq = b->items_seq[i / hp->n_head_kv];
    int group = hp->n_head / hp->n_head_kv, hd = hp->head_dim, qd = hp->n_head * hd;
    kv_layer *L = kv_layer_of(c->kv, seq, b->layer);
    float *scratch = c->att_scratch + c->att_scratch_per * (size_t)thread;
    for (int t = 0; t < b->n; t++) {
        if (b->seqs[t] != seq) continue;
        size_t qo = (size_t)t * qd + (size_t)h * group * hd;
        attn_head(c->kv, L, h, c->q + qo, group, c->p.kv.gqa_mean, b->pos[t], c->att + qo, scratch);
    }
    int n_new = 0;
    for (int t = 0; t < b->n; t++) n_new += b->seqs[t] == seq;
    kv_trim(c->kv, L, h, n_new);
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
            hkv_rope(hp, c->m->rope_freqs, q + h * hd, b->pos[t]);
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (w->k_norm) hkv_rmsnorm(k + h * hd, k + h * hd, w->k_norm, hd, hp->rms_eps);
            hkv_rope(hp, c->m->rope_freqs, k + h * hd, b->pos[t]);
        }
    }
}

static hkv_status kv_write(hkv_context *c, fwd_batch *b) {
    const hkv_hparams *hp = &c->m->hp;
    int hd = hp->head_dim, kd = hp->n_head_kv * hd;
    for (int t = 0; t < b->n; t++) {
        kv_layer *L = kv_layer_of(c->kv, b->seqs[t], b->layer);
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (b->replace) kv_make_room(c->kv, L, h, b->pos[t]);
            hkv_status st = kv_insert(c->kv, L, h, b->pos[t], c->k + (size_t)t * kd + h * hd, c->v + (size_t)t * kd + h * hd);
            if (st) {
                snprintf(c->err, sizeof c->err, "KV cache of sequence %d is full at position %d", b->seqs[t], b->pos[t]);
                return st;
            }
        }
    }
    return HKV_OK;
}

static hkv_status layer_forward(hkv_context *c, fwd_batch *b) {
    const hkv_hparams *hp = &c->m->hp;
    const hkv_layer_w *w = &c->m->layers[b->layer];
    int n = b->n, e = hp->n_embd, qd = hp->n_head * hp->head_dim, kd = hp->n_head_kv * hp->head_dim;
    for (int t = 0; t < n; t++) hkv_rmsnorm(c->xb + (size_t)t * e, c->x + (size_t)t * e, w->attn_norm, e, hp->rms_eps);
    hkv_matmul(c->pool, c->q, w->wq.type, w->wq.data, c->xb, qd, e, n);
    hkv_matmul(c->pool, c->k, w->wk.type, w->wk.data, c->xb, kd, e, n);
    hkv_matmul(c->pool, c->v, w->wv.type, w->wv.data, c->xb, kd, e, n);
    qk_prepare(c, w, b);
    hkv_status st = kv_write(c, b);
    if (st) return st;
    attn_job job = {c, b};
    hkv_pool_run(c->pool, attn_item, &job, b->n_items_seq * hp->n_head_kv);
    hkv_matmul(c->pool, c->xb2, w->wo.type, w->wo.data, c->att, e, qd, n);
    for (size_t i = 0; i < (size_t)n * e; i++) c->x[i] += c->xb2[i];
    for (int t = 0; t < n; t++) hkv_rmsnorm(c->xb + (size_t)t * e, c->x + (size_t)t * e, w->ffn_norm, e, hp->rms_eps);
    hkv_matmul(c->pool, c->hb, w->w_gate.type, w->w_gate.data, c->xb, hp->n_ff, e, n);
    hkv_matmul(c->pool, c->hb2, w->w_up.type, w->w_up.data, c->xb, hp->n_ff, e, n);
    for (size_t i = 0; i < (size_t)n * hp->n_ff; i++) {
        float g = c->hb[i];
        c->hb[i] = g / (1.0f + expf(-g)) * c->hb2[i]; /* SwiGLU: silu(gate) * up */
    }
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
        b->layer = l;
        hkv_status st = layer_forward(c, b);
        if (st) return st;
    }
    for (int t = 0; t < b->n; t++) kv_set_newest(c->kv, b->seqs[t], b->pos[t]);
    return HKV_OK;
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
    float *p = realloc(c->logits_all, sizeof(float) * (size_t)n * c->m->hp.n_vocab);
    if (!p) { snprintf(c->err, sizeof c->err, "out of memory for %d rows of logits", n); return HKV_ERR_NOMEM; }
    c->logits_all = p;
    c->logits_all_cap = n;
    return HKV_OK;
}

hkv_status hkv_decode(hkv_context *c, int seq, const int32_t *tokens, int n) {
    if (seq < 0 || seq >= c->n_seq) { snprintf(c->err, sizeof c->err, "sequence %d does not exist (n_seq = %d)", seq, c->n_seq); return HKV_ERR_ARG; }
    if (n <= 0) { snprintf(c->err, sizeof c->err, "nothing to decode (0 tokens)"); return HKV_ERR_ARG; }
    hkv_status st = check_tokens(c, tokens, n);
    if (st) return st;
    if ((long)c->n_past[seq] + n > c->n_ctx) {
        snprintf(c->err, sizeof c->err, "sequence would reach %ld tokens, more than the context length %d",
                 (long)c->n_past[seq] + n, c->n_ctx);
        return HKV_ERR_CONTEXT;
    }
    if (c->p.logits_all && (st = grow_logits_all(c, n))) return st;
    int32_t *pos = c->chunk_pos;
    int *seqs = c->chunk_seq;
    for (int i = 0; i < c->chunk; i++) seqs[i] = seq;
    st = set_capacity(c, capacity_for(c, n < c->chunk ? n : c->chunk));
    for (int done = 0; done < n && !st;) {
        int k = n - done < c->chunk ? n - done : c->chunk;
        for (int i = 0; i < k; i++) pos[i] = c->n_past[seq] + i;
        fwd_batch b = {.tokens = tokens + done, .seqs = seqs, .pos = pos, .n = k,
                       .replace = c->evict_first && k == 1};
        st = forward_chunk(c, &b);
        if (st) {
            /* earlier layers already hold this chunk while n_past did not move: the sequence is no longer
             * consistent, so it starts over (documented in heavykv.h) */
            hkv_seq_reset(c, seq);
            break;
        }
        c->n_past[seq] += k;
        if (c->p.logits_all) output_logits(c, 0, k, c->logits_all + (size_t)done * c->m->hp.n_vocab);
        else if (done + k == n) output_logits(c, k - 1, 1, c->logits_last + (size_t)seq * c->m->hp.n_vocab);
        done += k;
    }
    if (st) return st;
    /* back to the decode footprint; if that allocation fails the larger cache stays, which is still valid */
    set_capacity(c, capacity_for(c, 1));
    if (c->p.logits_all) {
        memcpy(c->logits_last + (size_t)seq * c->m->hp.n_vocab, c->logits_all + (size_t)(n - 1) * c->m->hp.n_vocab,
               sizeof(float) * c->m->hp.n_vocab);
        c->logits_all_n = n;
        c->logits_all_seq = seq;
    }
    if (c->trace) kv_trace_write(c->kv, seq, c->trace, c->p.trace_scores);
    return HKV_OK;
}

hkv_status hkv_decode_batch(hkv_context *c, const int *seqs, const int32_t *tokens, int n) {
    if (n <= 0 || n > c->n_seq || n > c->chunk) {
        snprintf(c->err, sizeof c->err, "batch of %d tokens is invalid (1..%d sequences)", n, c->n_seq);
        return HKV_ERR_ARG;
    }
    hkv_status st = check_tokens(c, tokens, n);
    if (st) return st;
    int32_t pos[4096];
    for (int i = 0; i < n; i++) {
        if (seqs[i] < 0 || seqs[i] >= c->n_seq) { snprintf(c->err, sizeof c->err, "sequence %d does not exist", seqs[i]); return HKV_ERR_ARG; }
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) { snprintf(c->err, sizeof c->err, "sequence %d appears twice in one batch", seqs[i]); return HKV_ERR_ARG; }
        if (c->n_past[seqs[i]] + 1 > c->n_ctx) {
            snprintf(c->err, sizeof c->err, "sequence %d is at the context length %d", seqs[i], c->n_ctx);
            return HKV_ERR_CONTEXT;
        }
        pos[i] = c->n_past[seqs[i]];
    }
    fwd_batch b = {.tokens = tokens, .seqs = seqs, .pos = pos, .n = n, .replace = c->evict_first};
    c->logits_all_n = 0; /* rows of an earlier hkv_decode no longer describe the sequences */
    if ((st = forward_chunk(c, &b))) {
        for (int i = 0; i < n; i++) hkv_seq_reset(c, seqs[i]);
        return st;
    }
    float *rows = c->logits_batch;
    output_logits(c, 0, n, rows);
    for (int i = 0; i < n; i++) {
        c->n_past[seqs[i]]++;
        memcpy(c->logits_last + (size_t)seqs[i] * c->m->hp.n_vocab, rows + (size_t)i * c->m->hp.n_vocab,
               sizeof(float) * c->m->hp.n_vocab);
        if (c->trace) kv_trace_write(c->kv, seqs[i], c->trace, c->p.trace_scores);
    }
    return HKV_OK;
}

const float *hkv_get_logits(hkv_context *c, int seq, int i) {
    if (seq < 0 || seq >= c->n_seq) return NULL;
    if (i < 0) return c->n_past[seq] ? c->logits_last + (size_t)seq * c->m->hp.n_vocab : NULL;
    if (!c->p.logits_all || seq != c->logits_all_seq || i >= c->logits_all_n) return NULL;
    return c->logits_all + (size_t)i * c->m->hp.n_vocab;
}

int hkv_n_past(const hkv_context *c, int seq) { return seq >= 0 && seq < c->n_seq ? c->n_past[seq] : -1; }

void hkv_seq_reset(hkv_context *c, int seq) {
    if (seq < 0 || seq >= c->n_seq) return;
    kv_seq_reset(c->kv, seq);
    c->n_past[seq] = 0;
    if (c->logits_all_seq == seq) c->logits_all_n = 0;
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
    s->meta_bytes = kv->meta_bytes;
    s->occupancy_min = kv->capacity;
    for (int i = 0; i < kv->n_seq * kv->n_layer; i++)
        for (int h = 0; h < kv->n_head_kv; h++) {
            const kv_layer *L = &kv->layers[i];
            s->evictions += L->evictions[h];
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
    }
    return "unknown error";
}

const char *hkv_version(void) { return HKV_VERSION_STRING; }
