/* Bounded KV cache: per sequence, per layer, per KV head a set of `capacity` slots holding the rotated key,
 * the value, the token's original position and the policy's per-slot state. A policy (policy.h) decides which
 * token leaves. Slots are reused in O(1) (free stack, no compaction); a small list of slot indices in position
 * order is kept so the attention arithmetic runs in position order — which makes real drop and the masked
 * full-cache simulation bit-identical.
 *
 * Simulation mode: capacity = n_ctx, slot == position, evicted tokens are masked instead of freed, and
 * attention scans the dense cache skipping masked positions (like the original H2O h2o_hf code). */
#ifndef HKV_KVCACHE_H
#define HKV_KVCACHE_H
#include <stdint.h>
#include <stdio.h>
#include "heavykv.h"
#include "policy.h"

typedef struct kv_layer {      /* one (sequence, layer) */
    void *k;                   /* [n_head_kv][capacity] rows of row_bytes (kvrow.h), keys rotated at their position */
    void *v;                   /* [n_head_kv][capacity] rows of row_bytes */
    int32_t *pos;              /* [n_head_kv][capacity] position held by each slot, -1 = free */
    int32_t *order;            /* [n_head_kv][capacity] live slots, ascending position; n_live[h] valid */
    int32_t *n_live;           /* [n_head_kv] */
    int32_t *free_stack;       /* [n_head_kv][capacity] free slots (real drop only) */
    int32_t *n_free;           /* [n_head_kv] */
    float *pstate;             /* [n_head_kv][capacity][state_floats] policy state */
    uint64_t *evictions;       /* [n_head_kv] */
} kv_layer;

/* Undo record of one sequence for the length of one decode call: a copy of every layer's slot metadata and
 * policy state, plus the K/V rows of slots that were live when it was taken and got overwritten since (a slot
 * evicted and reused within the call). K/V of slots that were free needs no copy. */
typedef struct kv_snap {
    int active;
    int cap;                   /* slots per head the arrays below are laid out with (the cache's capacity) */
    size_t slots_alloc;        /* n_layer*n_head_kv*slots allocated in each per-slot array */
    int32_t *pos, *order, *free_stack; /* [n_layer][n_head_kv][cap] */
    float *pstate;             /* [n_layer][n_head_kv][cap][state_floats] */
    uint8_t *saved;            /* [n_layer][n_head_kv][cap] 1: the slot's K/V row is in the journal */
    int32_t *n_live, *n_free;  /* [n_layer][n_head_kv] */
    uint64_t *evictions;       /* [n_layer][n_head_kv] */
    int32_t newest;
    int32_t *j_idx;            /* [max_rows] (layer*n_head_kv + head)*cap + slot of each journaled row */
    unsigned char *j_rows;     /* [max_rows][2][row_bytes] K then V */
    int n_rows, max_rows, rows_alloc;
    int overflow;              /* journal was too small (cannot happen by construction; restore then resets) */
} kv_snap;

typedef struct kv_cache {
    int n_seq, n_layer, n_head_kv, head_dim, capacity, n_ctx;
    hkv_kv_type type;
    size_t row_bytes;          /* bytes per K or V row of head_dim elements (kvrow_bytes) */
    int simulate;
    int lazy;                  /* 1: a sequence's slot arrays exist only between kv_seq_alloc and kv_seq_release
                                * (hkv_context_params.lazy_seqs); its n_live/n_free/evictions always exist */
    const hkv_policy_ops *ops;
    hkv_policy_cfg *cfg;       /* [n_layer] the policy's view of each layer (budgets may differ per layer) */
    float *rope;               /* cache-position mode: [rope_len][head_dim] RoPE of cache index i (cos in the first
                                * element of each rotated pair, sin in the second; attn_set_rope); NULL: keys are
                                * stored already rotated at their original position */
    int rope_len, n_rot, rope_neox;
    kv_layer *layers;          /* [n_seq][n_layer] */
    int32_t *newest;           /* [n_seq] position of the newest token, -1 when empty */
    kv_snap *snap;             /* [n_seq] undo records (decode rollback) */
    uint64_t kv_bytes, meta_bytes;
} kv_cache;

hkv_status kv_new(kv_cache **out, int n_seq, int n_layer, int n_head_kv, int head_dim, int capacity, int n_ctx,
                  hkv_kv_type type, int simulate, const hkv_policy_ops *ops, const hkv_policy_cfg *cfg_layers,
                  char *err, size_t errlen);
/* kv_new with lazy = 1: no sequence has slot arrays until kv_seq_alloc. */
hkv_status kv_new_lazy(kv_cache **out, int n_seq, int n_layer, int n_head_kv, int head_dim, int capacity, int n_ctx,
                       hkv_kv_type type, int simulate, int lazy, const hkv_policy_ops *ops,
                       const hkv_policy_cfg *cfg_layers, char *err, size_t errlen);
void kv_free(kv_cache *kv);
void kv_seq_reset(kv_cache *kv, int seq);
static inline kv_layer *kv_layer_of(kv_cache *kv, int seq, int layer) { return &kv->layers[seq * kv->n_layer + layer]; }
/* 1 when seq has its slot arrays (always, unless the cache is lazy). */
static inline int kv_seq_has_storage(const kv_cache *kv, int seq) { return kv->layers[seq * kv->n_layer].k != NULL; }
/* Lazy caches: give seq its slot arrays at the current capacity, empty (HKV_ERR_NOMEM changes nothing); no-op
 * when it has them. kv_seq_release frees them and empties the sequence. */
hkv_status kv_seq_alloc(kv_cache *kv, int seq);
void kv_seq_release(kv_cache *kv, int seq);

/* FlexGen order (h2o --h2o-order replace): before a decode step writes position `incoming`, evict if the head
 * is at budget (the incoming token counts as the newest for the policy's recent window). */
void kv_make_room(kv_cache *kv, kv_layer *L, int h, int32_t incoming);
/* Write token (pos) K/V for head h into a free slot (or slot == pos in simulation). */
hkv_status kv_insert(kv_cache *kv, kv_layer *L, int h, int32_t pos, const float *k, const float *v);
/* Slots visible to query position qpos in ascending position, into vis[capacity]; returns their count. */
int kv_visible_slots(const kv_cache *kv, kv_layer *L, int h, int32_t qpos, int32_t *vis);
/* Attention's report for one query: probs[j] for visible slot j, aggregated over the KV group. */
void kv_observe(kv_cache *kv, kv_layer *L, int h, const float *probs, int n_visible, int32_t qpos);
/* Evict from head h until it holds at most its layer's budget. n_new = tokens the step just wrote to it: after
 * more than one (a prompt chunk) the policy's batch hook (ops->select) chooses all survivors at once. */
void kv_trim(kv_cache *kv, kv_layer *L, int h, int n_new);
static inline const hkv_policy_cfg *kv_cfg_of(const kv_cache *kv, const kv_layer *L) {
    return &kv->cfg[(L - kv->layers) % kv->n_layer];
}
void kv_set_newest(kv_cache *kv, int seq, int32_t pos);
/* Change the slots per head (real drop only), compacting live slots; fails if a head holds more. */
hkv_status kv_resize(kv_cache *kv, int capacity);
/* Positions kept by a head, ascending. */
int kv_positions(const kv_cache *kv, int seq, int layer, int h, int32_t *out, int max);
/* Rollback: kv_snap_begin records seq's state before a decode call that writes at most n_tok tokens to it
 * (allocates; HKV_ERR_NOMEM changes nothing), kv_snap_restore puts it back exactly, kv_snap_end drops it. */
hkv_status kv_snap_begin(kv_cache *kv, int seq, int n_tok);
void kv_snap_restore(kv_cache *kv, int seq);
void kv_snap_end(kv_cache *kv, int seq);
/* dst becomes an exact copy of src (rows, positions, order lists, policy state, eviction counts). Fails only
 * (HKV_ERR_NOMEM, dst unchanged) when a lazy dst needs storage. */
hkv_status kv_seq_copy(kv_cache *kv, int src, int dst);
/* Serialize / deserialize one sequence (see context.c hkv_seq_state_save for the file layout). kv_seq_read
 * validates everything into a new layout before touching the cache; on error the sequence is unchanged. */
hkv_status kv_seq_write(const kv_cache *kv, int seq, FILE *f);
hkv_status kv_seq_read(kv_cache *kv, int seq, const unsigned char *buf, size_t len, size_t *used, char *err, size_t errlen);
/* The policy's score of each kept position of a head (0 without ops->score), in kv_positions order. */
int kv_scores(const kv_cache *kv, int seq, int layer, int h, float *out, int max);
/* One JSON line: {"seq":s,"pos":p,"layers":[[[kept positions of head 0],...],...]}; with scores also
 * "scores":[[[score of each kept position of head 0],...],...]. */
void kv_trace_write(const kv_cache *kv, int seq, FILE *f, int with_scores);
#endif
