/* Bounded KV cache storage (attention over it is attention.c). See kvcache.h for the layout and why slots are kept in
 * position order. */
#include "alloc.h"
#include "kvcache.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kvrow.h"
#include "tensor.h"

static void *xcalloc(size_t n, size_t sz) { return hkv_calloc(n ? n : 1, sz); }

/* Bytes held, documented in the README: K/V = 2 * capacity * row_bytes per (seq, layer, head); metadata =
 * per slot (position, order entry, free-stack entry [real drop only], policy state floats) + per head 16 bytes. */
static void kv_account(kv_cache *kv) {
    uint64_t n_alloc = 0; /* lazy caches: only sequences holding storage count */
    for (int s = 0; s < kv->n_seq; s++) n_alloc += kv_seq_has_storage(kv, s);
    uint64_t heads = n_alloc * kv->n_layer * kv->n_head_kv, all = (uint64_t)kv->n_seq * kv->n_layer * kv->n_head_kv;
    uint64_t per_slot = (kv->simulate ? 2 : 3) * sizeof(int32_t) + sizeof(float) * (uint64_t)kv->ops->state_floats;
    kv->kv_bytes = heads * 2 * (uint64_t)kv->capacity * kv->row_bytes;
    kv->meta_bytes = heads * (uint64_t)kv->capacity * per_slot + all * (2 * sizeof(int32_t) + sizeof(uint64_t));
}

static void slots_free(kv_layer *L) {
    hkv_free(L->k); hkv_free(L->v); hkv_free(L->pos); hkv_free(L->order); hkv_free(L->free_stack); hkv_free(L->pstate);
}

/* The per-slot arrays of one (sequence, layer) for `cap` slots per head; on failure nothing stays allocated. */
static int slots_alloc(const kv_cache *kv, kv_layer *L, int cap) {
    size_t hc = (size_t)kv->n_head_kv * cap;
    int sf = kv->ops->state_floats;
    L->k = xcalloc(hc, kv->row_bytes);
    L->v = xcalloc(hc, kv->row_bytes);
    L->pos = xcalloc(hc, sizeof(int32_t));
    L->order = xcalloc(hc, sizeof(int32_t));
    L->free_stack = kv->simulate ? NULL : xcalloc(hc, sizeof(int32_t));
    L->pstate = sf ? xcalloc(hc * sf, sizeof(float)) : NULL;
    if (L->k && L->v && L->pos && L->order && (kv->simulate || L->free_stack) && (!sf || L->pstate)) return 1;
    slots_free(L);
    L->k = L->v = NULL;
    L->pos = L->order = L->free_stack = NULL;
    L->pstate = NULL;
    return 0;
}

/* Lazy caches (kv->lazy) allocate the slot arrays of a sequence at its first write (kv_seq_alloc). */
static int layer_alloc(kv_cache *kv, kv_layer *L) {
    L->n_live = xcalloc(kv->n_head_kv, sizeof(int32_t));
    L->n_free = xcalloc(kv->n_head_kv, sizeof(int32_t));
    L->evictions = xcalloc(kv->n_head_kv, sizeof(uint64_t));
    return L->n_live && L->n_free && L->evictions && (kv->lazy || slots_alloc(kv, L, kv->capacity));
}

static void layer_reset(kv_cache *kv, kv_layer *L) {
    for (int h = 0; h < kv->n_head_kv; h++) {
        L->n_live[h] = 0;
        L->n_free[h] = 0;
        if (!L->pos) continue; /* lazy sequence without storage: empty, and nothing is free */
        int32_t *pos = L->pos + (size_t)h * kv->capacity;
        for (int s = 0; s < kv->capacity; s++) pos[s] = -1;
        if (!kv->simulate) {
            /* free stack pops slot 0 first, so an unbounded run fills slots in position order */
            int32_t *fs = L->free_stack + (size_t)h * kv->capacity;
            for (int s = 0; s < kv->capacity; s++) fs[s] = kv->capacity - 1 - s;
            L->n_free[h] = kv->capacity;
        }
    }
}

hkv_status kv_new(kv_cache **out, int n_seq, int n_layer, int n_head_kv, int head_dim, int capacity, int n_ctx,
                  hkv_kv_type type, int simulate, const hkv_policy_ops *ops, const hkv_policy_cfg *cfg_layers,
                  char *err, size_t errlen) {
    return kv_new_lazy(out, n_seq, n_layer, n_head_kv, head_dim, capacity, n_ctx, type, simulate, 0, ops, cfg_layers,
                       err, errlen);
}

hkv_status kv_new_lazy(kv_cache **out, int n_seq, int n_layer, int n_head_kv, int head_dim, int capacity, int n_ctx,
                       hkv_kv_type type, int simulate, int lazy, const hkv_policy_ops *ops,
                       const hkv_policy_cfg *cfg_layers, char *err, size_t errlen) {
    *out = NULL;
    kv_cache *kv = hkv_calloc(1, sizeof *kv);
    if (!kv) { snprintf(err, errlen, "out of memory allocating the KV cache"); return HKV_ERR_NOMEM; }
    kv->n_seq = n_seq; kv->n_layer = n_layer; kv->n_head_kv = n_head_kv; kv->head_dim = head_dim;
    kv->n_ctx = n_ctx;
    kv->capacity = simulate ? n_ctx : capacity;
    kv->type = type;
    kv->row_bytes = kvrow_bytes(type, head_dim);
    if (!kv->row_bytes || head_dim > 1024) {
        const char *tn = kvrow_type_name(type);
        if (!tn) snprintf(err, errlen, "unknown K/V type %d", (int)type);
        else if (head_dim > 1024) snprintf(err, errlen, "head_dim %d is larger than the 1024 the K/V cache supports", head_dim);
        else snprintf(err, errlen, "K/V type %s needs head_dim to be a multiple of 8 (the model's is %d)", tn, head_dim);
        hkv_free(kv);
        return HKV_ERR_UNSUPPORTED;
    }
    kv->simulate = simulate;
    kv->lazy = lazy;
    kv->ops = ops;
    kv->cfg = hkv_malloc(sizeof(hkv_policy_cfg) * (size_t)n_layer);
    if (kv->cfg) memcpy(kv->cfg, cfg_layers, sizeof(hkv_policy_cfg) * (size_t)n_layer);
    kv->layers = hkv_calloc((size_t)n_seq * n_layer, sizeof(kv_layer));
    kv->newest = hkv_calloc((size_t)n_seq, sizeof(int32_t));
    kv->snap = hkv_calloc((size_t)n_seq, sizeof(kv_snap));
    int ok = kv->cfg && kv->layers && kv->newest && kv->snap;
    for (int i = 0; ok && i < n_seq * n_layer; i++) ok = layer_alloc(kv, &kv->layers[i]);
    if (!ok) {
        kv_free(kv);
        snprintf(err, errlen, "out of memory allocating the KV cache (%d slots per head)", capacity);
        return HKV_ERR_NOMEM;
    }
    for (int s = 0; s < n_seq; s++) kv_seq_reset(kv, s);
    kv_account(kv);
    *out = kv;
    return HKV_OK;
}

static void snap_free(kv_snap *sn) {
    hkv_free(sn->pos); hkv_free(sn->order); hkv_free(sn->free_stack); hkv_free(sn->pstate); hkv_free(sn->saved);
    hkv_free(sn->n_live); hkv_free(sn->n_free); hkv_free(sn->evictions); hkv_free(sn->j_idx); hkv_free(sn->j_rows);
    memset(sn, 0, sizeof *sn);
}

void kv_free(kv_cache *kv) {
    if (!kv) return;
    for (int s = 0; kv->snap && s < kv->n_seq; s++) snap_free(&kv->snap[s]);
    hkv_free(kv->snap);
    for (int i = 0; kv->layers && i < kv->n_seq * kv->n_layer; i++) {
        kv_layer *L = &kv->layers[i];
        slots_free(L);
        hkv_free(L->n_live); hkv_free(L->n_free); hkv_free(L->evictions);
    }
    hkv_free(kv->layers);
    hkv_free(kv->newest);
    hkv_free(kv->cfg);
    hkv_free(kv->rope);
    hkv_free(kv);
}

void kv_seq_reset(kv_cache *kv, int seq) {
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *L = kv_layer_of(kv, seq, l);
        layer_reset(kv, L);
        memset(L->evictions, 0, sizeof(uint64_t) * kv->n_head_kv);
    }
    kv->newest[seq] = -1;
}

hkv_status kv_seq_alloc(kv_cache *kv, int seq) {
    if (kv_seq_has_storage(kv, seq)) return HKV_OK;
    for (int l = 0; l < kv->n_layer; l++)
        if (!slots_alloc(kv, kv_layer_of(kv, seq, l), kv->capacity)) {
            kv_seq_release(kv, seq);
            return HKV_ERR_NOMEM;
        }
    kv_seq_reset(kv, seq);
    kv_account(kv);
    return HKV_OK;
}

void kv_seq_release(kv_cache *kv, int seq) {
    snap_free(&kv->snap[seq]); /* its undo record too (never active between calls) */
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *L = kv_layer_of(kv, seq, l);
        slots_free(L);
        L->k = L->v = NULL;
        L->pos = L->order = L->free_stack = NULL;
        L->pstate = NULL;
    }
    kv_seq_reset(kv, seq);
    kv_account(kv);
}

void kv_set_newest(kv_cache *kv, int seq, int32_t pos) { kv->newest[seq] = pos; }

/* The policy's view of head h. newest = the newest position written to this head so far. */
static hkv_head_view head_view(const kv_cache *kv, kv_layer *L, int h) {
    hkv_head_view v;
    if (!L->order) { /* a lazy sequence without storage is empty */
        memset(&v, 0, sizeof v);
        v.newest = -1;
        return v;
    }
    size_t base = (size_t)h * kv->capacity;
    v.slots = L->order + base;
    v.pos = L->pos + base;
    v.n = L->n_live[h];
    v.newest = v.n ? v.pos[v.slots[v.n - 1]] : -1;
    v.state = L->pstate ? L->pstate + base * kv->ops->state_floats : NULL;
    return v;
}

/* Give back a slot that left the live list. Real drop frees it; simulation only masks it. */
static void release_slot(kv_cache *kv, kv_layer *L, int h, int32_t slot) {
    if (!kv->simulate) {
        L->pos[(size_t)h * kv->capacity + slot] = -1;
        L->free_stack[(size_t)h * kv->capacity + L->n_free[h]++] = slot;
    } else {
        /* masked: keep pos so the dense scan knows the slot is occupied, mark it with the evicted flag */
        L->pos[(size_t)h * kv->capacity + slot] = -2 - L->pos[(size_t)h * kv->capacity + slot];
    }
    L->evictions[h]++;
}

/* Remove live entry j of head h (the policy's choice). */
static void evict_at(kv_cache *kv, kv_layer *L, int h, int j) {
    int32_t *order = L->order + (size_t)h * kv->capacity;
    int32_t slot = order[j];
    memmove(order + j, order + j + 1, sizeof(int32_t) * (size_t)(L->n_live[h] - j - 1));
    L->n_live[h]--;
    release_slot(kv, L, h, slot);
}

/* Evict one token chosen by the policy; returns 0 if the policy protects everything. */
static int evict_one(kv_cache *kv, kv_layer *L, int h) {
    hkv_head_view v = head_view(kv, L, h);
    int j = kv->ops->victim ? kv->ops->victim(kv_cfg_of(kv, L), &v) : -1;
    if (j < 0 || j >= v.n) return 0;
    evict_at(kv, L, h, j);
    return 1;
}

void kv_make_room(kv_cache *kv, kv_layer *L, int h, int32_t incoming) {
    if (L->n_live[h] < kv_cfg_of(kv, L)->b.total || !kv->ops->victim) return;
    /* the token about to be written counts as recent, as in the append order; measuring the window from the
     * previous token protected recent + sink old tokens, i.e. everything when heavy = 0, and the write failed */
    hkv_head_view v = head_view(kv, L, h);
    v.newest = incoming;
    int j = kv->ops->victim(kv_cfg_of(kv, L), &v);
    if (j >= 0 && j < v.n) evict_at(kv, L, h, j);
}

/* The batch hook: the policy marks the survivors, the order list is compacted in one pass (O(n) here instead
 * of O(n) per victim). Returns 0 when the policy declined or memory ran out: the caller falls back. */
static int batch_trim(kv_cache *kv, kv_layer *L, int h, int target) {
    hkv_head_view v = head_view(kv, L, h);
    uint8_t *keep = hkv_malloc((size_t)v.n);
    if (!keep) return 0;
    int kept = kv->ops->select(kv_cfg_of(kv, L), &v, target, keep);
    if (kept >= 0) {
        int32_t *order = L->order + (size_t)h * kv->capacity;
        int o = 0, n = v.n;
        for (int j = 0; j < n; j++) {
            if (keep[j]) order[o++] = order[j];
            else release_slot(kv, L, h, order[j]);
        }
        L->n_live[h] = o;
    }
    hkv_free(keep);
    return kept >= 0;
}

void kv_trim(kv_cache *kv, kv_layer *L, int h, int n_new) {
    int target = kv_cfg_of(kv, L)->b.total;
    if (L->n_live[h] <= target) return;
    if (n_new > 1 && kv->ops->select && batch_trim(kv, L, h, target)) return;
    while (L->n_live[h] > target)
        if (!evict_one(kv, L, h)) break;
}

/* Rows are converted (quantized) once, when written. */
static void store_vec(const kv_cache *kv, void *base, size_t idx, const float *x) {
    kvrow_store(kv->type, kv->head_dim, x, (char *)base + idx * kv->row_bytes);
}

/* Before slot `slot` of head h is overwritten: if a snapshot of this sequence is active and the slot held a
 * token when it was taken, keep that token's K/V row once. */
static void snap_save_row(kv_cache *kv, kv_layer *L, int h, int32_t slot) {
    if (kv->simulate) return; /* slot == position: a write never replaces a kept row */
    size_t li = (size_t)(L - kv->layers);
    kv_snap *sn = &kv->snap[li / kv->n_layer];
    if (!sn->active) return;
    size_t idx = ((li % kv->n_layer) * kv->n_head_kv + h) * (size_t)sn->cap + slot;
    if (sn->pos[idx] < 0 || sn->saved[idx]) return;
    if (sn->n_rows == sn->max_rows) { sn->overflow = 1; return; }
    size_t rb = kv->row_bytes, src = ((size_t)h * kv->capacity + slot) * rb;
    unsigned char *dst = sn->j_rows + (size_t)sn->n_rows * 2 * rb;
    memcpy(dst, (char *)L->k + src, rb);
    memcpy(dst + rb, (char *)L->v + src, rb);
    sn->j_idx[sn->n_rows++] = (int32_t)idx;
    sn->saved[idx] = 1;
}

hkv_status kv_insert(kv_cache *kv, kv_layer *L, int h, int32_t pos, const float *k, const float *v) {
    size_t base = (size_t)h * kv->capacity;
    int32_t slot;
    if (kv->simulate) {
        if (pos < 0 || pos >= kv->capacity) return HKV_ERR_CONTEXT;
        slot = pos;
    } else {
        if (L->n_free[h] == 0) return HKV_ERR_STATE;
        slot = L->free_stack[base + --L->n_free[h]];
    }
    snap_save_row(kv, L, h, slot);
    store_vec(kv, L->k, base + slot, k);
    store_vec(kv, L->v, base + slot, v);
    L->pos[base + slot] = pos;
    int32_t *order = L->order + base;
    /* tokens arrive in position order, so the new one goes last */
    order[L->n_live[h]++] = slot;
    if (kv->ops->on_insert) {
        hkv_head_view hv = head_view(kv, L, h);
        kv->ops->on_insert(kv_cfg_of(kv, L), &hv, slot);
    } else if (kv->ops->state_floats) {    /* default: a new token starts with zero state */
        memset(L->pstate + (base + slot) * kv->ops->state_floats, 0, sizeof(float) * kv->ops->state_floats);
    }
    return HKV_OK;
}

/* Slots visible to query position qpos, in ascending position. Real drop: the order list (a prefix of it,
 * since it is sorted). Simulation: a dense scan of positions 0..qpos skipping masked/free ones, the way a
 * masked full cache computes it. Both yield the same sequence. */
int kv_visible_slots(const kv_cache *kv, kv_layer *L, int h, int32_t qpos, int32_t *vis) {
    size_t base = (size_t)h * kv->capacity;
    int n = 0;
    if (kv->simulate) {
        const int32_t *pos = L->pos + base;
        int32_t lim = qpos < kv->capacity - 1 ? qpos : kv->capacity - 1;
        for (int32_t s = 0; s <= lim; s++)
            if (pos[s] >= 0) vis[n++] = s;
    } else {
        const int32_t *order = L->order + base, *pos = L->pos + base;
        int nl = L->n_live[h];
        while (n < nl && pos[order[n]] <= qpos) { vis[n] = order[n]; n++; }
    }
    return n;
}

/* Attention reports the group-aggregated probabilities of one query; the policy updates its state. */
void kv_observe(kv_cache *kv, kv_layer *L, int h, const float *probs, int n_visible, int32_t qpos) {
    if (!kv->ops->observe) return;
    hkv_head_view v = head_view(kv, L, h);
    kv->ops->observe(kv_cfg_of(kv, L), &v, probs, n_visible, qpos);
}

int kv_positions(const kv_cache *kv, int seq, int layer, int h, int32_t *out, int max) {
    kv_layer *L = &kv->layers[seq * kv->n_layer + layer];
    int n = L->n_live[h];
    if (n > max) return -n;
    if (!n) return 0; /* also a lazy sequence without storage */
    const int32_t *order = L->order + (size_t)h * kv->capacity, *pos = L->pos + (size_t)h * kv->capacity;
    for (int j = 0; j < n; j++) out[j] = pos[order[j]];
    return n;
}

int kv_scores(const kv_cache *kv, int seq, int layer, int h, float *out, int max) {
    kv_layer *L = &kv->layers[seq * kv->n_layer + layer];
    hkv_head_view v = head_view(kv, L, h);
    if (v.n > max) return -v.n;
    for (int j = 0; j < v.n; j++) out[j] = kv->ops->score ? kv->ops->score(kv_cfg_of(kv, L), &v, j) : 0.0f;
    return v.n;
}

/* "layers" (kept positions) or "scores" (the policy's score of each) as [layer][head][...] JSON arrays. */
static void trace_array(const kv_cache *kv, int seq, FILE *f, int scores) {
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *L = &kv->layers[seq * kv->n_layer + l];
        fputs(l ? ",[" : "[", f);
        for (int h = 0; h < kv->n_head_kv; h++) {
            hkv_head_view v = head_view(kv, L, h);
            fputs(h ? ",[" : "[", f);
            for (int j = 0; j < v.n; j++) {
                if (j) fputc(',', f);
                if (!scores) fprintf(f, "%d", v.pos[v.slots[j]]);
                else fprintf(f, "%.6g", kv->ops->score ? (double)kv->ops->score(kv_cfg_of(kv, L), &v, j) : 0.0);
            }
            fputc(']', f);
        }
        fputc(']', f);
    }
}

void kv_trace_write(const kv_cache *kv, int seq, FILE *f, int with_scores) {
    fprintf(f, "{\"seq\":%d,\"pos\":%d,\"layers\":[", seq, kv->newest[seq]);
    trace_array(kv, seq, f, 0);
    if (with_scores) {
        fputs("],\"scores\":[", f);
        trace_array(kv, seq, f, 1);
    }
    fputs("]}\n", f);
}

/* Move one (sequence, layer) into the slot arrays N (already allocated for `cap` slots per head): live slots are
 * copied to slots 0..n-1 in position order, the old arrays are freed. Used between a multi-token prefill chunk
 * (which needs budget + chunk slots) and the decode steps (budget + 1), so the memory held during generation
 * is the budget, not the prompt. Only real-drop caches resize. Cannot fail. */
static void layer_move(kv_cache *kv, kv_layer *L, kv_layer *N, int old, int cap) {
    int sf = kv->ops->state_floats;
    for (int h = 0; h < kv->n_head_kv; h++) {
        size_t ob = (size_t)h * old, nb = (size_t)h * cap;
        int n = L->n_live[h];
        for (int j = 0; j < n; j++) {
            int32_t s = L->order[ob + j];
            size_t rb = kv->row_bytes;
            memcpy((char *)N->k + (nb + j) * rb, (char *)L->k + (ob + s) * rb, rb);
            memcpy((char *)N->v + (nb + j) * rb, (char *)L->v + (ob + s) * rb, rb);
            if (sf) memcpy(N->pstate + (nb + j) * sf, L->pstate + (ob + s) * sf, sizeof(float) * sf);
            N->pos[nb + j] = L->pos[ob + s];
            N->order[nb + j] = j;
        }
        for (int s = n; s < cap; s++) N->pos[nb + s] = -1;
        L->n_free[h] = 0;
        for (int s = cap - 1; s >= n; s--) N->free_stack[nb + L->n_free[h]++] = s;
    }
    slots_free(L);
    L->k = N->k; L->v = N->v; L->pos = N->pos; L->order = N->order; L->free_stack = N->free_stack;
    L->pstate = N->pstate;
}

/* All new arrays are allocated before any layer moves, so a failure changes nothing (an earlier version moved
 * layers one by one and its rollback could itself fail half-way). */
hkv_status kv_resize(kv_cache *kv, int capacity) {
    if (kv->simulate || capacity == kv->capacity) return HKV_OK;
    if (capacity < 1 || capacity > kv->n_ctx) return HKV_ERR_ARG;
    int nl = kv->n_seq * kv->n_layer;
    for (int i = 0; i < nl; i++)
        for (int h = 0; h < kv->n_head_kv; h++)
            if (kv->layers[i].n_live[h] > capacity) return HKV_ERR_STATE;
    kv_layer *N = hkv_calloc((size_t)nl, sizeof *N);
    if (!N) return HKV_ERR_NOMEM;
    int ok = 1, done = 0;
    /* a lazy sequence without storage stays without (it is allocated at the new capacity when used) */
    for (; ok && done < nl; done++) ok = !kv->layers[done].k || slots_alloc(kv, &N[done], capacity);
    if (!ok) {
        for (int i = 0; i < done - 1; i++) slots_free(&N[i]);
        hkv_free(N);
        return HKV_ERR_NOMEM;
    }
    for (int i = 0; i < nl; i++)
        if (kv->layers[i].k) layer_move(kv, &kv->layers[i], &N[i], kv->capacity, capacity);
    hkv_free(N);
    kv->capacity = capacity;
    kv_account(kv);
    return HKV_OK;
}

/* ---------------------------------------------------------------- rollback, copy, serialization */

/* Grow *p to n elements of size sz (contents not kept). */
static int grow(void **p, size_t n, size_t sz) {
    void *q = hkv_realloc(*p, (n ? n : 1) * sz);
    if (!q) return 0;
    *p = q;
    return 1;
}

hkv_status kv_snap_begin(kv_cache *kv, int seq, int n_tok) {
    kv_snap *sn = &kv->snap[seq];
    int nh = kv->n_head_kv, sf = kv->ops->state_floats, cap = kv->capacity;
    size_t heads = (size_t)kv->n_layer * nh, slots = heads * cap;
    /* rows that can be overwritten: per head, no more than the tokens written and the tokens it holds now */
    long rows = 0;
    for (int l = 0; l < kv->n_layer; l++)
        for (int h = 0; h < nh; h++) {
            int live = kv_layer_of(kv, seq, l)->n_live[h];
            rows += live < n_tok ? live : n_tok;
        }
    if (kv->simulate) rows = 0;
    if (slots > sn->slots_alloc) {
        if (!grow((void **)&sn->pos, slots, 4) || !grow((void **)&sn->order, slots, 4) ||
            !grow((void **)&sn->free_stack, slots, 4) || !grow((void **)&sn->saved, slots, 1) ||
            (sf && !grow((void **)&sn->pstate, slots * sf, sizeof(float))))
            return HKV_ERR_NOMEM;
        sn->slots_alloc = slots;
    }
    if ((!sn->n_live && !grow((void **)&sn->n_live, heads, 4)) || (!sn->n_free && !grow((void **)&sn->n_free, heads, 4)) ||
        (!sn->evictions && !grow((void **)&sn->evictions, heads, 8)))
        return HKV_ERR_NOMEM;
    if (rows > sn->rows_alloc) {
        if (!grow((void **)&sn->j_idx, (size_t)rows, 4) ||
            !grow((void **)&sn->j_rows, (size_t)rows, 2 * kv->row_bytes))
            return HKV_ERR_NOMEM;
        sn->rows_alloc = (int)rows;
    }
    sn->cap = cap;
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *L = kv_layer_of(kv, seq, l);
        size_t o = (size_t)l * nh * cap;
        memcpy(sn->pos + o, L->pos, sizeof(int32_t) * nh * cap);
        memcpy(sn->order + o, L->order, sizeof(int32_t) * nh * cap);
        if (!kv->simulate) memcpy(sn->free_stack + o, L->free_stack, sizeof(int32_t) * nh * cap);
        if (sf) memcpy(sn->pstate + o * sf, L->pstate, sizeof(float) * nh * cap * sf);
        memcpy(sn->n_live + (size_t)l * nh, L->n_live, sizeof(int32_t) * nh);
        memcpy(sn->n_free + (size_t)l * nh, L->n_free, sizeof(int32_t) * nh);
        memcpy(sn->evictions + (size_t)l * nh, L->evictions, sizeof(uint64_t) * nh);
    }
    memset(sn->saved, 0, slots);
    sn->newest = kv->newest[seq];
    sn->n_rows = 0;
    sn->max_rows = (int)rows;
    sn->overflow = 0;
    sn->active = 1;
    return HKV_OK;
}

void kv_snap_end(kv_cache *kv, int seq) { kv->snap[seq].active = 0; }

void kv_snap_restore(kv_cache *kv, int seq) {
    kv_snap *sn = &kv->snap[seq];
    if (!sn->active) return;
    sn->active = 0;
    if (sn->overflow || sn->cap != kv->capacity) { kv_seq_reset(kv, seq); return; } /* defensive, see kv_snap */
    int nh = kv->n_head_kv, sf = kv->ops->state_floats, cap = kv->capacity;
    size_t rb = kv->row_bytes;
    for (int r = sn->n_rows - 1; r >= 0; r--) {
        size_t idx = (size_t)sn->j_idx[r], lh = idx / cap;
        kv_layer *L = kv_layer_of(kv, seq, (int)(lh / nh));
        size_t at = ((lh % nh) * cap + idx % cap) * rb;
        memcpy((char *)L->k + at, sn->j_rows + (size_t)r * 2 * rb, rb);
        memcpy((char *)L->v + at, sn->j_rows + (size_t)r * 2 * rb + rb, rb);
    }
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *L = kv_layer_of(kv, seq, l);
        size_t o = (size_t)l * nh * cap;
        memcpy(L->pos, sn->pos + o, sizeof(int32_t) * nh * cap);
        memcpy(L->order, sn->order + o, sizeof(int32_t) * nh * cap);
        if (!kv->simulate) memcpy(L->free_stack, sn->free_stack + o, sizeof(int32_t) * nh * cap);
        if (sf) memcpy(L->pstate, sn->pstate + o * sf, sizeof(float) * nh * cap * sf);
        memcpy(L->n_live, sn->n_live + (size_t)l * nh, sizeof(int32_t) * nh);
        memcpy(L->n_free, sn->n_free + (size_t)l * nh, sizeof(int32_t) * nh);
        memcpy(L->evictions, sn->evictions + (size_t)l * nh, sizeof(uint64_t) * nh);
    }
    kv->newest[seq] = sn->newest;
}

hkv_status kv_seq_copy(kv_cache *kv, int src, int dst) {
    if (src == dst) return HKV_OK;
    if (!kv_seq_has_storage(kv, src)) { /* lazy and empty: dst becomes empty too */
        kv_seq_reset(kv, dst);
        return HKV_OK;
    }
    if (kv_seq_alloc(kv, dst)) return HKV_ERR_NOMEM;
    size_t hc = (size_t)kv->n_head_kv * kv->capacity;
    int nh = kv->n_head_kv, sf = kv->ops->state_floats;
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *S = kv_layer_of(kv, src, l), *D = kv_layer_of(kv, dst, l);
        memcpy(D->k, S->k, hc * kv->row_bytes);
        memcpy(D->v, S->v, hc * kv->row_bytes);
        memcpy(D->pos, S->pos, hc * sizeof(int32_t));
        memcpy(D->order, S->order, hc * sizeof(int32_t));
        if (!kv->simulate) memcpy(D->free_stack, S->free_stack, hc * sizeof(int32_t));
        if (sf) memcpy(D->pstate, S->pstate, hc * sf * sizeof(float));
        memcpy(D->n_live, S->n_live, nh * sizeof(int32_t));
        memcpy(D->n_free, S->n_free, nh * sizeof(int32_t));
        memcpy(D->evictions, S->evictions, nh * sizeof(uint64_t));
    }
    kv->newest[dst] = kv->newest[src];
    return HKV_OK;
}

/* Per (layer, head): int32 n_live, uint64 evictions, then n_live records in ascending position:
 * int32 position, K row, V row (head_dim elements of the cache type), state_floats floats. */
hkv_status kv_seq_write(const kv_cache *kv, int seq, FILE *f) {
    size_t rb = kv->row_bytes;
    int sf = kv->ops->state_floats, ok = 1;
    for (int l = 0; l < kv->n_layer && ok; l++) {
        kv_layer *L = &kv->layers[seq * kv->n_layer + l];
        for (int h = 0; h < kv->n_head_kv && ok; h++) {
            size_t base = (size_t)h * kv->capacity;
            int32_t n = L->n_live[h];
            ok &= fwrite(&n, 4, 1, f) == 1 && fwrite(&L->evictions[h], 8, 1, f) == 1;
            for (int j = 0; j < n && ok; j++) {
                size_t s = base + L->order[base + j];
                ok &= fwrite(&L->pos[s], 4, 1, f) == 1 && fwrite((char *)L->k + s * rb, rb, 1, f) == 1 &&
                      fwrite((char *)L->v + s * rb, rb, 1, f) == 1 &&
                      (!sf || fwrite(L->pstate + s * sf, sizeof(float) * sf, 1, f) == 1);
            }
        }
    }
    return ok ? HKV_OK : HKV_ERR_IO;
}

/* Pass 1 (apply = 0) checks the whole record, pass 2 writes it; only pass 1 can fail. */
static hkv_status seq_read_pass(kv_cache *kv, int seq, const unsigned char *buf, size_t len, size_t *used,
                                int apply, char *err, size_t errlen) {
    size_t rb = kv->row_bytes, off = 0;
    int sf = kv->ops->state_floats, cap = kv->capacity;
    size_t rec = 4 + 2 * rb + sizeof(float) * sf;
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *L = kv_layer_of(kv, seq, l);
        if (apply) layer_reset(kv, L);
        for (int h = 0; h < kv->n_head_kv; h++) {
            int32_t n;
            uint64_t ev;
            if (len - off < 12) { snprintf(err, errlen, "state file is truncated (layer %d, head %d)", l, h); return HKV_ERR_FORMAT; }
            memcpy(&n, buf + off, 4);
            memcpy(&ev, buf + off + 4, 8);
            off += 12;
            if (n < 0 || n > cap) {
                snprintf(err, errlen, "state file holds %d tokens for layer %d head %d; this context has %d slots", n, l, h, cap);
                return HKV_ERR_FORMAT;
            }
            if ((len - off) / rec < (size_t)n) { snprintf(err, errlen, "state file is truncated (layer %d, head %d)", l, h); return HKV_ERR_FORMAT; }
            size_t base = (size_t)h * cap;
            int32_t prev = -1;
            for (int j = 0; j < n; j++, off += rec) {
                int32_t p;
                memcpy(&p, buf + off, 4);
                if (p <= prev || p >= kv->n_ctx) {
                    snprintf(err, errlen, "state file has position %d out of order or outside the context (layer %d head %d)", p, l, h);
                    return HKV_ERR_FORMAT;
                }
                prev = p;
                if (!apply) continue;
                int32_t s = kv->simulate ? p : j;  /* simulation: slot == position; real drop: packed */
                memcpy((char *)L->k + (base + s) * rb, buf + off + 4, rb);
                memcpy((char *)L->v + (base + s) * rb, buf + off + 4 + rb, rb);
                if (sf) memcpy(L->pstate + (base + s) * sf, buf + off + 4 + 2 * rb, sizeof(float) * sf);
                L->pos[base + s] = p;
                L->order[base + j] = s;
            }
            if (!apply) continue;
            L->n_live[h] = n;
            L->evictions[h] = ev;
            if (!kv->simulate) {
                L->n_free[h] = 0;
                for (int s = cap - 1; s >= n; s--) L->free_stack[base + L->n_free[h]++] = s;
            }
        }
    }
    *used = off;
    return HKV_OK;
}

hkv_status kv_seq_read(kv_cache *kv, int seq, const unsigned char *buf, size_t len, size_t *used, char *err, size_t errlen) {
    hkv_status st = seq_read_pass(kv, seq, buf, len, used, 0, err, errlen);
    if (st) return st;
    if (kv_seq_alloc(kv, seq)) { snprintf(err, errlen, "out of memory for the sequence's K/V"); return HKV_ERR_NOMEM; }
    return seq_read_pass(kv, seq, buf, len, used, 1, err, errlen);
}
