/* Internal structures of heavykv serve, shared by http.c (libmicrohttpd, routes, security, metrics),
 * request.c (JSON in and out) and engine.c (slots, admission, the decode loop). See server.h for the shape.
 *
 * Locking: one mutex (hkv_server.mu) guards the queue, the slots' job pointers, every job's shared fields,
 * the metrics and the slot snapshots. The engine thread alone touches contexts and samplers, so decoding runs
 * without the lock. libmicrohttpd's suspend/resume functions are always called with the mutex released
 * (they take libmicrohttpd's own lock), except MHD_suspend_connection, which runs on the HTTP thread inside a
 * callback and never waits for the engine. */
#ifndef HKV_SERVER_INT_H
#define HKV_SERVER_INT_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "server.h"

#define MAX_STOP 16           /* stop strings per request */
#define MAX_STOP_LEN 256      /* bytes per stop string */
#define MAX_SLOTS 256         /* slot structures; how many run is set by n_parallel or kv_memory */
#define N_HIST 14             /* latency histogram buckets (+Inf is implied) */
#define N_BATCH_HIST 8        /* sequences-per-call histogram buckets 1, 2, 4, ..., 128 (+Inf implied) */

typedef struct buf { char *p; size_t n, cap; } buf; /* growable byte string, always NUL-terminated */
int buf_add(buf *b, const char *s, size_t n);
void buf_free(buf *b);

typedef enum { API_OAI, API_CHAT, API_LLAMA } api_kind;
typedef enum { FIN_EOS, FIN_LENGTH, FIN_WORD, FIN_ABORT } finish_kind;

typedef struct request {      /* one validated completion request (immutable once submitted) */
    api_kind api;
    int stream;
    int include_usage;        /* chat streams: stream_options.include_usage */
    int n_max;                /* tokens to generate at most; -1: until the context is full */
    int prompt_empty;         /* the prompt text was "" (SentencePiece: strip the first leading space) */
    hkv_sampler_params sp;
    char *stop[MAX_STOP];     /* stop strings, each non-empty */
    int n_stop;
    int32_t *prompt;          /* [n_prompt] tokens */
    int n_prompt;
    hkv_kv_config kv;         /* the sequence's KV config (the server's default unless "kv" was given) */
    hkv_budget budget;        /* kv resolved against n_ctx */
    uint64_t kv_bytes;        /* K/V bytes the sequence reserves at its peak */
    int cache_prompt;         /* reuse a slot whose cached tokens are a prefix of the prompt */
    char conv[64];            /* conversation id ("" none): prefer the slot that served it */
    uint64_t id;              /* "cmpl-<id>" / "chatcmpl-<id>" */
    long long created;        /* unix time */
} request;
void request_free(request *r);

typedef struct job {          /* a request on its way through the engine; refcounted (refs) under s->mu */
    request req;
    struct MHD_Connection *conn;
    int refs;                 /* HTTP request context, streaming response, engine */
    buf out;                  /* bytes for the client: SSE events (stream) or the whole body */
    size_t out_pos;           /* sent up to here */
    int done;                 /* the engine wrote everything (final event / body) */
    int status;               /* HTTP status of a non-streamed answer */
    int suspended;            /* the connection is suspended waiting for out/done */
    int cancelled;            /* the client went away: the engine drops the job at its next step */
    int queued;               /* waiting in the FIFO */
    int slot;                 /* slot index while running, else -1 */
    char note[256];           /* log-line detail */
    double t_submit, t_first, t_last; /* submit, first token, last token (metrics) */
    int n_prompt_reused;      /* prompt tokens found in the slot's cache */
    struct hkv_server *s;     /* list of live jobs (for the safety net at stop) */
    struct job *next, *prev;
} job;

typedef struct slot_view {    /* what /kv and /metrics show of a slot, refreshed by the engine */
    int busy;
    int n_past;
    int occupancy_min, occupancy_max;
    uint64_t kv_bytes, reserved, evictions;
    hkv_budget budget;
    char policy[16];
    int n_served;
    int n_cached;             /* tokens of a kept conversation (0: none) */
} slot_view;

/* Slots whose requests share a KV config (kv_equal) decode together: their sequences live in one group's
 * multi-sequence context and every engine step is one hkv_decode_tokens call per group. */
typedef struct group {
    hkv_context *ctx;         /* n_seq sequences, lazy_seqs (K/V only for sequences in use); NULL until needed */
    hkv_kv_config kv;         /* the config every sequence of the group uses */
    int n_seq;                /* sequences of this config that fit in kv_memory at once (n_parallel without it) */
    int n_used;               /* slots holding one of its sequences (running or keeping a conversation) */
} group;

typedef struct slot {         /* one sequence; the engine thread owns everything but job/view */
    job *j;                   /* the job being served; NULL: idle */
    int g, seq;               /* its sequence: group index and sequence in the group's context; g = -1: none
                                 (never used, or its memory was taken back) */
    hkv_kv_config kv;         /* the group's config */
    uint64_t reserved;        /* bytes counted against kv_memory while the slot holds a sequence */
    int32_t *cached;          /* [n_ctx] tokens decoded into ctx, in order */
    int n_cached;
    char conv[64];            /* conversation id of the last job */
    double last_used;
    hkv_sampler *smp;
    int pos;                  /* prompt tokens decoded so far */
    int prefilled;
    int32_t next;             /* sampled token the next step decodes */
    int n_gen, n_max;
    buf text;                 /* generated text, cut at a stop string */
    size_t streamed;          /* bytes of text already sent as SSE chunks */
    hkv_utf8_stream us;
    double t0, t1;            /* prefill start, first token */
    uint64_t order;           /* admission order (prefill goes oldest first) */
    int piece;                /* prompt tokens this step decodes (0: none) */
    int at;                   /* index of its first token in the step's batch */
    slot_view view;
} slot;

typedef struct metrics {
    uint64_t status_count[600];
    uint64_t prompt_tokens, gen_tokens, prompt_reused;
    uint64_t rejected_conns;
    double ttft[N_HIST + 1], itl[N_HIST + 1]; /* histogram counts (cumulative at render time) */
    double ttft_sum, itl_sum;
    uint64_t ttft_n, itl_n;
    double tps;               /* generated tokens per second, smoothed */
    double tps_t;             /* last update */
    uint64_t tps_tokens;      /* tokens since tps_t */
    uint64_t evictions_done;  /* evictions of sequences already reset or freed */
    /* batching: one hkv_decode_tokens call per group and engine step */
    uint64_t batch_calls, batch_seqs, batch_tokens; /* calls, sequences and tokens in them */
    int batch_seqs_max;       /* most sequences in one call */
    double batch_hist[N_BATCH_HIST + 1]; /* sequences per call: <= 1, 2, 4, ..., 128, more */
    uint64_t aborted_steps;   /* calls stopped by the abort callback (cancelled prefill, or stop) */
} metrics;

struct hkv_server {
    hkv_server_params p;
    hkv_model *m;
    hkv_model_info mi;
    int n_ctx;
    char model_name[128];
    char chat_family[32];     /* "" when chat is unavailable; chat_err says why */
    char chat_err[256];
    hkv_budget budget;        /* default config resolved */
    uint64_t seq_bytes;       /* default reservation */
    uint64_t row_bytes;       /* K+V bytes of one token in all layers and KV heads */
    int max_seqs;             /* concurrent sequences of the default config */
    int loopback;
    struct MHD_Daemon *d;
    int port;
    long long started;
    atomic_int stop;
    atomic_uint_fast64_t n_requests;
    int wake[2];              /* self-pipe: hkv_server_stop -> hkv_server_run */

    pthread_mutex_t mu;
    pthread_cond_t cv;        /* engine waits for work */
    pthread_t engine;
    int engine_started;
    int stopping;             /* engine: finish everything with "abort" and exit */
    int paused;               /* engine: admit, but do not decode (hkv_server_pause) */
    int engine_exited;
    job **queue;              /* [n_queue] FIFO */
    job *jobs;                /* every live job */
    int q_len;
    slot slots[MAX_SLOTS];
    int n_slots;              /* slots in use: n_parallel, or max over configs with kv_memory */
    group groups[MAX_SLOTS];  /* at most one per slot (each slot may use its own config) */
    /* one engine step's batch (engine thread only): [prefill_chunk + MAX_SLOTS] */
    int32_t *b_tok;
    int *b_seq;
    int8_t *b_want;
    slot **b_slot;            /* [MAX_SLOTS] slots in the call being decoded, for the abort callback */
    int b_nslot, b_decode;    /* how many; 1: the call holds decode tokens of running streams */
    int b_in_call;            /* 1 while hkv_decode_tokens runs the batch (b_in_call, b_decode, cb_layer: under mu) */
    int cb_layer;             /* abort callback calls in the current call */
    double cb_ping;           /* last time the abort callback pinged prefilling streams */
    uint64_t reserved;        /* bytes reserved by slots' contexts */
    uint64_t admit_order;
    metrics mt;

    /* connection tracking (HTTP thread only) */
    struct conn_track *conns;
    int n_conns;
    int n_live;               /* HTTP requests in progress (under mu) */
    char err[256];
};

/* request.c */
/* Parses a completion / chat body into r (tokenized, validated). Returns 0 or an HTTP status with msg. */
int parse_request(hkv_server *s, api_kind api, const char *body, size_t n, request *r, char *msg, size_t ml);
/* Resolves a KV config against the server's context: budget and reserved bytes. 0 or 400 with msg. */
int resolve_kv(hkv_server *s, const hkv_kv_config *kv, hkv_budget *b, uint64_t *bytes, char *msg, size_t ml);
struct cJSON;
/* error_json and result_json return NULL when memory ran out while building them (never a partial object);
 * json_print(NULL) is NULL, and error_body_nomem() is the static error body to send then. */
struct cJSON *error_json(int status, const char *msg, const char *type);
const char *error_body_nomem(void);
/* The response object for the final result / a streamed delta (fin < 0: not finished). */
struct cJSON *result_json(hkv_server *s, const job *j, const slot *sl, const char *text, int fin, const char *word,
                          int is_chunk, int first_chunk);
char *json_print(struct cJSON *j); /* takes j; malloc'ed text or NULL */
void json_array_add(struct cJSON *arr, struct cJSON *item); /* takes item: deleted when it cannot be added */
/* parse_request into a new job (refs 1, slot -1, not linked). NULL: *status and msg say why. */
job *job_create(hkv_server *s, api_kind api, const char *body, size_t n, int *status, char *msg, size_t ml);

/* engine.c */
void *engine_main(void *arg);
/* Queues j (takes the engine's reference). Returns 0, or 503 when the queue is full. Locks s->mu. */
int engine_submit(hkv_server *s, job *j, char *msg, size_t ml);
/* Adds a new job to the server's list of live jobs. Lock held. */
void job_link_locked(hkv_server *s, job *j);
/* Drops a reference (frees at 0). Call with s->mu held. */
void job_unref_locked(job *j);
/* Engine output: append bytes / mark done, resuming a suspended connection. Lock NOT held by the caller. */
void job_emit(hkv_server *s, job *j, const char *data, size_t n, int done, int status);
uint64_t engine_evictions_locked(hkv_server *s);

/* http.c */
hkv_status http_start(hkv_server *s, char *err, size_t errlen);
void http_stop(hkv_server *s);
void http_quiesce(hkv_server *s); /* stop accepting; the listening socket closes */
void server_log(hkv_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double now_s(void);

#endif
