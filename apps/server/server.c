/* heavykv serve: HTTP/1.1 parsing, routing, slots and the continuous-batching engine (see server.h).
 *
 * Life of a request: a connection is accepted (C_READ) and its bytes are collected until the head and the
 * Content-Length body are complete; the route runs. GET endpoints answer at once (C_WRITE). A completion is
 * validated and tokenized, then takes a free slot (C_GEN) or waits in the FIFO (C_WAIT). The engine prefills
 * the slot's prompt, then every step decodes all generating slots in one hkv_decode_batch and samples one
 * token per slot with the request's own sampler. When a request ends, its response (or the last SSE chunks) is
 * written (C_WRITE), our side of the socket is shut down and unread input is drained for a moment (C_LINGER)
 * so that the client sees the response rather than a reset. Connections are only ever closed in sweep(), so
 * pointers stay valid while the events of one poll() round are handled. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "server.h"

#define MAX_HEAD (16 * 1024)          /* request line + headers; 431 above */
#define MAX_BACKLOG (8u << 20)        /* unsent streamed bytes before a client that does not read is dropped */
#define MAX_STOP 16                   /* stop strings per request */
#define MAX_STOP_LEN 256              /* bytes per stop string */
#define LINGER_S 2.0                  /* draining unread input after a response */
#define MAX_ACCEPT_PER_ROUND 64

/* ---------------------------------------------------------------- types */

typedef struct buf { char *p; size_t n, cap; } buf; /* growable byte string, always NUL-terminated */

typedef enum { API_OAI, API_LLAMA } api_kind;
typedef enum { FIN_EOS, FIN_LENGTH, FIN_WORD } finish_kind;

typedef struct request {      /* one validated completion request */
    api_kind api;
    int stream;
    int n_max;                /* tokens to generate at most; -1: until the context is full */
    int prompt_empty;         /* the prompt text was "" (SentencePiece: strip the first leading space) */
    hkv_sampler_params sp;
    hkv_sampler *smp;         /* made at validation; moves to the slot */
    char *stop[MAX_STOP];     /* stop strings, each non-empty */
    int n_stop;
    int32_t *prompt;          /* [n_prompt] tokens */
    int n_prompt;
    uint64_t id;              /* "cmpl-<id>" */
    long long created;        /* unix time */
} request;

typedef enum { C_READ, C_WAIT, C_GEN, C_WRITE, C_LINGER } conn_state;

typedef struct conn {
    int fd;
    conn_state state;
    buf in;                   /* request bytes received */
    buf out;                  /* response bytes; out.p[sent..n) still to send */
    size_t sent;
    size_t head_len;          /* request line + headers + blank line; 0 until complete */
    size_t body_len;          /* Content-Length */
    int expect_continue;      /* client asked for "100 Continue" (curl does for bodies over 1 KiB) */
    int continue_sent;
    double t_start, t_io;     /* accept time; last progress of the output (or when output became pending) */
    char method[8], path[128];
    int status;               /* HTTP status answered, for the log line; 0: none */
    char note[256];           /* rest of the log line */
    request req;              /* valid while has_req */
    int has_req;
    int slot;                 /* slot index while C_GEN, else -1 */
    int dead;                 /* close at the next sweep (peer gone, socket error, out of memory) */
} conn;

typedef struct slot {         /* one sequence of the context */
    conn *c;                  /* the request being served; NULL: idle */
    int prefilled;            /* 0: the prompt is still to be decoded */
    hkv_sampler *smp;
    int32_t next;             /* sampled token that the next batch decodes */
    int n_gen, n_max;         /* tokens generated (EOG not counted), limit clamped to the context */
    buf text;                 /* generated text, cut at a stop string */
    size_t streamed;          /* bytes of text already sent as SSE chunks */
    hkv_utf8_stream us;
    double t0, t1, t2;        /* prefill start, prefill end, generation end */
    int n_served;             /* requests this slot has served (for /kv) */
} slot;

struct hkv_server {
    hkv_server_params p;
    hkv_model *m;
    hkv_model_info mi;
    hkv_context *ctx;
    int n_ctx;
    char model_name[128];
    int lfd;                  /* listening socket; -1 once closed */
    int port;
    int wake[2];              /* self-pipe: hkv_server_stop writes a byte so that poll() returns */
    atomic_int stop;
    int stopping;             /* run loop is shutting down: no new slot assignments */
    conn **conns;             /* [max_conns] open connections */
    int *batch_seqs;          /* [n_parallel] sequences of one engine step */
    int32_t *batch_toks;      /* [n_parallel] their input tokens */
    int n_conns;
    slot *slots;              /* [n_parallel] */
    conn **queue;             /* [n_queue] FIFO of C_WAIT connections */
    int q_len;
    uint64_t n_requests;      /* request ids; mixed into default seeds */
    long long started;        /* unix time of hkv_server_new */
    struct pollfd *pfd;       /* [max_conns + 2] */
    conn **pconn;             /* [max_conns + 2] the connection of each pfd entry */
    char err[256];
};

/* ---------------------------------------------------------------- small helpers */

static int buf_add(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 1;
}

static void buf_free(buf *b) { free(b->p); memset(b, 0, sizeof *b); }

static void note(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(conn *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->note, sizeof c->note, fmt, ap);
    va_end(ap);
}

static void request_free(request *r) {
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->prompt);
    hkv_sampler_free(r->smp);
    memset(r, 0, sizeof *r);
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static const char *reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* ---------------------------------------------------------------- output */

/* Queues bytes for the client; the connection dies when memory runs out. */
static void out_add(conn *c, const char *s, size_t n) {
    if (c->sent == c->out.n) c->t_io = hkv_time_sec(); /* output becomes pending now */
    if (!buf_add(&c->out, s, n)) c->dead = 1;
}

/* Sends what the socket takes without blocking. A fully written response ends our side of the connection. */
static void conn_flush(conn *c) {
    while (!c->dead && c->sent < c->out.n) {
        ssize_t w = send(c->fd, c->out.p + c->sent, c->out.n - c->sent, MSG_NOSIGNAL);
        if (w > 0) { c->sent += (size_t)w; c->t_io = hkv_time_sec(); continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        c->dead = 1; /* EPIPE, ECONNRESET: the client is gone */
    }
    if (c->dead) return;
    c->out.n = c->sent = 0;
    if (c->state == C_WRITE) {
        shutdown(c->fd, SHUT_WR);
        c->state = C_LINGER;
        c->t_io = hkv_time_sec();
    }
}

/* A complete response; the connection closes after it. */
static void reply(conn *c, int status, const char *ctype, const char *body, size_t n, const char *extra) {
    char head[512];
    int k = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n", status, reason(status), ctype, n, extra ? extra : "");
    out_add(c, head, (size_t)k);
    out_add(c, body, n);
    c->status = status;
    c->state = C_WRITE;
    conn_flush(c);
}

static void reply_json(conn *c, int status, cJSON *j, const char *extra) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) { c->dead = 1; return; }
    reply(c, status, "application/json", s, strlen(s), extra);
    free(s);
}

/* OpenAI-style error object: {"error": {"code", "message", "type"}}. */
static cJSON *error_json(int status, const char *msg) {
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddNumberToObject(e, "code", status);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", status == 404 ? "not_found_error"
                            : status < 500 ? "invalid_request_error" : "server_error");
    return j;
}

static void reply_error(conn *c, int status, const char *msg) {
    note(c, ": %s", msg);
    reply_json(c, status, error_json(status, msg), NULL);
}

static void sse_headers(conn *c) {
    static const char h[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                            "Connection: close\r\n\r\n";
    out_add(c, h, sizeof h - 1);
    c->status = 200;
    conn_flush(c);
}

/* One server-sent event "data: <json>\n\n" (takes j). */
static void sse_json(conn *c, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) { c->dead = 1; return; }
    out_add(c, "data: ", 6);
    out_add(c, s, strlen(s));
    out_add(c, "\n\n", 2);
    free(s);
}

/* Ends a streamed response with an error event (the status line already went out as 200). */
static void sse_error(conn *c, int status, const char *msg) {
    note(c, ": %s", msg);
    sse_json(c, error_json(status, msg));
    c->state = C_WRITE;
    conn_flush(c);
}

/* ---------------------------------------------------------------- request JSON */

/* Field readers: absent or null leaves *out unchanged and returns 0; a wrong type or range writes msg and
 * returns 400. */
static const cJSON *field(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

static int get_int(const cJSON *o, const char *name, double lo, double hi, double *out, char *msg, size_t ml) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    double v = f->valuedouble;
    if (!cJSON_IsNumber(f) || !isfinite(v) || v != floor(v) || v < lo || v > hi) {
        snprintf(msg, ml, "'%s' must be an integer in [%.0f, %.0f]", name, lo, hi);
        return 400;
    }
    *out = v;
    return 0;
}

/* open_lo: the lower bound itself is not allowed. */
static int get_num(const cJSON *o, const char *name, double lo, int open_lo, double hi, float *out, char *msg, size_t ml) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    double v = f->valuedouble;
    if (!cJSON_IsNumber(f) || !isfinite(v) || v < lo || (open_lo && v == lo) || v > hi) {
        snprintf(msg, ml, "'%s' must be a number in %c%g, %g]", name, open_lo ? '(' : '[', lo, hi);
        return 400;
    }
    *out = (float)v;
    return 0;
}

static int get_bool(const cJSON *o, const char *name, int *out, char *msg, size_t ml) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) { snprintf(msg, ml, "'%s' must be true or false", name); return 400; }
    *out = cJSON_IsTrue(f);
    return 0;
}

/* "stop": a string or an array of strings. */
static int get_stop(const cJSON *o, request *r, char *msg, size_t ml) {
    const cJSON *f = field(o, "stop");
    if (!f) return 0;
    int n = cJSON_IsString(f) ? 1 : cJSON_IsArray(f) ? cJSON_GetArraySize(f) : -1;
    if (n < 0 || n > MAX_STOP) {
        snprintf(msg, ml, "'stop' must be a string or an array of at most %d strings", MAX_STOP);
        return 400;
    }
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_IsString(f) ? f : cJSON_GetArrayItem(f, i);
        size_t len = cJSON_IsString(e) ? strlen(e->valuestring) : 0;
        if (!cJSON_IsString(e) || len > MAX_STOP_LEN) {
            snprintf(msg, ml, "'stop' entries must be strings of at most %d bytes", MAX_STOP_LEN);
            return 400;
        }
        if (!len) continue; /* an empty stop string would match everywhere: ignore it */
        if (!(r->stop[r->n_stop] = strdup(e->valuestring))) { snprintf(msg, ml, "out of memory"); return 500; }
        r->n_stop++;
    }
    return 0;
}

/* Sampling fields; defaults follow each API (OpenAI: plain temperature 1; llama.cpp: its sampler chain). */
static int get_sampling(const cJSON *o, request *r, char *msg, size_t ml) {
    hkv_sampler_params *sp = &r->sp;
    *sp = hkv_sampler_default_params();
    if (r->api == API_OAI) { sp->temp = 1.0f; sp->top_k = 0; sp->top_p = 1.0f; sp->min_p = 0.0f; }
    double top_k = sp->top_k, seed = -1;
    int st;
    if ((st = get_num(o, "temperature", 0, 0, 100, &sp->temp, msg, ml)) ||
        (st = get_num(o, "top_p", 0, 1, 1, &sp->top_p, msg, ml)) ||
        (st = get_num(o, "min_p", 0, 0, 1, &sp->min_p, msg, ml)) ||
        (st = get_num(o, "repeat_penalty", 0, 1, 100, &sp->repeat_penalty, msg, ml)) ||
        (st = get_int(o, "top_k", 0, 1 << 30, &top_k, msg, ml)) ||
        (st = get_int(o, "seed", -1, 9007199254740992.0, &seed, msg, ml)))
        return st;
    sp->top_k = (int)top_k;
    /* seed -1 or absent: a fresh one per request (llama.cpp's convention) */
    sp->seed = seed >= 0 ? (uint64_t)seed : mix64((uint64_t)(hkv_time_sec() * 1e9) ^ (r->id * 0x9E3779B97F4A7C15ull));
    return 0;
}

static int get_prompt(hkv_server *s, const cJSON *o, request *r, char *msg, size_t ml) {
    const cJSON *p = field(o, "prompt");
    if (!p) { snprintf(msg, ml, "'prompt' is required"); return 400; }
    if (!cJSON_IsString(p)) { snprintf(msg, ml, "'prompt' must be a string"); return 400; }
    const char *text = p->valuestring;
    size_t cap = strlen(text) + 16;
    r->prompt_empty = !*text;
    if (!(r->prompt = malloc(sizeof(int32_t) * cap))) { snprintf(msg, ml, "out of memory"); return 500; }
    r->n_prompt = hkv_tokenize(s->m, text, -1, 1, r->prompt, (int)cap); /* BOS as the model says */
    if (r->n_prompt <= 0) {
        snprintf(msg, ml, "the prompt is empty after tokenization and the model has no BOS token");
        return 400;
    }
    if (r->n_prompt >= s->n_ctx) {
        snprintf(msg, ml, "the prompt has %d tokens; it must be shorter than the context length %d",
                 r->n_prompt, s->n_ctx);
        return 400;
    }
    return 0;
}

/* Parses and validates a completion body into r. Returns 0, or an HTTP status with msg. */
static int parse_completion(hkv_server *s, api_kind api, const char *body, size_t n, request *r, char *msg, size_t ml) {
    const char *limit_name = api == API_OAI ? "max_tokens" : "n_predict", *end = NULL;
    double n_max = api == API_OAI ? 16 : -1, n_choices = 1;
    memset(r, 0, sizeof *r);
    r->api = api;
    r->id = ++s->n_requests;
    r->created = (long long)time(NULL);
    cJSON *o = cJSON_ParseWithLengthOpts(body, n, &end, 0);
    int st = 0;
    if (o && end) /* only whitespace may follow the JSON value */
        for (const char *e = end; e < body + n; e++)
            if (!strchr(" \t\r\n", *e) || !*e) { cJSON_Delete(o); o = NULL; break; }
    if (!o) { snprintf(msg, ml, "the request body is not valid JSON"); return 400; }
    if (!cJSON_IsObject(o)) { snprintf(msg, ml, "the request body must be a JSON object"); st = 400; goto done; }
    if ((st = get_int(o, limit_name, api == API_OAI ? 0 : -1, 1 << 30, &n_max, msg, ml)) ||
        (st = get_int(o, "n", 1, 1, &n_choices, msg, ml)) ||
        (st = get_bool(o, "stream", &r->stream, msg, ml)) ||
        (st = get_stop(o, r, msg, ml)) ||
        (st = get_sampling(o, r, msg, ml)) ||
        (st = get_prompt(s, o, r, msg, ml)))
        goto done;
    r->n_max = (int)n_max;
    char err[256];
    if (hkv_sampler_new(&r->sp, s->mi.n_vocab, &r->smp, err, sizeof err)) { snprintf(msg, ml, "%s", err); st = 400; }
done:
    cJSON_Delete(o);
    if (st) request_free(r);
    return st;
}

/* ---------------------------------------------------------------- responses */

static cJSON *oai_object(hkv_server *s, const request *r) {
    char id[32];
    snprintf(id, sizeof id, "cmpl-%llu", (unsigned long long)r->id);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", id);
    cJSON_AddStringToObject(j, "object", "text_completion");
    cJSON_AddNumberToObject(j, "created", (double)r->created);
    cJSON_AddStringToObject(j, "model", s->model_name);
    return j;
}

/* {"text", "index", "logprobs", "finish_reason"} inside "choices". fin < 0: not finished (null). */
static void oai_choice(cJSON *j, const char *text, int fin) {
    cJSON *ch = cJSON_AddArrayToObject(j, "choices"), *c0 = cJSON_CreateObject();
    cJSON_AddItemToArray(ch, c0);
    cJSON_AddStringToObject(c0, "text", text);
    cJSON_AddNumberToObject(c0, "index", 0);
    cJSON_AddNullToObject(c0, "logprobs");
    if (fin < 0) cJSON_AddNullToObject(c0, "finish_reason");
    else cJSON_AddStringToObject(c0, "finish_reason", fin == FIN_LENGTH ? "length" : "stop");
}

static void oai_usage(cJSON *j, int n_prompt, int n_gen) {
    cJSON *u = cJSON_AddObjectToObject(j, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", n_prompt + n_gen);
}

/* The llama.cpp /completion result (content "" when streamed: the text went out in the chunks). */
static cJSON *llama_final(hkv_server *s, const slot *sl, const char *content, finish_kind fin, const char *word) {
    const request *r = &sl->c->req;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "content", content);
    cJSON_AddStringToObject(j, "model", s->model_name);
    cJSON_AddNumberToObject(j, "id_slot", (double)(sl - s->slots));
    cJSON_AddNumberToObject(j, "tokens_predicted", sl->n_gen);
    cJSON_AddNumberToObject(j, "tokens_evaluated", r->n_prompt);
    cJSON_AddBoolToObject(j, "stop", 1);
    cJSON_AddStringToObject(j, "stop_type", fin == FIN_EOS ? "eos" : fin == FIN_LENGTH ? "limit" : "word");
    cJSON_AddBoolToObject(j, "stopped_eos", fin == FIN_EOS);
    cJSON_AddBoolToObject(j, "stopped_limit", fin == FIN_LENGTH);
    cJSON_AddBoolToObject(j, "stopped_word", fin == FIN_WORD);
    cJSON_AddStringToObject(j, "stopping_word", word ? word : "");
    double tp = sl->t1 - sl->t0, tg = sl->t2 - sl->t1;
    cJSON *t = cJSON_AddObjectToObject(j, "timings");
    cJSON_AddNumberToObject(t, "prompt_n", r->n_prompt);
    cJSON_AddNumberToObject(t, "prompt_ms", tp * 1e3);
    cJSON_AddNumberToObject(t, "prompt_per_second", tp > 0 ? r->n_prompt / tp : 0);
    cJSON_AddNumberToObject(t, "predicted_n", sl->n_gen);
    cJSON_AddNumberToObject(t, "predicted_ms", tg * 1e3);
    cJSON_AddNumberToObject(t, "predicted_per_second", tg > 0 ? sl->n_gen / tg : 0);
    return j;
}

/* ---------------------------------------------------------------- slots and the engine */

static int slot_index(const hkv_server *s, const slot *sl) { return (int)(sl - s->slots); }

static void slot_release(slot *sl) {
    hkv_sampler_free(sl->smp);
    sl->smp = NULL;
    if (sl->c) sl->c->slot = -1;
    sl->c = NULL;
}

static void schedule(hkv_server *s);

/* The request failed inside the engine (a decode error): answer 500 and free the slot. */
static void slot_fail(hkv_server *s, slot *sl, const char *msg) {
    conn *c = sl->c;
    if (c->req.stream) sse_error(c, 500, msg);
    else reply_error(c, 500, msg);
    slot_release(sl);
    request_free(&c->req);
    c->has_req = 0;
    schedule(s);
}

/* Longest tail of the text that could still grow into a stop string: it is held back from the stream. */
static size_t held_back(const slot *sl) {
    const request *r = &sl->c->req;
    size_t best = 0;
    for (int i = 0; i < r->n_stop; i++) {
        size_t len = strlen(r->stop[i]);
        for (size_t k = len - 1 < sl->text.n ? len - 1 : sl->text.n; k > best; k--)
            if (!memcmp(sl->text.p + sl->text.n - k, r->stop[i], k)) { best = k; break; }
    }
    return best;
}

/* Sends the text generated since the last chunk (all of it when final). */
static void stream_delta(hkv_server *s, slot *sl, int final) {
    conn *c = sl->c;
    if (!c->req.stream) return;
    size_t end = sl->text.n - (final ? 0 : held_back(sl));
    while (end > sl->streamed && end < sl->text.n && (sl->text.p[end] & 0xC0) == 0x80) end--; /* whole chars */
    if (end <= sl->streamed) return;
    char *delta = strndup(sl->text.p + sl->streamed, end - sl->streamed);
    if (!delta) { c->dead = 1; return; }
    cJSON *j;
    if (c->req.api == API_OAI) { j = oai_object(s, &c->req); oai_choice(j, delta, -1); }
    else {
        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "content", delta);
        cJSON_AddBoolToObject(j, "stop", 0);
    }
    free(delta);
    sse_json(c, j);
    sl->streamed = end;
    conn_flush(c);
}

/* The request is done: write the response (or the last chunks), free the slot, start a queued request. */
static void slot_finish(hkv_server *s, slot *sl, finish_kind fin, const char *word) {
    conn *c = sl->c;
    request *r = &c->req;
    sl->t2 = hkv_time_sec();
    double tp = sl->t1 - sl->t0, tg = sl->t2 - sl->t1;
    note(c, " slot %d: prompt %d tok (%.1f tok/s), %d generated (%.1f tok/s), %s", slot_index(s, sl), r->n_prompt,
         tp > 0 ? r->n_prompt / tp : 0.0, sl->n_gen, tg > 0 ? sl->n_gen / tg : 0.0,
         fin == FIN_EOS ? "eos" : fin == FIN_LENGTH ? "length" : "stop string");
    if (r->stream) {
        stream_delta(s, sl, 1);
        if (r->api == API_OAI) {
            cJSON *j = oai_object(s, r);
            oai_choice(j, "", fin);
            oai_usage(j, r->n_prompt, sl->n_gen);
            sse_json(c, j);
            out_add(c, "data: [DONE]\n\n", 14);
        } else sse_json(c, llama_final(s, sl, "", fin, word));
        c->state = C_WRITE;
        conn_flush(c);
    } else if (r->api == API_OAI) {
        cJSON *j = oai_object(s, r);
        oai_choice(j, sl->text.p ? sl->text.p : "", fin);
        oai_usage(j, r->n_prompt, sl->n_gen);
        reply_json(c, 200, j, NULL);
    } else reply_json(c, 200, llama_final(s, sl, sl->text.p ? sl->text.p : "", fin, word), NULL);
    slot_release(sl);
    request_free(r);
    c->has_req = 0;
    schedule(s);
}

/* Earliest stop string in the text, looking only where the last piece could have completed one. */
static int find_stop(slot *sl, size_t old_len, const char **word) {
    const request *r = &sl->c->req;
    size_t best = SIZE_MAX;
    for (int i = 0; i < r->n_stop; i++) {
        size_t len = strlen(r->stop[i]), from = old_len >= len ? old_len - len + 1 : 0;
        if (from >= sl->text.n) continue;
        const char *hit = memmem(sl->text.p + from, sl->text.n - from, r->stop[i], len);
        if (hit && (size_t)(hit - sl->text.p) < best) { best = (size_t)(hit - sl->text.p); *word = r->stop[i]; }
    }
    if (best == SIZE_MAX) return 0;
    sl->text.n = best;
    sl->text.p[best] = 0;
    return 1;
}

/* Samples the slot's next token from its logits and handles the end conditions; otherwise the token is set
 * up for the next batch. Matches `heavykv run`: the last token is never decoded. */
static void slot_advance(hkv_server *s, slot *sl) {
    if (sl->n_gen >= sl->n_max) { slot_finish(s, sl, FIN_LENGTH, NULL); return; }
    const float *lg = hkv_get_logits(s->ctx, slot_index(s, sl), -1);
    if (!lg) { slot_fail(s, sl, "no logits after decoding"); return; }
    int32_t tok = hkv_sampler_sample(sl->smp, lg);
    if (hkv_token_is_eog(s->m, tok)) { slot_finish(s, sl, FIN_EOS, NULL); return; }
    sl->n_gen++;
    char piece[1024];
    int k = hkv_utf8_stream_push(&sl->us, s->m, tok, piece, sizeof piece);
    size_t old = sl->text.n;
    if (k > 0 && !buf_add(&sl->text, piece, (size_t)k)) { slot_fail(s, sl, "out of memory"); return; }
    const char *word = NULL;
    if (find_stop(sl, old, &word)) { slot_finish(s, sl, FIN_WORD, word); return; }
    stream_delta(s, sl, 0);
    if (sl->n_gen >= sl->n_max) { slot_finish(s, sl, FIN_LENGTH, NULL); return; }
    sl->next = tok;
}

/* Gives slot sl to connection c (whose request is parsed). */
static void slot_assign(hkv_server *s, slot *sl, conn *c) {
    request *r = &c->req;
    sl->smp = r->smp;
    r->smp = NULL;
    for (int i = 0; i < r->n_prompt; i++) hkv_sampler_accept(sl->smp, r->prompt[i]);
    sl->c = c;
    sl->prefilled = 0;
    sl->n_gen = 0;
    int room = s->n_ctx - r->n_prompt;
    sl->n_max = r->n_max < 0 || r->n_max > room ? room : r->n_max;
    sl->text.n = 0;
    if (sl->text.p) sl->text.p[0] = 0;
    sl->streamed = 0;
    memset(&sl->us, 0, sizeof sl->us);
    sl->us.strip_space = s->mi.spm && r->prompt_empty;
    sl->n_served++;
    c->slot = slot_index(s, sl);
    c->state = C_GEN;
}

static slot *free_slot(hkv_server *s) {
    for (int i = 0; i < s->p.n_parallel; i++)
        if (!s->slots[i].c) return &s->slots[i];
    return NULL;
}

/* Moves queued requests into free slots, oldest first. */
static void schedule(hkv_server *s) {
    slot *sl;
    while (!s->stopping && s->q_len > 0 && (sl = free_slot(s))) {
        conn *c = s->queue[0];
        memmove(s->queue, s->queue + 1, sizeof(conn *) * (size_t)--s->q_len);
        slot_assign(s, sl, c);
    }
}

static void queue_remove(hkv_server *s, conn *c) {
    for (int i = 0; i < s->q_len; i++)
        if (s->queue[i] == c) {
            memmove(s->queue + i, s->queue + i + 1, sizeof(conn *) * (size_t)(s->q_len - i - 1));
            s->q_len--;
            return;
        }
}

static void slot_prefill(hkv_server *s, slot *sl) {
    int seq = slot_index(s, sl);
    request *r = &sl->c->req;
    hkv_seq_reset(s->ctx, seq);
    sl->t0 = hkv_time_sec();
    hkv_status st = hkv_decode(s->ctx, seq, r->prompt, r->n_prompt);
    sl->t1 = hkv_time_sec();
    if (st) { slot_fail(s, sl, hkv_last_error(s->ctx)); return; }
    sl->prefilled = 1;
    slot_advance(s, sl);
}

static int engine_busy(const hkv_server *s) {
    for (int i = 0; i < s->p.n_parallel; i++)
        if (s->slots[i].c) return 1;
    return 0;
}

/* One step: at most one prompt prefill, then one token for every generating slot in a single batch. */
static void engine_step(hkv_server *s) {
    int np = s->p.n_parallel;
    for (int i = 0; i < np; i++)
        if (s->slots[i].c && !s->slots[i].prefilled) { slot_prefill(s, &s->slots[i]); break; }
    int *seqs = s->batch_seqs, n = 0;       /* [n_parallel] scratch owned by the server */
    int32_t *toks = s->batch_toks;
    for (int i = 0; i < np; i++)
        if (s->slots[i].c && s->slots[i].prefilled) { seqs[n] = i; toks[n++] = s->slots[i].next; }
    if (!n) return;
    if (hkv_decode_batch(s->ctx, seqs, toks, n)) {
        for (int i = 0; i < n; i++) slot_fail(s, &s->slots[seqs[i]], hkv_last_error(s->ctx));
        return;
    }
    for (int i = 0; i < n; i++) slot_advance(s, &s->slots[seqs[i]]);
}

/* ---------------------------------------------------------------- GET endpoints */

static void get_health(conn *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", "ok");
    reply_json(c, 200, j, NULL);
}

static void get_models(hkv_server *s, conn *c) {
    cJSON *j = cJSON_CreateObject(), *d = cJSON_AddArrayToObject(j, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    cJSON_AddItemToArray(d, m);
    cJSON_AddStringToObject(m, "id", s->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)s->started);
    cJSON_AddStringToObject(m, "owned_by", "heavykv");
    cJSON *meta = cJSON_AddObjectToObject(m, "meta");
    cJSON_AddStringToObject(meta, "arch", s->mi.arch);
    cJSON_AddNumberToObject(meta, "n_vocab", s->mi.n_vocab);
    cJSON_AddNumberToObject(meta, "n_ctx_train", s->mi.n_ctx_train);
    cJSON_AddNumberToObject(meta, "n_params", (double)s->mi.n_params);
    cJSON_AddNumberToObject(meta, "n_ctx", s->n_ctx);
    cJSON_AddNumberToObject(meta, "n_parallel", s->p.n_parallel);
    cJSON_AddStringToObject(meta, "kv_policy", s->p.kv.policy);
    cJSON_AddNumberToObject(meta, "kv_budget", hkv_context_budget(s->ctx).total);
    reply_json(c, 200, j, NULL);
}

/* Occupancy of one sequence over all (layer, KV head): min, max, sum. */
static void seq_occupancy(const hkv_server *s, int seq, const hkv_kv_stats *st, int32_t *pos, int cap,
                          int *mn, int *mx, long long *sum) {
    *mn = INT32_MAX; *mx = 0; *sum = 0;
    for (int l = 0; l < st->n_layer; l++)
        for (int h = 0; h < st->n_head_kv; h++) {
            int k = hkv_kv_positions(s->ctx, seq, l, h, pos, cap);
            if (k < 0) k = -k;
            if (k < *mn) *mn = k;
            if (k > *mx) *mx = k;
            *sum += k;
        }
    if (*mn == INT32_MAX) *mn = 0;
}

static void get_kv(hkv_server *s, conn *c) {
    hkv_kv_stats st;
    hkv_get_kv_stats(s->ctx, &st);
    int cap = st.capacity > 0 ? st.capacity : 1;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)cap);
    if (!pos) { reply_error(c, 500, "out of memory"); return; }
    int np = s->p.n_parallel;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "policy", s->p.kv.policy);
    cJSON_AddBoolToObject(j, "simulate", s->p.kv.simulate);
    cJSON_AddNumberToObject(j, "n_ctx", s->n_ctx);
    cJSON_AddNumberToObject(j, "n_parallel", np);
    cJSON *b = cJSON_AddObjectToObject(j, "budget");
    cJSON_AddNumberToObject(b, "total", st.budget.total);
    cJSON_AddNumberToObject(b, "heavy", st.budget.heavy);
    cJSON_AddNumberToObject(b, "recent", st.budget.recent);
    cJSON_AddNumberToObject(b, "sink", st.budget.sink);
    cJSON_AddNumberToObject(j, "capacity", st.capacity);
    cJSON_AddNumberToObject(j, "n_layer", st.n_layer);
    cJSON_AddNumberToObject(j, "n_head_kv", st.n_head_kv);
    cJSON_AddNumberToObject(j, "head_dim", st.head_dim);
    cJSON_AddNumberToObject(j, "kv_bytes", (double)st.kv_bytes);
    cJSON_AddNumberToObject(j, "meta_bytes", (double)st.meta_bytes);
    cJSON_AddNumberToObject(j, "evictions", (double)st.evictions);
    cJSON *arr = cJSON_AddArrayToObject(j, "slots");
    for (int i = 0; i < np; i++) {
        const slot *sl = &s->slots[i];
        int mn, mx, past = hkv_n_past(s->ctx, i);
        long long sum;
        seq_occupancy(s, i, &st, pos, cap, &mn, &mx, &sum);
        long long heads = (long long)st.n_layer * st.n_head_kv;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddNumberToObject(o, "id", i);
        cJSON_AddStringToObject(o, "state", !sl->c ? "idle" : sl->prefilled ? "generating" : "prefill");
        cJSON_AddNumberToObject(o, "requests", sl->n_served);
        cJSON_AddNumberToObject(o, "n_past", past);
        cJSON_AddNumberToObject(o, "budget", st.budget.total);
        cJSON_AddNumberToObject(o, "capacity", st.capacity);
        cJSON_AddNumberToObject(o, "occupancy_min", mn);
        cJSON_AddNumberToObject(o, "occupancy_max", mx);
        cJSON_AddNumberToObject(o, "occupancy_mean", heads ? (double)sum / (double)heads : 0.0);
        /* every position entered each head once, so what is not kept was evicted */
        cJSON_AddNumberToObject(o, "evicted", (double)(past * heads - sum));
        cJSON_AddNumberToObject(o, "kv_bytes", (double)(st.kv_bytes / (uint64_t)np));
    }
    free(pos);
    reply_json(c, 200, j, NULL);
}

/* ---------------------------------------------------------------- HTTP parsing and routing */

/* Starts a completion: validated requests take a free slot or wait in the queue; 503 when that is full. */
static void post_completion(hkv_server *s, conn *c, api_kind api) {
    char msg[256];
    int st = parse_completion(s, api, c->in.p + c->head_len, c->body_len, &c->req, msg, sizeof msg);
    if (st) { reply_error(c, st, msg); return; }
    slot *sl = free_slot(s);
    if (!sl && s->q_len >= s->p.n_queue) {
        request_free(&c->req);
        snprintf(msg, sizeof msg, "all %d slots are busy and %d requests are waiting; retry later",
                 s->p.n_parallel, s->q_len);
        reply_error(c, 503, msg);
        return;
    }
    c->has_req = 1;
    if (c->req.stream) sse_headers(c);
    if (sl) slot_assign(s, sl, c);
    else { s->queue[s->q_len++] = c; c->state = C_WAIT; }
}

static void route(hkv_server *s, conn *c) {
    static const struct { const char *path, *method; int id; } routes[] = {
        {"/health", "GET", 0}, {"/v1/models", "GET", 1}, {"/kv", "GET", 2},
        {"/v1/completions", "POST", 3}, {"/completion", "POST", 4}, {"/completions", "POST", 4},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(c->path, routes[i].path)) continue;
        if (strcmp(c->method, routes[i].method)) {
            char msg[320], allow[32];
            snprintf(msg, sizeof msg, "%s %s is not supported; use %s", c->method, c->path, routes[i].method);
            snprintf(allow, sizeof allow, "Allow: %s\r\n", routes[i].method);
            note(c, ": %s", msg);
            reply_json(c, 405, error_json(405, msg), allow);
            return;
        }
        switch (routes[i].id) {
        case 0: get_health(c); return;
        case 1: get_models(s, c); return;
        case 2: get_kv(s, c); return;
        case 3: post_completion(s, c, API_OAI); return;
        default: post_completion(s, c, API_LLAMA); return;
        }
    }
    char msg[320];
    snprintf(msg, sizeof msg, "no endpoint at %s (see /v1/completions, /completion, /v1/models, /kv, /health)", c->path);
    reply_error(c, 404, msg);
}

/* Content-Length: digits only, at most 18 of them. Returns 0 when malformed. */
static int parse_length(const char *v, size_t n, size_t *out) {
    if (!n || n > 18) return 0;
    size_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return 0;
        x = x * 10 + (size_t)(v[i] - '0');
    }
    *out = x;
    return 1;
}

/* Request line and headers in c->in.p[0..head_len). Returns 0, or an HTTP status with msg. */
static int parse_head(hkv_server *s, conn *c, char *msg, size_t ml) {
    const char *p = c->in.p, *end = c->in.p + c->head_len - 2; /* end: the blank line's CRLF */
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp1 - p >= (long)sizeof c->method || sp2 == sp1 + 1 || sp1[1] != '/') {
        snprintf(msg, ml, "malformed request line");
        return 400;
    }
    for (const char *q = p; q < sp1; q++)
        if (*q < 'A' || *q > 'Z') { snprintf(msg, ml, "malformed request method"); return 400; }
    memcpy(c->method, p, (size_t)(sp1 - p));
    const char *tgt = sp1 + 1, *qm = memchr(tgt, '?', (size_t)(sp2 - tgt));
    size_t plen = (size_t)((qm ? qm : sp2) - tgt);
    if (plen >= sizeof c->path) { snprintf(msg, ml, "the request path is longer than %zu bytes", sizeof c->path - 1); return 414; }
    memcpy(c->path, tgt, plen);
    c->path[plen] = 0;
    if (strlen(c->path) != plen) { snprintf(msg, ml, "malformed request path"); return 400; }
    if (eol - sp2 - 1 != 8 || (memcmp(sp2 + 1, "HTTP/1.1", 8) && memcmp(sp2 + 1, "HTTP/1.0", 8))) {
        snprintf(msg, ml, "only HTTP/1.0 and HTTP/1.1 are supported");
        return 505;
    }
    int have_len = 0;
    for (const char *line = eol + 2; line < end;) {
        const char *le = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line || memchr(line, ' ', (size_t)(colon - line)) || memchr(line, '\t', (size_t)(colon - line))) {
            snprintf(msg, ml, "malformed header line");
            return 400;
        }
        const char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t nl = (size_t)(colon - line), vl = (size_t)(ve - v);
        if (nl == 14 && !strncasecmp(line, "Content-Length", 14)) {
            size_t len;
            if (!parse_length(v, vl, &len) || (have_len && len != c->body_len)) {
                snprintf(msg, ml, "invalid Content-Length header");
                return 400;
            }
            c->body_len = len;
            have_len = 1;
        } else if (nl == 17 && !strncasecmp(line, "Transfer-Encoding", 17)) {
            snprintf(msg, ml, "Transfer-Encoding is not supported; send the body with a Content-Length");
            return 501;
        } else if (nl == 6 && !strncasecmp(line, "Expect", 6)) {
            if (vl != 12 || strncasecmp(v, "100-continue", 12)) { snprintf(msg, ml, "unsupported Expect header"); return 417; }
            c->expect_continue = 1;
        }
        line = le + 2;
    }
    if (!have_len && !strcmp(c->method, "POST")) { snprintf(msg, ml, "a POST request needs a Content-Length header"); return 411; }
    if (c->body_len > s->p.max_body) {
        snprintf(msg, ml, "the request body has %zu bytes; at most %zu are accepted", c->body_len, s->p.max_body);
        return 413;
    }
    return 0;
}

/* Called after input arrives in C_READ: answers once the head and body are complete. */
static void try_request(hkv_server *s, conn *c) {
    char msg[256];
    if (!c->head_len) {
        char *e = memmem(c->in.p, c->in.n, "\r\n\r\n", 4);
        if (!e || (size_t)(e - c->in.p) + 4 > MAX_HEAD) {
            if (c->in.n > MAX_HEAD) {
                snprintf(msg, sizeof msg, "the request line and headers exceed %d bytes", MAX_HEAD);
                reply_error(c, 431, msg);
            }
            return;
        }
        c->head_len = (size_t)(e - c->in.p) + 4;
        int st = parse_head(s, c, msg, sizeof msg);
        if (st) {
            if (!c->method[0]) snprintf(c->method, sizeof c->method, "?");
            reply_error(c, st, msg);
            return;
        }
    }
    if (c->in.n - c->head_len < c->body_len) {
        if (c->expect_continue && !c->continue_sent) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            out_add(c, cont, sizeof cont - 1);
            conn_flush(c);
            c->continue_sent = 1;
        }
        return;
    }
    route(s, c);
}

/* ---------------------------------------------------------------- connections */

static void conn_read(hkv_server *s, conn *c) {
    char tmp[16384];
    ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (r <= 0) { /* end of input or error: in every state we read in, the client has gone */
        if (c->state == C_GEN || c->state == C_WAIT) note(c, ": the client went away before the end");
        c->dead = 1;
        return;
    }
    if (c->state != C_READ) return; /* anything after the request is ignored (no pipelining) */
    if (!buf_add(&c->in, tmp, (size_t)r)) { c->dead = 1; return; }
    try_request(s, c);
}

static void conn_close(hkv_server *s, int i) {
    conn *c = s->conns[i];
    if (c->slot >= 0) {
        slot_release(&s->slots[c->slot]);
    }
    if (c->state == C_WAIT) queue_remove(s, c);
    if (c->method[0] && s->p.log) {
        char line[512];
        char status[8] = "-";
        if (c->status) snprintf(status, sizeof status, "%d", c->status);
        snprintf(line, sizeof line, "%s %s %s %.3fs%s", c->method, c->path, status, hkv_time_sec() - c->t_start, c->note);
        s->p.log(s->p.log_user, line);
    }
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    request_free(&c->req);
    free(c);
    s->conns[i] = s->conns[--s->n_conns];
    schedule(s);
}

static void accept_all(hkv_server *s) {
    for (int k = 0; k < MAX_ACCEPT_PER_ROUND; k++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or a connection that died in the backlog */
        if (s->n_conns >= s->p.max_conns) {
            static const char body[] = "{\"error\":{\"code\":503,\"message\":\"too many connections\","
                                       "\"type\":\"server_error\"}}";
            char busy[512];
            int len = snprintf(busy, sizeof busy, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", sizeof body - 1, body);
            ssize_t w = send(fd, busy, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT); /* best effort */
            (void)w;
            close(fd);
            continue;
        }
        conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); return; }
        c->fd = fd;
        c->slot = -1;
        c->state = C_READ;
        c->t_start = c->t_io = hkv_time_sec();
        s->conns[s->n_conns++] = c;
    }
}

/* Closes what is dead or timed out. */
static void sweep(hkv_server *s) {
    double now = hkv_time_sec(), to = s->p.io_timeout_s;
    for (int i = s->n_conns - 1; i >= 0; i--) {
        conn *c = s->conns[i];
        int pending = c->sent < c->out.n;
        if (!c->dead && c->state == C_READ && now - c->t_start > to) {
            if (!c->in.n) c->dead = 1; /* never said anything */
            else {
                if (!c->method[0]) snprintf(c->method, sizeof c->method, "?");
                reply_error(c, 408, "the request did not arrive in time");
            }
        }
        if ((pending && now - c->t_io > to) || (c->state == C_LINGER && now - c->t_io > LINGER_S) ||
            c->out.n - c->sent > MAX_BACKLOG)
            c->dead = 1;
        if (c->dead) conn_close(s, i);
    }
}

/* ---------------------------------------------------------------- server */

hkv_server_params hkv_server_default_params(void) {
    hkv_server_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 8080;
    p.n_parallel = 4;
    p.n_queue = 16;
    p.max_conns = 64;
    p.kv = hkv_kv_default_config();
    p.max_body = 1 << 20;
    p.io_timeout_s = 30;
    return p;
}

static hkv_status fail(char *err, size_t errlen, hkv_status st, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static hkv_status fail(char *err, size_t errlen, hkv_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

static hkv_status listen_on(hkv_server *s, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", s->p.port);
    int rc = getaddrinfo(s->p.host, port, &hints, &res);
    if (rc) return fail(err, errlen, HKV_ERR_ARG, "cannot resolve host '%s': %s", s->p.host, gai_strerror(rc));
    int e = 0;
    for (struct addrinfo *a = res; a && s->lfd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) { e = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 128)) { e = errno; close(fd); continue; }
        s->lfd = fd;
    }
    freeaddrinfo(res);
    if (s->lfd < 0) return fail(err, errlen, HKV_ERR_IO, "cannot listen on %s:%d: %s", s->p.host, s->p.port, strerror(e));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(s->lfd, (struct sockaddr *)&ss, &sl))
        return fail(err, errlen, HKV_ERR_IO, "cannot read the bound address: %s", strerror(errno));
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    return HKV_OK;
}

hkv_status hkv_server_new(hkv_model *m, const hkv_server_params *pp, hkv_server **out, char *err, size_t errlen) {
    if (!m || !out) return fail(err, errlen, HKV_ERR_ARG, "hkv_server_new needs a model and an output pointer");
    *out = NULL;
    hkv_server_params p = pp ? *pp : hkv_server_default_params();
    if (!p.host) p.host = "127.0.0.1";
    if (p.port < 0 || p.port > 65535) return fail(err, errlen, HKV_ERR_ARG, "port %d is not in [0, 65535]", p.port);
    if (p.n_parallel < 1 || p.n_parallel > 256) return fail(err, errlen, HKV_ERR_ARG, "parallel %d is not in [1, 256]", p.n_parallel);
    if (p.n_queue < 0 || p.max_conns < 1 || p.max_conns > 4096 || !p.max_body || !(p.io_timeout_s > 0))
        return fail(err, errlen, HKV_ERR_ARG, "invalid server limits (queue, connections, body size or timeout)");
    hkv_server *s = calloc(1, sizeof *s);
    if (!s) return fail(err, errlen, HKV_ERR_NOMEM, "out of memory");
    s->p = p;
    s->m = m;
    s->lfd = s->wake[0] = s->wake[1] = -1;
    atomic_init(&s->stop, 0);
    s->started = (long long)time(NULL);
    hkv_model_get_info(m, &s->mi);
    snprintf(s->model_name, sizeof s->model_name, "%s", p.model_name ? p.model_name : *s->mi.name ? s->mi.name : "heavykv");
    s->p.model_name = NULL; /* not kept: the caller's string may go away */
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = p.n_ctx;
    cp.n_seq = p.n_parallel;
    cp.n_threads = p.n_threads;
    cp.kv = p.kv;
    s->n_ctx = p.n_ctx ? p.n_ctx : s->mi.n_ctx_default;
    cp.ref_len = s->n_ctx; /* percentage budgets are of the context; a prompt is decoded in one piece */
    hkv_status st = hkv_context_new(m, &cp, &s->ctx, err, errlen);
    if (st) { hkv_server_free(s); return st; }
    s->conns = calloc((size_t)p.max_conns, sizeof *s->conns);
    s->slots = calloc((size_t)p.n_parallel, sizeof *s->slots);
    s->queue = calloc((size_t)p.n_queue + 1, sizeof *s->queue);
    s->pfd = calloc((size_t)p.max_conns + 2, sizeof *s->pfd);
    s->pconn = calloc((size_t)p.max_conns + 2, sizeof *s->pconn);
    s->batch_seqs = calloc((size_t)p.n_parallel, sizeof *s->batch_seqs);
    s->batch_toks = calloc((size_t)p.n_parallel, sizeof *s->batch_toks);
    if (!s->conns || !s->slots || !s->queue || !s->pfd || !s->pconn || !s->batch_seqs || !s->batch_toks) {
        hkv_server_free(s);
        return fail(err, errlen, HKV_ERR_NOMEM, "out of memory");
    }
    if (pipe2(s->wake, O_NONBLOCK | O_CLOEXEC)) {
        st = fail(err, errlen, HKV_ERR_IO, "cannot create a pipe: %s", strerror(errno));
        hkv_server_free(s);
        return st;
    }
    if ((st = listen_on(s, err, errlen))) { hkv_server_free(s); return st; }
    *out = s;
    return HKV_OK;
}

int hkv_server_port(const hkv_server *s) { return s ? s->port : -1; }
const hkv_context *hkv_server_context(const hkv_server *s) { return s ? s->ctx : NULL; }
const char *hkv_server_last_error(const hkv_server *s) { return s ? s->err : "no server"; }

void hkv_server_stop(hkv_server *s) {
    atomic_store(&s->stop, 1);
    if (s->wake[1] >= 0) { ssize_t w = write(s->wake[1], "x", 1); (void)w; } /* async-signal-safe */
}

/* Fills the pollfd array: wake pipe, listener, then each connection with what it waits for. */
static int build_poll(hkv_server *s) {
    int n = 0;
    s->pfd[n] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
    s->pconn[n++] = NULL;
    if (s->lfd >= 0) { s->pfd[n] = (struct pollfd){.fd = s->lfd, .events = POLLIN}; s->pconn[n++] = NULL; }
    for (int i = 0; i < s->n_conns; i++) {
        conn *c = s->conns[i];
        short ev = c->state == C_WRITE ? 0 : POLLIN; /* reading also notices a client that went away */
        if (c->sent < c->out.n) ev |= POLLOUT;
        s->pfd[n] = (struct pollfd){.fd = c->fd, .events = ev};
        s->pconn[n++] = c;
    }
    return n;
}

static void handle_events(hkv_server *s, int n) {
    for (int i = 0; i < n; i++) {
        short re = s->pfd[i].revents;
        if (!re) continue;
        conn *c = s->pconn[i];
        if (!c) {
            if (s->pfd[i].fd == s->lfd) accept_all(s);
            else { char b[64]; while (read(s->wake[0], b, sizeof b) > 0) {} }
            continue;
        }
        if (re & POLLNVAL) { c->dead = 1; continue; }
        if (re & (POLLIN | POLLHUP | POLLERR) && c->state != C_WRITE) conn_read(s, c);
        else if (re & (POLLHUP | POLLERR)) c->dead = 1;
        if (re & POLLOUT && !c->dead) conn_flush(c);
    }
}

/* Stop: no new connections; requests in flight get 503; pending output is flushed for up to 2 s. */
static void shutdown_all(hkv_server *s) {
    s->stopping = 1;
    if (s->lfd >= 0) { close(s->lfd); s->lfd = -1; }
    for (int i = 0; i < s->n_conns; i++) {
        conn *c = s->conns[i];
        if (c->state == C_READ) c->dead = 1;
        if (c->state != C_GEN && c->state != C_WAIT) continue;
        if (c->slot >= 0) slot_release(&s->slots[c->slot]);
        if (c->state == C_WAIT) queue_remove(s, c);
        if (c->req.stream) sse_error(c, 503, "the server is shutting down");
        else reply_error(c, 503, "the server is shutting down");
    }
    double t0 = hkv_time_sec();
    while (hkv_time_sec() - t0 < 2.0) {
        sweep(s);
        int n = 0;
        for (int i = 0; i < s->n_conns; i++) {
            conn *c = s->conns[i];
            if (c->sent < c->out.n) { s->pfd[n] = (struct pollfd){.fd = c->fd, .events = POLLOUT}; s->pconn[n++] = c; }
        }
        if (!n) break;
        if (poll(s->pfd, (nfds_t)n, 100) > 0)
            for (int i = 0; i < n; i++)
                if (s->pfd[i].revents) conn_flush(s->pconn[i]);
    }
    for (int i = 0; i < s->n_conns; i++) s->conns[i]->dead = 1;
    sweep(s);
}

hkv_status hkv_server_run(hkv_server *s) {
    hkv_status st = HKV_OK;
    s->stopping = 0;
    while (!atomic_load(&s->stop)) {
        int busy = engine_busy(s);
        int n = build_poll(s);
        int r = poll(s->pfd, (nfds_t)n, busy ? 0 : 250);
        if (r < 0 && errno != EINTR) {
            snprintf(s->err, sizeof s->err, "poll failed: %s", strerror(errno));
            st = HKV_ERR_IO;
            break;
        }
        if (r > 0) handle_events(s, n);
        sweep(s);
        if (engine_busy(s)) engine_step(s);
    }
    shutdown_all(s);
    return st;
}

void hkv_server_free(hkv_server *s) {
    if (!s) return;
    for (int i = 0; s->conns && i < s->n_conns; i++) {
        conn *c = s->conns[i];
        close(c->fd);
        buf_free(&c->in);
        buf_free(&c->out);
        request_free(&c->req);
        free(c);
    }
    for (int i = 0; s->slots && i < s->p.n_parallel; i++) {
        hkv_sampler_free(s->slots[i].smp);
        buf_free(&s->slots[i].text);
    }
    if (s->lfd >= 0) close(s->lfd);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    hkv_context_free(s->ctx);
    free(s->conns);
    free(s->batch_seqs);
    free(s->batch_toks);
    free(s->slots);
    free(s->queue);
    free(s->pfd);
    free(s->pconn);
    free(s);
}
