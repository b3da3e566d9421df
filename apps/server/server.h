/* heavykv serve: an HTTP server in the llama.cpp-server / OpenAI style on top of the public API.
 *
 * Why it exists: with a bounded KV cache (H2O, window, ...) every sequence needs only `budget` rows per head,
 * so many conversations fit in a fixed amount of memory. The server is the place where that matters.
 *
 * Shape: HTTP is libmicrohttpd (one internal polling thread, keep-alive, chunked bodies, HEAD); the engine
 * is one more thread that owns every hkv_context. A request is parsed, validated and tokenized on the HTTP
 * thread, becomes a job in a bounded FIFO, and the engine admits it into a slot when a slot and enough K/V
 * memory are free. Each slot is one sequence; slots whose requests share a KV config are sequences of one
 * multi-sequence context (a group), so each request may still choose its own KV policy and budget
 * (`"kv": {...}`, a group of its own). The engine loop does, per step, one hkv_decode_tokens call per group
 * with the next token of every generating slot and at most prefill_chunk prompt tokens (whole pieces, oldest
 * request first): the weights are read once per step for all sequences, and a long prompt never freezes the
 * streams already running. Output is appended to the job under the server mutex; the HTTP side sends it
 * from a content-reader callback that suspends the connection while there is nothing to send, and the
 * engine resumes it (libmicrohttpd suspend/resume).
 *
 * Memory: a slot's context needs (budget + prefill_chunk) rows per (layer, KV head) at its peak (`full`:
 * n_ctx rows). With kv_memory set, a job is admitted only while the reserved bytes of all slots, including
 * idle slots that keep a cached conversation, stay within it (idle caches are dropped, least recently used
 * first, to make room). Without kv_memory at most n_parallel sequences run.
 *
 * The server never prints: one line per finished request (and per rejected connection) goes to the log
 * callback, with request fields escaped. */
#ifndef HKV_SERVER_H
#define HKV_SERVER_H
#include <stddef.h>
#include <stdint.h>
#include "heavykv.h"

typedef struct hkv_server hkv_server;

typedef struct hkv_server_params {
    const char *host;        /* address to bind (default "127.0.0.1"; IPv4 or IPv6 literal, or a name) */
    int port;                /* TCP port; 0: an ephemeral one (read it with hkv_server_port). Default 8080 */
    int n_parallel;          /* sequences at once when kv_memory is 0 (default 4) */
    uint64_t kv_memory;      /* bytes of K/V all sequences together may reserve; 0: no limit (n_parallel) */
    int n_queue;             /* requests that may wait for a slot before new ones get 503 (default 16) */
    int max_conns;           /* open connections at once (default 128); at the limit an idle one is closed */
    int max_conns_per_ip;    /* connections one client address may hold; 0: no per-address limit (default) */
    int n_ctx;               /* positions per sequence; 0: the model's default context */
    int n_threads;           /* worker threads of each group's context; <= 0: the model's setting */
    int prefill_chunk;       /* prompt tokens decoded per engine step (default 64) */
    hkv_kv_config kv;        /* default policy and budget; percentages are of n_ctx */
    size_t max_body;         /* largest accepted request body in bytes (413 above; default 1 MiB) */
    double idle_timeout_s;   /* a connection that makes no progress (idle, slow headers or body) is closed
                                after this (default 10) */
    const char *model_name;  /* "model" in responses and /v1/models; NULL: the GGUF general.name or "heavykv" */
    const char *api_key;     /* non-NULL, non-empty: every endpoint but /health needs "Authorization: Bearer KEY" */
    const char *cors_origin; /* Access-Control-Allow-Origin for browsers ("*" or one origin); NULL: none */
    const char *allow_origins; /* comma-separated Origins accepted besides cors_origin ("*": any); requests
                                  carrying any other Origin get 403 */
    const char *allow_hosts; /* comma-separated Host names accepted ("*": any). NULL: when bound to loopback
                                only localhost/127.0.0.1/[::1] (DNS-rebinding guard); otherwise any */
    const char *chat_template; /* family name or template text for chat; NULL: the model's own template */
    void (*log)(void *user, const char *line); /* one line per request, no trailing newline; NULL: silent */
    void *log_user;
} hkv_server_params;

hkv_server_params hkv_server_default_params(void);

/* What the server was built to hold, for the startup line and tests. */
typedef struct hkv_server_info {
    int port;
    int n_ctx;               /* positions per sequence */
    int max_seqs;            /* sequences of the default KV config that run at once */
    hkv_budget budget;       /* the default config's budget, in tokens per KV head */
    uint64_t seq_bytes;      /* K/V bytes one sequence of the default config reserves */
    uint64_t kv_memory;      /* the limit (0: none) */
    int loopback;            /* bound to a loopback address only */
} hkv_server_info;

/* Validates the parameters, starts the engine thread and listens, so the port is known and connections are
 * served at once (hkv_server_run only waits). The model must outlive the server. */
hkv_status hkv_server_new(hkv_model *m, const hkv_server_params *p, hkv_server **out, char *err, size_t errlen);
int hkv_server_port(const hkv_server *s);
void hkv_server_get_info(const hkv_server *s, hkv_server_info *info);
/* Blocks until hkv_server_stop. Then: no new requests; queued and running requests end (streams with a final
 * event whose finish_reason is "abort", others with 503), their output is flushed for up to 2 s, and the
 * listener closes. Returns HKV_OK. */
hkv_status hkv_server_run(hkv_server *s);
/* Pauses (1) or resumes (0) the engine between steps: queued requests are still admitted into free slots, but
 * nothing is decoded while paused (maintenance, and deterministic tests of admission and queueing). */
void hkv_server_pause(hkv_server *s, int paused);
/* Asks hkv_server_run to return. Async-signal-safe, callable from any thread. */
void hkv_server_stop(hkv_server *s);
void hkv_server_free(hkv_server *s);
const char *hkv_server_last_error(const hkv_server *s);

#endif
