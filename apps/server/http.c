/* heavykv serve: the HTTP side on libmicrohttpd — routing, limits, security checks, the GET endpoints,
 * /metrics, and handing completion jobs to the engine (engine.c).
 *
 * libmicrohttpd runs one internal polling thread (epoll on Linux) with suspend/resume. It parses requests
 * (keep-alive, HEAD, chunked bodies, 100-continue) and enforces the idle timeout. On top of it:
 *  - connection limit with fairness: the accept-policy callback counts open connections; at the limit the
 *    connection that has been idle longest without a request in progress (an idle keep-alive socket, or one
 *    still sending its headers/body slowly) is shut down to admit the new one, so idle or slow sockets cannot
 *    lock others out; with none idle the new one is refused. Either way a log line says so. An optional
 *    per-address cap keeps one client from holding every connection.
 *  - browser checks: a request carrying an Origin that is not allowed gets 403; on a loopback bind the Host
 *    header must name the loopback (DNS rebinding).
 *  - --api-key: "Authorization: Bearer KEY" compared in constant time; 401 in OpenAI's error shape.
 *  - a body limit (413, from Content-Length at once, or while a chunked body grows).
 * A completion either streams (a content-reader callback that suspends the connection while no output is
 * ready) or waits suspended for the whole result (the handler runs again when the engine resumes it). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include "salloc.h"
#include "server_int.h"

double hist_bound(int i);

typedef struct conn_track {   /* one TCP connection (HTTP thread only) */
    struct conn_track *next, *prev;
    struct MHD_Connection *c;
    int fd;
    char ip[64];
    double t_open, t_active;  /* accepted; last request progress */
    int busy;                 /* a complete request is being answered */
    int evicted;              /* shut down to make room; MHD closes it soon */
} conn_track;

typedef enum { R_NONE, R_HEALTH, R_MODELS, R_MODEL, R_KV, R_METRICS, R_PROPS, R_COMPLETION_OAI, R_COMPLETION_LLAMA,
               R_CHAT, R_TOKENIZE, R_DETOKENIZE } route_id;

typedef struct rctx {         /* one HTTP request */
    conn_track *ct;
    route_id route;
    int is_post;
    char method[16];
    char path[200];           /* escaped for the log */
    buf body;
    int too_big;
    int answered;             /* a response was queued */
    int status;
    job *j;                   /* completion in the engine */
    int waiting;              /* non-streamed job: suspended until done */
    double t0;
    char note[300];
} rctx;

double now_s(void) { return hkv_time_sec(); }

void server_log(hkv_server *s, const char *fmt, ...) {
    if (!s->p.log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->p.log(s->p.log_user, line);
}

/* Log-safe copy: printable ASCII except '"' and '\\' as is, everything else as \xNN (no forged lines). */
static void escape(char *out, size_t outlen, const char *in, size_t max_in) {
    size_t o = 0;
    for (size_t i = 0; in && in[i] && i < max_in && o + 5 < outlen; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') out[o++] = (char)ch;
        else o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", ch);
    }
    out[o] = 0;
}

/* ---------------------------------------------------------------- responses */

static void add_common_headers(hkv_server *s, struct MHD_Response *r) {
    if (s->p.cors_origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", s->p.cors_origin);
        if (strcmp(s->p.cors_origin, "*")) MHD_add_response_header(r, "Vary", "Origin");
    }
}

static void reply(hkv_server *s, struct MHD_Connection *c, rctx *rc, int status, const char *ctype, const char *body,
                  size_t n, const char *h1, const char *v1) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return;
    MHD_add_response_header(r, "Content-Type", ctype);
    add_common_headers(s, r);
    if (h1) MHD_add_response_header(r, h1, v1);
    MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    rc->status = status;
    rc->answered = 1;
}

static void reply_json(hkv_server *s, struct MHD_Connection *c, rctx *rc, int status, cJSON *j) {
    char *t = json_print(j);
    if (!t) { reply(s, c, rc, 500, "application/json", error_body_nomem(), strlen(error_body_nomem()), NULL, NULL); return; }
    reply(s, c, rc, status, "application/json", t, strlen(t), NULL, NULL);
    srv_free(t);
}

static void reply_error_h(hkv_server *s, struct MHD_Connection *c, rctx *rc, int status, const char *msg,
                          const char *h1, const char *v1) {
    char *t = json_print(error_json(status, msg, NULL));
    size_t n = strlen(msg) < sizeof rc->note - 3 ? strlen(msg) : sizeof rc->note - 3;
    memcpy(rc->note, ": ", 2);
    memcpy(rc->note + 2, msg, n);
    rc->note[n + 2] = 0;
    if (t) reply(s, c, rc, status, "application/json", t, strlen(t), h1, v1);
    else reply(s, c, rc, 500, "application/json", error_body_nomem(), strlen(error_body_nomem()), NULL, NULL);
    srv_free(t);
}

static void reply_error(hkv_server *s, struct MHD_Connection *c, rctx *rc, int status, const char *msg) {
    reply_error_h(s, c, rc, status, msg, NULL, NULL);
}

/* ---------------------------------------------------------------- security checks */

/* Constant-time equality: the time depends on the lengths only, not on where the strings differ. */
static int secret_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned diff = (unsigned)(na ^ nb);
    for (size_t i = 0; i < nb; i++) diff |= (unsigned char)(i < na ? a[i] : 0) ^ (unsigned char)b[i];
    return diff == 0;
}

/* Is item in the comma-separated list ("*" matches anything)? Case-insensitive. */
static int in_list(const char *list, const char *item, size_t item_len) {
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && t[-1] == ' ') t--;
        size_t n = (size_t)(t - p);
        if ((n == 1 && *p == '*') || (n == item_len && n && !strncasecmp(p, item, n))) return 1;
        p = e;
    }
    return 0;
}

/* Host header without the port. */
static int host_allowed(hkv_server *s, const char *host) {
    if (!host) return 1; /* HTTP/1.0 without Host: no browser sends that */
    size_t n = strlen(host);
    if (host[0] == '[') { const char *e = strchr(host, ']'); n = e ? (size_t)(e - host) + 1 : n; }
    else { const char *e = strrchr(host, ':'); if (e) n = (size_t)(e - host); }
    if (s->p.allow_hosts) return in_list(s->p.allow_hosts, host, n);
    if (!s->loopback) return 1;
    return in_list("localhost,127.0.0.1,[::1]", host, n);
}

static int origin_allowed(hkv_server *s, const char *origin) {
    if (!origin) return 1;
    size_t n = strlen(origin);
    if (s->p.cors_origin && in_list(s->p.cors_origin, origin, n)) return 1;
    return s->p.allow_origins && in_list(s->p.allow_origins, origin, n);
}

/* ---------------------------------------------------------------- connection limit and fairness */

static int same_ip_count(hkv_server *s, const char *ip) {
    int n = 0;
    for (conn_track *t = s->conns; t; t = t->next) n += !t->evicted && !strcmp(t->ip, ip);
    return n;
}

static void addr_str(const struct sockaddr *a, char *out, size_t n) {
    out[0] = 0;
    if (a->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, out, (socklen_t)n);
    else if (a->sa_family == AF_INET6) inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, out, (socklen_t)n);
    if (!out[0]) snprintf(out, n, "?");
}

static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    hkv_server *s = cls;
    (void)addrlen;
    char ip[64];
    addr_str(addr, ip, sizeof ip);
    if (s->p.max_conns_per_ip && same_ip_count(s, ip) >= s->p.max_conns_per_ip) {
        pthread_mutex_lock(&s->mu);
        s->mt.rejected_conns++;
        pthread_mutex_unlock(&s->mu);
        server_log(s, "connection from %s refused: it already has %d connections (--max-conns-per-ip)", ip, s->p.max_conns_per_ip);
        return MHD_NO;
    }
    int open = 0;
    conn_track *victim = NULL;
    for (conn_track *t = s->conns; t; t = t->next) {
        if (t->evicted) continue;
        open++;
        if (!t->busy && (!victim || t->t_active < victim->t_active)) victim = t;
    }
    if (open < s->p.max_conns) return MHD_YES;
    if (victim) {
        victim->evicted = 1;
        shutdown(victim->fd, SHUT_RDWR); /* libmicrohttpd sees the end of the socket and closes it */
        server_log(s, "connection limit %d reached: closed an idle connection from %s (idle %.1fs) for a new one from %s",
                   s->p.max_conns, victim->ip, now_s() - victim->t_active, ip);
        return MHD_YES;
    }
    pthread_mutex_lock(&s->mu);
    s->mt.rejected_conns++;
    pthread_mutex_unlock(&s->mu);
    server_log(s, "connection from %s refused: %d connections open, all with a request in progress (--max-conns)", ip, open);
    return MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context, enum MHD_ConnectionNotificationCode code) {
    hkv_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_track *t = srv_calloc(1, sizeof *t);
        if (!t) return;
        t->c = c;
        const union MHD_ConnectionInfo *fi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        t->fd = fi ? fi->connect_fd : -1;
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ai && ai->client_addr) addr_str(ai->client_addr, t->ip, sizeof t->ip);
        t->t_open = t->t_active = now_s();
        t->next = s->conns;
        if (s->conns) s->conns->prev = t;
        s->conns = t;
        s->n_conns++;
        *socket_context = t;
    } else if (*socket_context) {
        conn_track *t = *socket_context;
        if (t->prev) t->prev->next = t->next; else s->conns = t->next;
        if (t->next) t->next->prev = t->prev;
        s->n_conns--;
        free(t);
        *socket_context = NULL;
    }
}

/* ---------------------------------------------------------------- GET endpoints */

static cJSON *model_object(hkv_server *s) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "id", s->model_name);
    cJSON_AddStringToObject(d, "object", "model");
    cJSON_AddNumberToObject(d, "created", (double)s->started);
    cJSON_AddStringToObject(d, "owned_by", "heavykv");
    cJSON *meta = cJSON_AddObjectToObject(d, "meta");
    cJSON_AddStringToObject(meta, "arch", s->mi.arch);
    cJSON_AddNumberToObject(meta, "n_vocab", s->mi.n_vocab);
    cJSON_AddNumberToObject(meta, "n_ctx_train", s->mi.n_ctx_train);
    cJSON_AddNumberToObject(meta, "n_ctx", s->n_ctx);
    cJSON_AddNumberToObject(meta, "n_params", (double)s->mi.n_params);
    return d;
}

static cJSON *kv_json(hkv_server *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "policy", s->p.kv.policy);
    cJSON *b = cJSON_AddObjectToObject(j, "budget");
    cJSON_AddNumberToObject(b, "total", s->budget.total);
    cJSON_AddNumberToObject(b, "heavy", s->budget.heavy);
    cJSON_AddNumberToObject(b, "recent", s->budget.recent);
    cJSON_AddNumberToObject(b, "sink", s->budget.sink);
    cJSON_AddNumberToObject(j, "n_ctx", s->n_ctx);
    cJSON_AddNumberToObject(j, "kv_memory", (double)s->p.kv_memory);
    cJSON_AddNumberToObject(j, "seq_bytes", (double)s->seq_bytes);
    cJSON_AddNumberToObject(j, "max_sequences", s->max_seqs);
    pthread_mutex_lock(&s->mu);
    cJSON_AddNumberToObject(j, "reserved_bytes", (double)s->reserved);
    cJSON_AddNumberToObject(j, "queued", s->q_len);
    cJSON_AddNumberToObject(j, "evictions", (double)engine_evictions_locked(s));
    cJSON *arr = cJSON_AddArrayToObject(j, "slots");
    for (int i = 0; i < s->n_slots; i++) {
        const slot_view *v = &s->slots[i].view;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", i);
        cJSON_AddBoolToObject(o, "busy", v->busy);
        cJSON_AddStringToObject(o, "policy", v->policy[0] ? v->policy : "-");
        cJSON_AddNumberToObject(o, "budget", v->budget.total);
        cJSON_AddNumberToObject(o, "n_past", v->n_past);
        cJSON_AddNumberToObject(o, "occupancy_min", v->occupancy_min);
        cJSON_AddNumberToObject(o, "occupancy_max", v->occupancy_max);
        cJSON_AddNumberToObject(o, "kv_bytes", (double)v->kv_bytes);
        cJSON_AddNumberToObject(o, "reserved_bytes", (double)v->reserved);
        cJSON_AddNumberToObject(o, "evicted", (double)v->evictions);
        cJSON_AddNumberToObject(o, "requests", v->n_served);
        cJSON_AddNumberToObject(o, "cached_tokens", v->n_cached);
        json_array_add(arr, o);
    }
    pthread_mutex_unlock(&s->mu);
    return j;
}

static cJSON *props_json(hkv_server *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", s->model_name);
    cJSON_AddStringToObject(j, "version", hkv_version());
    cJSON_AddNumberToObject(j, "n_ctx", s->n_ctx);
    cJSON_AddNumberToObject(j, "total_slots", s->n_slots);
    cJSON_AddNumberToObject(j, "max_sequences", s->max_seqs);
    cJSON_AddNumberToObject(j, "prefill_chunk", s->p.prefill_chunk);
    cJSON_AddNumberToObject(j, "queue", s->p.n_queue);
    cJSON_AddNumberToObject(j, "kv_memory", (double)s->p.kv_memory);
    cJSON_AddNumberToObject(j, "seq_bytes", (double)s->seq_bytes);
    cJSON *kv = cJSON_AddObjectToObject(j, "kv");
    cJSON_AddStringToObject(kv, "policy", s->p.kv.policy);
    cJSON_AddNumberToObject(kv, "budget", s->budget.total);
    cJSON_AddStringToObject(j, "chat_template", s->chat_family);
    cJSON_AddBoolToObject(j, "api_key", s->p.api_key != NULL);
    cJSON_AddNumberToObject(j, "bos_token", s->mi.bos);
    cJSON_AddNumberToObject(j, "eos_token", s->mi.eos);
    return j;
}

static void metrics_text(hkv_server *s, buf *b) {
    char line[512];
#define LINE(...) do { int k_ = snprintf(line, sizeof line, __VA_ARGS__); buf_add(b, line, (size_t)k_); } while (0)
    pthread_mutex_lock(&s->mu);
    const metrics *m = &s->mt;
    LINE("# HELP heavykv_requests_total HTTP requests answered, by status code.\n# TYPE heavykv_requests_total counter\n");
    for (int st = 100; st < 600; st++)
        if (m->status_count[st]) LINE("heavykv_requests_total{status=\"%d\"} %llu\n", st, (unsigned long long)m->status_count[st]);
    LINE("# HELP heavykv_prompt_tokens_total Prompt tokens decoded (reused cache tokens not counted).\n"
         "# TYPE heavykv_prompt_tokens_total counter\nheavykv_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    LINE("# HELP heavykv_prompt_tokens_reused_total Prompt tokens taken from a cached conversation.\n"
         "# TYPE heavykv_prompt_tokens_reused_total counter\nheavykv_prompt_tokens_reused_total %llu\n", (unsigned long long)m->prompt_reused);
    LINE("# HELP heavykv_generated_tokens_total Tokens generated.\n# TYPE heavykv_generated_tokens_total counter\n"
         "heavykv_generated_tokens_total %llu\n", (unsigned long long)m->gen_tokens);
    double tps = now_s() - m->tps_t > 5 ? 0 : m->tps;
    LINE("# HELP heavykv_tokens_per_second Generated tokens per second, all sequences (smoothed over about 1 s).\n"
         "# TYPE heavykv_tokens_per_second gauge\nheavykv_tokens_per_second %.3f\n", tps);
    const char *hn[2] = {"heavykv_time_to_first_token_seconds", "heavykv_inter_token_latency_seconds"};
    const char *hh[2] = {"Time from request submission to its first generated token.", "Time between two generated tokens of one sequence."};
    const double *hv[2] = {m->ttft, m->itl};
    double hs[2] = {m->ttft_sum, m->itl_sum};
    uint64_t hc[2] = {m->ttft_n, m->itl_n};
    for (int h = 0; h < 2; h++) {
        LINE("# HELP %s %s\n# TYPE %s histogram\n", hn[h], hh[h], hn[h]);
        double cum = 0;
        for (int i = 0; i < N_HIST; i++) { cum += hv[h][i]; LINE("%s_bucket{le=\"%g\"} %.0f\n", hn[h], hist_bound(i), cum); }
        LINE("%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", hn[h], (unsigned long long)hc[h], hn[h], hs[h],
             hn[h], (unsigned long long)hc[h]);
    }
    uint64_t in_use = 0;
    int busy = 0;
    for (int i = 0; i < s->n_slots; i++) { in_use += s->slots[i].view.kv_bytes; busy += s->slots[i].view.busy; }
    LINE("# HELP heavykv_kv_bytes_in_use K/V bytes allocated by all sequences' caches now.\n# TYPE heavykv_kv_bytes_in_use gauge\n"
         "heavykv_kv_bytes_in_use %llu\n", (unsigned long long)in_use);
    LINE("# HELP heavykv_kv_bytes_reserved K/V bytes reserved by admitted sequences (peak sizes).\n"
         "# TYPE heavykv_kv_bytes_reserved gauge\nheavykv_kv_bytes_reserved %llu\n", (unsigned long long)s->reserved);
    LINE("# HELP heavykv_kv_bytes_capacity The --kv-memory limit (0: none).\n# TYPE heavykv_kv_bytes_capacity gauge\n"
         "heavykv_kv_bytes_capacity %llu\n", (unsigned long long)s->p.kv_memory);
    LINE("# HELP heavykv_kv_evictions_total KV rows evicted by the policies.\n# TYPE heavykv_kv_evictions_total counter\n"
         "heavykv_kv_evictions_total %llu\n", (unsigned long long)engine_evictions_locked(s));
    LINE("# HELP heavykv_queue_depth Requests waiting for a slot.\n# TYPE heavykv_queue_depth gauge\nheavykv_queue_depth %d\n", s->q_len);
    LINE("# HELP heavykv_slots_busy Sequences generating or prefilling.\n# TYPE heavykv_slots_busy gauge\nheavykv_slots_busy %d\n", busy);
    LINE("# HELP heavykv_slots_max Sequences of the default KV config that fit at once.\n# TYPE heavykv_slots_max gauge\n"
         "heavykv_slots_max %d\n", s->max_seqs);
    /* batching: one decode call per KV-config group and engine step */
    LINE("# HELP heavykv_batch_sequences Sequences decoded together in one call (one call per group and step).\n"
         "# TYPE heavykv_batch_sequences histogram\n");
    double cum = 0;
    for (int i = 0; i < N_BATCH_HIST; i++) {
        cum += m->batch_hist[i];
        LINE("heavykv_batch_sequences_bucket{le=\"%d\"} %.0f\n", 1 << i, cum);
    }
    LINE("heavykv_batch_sequences_bucket{le=\"+Inf\"} %llu\nheavykv_batch_sequences_sum %llu\nheavykv_batch_sequences_count %llu\n",
         (unsigned long long)m->batch_calls, (unsigned long long)m->batch_seqs, (unsigned long long)m->batch_calls);
    LINE("# HELP heavykv_batch_sequences_max Most sequences decoded together in one call so far.\n"
         "# TYPE heavykv_batch_sequences_max gauge\nheavykv_batch_sequences_max %d\n", m->batch_seqs_max);
    LINE("# HELP heavykv_batch_tokens_total Tokens (prompt pieces and generated tokens) decoded in batched calls.\n"
         "# TYPE heavykv_batch_tokens_total counter\nheavykv_batch_tokens_total %llu\n", (unsigned long long)m->batch_tokens);
    LINE("# HELP heavykv_decode_aborted_total Decode calls stopped part-way (a cancelled prompt piece, or stop).\n"
         "# TYPE heavykv_decode_aborted_total counter\nheavykv_decode_aborted_total %llu\n", (unsigned long long)m->aborted_steps);
    LINE("# HELP heavykv_connections_rejected_total Connections refused or closed at the connection limit.\n"
         "# TYPE heavykv_connections_rejected_total counter\nheavykv_connections_rejected_total %llu\n", (unsigned long long)m->rejected_conns);
    pthread_mutex_unlock(&s->mu);
    LINE("# HELP heavykv_connections_open Open HTTP connections.\n# TYPE heavykv_connections_open gauge\nheavykv_connections_open %d\n", s->n_conns);
#undef LINE
}

/* ---------------------------------------------------------------- POST endpoints without the engine */

static void do_tokenize(hkv_server *s, struct MHD_Connection *c, rctx *rc) {
    cJSON *o = cJSON_ParseWithLength(rc->body.p ? rc->body.p : "", rc->body.n);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "content");
    const cJSON *as = cJSON_GetObjectItemCaseSensitive(o, "add_special"), *ps = cJSON_GetObjectItemCaseSensitive(o, "parse_special");
    const cJSON *wp = cJSON_GetObjectItemCaseSensitive(o, "with_pieces");
    if (!cJSON_IsObject(o) || !cJSON_IsString(t) || (as && !cJSON_IsBool(as)) || (ps && !cJSON_IsBool(ps)) || (wp && !cJSON_IsBool(wp))) {
        cJSON_Delete(o);
        reply_error(s, c, rc, 400, "expected {\"content\": string, \"add_special\"?: bool, \"parse_special\"?: bool, \"with_pieces\"?: bool}");
        return;
    }
    size_t cap = strlen(t->valuestring) + 16;
    int32_t *toks = srv_malloc(sizeof(int32_t) * cap);
    int n = toks ? hkv_tokenize(s->m, t->valuestring, cJSON_IsTrue(as), ps ? cJSON_IsTrue(ps) : 1, toks, (int)cap) : -1;
    if (n < 0) { srv_free(toks); cJSON_Delete(o); reply_error(s, c, rc, 500, "tokenization failed"); return; }
    cJSON *r = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(r, "tokens");
    for (int i = 0; i < n; i++) {
        if (!cJSON_IsTrue(wp)) { json_array_add(arr, cJSON_CreateNumber(toks[i])); continue; }
        char piece[256], esc[1100];
        int k = hkv_token_to_piece(s->m, toks[i], piece, sizeof piece - 1);
        piece[k > 0 ? k : 0] = 0;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", toks[i]);
        /* pieces can be partial UTF-8: cJSON needs valid text, so bytes that are not are escaped */
        size_t o2 = 0;
        for (int q = 0; q < (k > 0 ? k : 0) && o2 + 5 < sizeof esc; q++) {
            unsigned char ch = (unsigned char)piece[q];
            if (ch < 0x80) esc[o2++] = (char)ch; else o2 += (size_t)snprintf(esc + o2, sizeof esc - o2, "\\x%02x", ch);
        }
        esc[o2] = 0;
        cJSON_AddStringToObject(e, "piece", esc);
        json_array_add(arr, e);
    }
    free(toks);
    cJSON_Delete(o);
    reply_json(s, c, rc, 200, r);
}

static void do_detokenize(hkv_server *s, struct MHD_Connection *c, rctx *rc) {
    cJSON *o = cJSON_ParseWithLength(rc->body.p ? rc->body.p : "", rc->body.n);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "tokens"), *e;
    int n = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : -1, bad = n < 0;
    int32_t *toks = n > 0 ? srv_malloc(sizeof(int32_t) * (size_t)n) : NULL;
    int i = 0;
    if (n > 0 && !toks) bad = 1;
    if (!bad) cJSON_ArrayForEach(e, t) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (v != floor(v) || v < 0 || v >= s->mi.n_vocab) { bad = 1; break; }
        toks[i++] = (int32_t)v;
    }
    if (bad) {
        free(toks);
        cJSON_Delete(o);
        char msg[128];
        snprintf(msg, sizeof msg, "expected {\"tokens\": [ids in 0..%d]}", s->mi.n_vocab - 1);
        reply_error(s, c, rc, 400, msg);
        return;
    }
    int need = hkv_detokenize(s->m, toks, n, NULL, 0);
    size_t cap = need < 0 ? (size_t)-need : (size_t)need + 1;
    char *txt = srv_malloc(cap + 1);
    if (txt && hkv_detokenize(s->m, toks, n, txt, (int)cap) < 0) txt[0] = 0;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "content", txt ? txt : "");
    free(txt);
    free(toks);
    cJSON_Delete(o);
    reply_json(s, c, rc, 200, r);
}

/* ---------------------------------------------------------------- completions */

typedef struct stream_ctx { hkv_server *s; job *j; } stream_ctx;

static ssize_t sse_reader(void *cls, uint64_t pos, char *out, size_t max) {
    stream_ctx *sc = cls;
    hkv_server *s = sc->s;
    job *j = sc->j;
    (void)pos;
    ssize_t r;
    pthread_mutex_lock(&s->mu);
    size_t avail = j->out.n - j->out_pos;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(out, j->out.p + j->out_pos, n);
        j->out_pos += n;
        if (j->out_pos == j->out.n) j->out.n = j->out_pos = 0;
        r = (ssize_t)n;
    } else if (j->done) r = MHD_CONTENT_READER_END_OF_STREAM;
    else {
        j->suspended = 1;
        MHD_suspend_connection(j->conn);
        r = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static void sse_free(void *cls) {
    stream_ctx *sc = cls;
    pthread_mutex_lock(&sc->s->mu);
    job_unref_locked(sc->j);
    pthread_mutex_unlock(&sc->s->mu);
    free(sc);
}

static void start_completion(hkv_server *s, struct MHD_Connection *c, rctx *rc, api_kind api) {
    char msg[512];
    int st;
    job *j = job_create(s, api, rc->body.p ? rc->body.p : "", rc->body.n, &st, msg, sizeof msg);
    if (!j) { reply_error(s, c, rc, st, msg); return; }
    j->conn = c; /* refs 1: rc's */
    pthread_mutex_lock(&s->mu);
    job_link_locked(s, j);
    pthread_mutex_unlock(&s->mu);
    rc->j = j;
    if ((st = engine_submit(s, j, msg, sizeof msg))) { reply_error_h(s, c, rc, st, msg, "Retry-After", "1"); return; }
    if (!j->req.stream) {
        pthread_mutex_lock(&s->mu);
        if (!j->done) { j->suspended = 1; MHD_suspend_connection(c); }
        pthread_mutex_unlock(&s->mu);
        rc->waiting = 1;
        return;
    }
    stream_ctx *sc = srv_malloc(sizeof *sc);
    struct MHD_Response *r = sc ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_reader, sc, sse_free) : NULL;
    if (!r) {
        free(sc);
        pthread_mutex_lock(&s->mu);
        j->cancelled = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        reply_error(s, c, rc, 500, "out of memory");
        return;
    }
    sc->s = s;
    sc->j = j;
    pthread_mutex_lock(&s->mu);
    j->refs++; /* the response's */
    pthread_mutex_unlock(&s->mu);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_common_headers(s, r);
    MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    rc->status = 200;
    rc->answered = 1;
}

/* The engine resumed a waiting non-streamed request: answer with its result. */
static void finish_waiting(hkv_server *s, struct MHD_Connection *c, rctx *rc) {
    job *j = rc->j;
    pthread_mutex_lock(&s->mu);
    if (!j->done) { /* resumed without a result (cannot happen; be safe): wait again */
        j->suspended = 1;
        MHD_suspend_connection(c);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    int st = j->status ? j->status : 500;
    char *body = j->out.p ? srv_strndup(j->out.p, j->out.n) : NULL;
    pthread_mutex_unlock(&s->mu);
    rc->waiting = 0;
    if (!body) { reply_error(s, c, rc, 500, "out of memory"); return; }
    reply(s, c, rc, st, "application/json", body, strlen(body), st == 503 ? "Retry-After" : NULL, "1");
    free(body);
}

/* ---------------------------------------------------------------- routing */

static route_id find_route(hkv_server *s, const char *url, int *is_post_route) {
    static const struct { const char *path; route_id id; int post; } R[] = {
        {"/health", R_HEALTH, 0}, {"/v1/health", R_HEALTH, 0}, {"/v1/models", R_MODELS, 0}, {"/models", R_MODELS, 0},
        {"/kv", R_KV, 0}, {"/metrics", R_METRICS, 0}, {"/props", R_PROPS, 0},
        {"/v1/completions", R_COMPLETION_OAI, 1}, {"/completions", R_COMPLETION_LLAMA, 1},
        {"/completion", R_COMPLETION_LLAMA, 1}, {"/v1/chat/completions", R_CHAT, 1}, {"/chat/completions", R_CHAT, 1},
        {"/tokenize", R_TOKENIZE, 1}, {"/detokenize", R_DETOKENIZE, 1}};
    for (size_t i = 0; i < sizeof R / sizeof R[0]; i++)
        if (!strcmp(url, R[i].path)) { *is_post_route = R[i].post; return R[i].id; }
    if (!strncmp(url, "/v1/models/", 11) || !strncmp(url, "/models/", 8)) { *is_post_route = 0; return R_MODEL; }
    (void)s;
    return R_NONE;
}

/* Content-Length headers of a request: libmicrohttpd frames the body by the first one, so two that disagree
 * would let a proxy in front and this server see different requests (smuggling); RFC 9112 6.3 says reject. */
typedef struct cl_seen { int n, differ; const char *first; } cl_seen;

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    cl_seen *cs = cls;
    (void)kind;
    if (key && !strcasecmp(key, "Content-Length")) {
        if (cs->n++ == 0) cs->first = value;
        else if (!value || !cs->first || strcmp(value, cs->first)) cs->differ = 1;
    }
    return MHD_YES;
}

/* Checks that need only the head; answers and returns 1 when the request is refused. */
static int check_head(hkv_server *s, struct MHD_Connection *c, rctx *rc, const char *method) {
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    cl_seen cs = {0, 0, NULL};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_content_length, &cs);
    if (cs.differ) {
        reply_error(s, c, rc, 400, "the request has Content-Length headers that disagree");
        return 1;
    }
    if (!host_allowed(s, host)) {
        reply_error(s, c, rc, 403, "the Host header names no address this server accepts (see --allow-host)");
        return 1;
    }
    if (!origin_allowed(s, origin)) {
        reply_error(s, c, rc, 403, "requests from this Origin are not allowed (see --cors and --allow-origin)");
        return 1;
    }
    if (!strcmp(method, "OPTIONS")) { /* CORS preflight */
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r) return 1;
        add_common_headers(s, r);
        MHD_add_response_header(r, "Allow", "GET, HEAD, POST, OPTIONS");
        if (s->p.cors_origin) {
            MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
            MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
            MHD_add_response_header(r, "Access-Control-Max-Age", "600");
        }
        MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
        rc->status = 204;
        rc->answered = 1;
        return 1;
    }
    if (rc->route == R_NONE) { reply_error(s, c, rc, 404, "no such endpoint"); return 1; }
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if ((rc->is_post && !post) || (!rc->is_post && !get)) {
        reply_error_h(s, c, rc, 405, "method not allowed for this endpoint", "Allow", rc->is_post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
        return 1;
    }
    if (s->p.api_key && *s->p.api_key && rc->route != R_HEALTH) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        int ok = auth && !strncasecmp(auth, "Bearer ", 7) && secret_equal(auth + 7, s->p.api_key);
        if (!ok) {
            reply_error_h(s, c, rc, 401, auth ? "invalid API key" : "missing API key: send \"Authorization: Bearer KEY\"",
                          "WWW-Authenticate", "Bearer");
            return 1;
        }
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *e;
        errno = 0;
        unsigned long long n = strtoull(cl, &e, 10);
        if (!errno && e != cl && !*e && n > s->p.max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request body has %llu bytes; at most %zu are accepted", n, s->p.max_body);
            reply_error(s, c, rc, 413, msg);
            return 1;
        }
    }
    return 0;
}

static void dispatch(hkv_server *s, struct MHD_Connection *c, rctx *rc, const char *url) {
    switch (rc->route) {
    case R_HEALTH: {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "status", "ok");
        reply_json(s, c, rc, 200, j);
        break;
    }
    case R_MODELS: {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "object", "list");
        json_array_add(cJSON_AddArrayToObject(j, "data"), model_object(s));
        reply_json(s, c, rc, 200, j);
        break;
    }
    case R_MODEL: {
        const char *id = url + (!strncmp(url, "/v1/", 4) ? 11 : 8);
        if (strcmp(id, s->model_name)) {
            char msg[600], esc[200];
            escape(esc, sizeof esc, id, 100);
            snprintf(msg, sizeof msg, "the model '%s' does not exist (this server has '%s')", esc, s->model_name);
            reply_error(s, c, rc, 404, msg);
        } else reply_json(s, c, rc, 200, model_object(s));
        break;
    }
    case R_KV: reply_json(s, c, rc, 200, kv_json(s)); break;
    case R_PROPS: reply_json(s, c, rc, 200, props_json(s)); break;
    case R_METRICS: {
        buf b = {0};
        metrics_text(s, &b);
        reply(s, c, rc, 200, "text/plain; version=0.0.4", b.p ? b.p : "", b.n, NULL, NULL);
        buf_free(&b);
        break;
    }
    case R_TOKENIZE: do_tokenize(s, c, rc); break;
    case R_DETOKENIZE: do_detokenize(s, c, rc); break;
    case R_COMPLETION_OAI: start_completion(s, c, rc, API_OAI); break;
    case R_COMPLETION_LLAMA: start_completion(s, c, rc, API_LLAMA); break;
    case R_CHAT: start_completion(s, c, rc, API_CHAT); break;
    case R_NONE: reply_error(s, c, rc, 404, "no such endpoint"); break;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    hkv_server *s = cls;
    rctx *rc = *con_cls;
    (void)version;
    if (!rc) { /* first call: the head is complete */
        if (!(rc = srv_calloc(1, sizeof *rc))) return MHD_NO;
        *con_cls = rc;
        pthread_mutex_lock(&s->mu);
        s->n_live++;
        pthread_mutex_unlock(&s->mu);
        rc->t0 = now_s();
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        rc->ct = ci ? ci->socket_context : NULL;
        if (rc->ct) rc->ct->t_active = rc->t0;
        escape(rc->method, sizeof rc->method, method, 8);
        escape(rc->path, sizeof rc->path, url, 120);
        rc->route = find_route(s, url, &rc->is_post);
        check_head(s, c, rc, method);
        return MHD_YES;
    }
    if (rc->ct) rc->ct->t_active = now_s();
    if (*upload_size) {
        if (!rc->answered && !rc->too_big) {
            if (rc->body.n + *upload_size > s->p.max_body) { rc->too_big = 1; buf_free(&rc->body); }
            else if (!buf_add(&rc->body, upload, *upload_size)) rc->too_big = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rc->answered) return MHD_YES;
    if (rc->waiting) { finish_waiting(s, c, rc); return MHD_YES; }
    if (rc->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", s->p.max_body);
        reply_error(s, c, rc, 413, msg);
        return MHD_YES;
    }
    if (rc->ct) rc->ct->busy = 1;
    dispatch(s, c, rc, url);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    hkv_server *s = cls;
    rctx *rc = *con_cls;
    (void)c;
    if (!rc) return;
    const char *how = "";
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED) how = " (timed out)";
    else if (toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN) how = " (server stopped)";
    else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) how = " (client went away)";
    pthread_mutex_lock(&s->mu);
    s->n_live--;
    if (rc->status > 0 && rc->status < 600) s->mt.status_count[rc->status]++;
    if (rc->j) {
        if (!rc->j->done) { rc->j->cancelled = 1; pthread_cond_signal(&s->cv); }
        if (rc->j->note[0]) memcpy(rc->note, rc->j->note, sizeof rc->j->note);
        job_unref_locked(rc->j);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc->ct) { rc->ct->busy = 0; rc->ct->t_active = now_s(); }
    char st[8] = "-";
    if (rc->status) snprintf(st, sizeof st, "%d", rc->status);
    server_log(s, "%s \"%s\" %s %.3fs%s%s", rc->method, rc->path, st, now_s() - rc->t0, rc->note, how);
    buf_free(&rc->body);
    free(rc);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    hkv_server *s = cls;
    char raw[512], esc[1024];
    vsnprintf(raw, sizeof raw, fmt, ap);
    size_t n = strlen(raw);
    while (n && (raw[n - 1] == '\n' || raw[n - 1] == '.')) raw[--n] = 0;
    escape(esc, sizeof esc, raw, sizeof raw);
    server_log(s, "http: %s", esc);
}

/* ---------------------------------------------------------------- start / stop */

hkv_status http_start(hkv_server *s, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", s->p.port);
    int rc = getaddrinfo(s->p.host, port, &hints, &res);
    if (rc) { snprintf(err, errlen, "cannot resolve host '%s': %s", s->p.host, gai_strerror(rc)); return HKV_ERR_ARG; }
    struct sockaddr_storage ss;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    s->loopback = ss.ss_family == AF_INET
                      ? (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127
                      : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    unsigned timeout = (unsigned)ceil(s->p.idle_timeout_s);
    s->d = MHD_start_daemon(flags, (uint16_t)s->p.port, on_accept, s, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(s->p.max_conns + 64),
                            MHD_OPTION_CONNECTION_TIMEOUT, timeout ? timeout : 1,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                            MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)", s->p.host, s->p.port);
        return HKV_ERR_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->p.port;
    return HKV_OK;
}

void http_stop(hkv_server *s) {
    if (!s->d) return;
    MHD_stop_daemon(s->d);
    s->d = NULL;
}

/* Stops accepting; the listening socket closes now. */
void http_quiesce(hkv_server *s) {
    if (!s->d) return;
    int fd = MHD_quiesce_daemon(s->d);
    if (fd >= 0) close(fd);
}

