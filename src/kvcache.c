/* Bounded KV cache storage (attention over it is attention.c). See kvcache.h for the layout and why slots are kept in
 * position order. */
#include "kvcache.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "tensor.h"

static void *xcalloc(size_t n, size_t sz) { return calloc(n ? n : 1, sz); }

/* Bytes held, documented in the README: K/V = 2 * capacity * head_dim * elt per (seq, layer, head); metadata =
 * per slot (position, order entry, free-stack entry [real drop only], policy state floats) + per head 16 bytes. */
static void kv_account(kv_cache *kv) {
    uint64_t heads = (uint64_t)kv->n_seq * kv->n_layer * kv->n_head_kv;
    uint64_t per_slot = (kv->simulate ? 2 : 3) * sizeof(int32_t) + sizeof(float) * (uint64_t)kv->ops->state_floats;
    kv->kv_bytes = heads * 2 * (uint64_t)kv->capacity * kv->head_dim * kv->elt;
    kv->meta_bytes = heads * ((uint64_t)kv->capacity * per_slot + 2 * sizeof(int32_t) + sizeof(uint64_t));
}

static void slots_free(kv_layer *L) {
    free(L->k); free(L->v); free(L->pos); free(L->order); free(L->free_stack); free(L->pstate);
}

/* The per-slot arrays of one (sequence, layer) for `cap` slots per head; on failure nothing stays allocated. */
static int slots_alloc(const kv_cache *kv, kv_layer *L, int cap) {
    size_t hc = (size_t)kv->n_head_kv * cap;
    int sf = kv->ops->state_floats;
    L->k = xcalloc(hc * kv->head_dim, kv->elt);
    L->v = xcalloc(hc * kv->head_dim, kv->elt);
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

static int layer_alloc(kv_cache *kv, kv_layer *L) {
    L->n_live = xcalloc(kv->n_head_kv, sizeof(int32_t));
    L->n_free = xcalloc(kv->n_head_kv, sizeof(int32_t));
    L->evictions = xcalloc(kv->n_head_kv, sizeof(uint64_t));
    return L->n_live && L->n_free && L->evictions && slots_alloc(kv, L, kv->capacity);
}

static void layer_reset(kv_cache *kv, kv_layer *L) {
    for (int h = 0; h < kv->n_head_kv; h++) {
        int32_t *pos = L->pos + (size_t)h * kv->capacity;
        for (int s = 0; s < kv->capacity; s++) pos[s] = -1;
        L->n_live[h] = 0;
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
    *out = NULL;
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) { snprintf(err, errlen, "out of memory allocating the KV cache"); return HKV_ERR_NOMEM; }
    kv->n_seq = n_seq; kv->n_layer = n_layer; kv->n_head_kv = n_head_kv; kv->head_dim = head_dim;
    kv->n_ctx = n_ctx;
    kv->capacity = simulate ? n_ctx : capacity;
    kv->type = type;
    kv->elt = type == HKV_KV_F32 ? 4 : 2;
    kv->simulate = simulate;
    kv->ops = ops;
    kv->cfg = malloc(sizeof(hkv_policy_cfg) * (size_t)n_layer);
    if (kv->cfg) memcpy(kv->cfg, cfg_layers, sizeof(hkv_policy_cfg) * (size_t)n_layer);
    kv->layers = calloc((size_t)n_seq * n_layer, sizeof(kv_layer));
    kv->newest = calloc((size_t)n_seq, sizeof(int32_t));
    int ok = kv->cfg && kv->layers && kv->newest;
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

void kv_free(kv_cache *kv) {
    if (!kv) return;
    for (int i = 0; kv->layers && i < kv->n_seq * kv->n_layer; i++) {
        kv_layer *L = &kv->layers[i];
        slots_free(L);
        free(L->n_live); free(L->n_free); free(L->evictions);
    }
    free(kv->layers);
    free(kv->newest);
    free(kv->cfg);
    free(kv);
}

void kv_seq_reset(kv_cache *kv, int seq) {
    for (int l = 0; l < kv->n_layer; l++) {
        kv_layer *L = kv_layer_of(kv, seq, l);
        layer_reset(kv, L);
        memset(L->evictions, 0, sizeof(uint64_t) * kv->n_head_kv);
    }
    kv->newest[seq] = -1;
}

void kv_set_newest(kv_cache *kv, int seq, int32_t pos) { kv->newest[seq] = pos; }

/* The policy's view of head h. newest = the newest position written to this head so far. */
static hkv_head_view head_view(const kv_cache *kv, kv_layer *L, int h) {
    hkv_head_view v;
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
    uint8_t *keep = malloc((size_t)v.n);
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
    free(keep);
    return kept >= 0;
}

void kv_trim(kv_cache *kv, kv_layer *L, int h, int n_new) {
    int target = kv_cfg_of(kv, L)->b.total;
    if (L->n_live[h] <= target) return;
    if (n_new > 1 && kv->ops->select && batch_trim(kv, L, h, target)) return;
    while (L->n_live[h] > target)
        if (!evict_one(kv, L, h)) break;
}

static void store_vec(const kv_cache *kv, void *base, size_t idx, const float *x) {
    if (kv->type == HKV_KV_F32) {
        memcpy((float *)base + idx * kv->head_dim, x, sizeof(float) * kv->head_dim);
    } else {
        hkv_quantize_row(HKV_TYPE_F16, x, (uint16_t *)base + idx * kv->head_dim, kv->head_dim);
    }
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
    const int32_t *order = L->order + (size_t)h * kv->capacity, *pos = L->pos + (size_t)h * kv->capacity;
    int n = L->n_live[h];
    if (n > max) return -n;
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

/* Move one (sequence, layer) to a new capacity: live slots are copied to slots 0..n-1 in position order.
 * Used between a multi-token prefill chunk (which needs budget + chunk slots) and the decode steps (budget +
 * 1), so the memory held during generation is the budget, not the prompt. Only real-drop caches resize. */
static int layer_resize(kv_cache *kv, kv_layer *L, int old, int cap) {
    kv_layer N;
    memset(&N, 0, sizeof N);
    int sf = kv->ops->state_floats, hd = kv->head_dim;
    if (!slots_alloc(kv, &N, cap)) return 0;
    for (int h = 0; h < kv->n_head_kv; h++) {
        size_t ob = (size_t)h * old, nb = (size_t)h * cap;
        int n = L->n_live[h];
        for (int j = 0; j < n; j++) {
            int32_t s = L->order[ob + j];
            memcpy((char *)N.k + (nb + j) * hd * kv->elt, (char *)L->k + (ob + s) * hd * kv->elt, hd * kv->elt);
            memcpy((char *)N.v + (nb + j) * hd * kv->elt, (char *)L->v + (ob + s) * hd * kv->elt, hd * kv->elt);
            if (sf) memcpy(N.pstate + (nb + j) * sf, L->pstate + (ob + s) * sf, sizeof(float) * sf);
            N.pos[nb + j] = L->pos[ob + s];
            N.order[nb + j] = j;
        }
        for (int s = n; s < cap; s++) N.pos[nb + s] = -1;
        L->n_free[h] = 0;
        for (int s = cap - 1; s >= n; s--) N.free_stack[nb + L->n_free[h]++] = s;
    }
    slots_free(L);
    L->k = N.k; L->v = N.v; L->pos = N.pos; L->order = N.order; L->free_stack = N.free_stack; L->pstate = N.pstate;
    return 1;
}

hkv_status kv_resize(kv_cache *kv, int capacity) {
    if (kv->simulate || capacity == kv->capacity) return HKV_OK;
    if (capacity < 1 || capacity > kv->n_ctx) return HKV_ERR_ARG;
    for (int i = 0; i < kv->n_seq * kv->n_layer; i++)
        for (int h = 0; h < kv->n_head_kv; h++)
            if (kv->layers[i].n_live[h] > capacity) return HKV_ERR_STATE;
    int old = kv->capacity;
    for (int i = 0; i < kv->n_seq * kv->n_layer; i++) {
        if (!layer_resize(kv, &kv->layers[i], old, capacity)) {
            /* keep the cache consistent: move the layers already done back (shrinking them back always
             * fits, they were that size a moment ago) */
            for (int j = 0; j < i; j++) layer_resize(kv, &kv->layers[j], capacity, old);
            return HKV_ERR_NOMEM;
        }
    }
    kv->capacity = capacity;
    kv_account(kv);
    return HKV_OK;
}
