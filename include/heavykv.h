/* heavykv — an LLM inference engine whose KV cache is bounded by an eviction policy (H2O and baselines).
 *
 * The one public header. Every function that can fail returns hkv_status and leaves a one-sentence
 * message readable with hkv_last_error() on the object it was called on (or in the caller's err buffer for
 * constructors). The library never prints and never exits.
 *
 * Typical use:
 *   hkv_model *m; hkv_model_load("model.gguf", NULL, &m, err, sizeof err);
 *   hkv_context_params cp = hkv_context_default_params();   // pick a policy / budget here
 *   hkv_context *c; hkv_context_new(m, &cp, &c, err, sizeof err);
 *   int32_t toks[512]; int n = hkv_tokenize(m, "Once upon", -1, 1, toks, 512); // -1: BOS as the model says
 *   hkv_decode(c, 0, toks, n);                      // prefill; logits of the last token in hkv_get_logits
 *   ... sample, hkv_decode(c, 0, &tok, 1) ...
 */
#ifndef HEAVYKV_H
#define HEAVYKV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this header and of the library it belongs to (semantic versioning: a MINOR bump adds API, a
 * MAJOR bump may break it). hkv_version() is the version of the library actually linked. */
#define HKV_VERSION_MAJOR 0
#define HKV_VERSION_MINOR 2
#define HKV_VERSION_PATCH 0
#define HKV_VERSION_STRING "0.2.0"

/* Exported symbols: the shared library hides everything that is not marked HKV_API. */
#if defined(_WIN32) && defined(HKV_BUILDING_LIBRARY)
#define HKV_API __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define HKV_API __attribute__((visibility("default")))
#else
#define HKV_API
#endif

typedef enum hkv_status {
    HKV_OK = 0,
    HKV_ERR_IO,          /* cannot open / read / write a file */
    HKV_ERR_FORMAT,      /* malformed or truncated file, bad value in it */
    HKV_ERR_UNSUPPORTED, /* valid but not supported (architecture, tensor type, GGUF v1, ...) */
    HKV_ERR_ARG,         /* bad argument from the caller (flag value, token id, budget, ...) */
    HKV_ERR_NOMEM,       /* allocation failed */
    HKV_ERR_CONTEXT,     /* sequence would exceed the context length */
    HKV_ERR_STATE,       /* call not valid in the object's current state; a state file that does not fit */
    HKV_ERR_ABORTED,     /* the abort callback asked to stop (hkv_set_abort_callback) */
} hkv_status;

HKV_API const char *hkv_status_str(hkv_status s);

/* ---------------------------------------------------------------- model */

typedef struct hkv_model hkv_model;

typedef struct hkv_model_params {
    int n_threads;   /* worker threads for matmuls and attention; <= 0: number of online CPUs */
    int use_mmap;    /* 1 (default): weights stay memory-mapped */
} hkv_model_params;

HKV_API hkv_model_params hkv_model_default_params(void);
HKV_API hkv_status hkv_model_load(const char *path, const hkv_model_params *p, hkv_model **out, char *err, size_t errlen);
HKV_API void hkv_model_free(hkv_model *m);

typedef struct hkv_model_info {
    const char *arch;     /* "llama", "qwen2", "qwen3" */
    const char *name;     /* general.name or "" */
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_ctx_default;    /* what n_ctx = 0 means for a context: n_ctx_train, at most 4096 */
    float rope_theta, rms_eps;
    int32_t bos, eos;     /* -1 when absent */
    int add_bos;          /* tokenizer.ggml.add_bos_token (default 1 for llama) */
    int spm;              /* 1: SentencePiece-style vocabulary (leading-space marker), 0: byte-level BPE */
    uint64_t n_params;    /* total elements of all weight tensors */
    uint64_t weight_bytes;
} hkv_model_info;
HKV_API void hkv_model_get_info(const hkv_model *m, hkv_model_info *info);

/* ---------------------------------------------------------------- tokenizer (lives in the model) */

/* Encode UTF-8 text. add_bos: -1 = the model's default (GGUF tokenizer.ggml.add_bos_token, see
 * hkv_model_info.add_bos; Qwen2/2.5 files say false although they have a BOS id), 1 = prepend BOS when the model
 * has one, 0 = no BOS. Unless add_bos is 0, EOS is appended when the model's tokenizer.ggml.add_eos_token is
 * true (what llama.cpp does with "add special tokens"). Use -1 unless a user asked otherwise.
 * parse_special: text such as "<|eot_id|>" that spells a special/control token is matched as that token.
 * Returns the number of tokens written, or, when max_tokens is too small, minus the number required. */
HKV_API int hkv_tokenize(const hkv_model *m, const char *text, int add_bos, int parse_special, int32_t *tokens, int max_tokens);
/* The raw bytes of one token (byte-fallback tokens give their byte; leading-space marker turned into ' ').
 * Returns the length written (not NUL-terminated), or minus the length required. */
HKV_API int hkv_token_to_piece(const hkv_model *m, int32_t token, char *buf, int buflen);
/* Whole-sequence decode into a NUL-terminated string (strips the SentencePiece leading space after BOS).
 * Returns length, or minus the size required (including NUL). */
HKV_API int hkv_detokenize(const hkv_model *m, const int32_t *tokens, int n, char *buf, int buflen);
HKV_API int hkv_token_is_eog(const hkv_model *m, int32_t token); /* end of generation (EOS, EOT, ...) */

/* Streams token bytes as valid UTF-8: bytes of a character split over several tokens are held back until
 * the character is complete. */
typedef struct hkv_utf8_stream {
    unsigned char pend[8];   /* bytes of an incomplete character */
    int n;                   /* how many */
    int strip_space;         /* caller sets 1 at the start of a text: one leading ' ' is dropped (SentencePiece
                                dummy prefix); cleared after the first non-empty output */
} hkv_utf8_stream;
/* Appends token's bytes; writes the complete UTF-8 prefix into out (NUL-terminated), returns its length. */
HKV_API int hkv_utf8_stream_push(hkv_utf8_stream *s, const hkv_model *m, int32_t token, char *out, int outlen);

/* ---------------------------------------------------------------- KV cache policy */

/* Element type of stored K/V rows (see README "Quantized K/V"): Q8_0/Q4_0 use GGML's blocks of 32 when
 * head_dim % 32 == 0, else one block per 16 or 8 elements; they need head_dim % 8 == 0. */
typedef enum hkv_kv_type { HKV_KV_F16 = 0, HKV_KV_F32 = 1, HKV_KV_BF16 = 2, HKV_KV_Q8_0 = 3, HKV_KV_Q4_0 = 4 } hkv_kv_type;
#define HKV_KV_TYPE_COUNT 5
/* "f16", "f32", "bf16", "q8_0", "q4_0"; NULL for an unknown value. */
HKV_API const char *hkv_kv_type_name(hkv_kv_type t);
/* Parse a --kv-type name (the names above); -1 when unknown. */
HKV_API int hkv_kv_type_parse(const char *name);

/* How a budget number is read: absolute tokens, or a fraction of a reference length (the prompt length in
 * `run`, the evaluated sequence length in `eval`), resolved with hkv_budget_resolve(). */
typedef struct hkv_amount { float value; int is_ratio; int set; } hkv_amount;

/* A resolved budget in tokens per KV head (for hkv_budget_resolve's input side, -1 = not given). */
typedef struct hkv_budget { int total, heavy, recent, sink; } hkv_budget;

/* ---- The eviction-policy interface (see docs/ADDING_A_POLICY.md). A policy is a table of callbacks that
 * owns a few floats of state per cached token; the cache owns K/V and positions and calls the policy. The
 * built-in policies are instances of this same struct, listed in one table (hkv_policy_at); an embedder can
 * pass its own through hkv_kv_config.custom without touching the library. */

#define HKV_POLICY_MAX_STATE 4     /* floats of per-slot state a policy may ask for */
#define HKV_POLICY_MAX_OPTIONS 6   /* options a policy may declare */

/* One option of a policy, set as "POLICY.NAME=VALUE" in hkv_kv_config.options (CLI: --POLICY-NAME VALUE). */
typedef struct hkv_policy_option {
    const char *name;      /* e.g. "window" */
    const char *choices;   /* "sum|normalized": the value is the index of the word; NULL: an integer */
    int def, lo, hi;       /* default value; accepted range of integers */
    const char *help;      /* one line */
} hkv_policy_option;

/* What every policy call may read. */
typedef struct hkv_policy_cfg {
    hkv_budget b;                       /* this layer's budget (layers may differ: --kv-budget-layers) */
    int layer, n_layer;                 /* which layer this head belongs to */
    int opt[HKV_POLICY_MAX_OPTIONS];    /* option values, in the order of ops->options */
    void *user;                         /* hkv_kv_config.custom_user (custom policies) */
} hkv_policy_cfg;

/* One (sequence, layer, KV head) as a policy sees it. Live slots are listed in position order. */
typedef struct hkv_head_view {
    const int32_t *slots;   /* [n] live slot indices, ascending position */
    const int32_t *pos;     /* [capacity] original position of each slot */
    int n;                  /* live slots */
    int32_t newest;         /* position of the newest token in the head */
    float *state;           /* [capacity][ops->state_floats] this policy's per-slot state */
} hkv_head_view;

typedef struct hkv_policy_ops {
    const char *name;             /* --kv-policy NAME (at most 15 characters) */
    const char *help;             /* one line for help text */
    int needs_probs;              /* 1: observe() gets attention probabilities (costs a little) */
    int state_floats;             /* floats of per-slot state, 0..HKV_POLICY_MAX_STATE */
    int never_evicts;             /* 1: the cache holds the whole context and budget flags do not apply */
    const char *default_layers;   /* budget schedule when --kv-budget-layers is not given (NULL: "uniform") */
    const hkv_policy_option *options;  /* [n_options] */
    int n_options;
    /* Every callback may be NULL (meaning: nothing to do / the default described here). */
    /* Fill the unset parts (-1) of *s from the given ones; NULL: sink and recent default to 0, heavy is the
     * rest. Return HKV_ERR_ARG with a message for a split the policy cannot use. */
    hkv_status (*derive_budget)(const hkv_policy_cfg *cfg, hkv_budget *s, char *err, size_t errlen);
    /* A new token was written to slot s: reset its state. NULL: state is zeroed. */
    void (*on_insert)(const hkv_policy_cfg *cfg, hkv_head_view *h, int32_t s);
    /* One query (position qpos) attended over the head: probs[j] is the probability slot h->slots[j] received
     * (aggregated over the KV group's query heads, sum or mean). Only j < n_visible took part. */
    void (*observe)(const hkv_policy_cfg *cfg, hkv_head_view *h, const float *probs, int n_visible, int32_t qpos);
    /* Over budget by one: return the index j into h->slots to evict, or -1 if every token is protected. */
    int (*victim)(const hkv_policy_cfg *cfg, const hkv_head_view *h);
    /* Batch hook, after a step that wrote several tokens (a prompt chunk): choose all survivors at once.
     * Set keep[j] = 1 for at most `target` of the h->n tokens and return how many; return -1 to fall back to
     * calling victim() once per token. NULL: victim() loop. */
    int (*select)(const hkv_policy_cfg *cfg, const hkv_head_view *h, int target, uint8_t *keep);
    /* The number the policy ranks slot h->slots[j] by (for --kv-trace scores and kv-inspect); NULL: none. */
    float (*score)(const hkv_policy_cfg *cfg, const hkv_head_view *h, int j);
} hkv_policy_ops;

typedef struct hkv_kv_config {
    char policy[16];         /* a name from the policy table (hkv_policy_at), e.g. "h2o" */
    hkv_amount budget;       /* total tokens per KV head (heavy + recent + sink) */
    hkv_amount heavy, recent, sink; /* optional split; unset parts are derived (see hkv_budget_resolve) */
    char options[160];       /* per-policy options, "POLICY.NAME=VALUE,..." (hkv_kv_set_option); entries of
                                other policies are ignored, so one config can carry options for a sweep */
    char budget_layers[160]; /* per-layer schedule: "" or "uniform", "pyramid", or a list of per-layer amounts
                                "64,48,32,16" (see hkv_layer_budgets); "": the policy's default */
    int gqa_mean;            /* 0: sum over the query heads of a KV group; 1: mean */
    int replace_order;       /* 1: FlexGen order: a decode step evicts before attending (capacity = budget) */
    int simulate;            /* 1: full cache + mask hiding evicted tokens (no memory saved) */
    int prefill_chunk;       /* max tokens per forward chunk; evictions happen between chunks. 0: whole prompt */
    hkv_kv_type type;        /* element type of stored K/V */
    int allow_long_ctx;      /* 1: a context longer than the model's training context is allowed (refused if 0) */
    int positions_cache;     /* 0: keys rotated at their original position (default); 1: StreamingLLM position
                              * rolling: keys stored before RoPE, rotated at attention time by their index in
                              * the cache, queries by theirs; bounded real-drop caches then have no position
                              * limit (n_ctx only sizes prefill) — README "Endless streaming" */
    const hkv_policy_ops *custom; /* non-NULL: this policy instead of the table (policy[] is then ignored);
                                     must stay valid while a context uses it */
    void *custom_user;       /* handed to custom's callbacks as cfg->user */
} hkv_kv_config;

/* Minimum budget a percentage resolves to (a ratio of a very short prompt is floored, not an error). */
#define HKV_MIN_RATIO_BUDGET 4

HKV_API hkv_kv_config hkv_kv_default_config(void);
/* Parse an amount: "N" (an integer: tokens), "P%" (percent of the reference length) or "0.R" (a number with a
 * decimal point: a ratio, the paper's heavy_ratio style; must be in (0, 1]). */
HKV_API hkv_status hkv_amount_parse(const char *s, hkv_amount *out, char *err, size_t errlen);
/* Resolve the config against ref_len (prompt length) and n_ctx into token counts; validates the split. */
HKV_API hkv_status hkv_budget_resolve(const hkv_kv_config *c, int ref_len, int n_ctx, hkv_budget *out, char *err, size_t errlen);
/* The per-layer budgets of the config's schedule into out[n_layer] (same rules as a context uses). */
HKV_API hkv_status hkv_layer_budgets(const hkv_kv_config *c, int ref_len, int n_ctx, int n_layer, hkv_budget *out,
                                     char *err, size_t errlen);
/* The policy table: entry i (0, 1, ...), NULL past the end. Names, help and error messages come from it. */
HKV_API const hkv_policy_ops *hkv_policy_at(int i);
/* The table entry called name, or NULL. */
HKV_API const hkv_policy_ops *hkv_policy_find(const char *name);
/* HKV_OK if name is in the table; else HKV_ERR_ARG and "unknown KV policy 'x' (choose full, window, ...)". */
HKV_API hkv_status hkv_policy_check(const char *name, char *err, size_t errlen);
/* Names of the built-in policies, NULL-terminated (the table's order). */
HKV_API const char *const *hkv_policy_names(void);
/* Set option NAME of policy POLICY (table name, or custom's name when custom is given) to VALUE in c->options,
 * replacing an earlier value; checks both against the policy's option list. */
HKV_API hkv_status hkv_kv_set_option(hkv_kv_config *c, const char *policy, const char *name, const char *value,
                                     char *err, size_t errlen);

/* ---------------------------------------------------------------- context (sequences + their KV caches) */

typedef struct hkv_context hkv_context;

typedef struct hkv_context_params {
    int n_ctx;               /* max positions per sequence; 0: model's training context */
    int n_seq;               /* sequences that can decode together (each has its own cache), default 1 */
    int n_threads;           /* <= 0: model's setting */
    int logits_all;          /* 1: keep logits of every token of the last hkv_decode (eval); 0: last only */
    int ref_len;             /* length that percentage budgets refer to (prompt length); 0: n_ctx */
    hkv_kv_config kv;
    const char *trace_path;  /* non-NULL: write JSON lines of kept positions per head after every step */
    int trace_scores;        /* 1: trace lines also carry the policy's score of each kept position */
    int lazy_seqs;           /* 1: a sequence's K/V storage is allocated at its first decode (or hkv_seq_cp /
                              * state load into it) and given back by hkv_seq_rm, so a context made for many
                              * sequences holds K/V only for those in use (heavykv serve sizes one context per KV
                              * config this way). Its capacity is then fixed at budget + prefill chunk slots per
                              * head (`full`: n_ctx), so a step that mixes a prompt chunk with other sequences'
                              * decode tokens never reallocates every sequence. Results are identical either way.
                              * 0 (default): every sequence's storage is allocated by hkv_context_new. */
} hkv_context_params;

HKV_API hkv_context_params hkv_context_default_params(void);
HKV_API hkv_status hkv_context_new(hkv_model *m, const hkv_context_params *p, hkv_context **out, char *err, size_t errlen);
HKV_API void hkv_context_free(hkv_context *c);
HKV_API const char *hkv_last_error(const hkv_context *c);

/* Lifetimes and threads.
 *   - A context borrows its model: free every context of a model before hkv_model_free.
 *   - A model is read-only after loading: several contexts (one per thread) may share it and run at once.
 *   - A context is not thread-safe: one thread at a time calls functions on it (one context per thread).
 *   - Pointers returned by hkv_get_logits / hkv_get_logits_ith point into the context and stay valid until
 *     the next call that decodes, resets, copies into or loads a state into that context's sequences, or
 *     hkv_context_free. hkv_last_error's string is overwritten by the next failing call on the context.
 *   - Strings in hkv_model_info, hkv_policy_names and hkv_version live as long as the model / the library.
 *
 * Failed decodes change nothing. Every decode call (hkv_decode, hkv_decode_batch, hkv_decode_tokens) first
 * allocates all it needs, including an undo record of each sequence it touches (the slot metadata and policy
 * state, plus the K/V rows it overwrites); then it runs the forward pass; if that fails (abort callback, cache
 * error) every sequence is put back. So after any failed call — bad argument, context length, out of memory,
 * abort — hkv_n_past, the cache, the policy state and hkv_get_logits(seq, -1) are exactly as before the call
 * and decoding can simply continue. (Per-token rows of logits_all from an earlier call may be gone.) */

/* Run tokens of one sequence through the model at positions n_past..n_past+n-1 (prompt chunk or one decode
 * step). Long inputs are split into kv.prefill_chunk pieces with eviction between pieces. */
HKV_API hkv_status hkv_decode(hkv_context *c, int seq, const int32_t *tokens, int n);

/* Several sequences, one token each, in one step (batched decode). seqs[i] distinct. */
HKV_API hkv_status hkv_decode_batch(hkv_context *c, const int *seqs, const int32_t *tokens, int n);

/* Several tokens of several sequences in one forward pass (like llama_batch): e.g. 64 prompt tokens of seq 1
 * and one decode token each of seqs 0, 2 and 3. Token i belongs to seq[i]; a sequence's tokens take the
 * positions n_past, n_past+1, ... in array order. logits[i] != 0 keeps token i's logits for
 * hkv_get_logits_ith (logits == NULL: keep all). Each sequence's result is bit-identical to hkv_decode of its
 * own tokens alone (attention, eviction and policy state are per sequence). Limits (hkv_batch_limits): at most
 * max_tokens tokens in all and at most max_per_seq (the prefill chunk) of one sequence. */
typedef struct hkv_batch {
    int n_tokens;
    const int32_t *token;    /* [n_tokens] token ids */
    const int *seq;          /* [n_tokens] sequence of each token */
    const int8_t *logits;    /* [n_tokens] 1: keep this token's logits; NULL: keep every token's */
} hkv_batch;
HKV_API hkv_status hkv_decode_tokens(hkv_context *c, const hkv_batch *b);
/* Logits [n_vocab] of token i of the last hkv_decode_tokens / hkv_decode_batch; NULL if not kept. A
 * sequence's last token's logits, when kept, are also hkv_get_logits(c, seq, -1). */
HKV_API const float *hkv_get_logits_ith(hkv_context *c, int i);
HKV_API void hkv_batch_limits(const hkv_context *c, int *max_tokens, int *max_per_seq);

/* Called before every layer of a forward pass; a nonzero return stops the decode with HKV_ERR_ABORTED and
 * leaves the sequences as before the call. cb == NULL: no callback. */
HKV_API void hkv_set_abort_callback(hkv_context *c, int (*cb)(void *user), void *user);

/* Logits [n_vocab] of token i of the last hkv_decode on seq (i = -1: the last token). i >= 0 needs
 * logits_all. For hkv_decode_batch, the logits of seq's token. NULL when not available. */
HKV_API const float *hkv_get_logits(hkv_context *c, int seq, int i);
HKV_API int hkv_n_past(const hkv_context *c, int seq);
/* Forget a sequence (cache emptied, policy state reset, position 0). */
HKV_API void hkv_seq_reset(hkv_context *c, int seq);
/* hkv_seq_reset that reports a bad sequence id: the sequence's slots are free again (with lazy_seqs its K/V
 * memory is freed). */
HKV_API hkv_status hkv_seq_rm(hkv_context *c, int seq);
/* dst becomes an exact copy of src: cache rows, positions, order lists, policy state, n_past and the last
 * logits, so both continue identically (fork a prompt). */
HKV_API hkv_status hkv_seq_cp(hkv_context *c, int src, int dst);
/* Save one sequence (cache, policy scores, positions, n_past, last logits) to a file, and load it back into a
 * sequence of a context with the same model, KV type, policy, budget, policy options and capacity (checked:
 * HKV_ERR_STATE names the first difference; HKV_ERR_FORMAT for a damaged or truncated file; the sequence is
 * unchanged on any error). Decoding after a load continues bit-identically to the saving context. */
HKV_API hkv_status hkv_seq_state_save(hkv_context *c, int seq, const char *path);
HKV_API hkv_status hkv_seq_state_load(hkv_context *c, int seq, const char *path);
HKV_API hkv_budget hkv_context_budget(const hkv_context *c);

typedef struct hkv_kv_stats {
    int n_layer, n_head_kv, head_dim;
    int capacity;            /* slots per (layer, KV head) */
    hkv_budget budget;
    uint64_t kv_bytes;       /* K+V storage: capacity*n_layer*n_head_kv*2*row_bytes*n_seq (lazy_seqs: times
                                the sequences holding storage instead of n_seq) */
    uint64_t meta_bytes;     /* positions, order lists and policy state (documented constant per slot) */
    uint64_t evictions;      /* total over all layers/heads/sequences */
    int occupancy_min, occupancy_max; /* over all (layer, head) of seq 0 */
    hkv_kv_type type;        /* element type of the stored rows */
    int row_bytes;           /* bytes of one K or V row of head_dim elements (README "Memory, exactly") */
    int positions_cache;     /* 1: keys rotated by their cache index (--kv-positions cache) */
    uint64_t kv_bytes_used;  /* K+V bytes of the tokens actually held (all sequences); <= kv_bytes */
    int capacity_peak;       /* largest capacity since the context was made: a bounded policy's cache grows to
                                budget + prefill chunk while a chunk is read, then shrinks back */
    uint64_t kv_bytes_peak;  /* kv_bytes scaled to capacity_peak (the sequences allocated now) */
} hkv_kv_stats;
HKV_API void hkv_get_kv_stats(const hkv_context *c, hkv_kv_stats *s);
/* Per-layer detail for seq 0: occupancy summed over heads, evictions. Returns HKV_ERR_ARG for a bad layer. */
HKV_API hkv_status hkv_get_kv_layer_stats(const hkv_context *c, int layer, int *occupancy_sum, uint64_t *evictions);
/* Positions currently kept by (seq, layer, kv_head), ascending. Returns count (or minus required). */
HKV_API int hkv_kv_positions(const hkv_context *c, int seq, int layer, int kv_head, int32_t *out, int max);
/* The policy's score (ops->score) of each kept position, in the order of hkv_kv_positions; 0 when the policy
 * has no score. Returns count (or minus required). */
HKV_API int hkv_kv_scores(const hkv_context *c, int seq, int layer, int kv_head, float *out, int max);
/* Budget of one layer (per-layer schedules); the context budget for a bad layer. */
HKV_API hkv_budget hkv_context_layer_budget(const hkv_context *c, int layer);

/* ---------------------------------------------------------------- sampling */

typedef struct hkv_sampler_params {
    float temp;          /* <= 0: greedy */
    int top_k;           /* <= 0: off */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float repeat_penalty;/* 1: off */
    int repeat_last_n;   /* window for the penalty */
    uint64_t seed;
} hkv_sampler_params;

typedef struct hkv_sampler hkv_sampler;
HKV_API hkv_sampler_params hkv_sampler_default_params(void);
HKV_API hkv_status hkv_sampler_new(const hkv_sampler_params *p, int n_vocab, hkv_sampler **out, char *err, size_t errlen);
HKV_API void hkv_sampler_free(hkv_sampler *s);
/* Picks a token from logits (not modified) and remembers it for the repetition penalty. Total: any logits
 * (NaN counts as -inf; +inf tokens share the probability equally; all -inf: the greedy choice) give an id in
 * [0, n_vocab); -1 only for a NULL sampler or logits. */
HKV_API int32_t hkv_sampler_sample(hkv_sampler *s, const float *logits);
HKV_API void hkv_sampler_accept(hkv_sampler *s, int32_t token); /* record prompt tokens for the penalty */
/* Greedy choice: index of the largest of n logits (ties: the lowest id; NaN ranks below -inf). */
HKV_API int32_t hkv_argmax(const float *logits, int n);

/* ---------------------------------------------------------------- standalone tokenizer
 * A tokenizer without a model: from a Hugging Face tokenizer.json (tokenizer_config.json next to it is read
 * too; one that is present but not valid JSON is an error) or from the tokenizer.* keys of a .gguf file (the
 * weights are not loaded). Same contracts as the model-bound hkv_tokenize / hkv_token_to_piece /
 * hkv_detokenize above. Read-only after loading: may be
 * shared by threads. */
typedef struct hkv_tokenizer hkv_tokenizer;
HKV_API hkv_status hkv_tokenizer_load(const char *path, hkv_tokenizer **out, char *err, size_t errlen);
HKV_API void hkv_tokenizer_free(hkv_tokenizer *t);
HKV_API int hkv_tokenizer_n_vocab(const hkv_tokenizer *t);
HKV_API int hkv_tokenizer_encode(const hkv_tokenizer *t, const char *text, int add_bos, int parse_special, int32_t *tokens, int max_tokens);
HKV_API int hkv_tokenizer_decode(const hkv_tokenizer *t, const int32_t *tokens, int n, char *buf, int buflen);
HKV_API int hkv_tokenizer_piece(const hkv_tokenizer *t, int32_t token, char *buf, int buflen);
/* The vocabulary entry as spelled in the file (e.g. "<s>", "\u2581the"); NULL for a bad id. Lives as long as t. */
HKV_API const char *hkv_tokenizer_text(const hkv_tokenizer *t, int32_t token);

/* ---------------------------------------------------------------- quantize (GGUF -> GGUF)
 * Library functions, like llama.cpp's llama_model_quantize: every 2-D weight to type_name (one of
 * hkv_quant_type_list(), case-insensitive; Q4_K_M is llama.cpp's mix), 1-D tensors and metadata copied. */
typedef struct hkv_quantize_stats {
    int n_tensors;                  /* tensors in the file */
    int n_converted;                /* tensors whose type changed */
    uint64_t bytes_in, bytes_out;   /* tensor data, before and after */
    uint64_t n_params;              /* elements of all tensors */
    int n_of_type[64];              /* output tensors per GGUF tensor type id (names: hkv_tensor_type_name) */
} hkv_quantize_stats;
HKV_API const char *hkv_quant_type_list(void);          /* "F32, F16, Q8_0, ..., Q4_K_M" */
HKV_API const char *hkv_tensor_type_name(int type);     /* GGUF tensor type id -> "Q4_K"; NULL if unknown */
HKV_API hkv_status hkv_model_quantize(const char *in_path, const char *out_path, const char *type_name, int n_threads,
                                      hkv_quantize_stats *stats, char *err, size_t errlen);

/* ---------------------------------------------------------------- synthetic models
 * GGUF files with a real architecture's shapes, llama.cpp metadata keys and tensor names, a real tokenizer and
 * random but well-scaled weights (tests and benchmarks without downloading weights; the output is noise). */
typedef struct hkv_synth_preset {
    const char *name;        /* "Llama-3.2-1B" (matched case-insensitively) */
    const char *arch;        /* architecture of the real model: "llama", "qwen2", "qwen3" */
    const char *tokenizer;   /* tokenizer family the real model ships with (help text only) */
    int n_ctx, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    float rope_theta, rms_eps;
    int tied;                /* 1: no output.weight, the output shares token_embd */
    float llama3_factor;     /* > 0: Llama 3 RoPE scaling (factor; low 1, high 4, original context 8192) */
} hkv_synth_preset;
HKV_API const hkv_synth_preset *hkv_synth_presets(int *n);   /* *n presets, static storage */

/* How Llama 3 RoPE scaling is written: as the preset says (a rope_freqs.weight tensor, what llama.cpp's
 * converter writes), not at all, as the tensor, or as {arch}.rope.scaling.* keys. */
enum { HKV_SYNTH_ROPE_PRESET = -1, HKV_SYNTH_ROPE_NONE = 0, HKV_SYNTH_ROPE_TENSOR = 1, HKV_SYNTH_ROPE_KEYS = 2 };

typedef struct hkv_synth_params {
    const char *preset;      /* preset name (required) */
    const char *arch;        /* NULL: the preset's architecture */
    const char *tokenizer;   /* tokenizer.json, or a .gguf whose tokenizer.* keys are copied (required) */
    const char *type;        /* weight type, one of hkv_quant_type_list(); NULL: F32 (1-D tensors always F32) */
    int n_layer;             /* > 0: override the preset's layer count */
    int head_dim;            /* > 0: override the head dimension */
    int rope_scaling;        /* HKV_SYNTH_ROPE_* */
    uint64_t seed;
    int n_threads;           /* <= 0: all CPUs */
} hkv_synth_params;
HKV_API hkv_synth_params hkv_synth_default_params(void);

typedef struct hkv_synth_info {
    int n_vocab, n_layer, head_dim;
    char arch[16];
    uint64_t n_params;       /* elements of all tensors */
    uint64_t tensor_bytes;   /* tensor data written */
} hkv_synth_info;
HKV_API hkv_status hkv_synth_write(const hkv_synth_params *p, const char *path, hkv_synth_info *info, char *err, size_t errlen);

/* ---------------------------------------------------------------- chat templates (src/chat.c) */

/* One message of a conversation. role: "system", "user" or "assistant". */
typedef struct hkv_chat_message { const char *role; const char *content; } hkv_chat_message;

/* Families of chat templates heavykv renders: "chatml" (Qwen, SmolLM, ...), "llama3", "llama2" ([INST] with
 * <<SYS>>), "mistral" ([INST] without a system block), "gemma", "phi3", "zephyr". NULL-terminated. */
HKV_API const char *const *hkv_chat_template_names(void);
/* The model's own template text (GGUF tokenizer.chat_template), NULL when the file has none. */
HKV_API const char *hkv_model_chat_template(const hkv_model *m);
/* The family a Jinja template text belongs to, recognised by its distinctive markers; NULL if none is. */
HKV_API const char *hkv_chat_template_detect(const char *template_text);

/* Which family chat uses and whether msgs can be rendered with it. tmpl: a family name (forces it, like
 * --chat-template), a template text (recognised as above), or NULL (the model's template). *family (may be
 * NULL) gets the family's name. msgs may be NULL with n = 0 to check the template only. Errors: no template in
 * the model, an unrecognised template, an unknown name (HKV_ERR_UNSUPPORTED / HKV_ERR_ARG), a bad role or a
 * NULL field, a system message the family cannot place (HKV_ERR_ARG) — each with a one-sentence message. */
HKV_API hkv_status hkv_chat_template_check(const hkv_model *m, const char *tmpl, const hkv_chat_message *msgs, int n,
                                           const char **family, char *err, size_t errlen);

#define HKV_CHAT_ERROR (-2147483647 - 1)
/* Renders msgs as the family's published template does (exact special-token text). add_assistant: append the
 * header that starts the assistant's reply. With a template text (the model's, or given as tmpl), a default
 * system message written in it (Qwen2/2.5) opens a conversation that has none. The leading BOS of the published templates is NOT in the text:
 * tokenize the result with add_bos = the model's add_bos (hkv_model_info.add_bos, or --bos/--no-bos) and
 * parse_special = 1, as llama.cpp does; BOS tokens inside the conversation (llama2) are in the text.
 * Returns the length written (NUL-terminated), or minus the size required (including NUL) when buflen is too
 * small, or HKV_CHAT_ERROR when hkv_chat_template_check fails (call it for the message). */
HKV_API int hkv_chat_apply_template(const hkv_model *m, const char *tmpl, const hkv_chat_message *msgs, int n,
                                    int add_assistant, char *buf, int buflen);

/* ---------------------------------------------------------------- GGUF inspection (for `heavykv info`) */

/* Writes a human-readable dump of the metadata and tensor table of a GGUF file to f. */
HKV_API hkv_status hkv_gguf_dump(const char *path, FILE *f, int max_array_items, char *err, size_t errlen);

/* ---------------------------------------------------------------- misc */
HKV_API const char *hkv_version(void);  /* "MAJOR.MINOR.PATCH" of the linked library */
HKV_API double hkv_time_sec(void);   /* monotonic clock */
HKV_API const char *hkv_cpu_features(void); /* e.g. "avx2 fma f16c" — what the runtime dispatch picked */
/* Measured memory read bandwidth in bytes/s: n_threads threads (<= 0: all cores) stream a buffer of `bytes`
 * (rounded to whole MiB; far larger than the caches) with the SIMD kernels; best of `reps` passes. 0 on
 * allocation failure. The roofline that memory-bound decoding is compared with (heavykv bench). */
HKV_API double hkv_read_bandwidth(int n_threads, size_t bytes, int reps);
/* The machine's measured int8 compute peak in operations per second (2 per multiply-add) with n_threads
 * threads (<= 0: one per CPU): each runs the kernel set's dot instruction on registers only (vpdpbusd,
 * or vpmaddubsw + vpmaddwd), so a prefill's GOP/s can be read as a fraction of it. 0 for the scalar set. */
HKV_API double hkv_int8_peak(int n_threads);

#ifdef __cplusplus
}
#endif
#endif
