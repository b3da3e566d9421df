/* heavykv serve: an HTTP/1.1 server in the llama.cpp-server / OpenAI style on top of the public API.
 *
 * Why it exists: with a bounded KV cache (H2O, window, ...) every sequence needs only `budget` slots per head,
 * so many sequences fit in memory and decode together. The server owns one hkv_context with n_seq =
 * n_parallel; each sequence is a "slot". Continuous batching: every engine step runs hkv_decode_batch over all
 * generating slots (one token each); a new request's prompt is prefilled with hkv_decode on its slot (after
 * hkv_seq_reset), at most one prompt per step so that running slots keep streaming.
 *
 * Concurrency model: one thread. hkv_server_run() is a poll() event loop over non-blocking sockets that
 * interleaves network I/O with engine steps (poll does not wait while any slot is busy). No other threads are
 * created (the library's own matmul workers aside), so nothing needs a lock. Requests beyond the slots wait
 * in a bounded FIFO queue; when it is full the answer is 503.
 *
 * Endpoints: GET /health, GET /v1/models, GET /kv, POST /v1/completions (OpenAI), POST /completion (llama.cpp;
 * /completions is an alias). Every response closes the connection (no keep-alive).
 *
 * Budgets: a percentage KV budget refers to the context size n_ctx (the prompt length is not known when the
 * context is made, and one budget serves all requests).
 *
 * The server never prints: one line per finished request goes to the log callback. */
#ifndef HKV_SERVER_H
#define HKV_SERVER_H
#include <stddef.h>
#include "heavykv.h"

typedef struct hkv_server hkv_server;

typedef struct hkv_server_params {
    const char *host;        /* IPv4 address to bind (default "127.0.0.1") */
    int port;                /* TCP port; 0: an ephemeral one (read it with hkv_server_port). Default 8080 */
    int n_parallel;          /* slots = sequences decoding together (default 4) */
    int n_queue;             /* requests that may wait for a slot before new ones get 503 (default 16) */
    int max_conns;           /* open connections at once; beyond it a connection gets 503 and is closed (64) */
    int n_ctx;               /* positions per sequence; 0: the model's training context, at most 4096 */
    int n_threads;           /* worker threads; <= 0: the model's setting */
    hkv_kv_config kv;        /* policy and budget; percentages are of n_ctx */
    size_t max_body;         /* largest accepted request body in bytes (413 above; default 1 MiB) */
    double io_timeout_s;     /* a request must arrive, and a response make progress, within this (default 30) */
    const char *model_name;  /* "model" in responses and /v1/models; NULL: the GGUF general.name or "heavykv" */
    void (*log)(void *user, const char *line); /* one line per request, no trailing newline; NULL: silent */
    void *log_user;
} hkv_server_params;

hkv_server_params hkv_server_default_params(void);

/* Makes the context (n_seq = n_parallel) and binds + listens, so the port is known and connections queue
 * up even before hkv_server_run starts. The model must outlive the server. */
hkv_status hkv_server_new(hkv_model *m, const hkv_server_params *p, hkv_server **out, char *err, size_t errlen);
/* The bound TCP port (the ephemeral one when params.port was 0). */
int hkv_server_port(const hkv_server *s);
/* The server's context (read-only use: budget, KV statistics). */
const hkv_context *hkv_server_context(const hkv_server *s);
/* Serves until hkv_server_stop. Requests in flight at the stop get 503 (streams get an error event) and the
 * pending output is flushed for up to 2 s. Returns HKV_ERR_IO (message in hkv_server_last_error) only when
 * poll() itself fails. */
hkv_status hkv_server_run(hkv_server *s);
/* Asks hkv_server_run to return. Safe from a signal handler and from any thread. */
void hkv_server_stop(hkv_server *s);
void hkv_server_free(hkv_server *s);
const char *hkv_server_last_error(const hkv_server *s);

#endif
