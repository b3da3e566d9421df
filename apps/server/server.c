/* heavykv serve: parameters, sizing (how many sequences fit), start and orderly stop (see server.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>
#include "salloc.h"
#include "server_int.h"

hkv_server_params hkv_server_default_params(void) {
    hkv_server_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 8080;
    p.n_parallel = 4;
    p.n_queue = 16;
    p.max_conns = 128;
    p.prefill_chunk = 64;
    p.kv = hkv_kv_default_config();
    p.max_body = 1 << 20;
    p.idle_timeout_s = 10;
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

/* Copies the caller's strings: the server keeps none of the caller's pointers. */
static char *dup_opt(const char *s) { return s ? srv_strdup(s) : NULL; }

static void free_strings(hkv_server_params *p) {
    free((char *)p->host);
    free((char *)p->api_key);
    free((char *)p->cors_origin);
    free((char *)p->allow_origins);
    free((char *)p->allow_hosts);
    free((char *)p->chat_template);
}

/* The chat family (checked once, so a broken template is a clear error at each chat request). */
static void setup_chat(hkv_server *s) {
#ifdef HKV_CHAT_ERROR
    const char *fam = NULL;
    if (hkv_chat_template_check(s->m, s->p.chat_template, NULL, 0, &fam, s->chat_err, sizeof s->chat_err) || !fam)
        s->chat_family[0] = 0;
    else snprintf(s->chat_family, sizeof s->chat_family, "%s", fam);
#else
    snprintf(s->chat_err, sizeof s->chat_err, "this build has no chat templates");
#endif
}

hkv_status hkv_server_new(hkv_model *m, const hkv_server_params *pp, hkv_server **out, char *err, size_t errlen) {
    if (!m || !out) return fail(err, errlen, HKV_ERR_ARG, "hkv_server_new needs a model and an output pointer");
    *out = NULL;
    hkv_server_params p = pp ? *pp : hkv_server_default_params();
    if (!p.host) p.host = "127.0.0.1";
    if (p.port < 0 || p.port > 65535) return fail(err, errlen, HKV_ERR_ARG, "port %d is not in [0, 65535]", p.port);
    if (p.n_parallel < 1 || p.n_parallel > MAX_SLOTS)
        return fail(err, errlen, HKV_ERR_ARG, "parallel %d is not in [1, %d]", p.n_parallel, MAX_SLOTS);
    if (p.n_queue < 0 || p.n_queue > 65536 || p.max_conns < 1 || p.max_conns > 65536 || p.max_conns_per_ip < 0 ||
        !p.max_body || !(p.idle_timeout_s > 0) || p.prefill_chunk < 1 || p.prefill_chunk > 4096)
        return fail(err, errlen, HKV_ERR_ARG, "invalid server limits (queue, connections, body size, timeout or prefill chunk)");
    srv_alloc_install_cjson(); /* cJSON allocates through the server's shim (salloc.h) */
    hkv_server *s = srv_calloc(1, sizeof *s);
    if (!s) return fail(err, errlen, HKV_ERR_NOMEM, "out of memory");
    for (int i = 0; i < MAX_SLOTS; i++) s->slots[i].g = -1; /* no sequence yet */
    s->p = p;
    s->p.host = dup_opt(p.host);
    s->p.api_key = p.api_key && *p.api_key ? dup_opt(p.api_key) : NULL;
    s->p.cors_origin = dup_opt(p.cors_origin);
    s->p.allow_origins = dup_opt(p.allow_origins);
    s->p.allow_hosts = dup_opt(p.allow_hosts);
    s->p.chat_template = dup_opt(p.chat_template);
    if (!s->p.host || (p.api_key && *p.api_key && !s->p.api_key) || (p.cors_origin && !s->p.cors_origin) ||
        (p.allow_origins && !s->p.allow_origins) || (p.allow_hosts && !s->p.allow_hosts) ||
        (p.chat_template && !s->p.chat_template)) {
        free_strings(&s->p);
        srv_free(s);
        return fail(err, errlen, HKV_ERR_NOMEM, "out of memory");
    }
    s->p.model_name = NULL;
    s->m = m;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    atomic_init(&s->stop, 0);
    atomic_init(&s->n_requests, 0);
    s->started = (long long)time(NULL);
    hkv_model_get_info(m, &s->mi);
    snprintf(s->model_name, sizeof s->model_name, "%s", p.model_name ? p.model_name : *s->mi.name ? s->mi.name : "heavykv");
    s->n_ctx = p.n_ctx ? p.n_ctx : s->mi.n_ctx_default;
    s->row_bytes = (uint64_t)s->mi.n_layer * (uint64_t)s->mi.n_head_kv * (uint64_t)s->mi.head_dim * 2 * 2;
    if (s->p.prefill_chunk > s->n_ctx) s->p.prefill_chunk = s->n_ctx;
    s->p.kv.prefill_chunk = s->p.prefill_chunk;
    char msg[512];
    hkv_status st = HKV_OK;
    if (s->n_ctx < 2 || s->n_ctx > (1 << 24)) st = fail(err, errlen, HKV_ERR_ARG, "context size %d is not in [2, 16777216]", s->n_ctx);
    else if (resolve_kv(s, &s->p.kv, &s->budget, &s->seq_bytes, msg, sizeof msg)) st = fail(err, errlen, HKV_ERR_ARG, "%s", msg);
    else if (!hkv_policy_names()[0]) st = fail(err, errlen, HKV_ERR_ARG, "no KV policies");
    if (st) { hkv_server_free(s); return st; }
    {   /* the default config must make a context: check it now, not at the first request */
        hkv_context_params cp = hkv_context_default_params();
        cp.n_ctx = s->n_ctx;
        cp.n_threads = 1;
        cp.ref_len = s->n_ctx;
        cp.kv = s->p.kv;
        hkv_context *probe;
        if ((st = hkv_context_new(m, &cp, &probe, err, errlen))) { hkv_server_free(s); return st; }
        hkv_context_free(probe);
    }
    if (p.kv_memory) {
        uint64_t n = p.kv_memory / s->seq_bytes;
        if (n < 1) {
            st = fail(err, errlen, HKV_ERR_ARG, "--kv-memory %llu bytes holds no sequence: one needs %llu bytes "
                      "(policy %s, budget %d tokens + prefill chunk %d, or all %d positions for full)",
                      (unsigned long long)p.kv_memory, (unsigned long long)s->seq_bytes, s->p.kv.policy, s->budget.total,
                      s->p.prefill_chunk, s->n_ctx);
            hkv_server_free(s);
            return st;
        }
        s->max_seqs = n > MAX_SLOTS ? MAX_SLOTS : (int)n;
        /* smaller per-request budgets may run more sequences than max_seqs */
        s->n_slots = s->max_seqs * 4 > MAX_SLOTS ? MAX_SLOTS : s->max_seqs * 4 < 16 ? 16 : s->max_seqs * 4;
    } else s->max_seqs = s->n_slots = p.n_parallel;
    setup_chat(s);
    s->queue = srv_calloc((size_t)(s->p.n_queue + MAX_SLOTS + 1), sizeof *s->queue);
    size_t bmax = (size_t)s->p.prefill_chunk + MAX_SLOTS; /* one step's batch: a chunk + one token per sequence */
    s->b_tok = srv_malloc(sizeof(int32_t) * bmax);
    s->b_seq = srv_malloc(sizeof(int) * bmax);
    s->b_want = srv_malloc(bmax);
    s->b_slot = srv_malloc(sizeof(slot *) * MAX_SLOTS);
    if (!s->queue || !s->b_tok || !s->b_seq || !s->b_want || !s->b_slot) {
        hkv_server_free(s);
        return fail(err, errlen, HKV_ERR_NOMEM, "out of memory");
    }
    if (pipe2(s->wake, O_CLOEXEC)) {
        st = fail(err, errlen, HKV_ERR_IO, "cannot create a pipe: %s", strerror(errno));
        hkv_server_free(s);
        return st;
    }
    if (pthread_create(&s->engine, NULL, engine_main, s)) {
        hkv_server_free(s);
        return fail(err, errlen, HKV_ERR_NOMEM, "cannot start the engine thread");
    }
    s->engine_started = 1;
    if ((st = http_start(s, err, errlen))) { hkv_server_free(s); return st; }
    *out = s;
    return HKV_OK;
}

int hkv_server_port(const hkv_server *s) { return s ? s->port : -1; }
const char *hkv_server_last_error(const hkv_server *s) { return s ? s->err : "no server"; }

void hkv_server_get_info(const hkv_server *s, hkv_server_info *info) {
    memset(info, 0, sizeof *info);
    info->port = s->port;
    info->n_ctx = s->n_ctx;
    info->max_seqs = s->max_seqs;
    info->budget = s->budget;
    info->seq_bytes = s->seq_bytes;
    info->kv_memory = s->p.kv_memory;
    info->loopback = s->loopback;
}

void hkv_server_pause(hkv_server *s, int paused) {
    pthread_mutex_lock(&s->mu);
    s->paused = paused;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void hkv_server_stop(hkv_server *s) {
    atomic_store(&s->stop, 1);
    if (s->wake[1] >= 0) { ssize_t w = write(s->wake[1], "x", 1); (void)w; } /* async-signal-safe */
}

/* The orderly end: no new connections, the engine ends every job (final events), the HTTP thread gets up to
 * 2 s to deliver them, then libmicrohttpd stops. Idempotent. */
static void shutdown_all(hkv_server *s) {
    if (s->d) http_quiesce(s);
    if (s->engine_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->engine, NULL);
        s->engine_started = 0;
    }
    for (double t0 = now_s(); s->d && now_s() - t0 < 2.0;) {
        pthread_mutex_lock(&s->mu);
        int live = s->n_live;
        pthread_mutex_unlock(&s->mu);
        if (!live) break;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* MHD_stop_daemon must not meet a suspended connection. Every job is done by now, so each was resumed by
     * its final output; this is the safety net should one not be. */
    for (;;) {
        struct MHD_Connection *c = NULL;
        pthread_mutex_lock(&s->mu);
        for (job *j = s->jobs; j && !c; j = j->next)
            if (j->suspended) { j->suspended = 0; j->done = 1; c = j->conn; }
        pthread_mutex_unlock(&s->mu);
        if (!c) break;
        MHD_resume_connection(c);
    }
    http_stop(s);
}

hkv_status hkv_server_run(hkv_server *s) {
    while (!atomic_load(&s->stop)) {
        struct pollfd pf = {.fd = s->wake[0], .events = POLLIN};
        int r = poll(&pf, 1, 500);
        if (r > 0) { char b[64]; ssize_t n = read(s->wake[0], b, sizeof b); (void)n; }
    }
    shutdown_all(s);
    return HKV_OK;
}

void hkv_server_free(hkv_server *s) {
    if (!s) return;
    shutdown_all(s);
    for (int i = 0; i < MAX_SLOTS; i++) {
        slot *sl = &s->slots[i];
        hkv_sampler_free(sl->smp);
        free(sl->cached);
        buf_free(&sl->text);
        hkv_context_free(s->groups[i].ctx);
    }
    free(s->b_tok);
    free(s->b_seq);
    free(s->b_want);
    free(s->b_slot);
    while (s->q_len > 0) job_unref_locked(s->queue[--s->q_len]);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    free(s->queue);
    free_strings(&s->p);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
