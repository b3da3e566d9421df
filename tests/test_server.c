/* heavykv serve, in process on 127.0.0.1 with an ephemeral port and the real stories260K model: greedy results
 * equal the public API's greedy generation (single, streamed, 6 requests batched over 4 slots + queue, and an
 * H2O server whose batched, evicting decode must equal a single-sequence H2O context), /kv bounds, and every
 * malformed-request answer. Requests that must overlap are written before hkv_server_run starts, so they are
 * read in the same poll round: concurrency without timing. Every socket read has a 10 s timeout. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "heavykv.h"
#include "server.h"
#include "testutil.h"

static const char *PROMPTS[] = {"Once upon a time", "The little dog", "Lily and Tom went to the park",
                                "One day, a big fish", "Sam had a red ball. He", "The sun was"};
#define N_PROMPTS 6
#define N_GEN 40

/* ---------------------------------------------------------------- reference: the public API directly */

/* Greedy text for prompt with a one-sequence context of the given KV config (percentages of n_ctx, as the
 * server does), the way the server builds text: utf8 stream pieces until EOG or n tokens. */
static void api_greedy(hkv_model *m, const hkv_kv_config *kv, int n_ctx, const char *prompt, int n, char *out, size_t outlen) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_threads = 2;
    cp.n_ctx = n_ctx;
    cp.ref_len = n_ctx;
    cp.kv = *kv;
    hkv_context *c;
    hkv_sampler *smp;
    hkv_sampler_params sp = hkv_sampler_default_params();
    sp.temp = 0;
    char err[256];
    out[0] = 0;
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    CHECKF(hkv_context_new(m, &cp, &c, err, sizeof err) == HKV_OK, "%s", err);
    CHECK(hkv_sampler_new(&sp, mi.n_vocab, &smp, err, sizeof err) == HKV_OK);
    int32_t toks[256];
    int nt = hkv_tokenize(m, prompt, 1, 1, toks, 256);
    CHECK(nt > 0 && hkv_decode(c, 0, toks, nt) == HKV_OK);
    hkv_utf8_stream us = {.strip_space = 0};
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        int32_t t = hkv_sampler_sample(smp, hkv_get_logits(c, 0, -1));
        if (hkv_token_is_eog(m, t)) break;
        char piece[256];
        int k = hkv_utf8_stream_push(&us, m, t, piece, sizeof piece);
        if (k > 0 && len + (size_t)k < outlen) { memcpy(out + len, piece, (size_t)k); len += (size_t)k; out[len] = 0; }
        if (i + 1 < n) CHECK(hkv_decode(c, 0, &t, 1) == HKV_OK);
    }
    hkv_sampler_free(smp);
    hkv_context_free(c);
}

/* ---------------------------------------------------------------- a tiny HTTP client */

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { close(fd); return -1; }
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return 0;
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* Reads until the server closes (every response closes the connection). malloc'ed, NUL-terminated. */
static char *read_all(int fd) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (int rounds = 0; b && rounds < 100000; rounds++) {
        if (cap - n < 4096) { char *nb = realloc(b, cap * 2); if (!nb) break; b = nb; cap *= 2; }
        ssize_t r = recv(fd, b + n, cap - n - 1, 0);
        if (r <= 0) break;
        n += (size_t)r;
    }
    if (b) b[n] = 0;
    close(fd);
    return b;
}

static int send_post(int port, const char *path, const char *json) {
    int fd = connect_to(port);
    if (fd < 0) return -1;
    char head[256];
    int k = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n", path, strlen(json));
    if (!send_all(fd, head, (size_t)k) || !send_all(fd, json, strlen(json))) { close(fd); return -1; }
    return fd;
}

static char *raw(int port, const char *req) {
    int fd = connect_to(port);
    if (fd < 0) return NULL;
    send_all(fd, req, strlen(req));
    return read_all(fd);
}

static char *post(int port, const char *path, const char *json) {
    int fd = send_post(port, path, json);
    return fd < 0 ? NULL : read_all(fd);
}

static int status_of(const char *resp) {
    int st = 0;
    return resp && sscanf(resp, "HTTP/1.1 %d", &st) == 1 ? st : 0;
}

static const char *body_of(const char *resp) {
    const char *b = resp ? strstr(resp, "\r\n\r\n") : NULL;
    return b ? b + 4 : "";
}

static cJSON *json_of(const char *resp) { return cJSON_Parse(body_of(resp)); }

static const char *jstr(const cJSON *o, const char *path1, const char *path2) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, path1);
    if (path2) {
        if (cJSON_IsArray(x)) x = cJSON_GetArrayItem(x, 0);
        x = cJSON_GetObjectItemCaseSensitive(x, path2);
    }
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *name) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

/* Text of a completion response (either API); "" when absent. Copied into out. */
static void text_of(const char *resp, char *out, size_t outlen) {
    cJSON *j = json_of(resp);
    const char *t = jstr(j, "content", NULL);
    if (!t) t = jstr(j, "choices", "text");
    snprintf(out, outlen, "%s", t ? t : "");
    cJSON_Delete(j);
}

/* Concatenates the SSE chunks' text; *done: "data: [DONE]" seen; *fin: last finish_reason / stop seen. */
static void sse_text(const char *resp, char *out, size_t outlen, int *done, char *fin, size_t finlen) {
    size_t len = 0;
    *done = 0;
    out[0] = fin[0] = 0;
    for (const char *p = strstr(body_of(resp), "data: "); p; p = strstr(p, "data: ")) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e) break;
        if (!strncmp(p, "[DONE]", 6)) { *done = 1; break; }
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(e - p));
        CHECKF(j != NULL, "bad SSE chunk: %.*s", (int)(e - p), p);
        const char *t = jstr(j, "content", NULL);
        if (!t) t = jstr(j, "choices", "text");
        const char *f = jstr(j, "choices", "finish_reason");
        if (f) snprintf(fin, finlen, "%s", f);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stop"))) snprintf(fin, finlen, "%s", "stop");
        if (t && len + strlen(t) < outlen) { memcpy(out + len, t, strlen(t) + 1); len += strlen(t); }
        cJSON_Delete(j);
        p = e;
    }
}

/* ---------------------------------------------------------------- the server in a thread */

typedef struct running { hkv_server *s; pthread_t th; hkv_status st; int port; } running;

static void *serve_thread(void *arg) {
    running *r = arg;
    r->st = hkv_server_run(r->s);
    return NULL;
}

static void quiet_log(void *user, const char *line) { (*(int *)user)++; (void)line; }

static int make_server(hkv_model *m, const hkv_kv_config *kv, int n_parallel, int n_queue, int n_ctx, int *log_count, running *r) {
    hkv_server_params p = hkv_server_default_params();
    p.port = 0;
    p.n_parallel = n_parallel;
    p.n_queue = n_queue;
    p.n_ctx = n_ctx;
    p.n_threads = 2;
    p.kv = *kv;
    p.max_body = 1 << 20;
    p.log = quiet_log;
    p.log_user = log_count;
    char err[256];
    memset(r, 0, sizeof *r);
    hkv_status st = hkv_server_new(m, &p, &r->s, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return 0;
    r->port = hkv_server_port(r->s);
    CHECK(r->port > 0);
    return 1;
}

static void start(running *r) { CHECK(pthread_create(&r->th, NULL, serve_thread, r) == 0); }

static void stop(running *r) {
    hkv_server_stop(r->s);
    pthread_join(r->th, NULL);
    CHECK(r->st == HKV_OK);
    hkv_server_free(r->s);
}

/* ---------------------------------------------------------------- tests */

static char REF[N_PROMPTS][4096];

static void greedy_request(char *json, size_t n, const char *prompt, int oai, int stream) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "prompt", prompt);
    cJSON_AddNumberToObject(j, oai ? "max_tokens" : "n_predict", N_GEN);
    cJSON_AddNumberToObject(j, "temperature", 0);
    if (stream) cJSON_AddBoolToObject(j, "stream", 1);
    char *s = cJSON_PrintUnformatted(j);
    snprintf(json, n, "%s", s);
    free(s);
    cJSON_Delete(j);
}

/* Full-cache server, parallel 4, queue 16. */
static void test_full_server(hkv_model *m) {
    hkv_kv_config kv = hkv_kv_default_config();
    for (int i = 0; i < N_PROMPTS; i++) api_greedy(m, &kv, 256, PROMPTS[i], N_GEN, REF[i], sizeof REF[i]);
    CHECKF(!strncmp(REF[0], ", there was a little girl named Lily.", 37), "reference: %s", REF[0]);
    int logs = 0;
    running r;
    if (!make_server(m, &kv, 4, 16, 256, &logs, &r)) return;

    /* 6 greedy requests written before the loop starts: 4 decode in one batch, 2 wait in the queue */
    int fds[N_PROMPTS];
    char json[1024], text[4096];
    for (int i = 0; i < N_PROMPTS; i++) {
        greedy_request(json, sizeof json, PROMPTS[i], i % 2, 0);
        fds[i] = send_post(r.port, i % 2 ? "/v1/completions" : "/completion", json);
        CHECK(fds[i] >= 0);
    }
    start(&r);
    for (int i = 0; i < N_PROMPTS; i++) {
        char *resp = fds[i] >= 0 ? read_all(fds[i]) : NULL;
        CHECKF(status_of(resp) == 200, "request %d: %s", i, resp ? resp : "(none)");
        text_of(resp, text, sizeof text);
        CHECKF(!strcmp(text, REF[i]), "batched request %d differs from the API's greedy text:\n  server: %s\n  api:    %s",
               i, text, REF[i]);
        free(resp);
    }
    char *resp = raw(r.port, "GET /kv HTTP/1.1\r\nHost: x\r\n\r\n");
    cJSON *kvj = json_of(resp), *slots = cJSON_GetObjectItemCaseSensitive(kvj, "slots");
    CHECK(cJSON_GetArraySize(slots) == 4);
    for (int i = 0; i < 4; i++) /* all four slots served (the concurrency really happened) */
        CHECKF(jnum(cJSON_GetArrayItem(slots, i), "requests") >= 1, "slot %d unused: %s", i, body_of(resp));
    cJSON_Delete(kvj);
    free(resp);

    /* the same requests one at a time */
    for (int i = 0; i < N_PROMPTS; i++) {
        greedy_request(json, sizeof json, PROMPTS[i], i % 2 == 0, 0);
        resp = post(r.port, i % 2 == 0 ? "/v1/completions" : "/completion", json);
        text_of(resp, text, sizeof text);
        CHECKF(!strcmp(text, REF[i]), "single request %d: %s vs %s", i, text, REF[i]);
        free(resp);
    }

    /* OpenAI fields and streaming (both APIs): the chunks add up to the non-streamed text */
    greedy_request(json, sizeof json, PROMPTS[0], 1, 0);
    resp = post(r.port, "/v1/completions", json);
    cJSON *j = json_of(resp);
    CHECK(jstr(j, "object", NULL) && !strcmp(jstr(j, "object", NULL), "text_completion"));
    CHECK(jstr(j, "id", NULL) && jnum(j, "created") > 0 && jstr(j, "model", NULL));
    CHECK(jstr(j, "choices", "finish_reason") && !strcmp(jstr(j, "choices", "finish_reason"), "length"));
    cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    CHECK(jnum(u, "completion_tokens") == N_GEN && jnum(u, "prompt_tokens") > 0 &&
          jnum(u, "total_tokens") == jnum(u, "prompt_tokens") + N_GEN);
    cJSON_Delete(j);
    free(resp);
    char fin[32];
    int done;
    for (int oai = 0; oai < 2; oai++) {
        greedy_request(json, sizeof json, PROMPTS[2], oai, 1);
        resp = post(r.port, oai ? "/v1/completions" : "/completion", json);
        CHECK(status_of(resp) == 200 && strstr(resp, "text/event-stream"));
        sse_text(resp, text, sizeof text, &done, fin, sizeof fin);
        CHECKF(!strcmp(text, REF[2]), "streamed (%s): %s vs %s", oai ? "oai" : "llama", text, REF[2]);
        CHECK(oai ? done && !strcmp(fin, "length") : !strcmp(fin, "stop"));
        free(resp);
    }

    /* llama.cpp fields */
    greedy_request(json, sizeof json, PROMPTS[1], 0, 0);
    resp = post(r.port, "/completion", json);
    j = json_of(resp);
    CHECK(jnum(j, "tokens_predicted") == N_GEN && jnum(j, "tokens_evaluated") > 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stop")));
    CHECK(jnum(cJSON_GetObjectItemCaseSensitive(j, "timings"), "predicted_per_second") > 0);
    CHECK(jnum(cJSON_GetObjectItemCaseSensitive(j, "timings"), "prompt_per_second") > 0);
    cJSON_Delete(j);
    free(resp);

    /* stop strings: cut before the first match, streamed or not, finish_reason "stop" */
    const char *word = " Lily";
    const char *at = strstr(REF[0], word);
    CHECK(at != NULL);
    for (int stream = 0; stream < 2 && at; stream++) {
        snprintf(json, sizeof json, "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,\"stop\":[\"zzz\",\"%s\"],"
                 "\"stream\":%s}", PROMPTS[0], N_GEN, word, stream ? "true" : "false");
        resp = post(r.port, "/v1/completions", json);
        if (stream) sse_text(resp, text, sizeof text, &done, fin, sizeof fin);
        else {
            text_of(resp, text, sizeof text);
            j = json_of(resp);
            snprintf(fin, sizeof fin, "%s", jstr(j, "choices", "finish_reason") ? jstr(j, "choices", "finish_reason") : "");
            cJSON_Delete(j);
        }
        CHECKF(strlen(text) == (size_t)(at - REF[0]) && !strncmp(text, REF[0], strlen(text)), "stop: '%s'", text);
        CHECK(!strcmp(fin, "stop"));
        free(resp);
    }

    /* sampling with a seed is reproducible; /health, /v1/models */
    char a[4096], b[4096];
    const char *sampled = "{\"prompt\":\"Once\",\"n_predict\":30,\"temperature\":1.0,\"seed\":42}";
    resp = post(r.port, "/completion", sampled); text_of(resp, a, sizeof a); free(resp);
    resp = post(r.port, "/completion", sampled); text_of(resp, b, sizeof b); free(resp);
    CHECK(a[0] && !strcmp(a, b));
    resp = raw(r.port, "GET /health HTTP/1.1\r\n\r\n");
    CHECK(status_of(resp) == 200 && strstr(body_of(resp), "\"status\":\"ok\""));
    free(resp);
    resp = raw(r.port, "GET /v1/models HTTP/1.0\r\n\r\n");
    j = json_of(resp);
    CHECK(status_of(resp) == 200 && jstr(j, "data", "id") != NULL);
    cJSON_Delete(j);
    free(resp);

    /* a client that leaves mid-stream does not hurt the server */
    int fd = send_post(r.port, "/v1/completions", "{\"prompt\":\"Once\",\"max_tokens\":2000,\"stream\":true}");
    char part[64];
    CHECK(fd >= 0 && recv(fd, part, sizeof part, 0) > 0);
    if (fd >= 0) close(fd);
    fd = connect_to(r.port); /* and one that leaves mid-request */
    if (fd >= 0) { send_all(fd, "POST /completion HTTP/1.1\r\nContent-Le", 37); close(fd); }
    resp = raw(r.port, "GET /health HTTP/1.1\r\n\r\n");
    CHECK(status_of(resp) == 200);
    free(resp);
    stop(&r);
    CHECK(logs >= 20);
}

/* Malformed requests: each gets the right status and a JSON error. */
static void expect_error(int port, const char *req, int status) {
    char *resp = raw(port, req);
    CHECKF(status_of(resp) == status, "expected %d for %.60s..., got: %.300s", status, req, resp ? resp : "(none)");
    cJSON *j = json_of(resp);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    CHECKF(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")) && jnum(e, "code") == status,
           "error body: %s", body_of(resp));
    cJSON_Delete(j);
    free(resp);
}

static void expect_post_error(int port, const char *path, const char *json, int status) {
    char req[4096];
    snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", path, strlen(json), json);
    expect_error(port, req, status);
}

/* H2O server (budget 10% of -c 160 = 16 tokens), 2 slots, no queue. */
static void test_h2o_server(hkv_model *m) {
    hkv_kv_config kv = hkv_kv_default_config();
    snprintf(kv.policy, sizeof kv.policy, "h2o");
    char err[256];
    CHECK(hkv_amount_parse("10%", &kv.budget, err, sizeof err) == HKV_OK);
    const int n_ctx = 160;
    char ref[2][4096];
    for (int i = 0; i < 2; i++) api_greedy(m, &kv, n_ctx, PROMPTS[2 + i], N_GEN, ref[i], sizeof ref[i]);
    int logs = 0;
    running r;
    if (!make_server(m, &kv, 2, 0, n_ctx, &logs, &r)) return;
    /* two requests batch together with eviction; the third finds no slot and no queue room: 503 */
    int fds[3];
    char json[1024], text[4096];
    for (int i = 0; i < 3; i++) {
        greedy_request(json, sizeof json, PROMPTS[2 + i], 1, 0);
        fds[i] = send_post(r.port, "/v1/completions", json);
    }
    start(&r);
    for (int i = 0; i < 3; i++) {
        char *resp = fds[i] >= 0 ? read_all(fds[i]) : NULL;
        if (i < 2) {
            text_of(resp, text, sizeof text);
            CHECKF(status_of(resp) == 200 && !strcmp(text, ref[i]), "h2o batched %d: %s vs %s", i, text, ref[i]);
        } else CHECKF(status_of(resp) == 503, "%s", resp ? resp : "(none)");
        free(resp);
    }
    char *resp = raw(r.port, "GET /kv HTTP/1.1\r\n\r\n");
    cJSON *j = json_of(resp), *slots = cJSON_GetObjectItemCaseSensitive(j, "slots");
    CHECK(jstr(j, "policy", NULL) && !strcmp(jstr(j, "policy", NULL), "h2o"));
    CHECKF(jnum(cJSON_GetObjectItemCaseSensitive(j, "budget"), "total") == 16, "%s", body_of(resp));
    CHECK(cJSON_GetArraySize(slots) == 2);
    for (int i = 0; i < 2; i++) {
        const cJSON *s = cJSON_GetArrayItem(slots, i);
        CHECKF(jnum(s, "occupancy_max") <= jnum(s, "budget") && jnum(s, "occupancy_max") > 0, "%s", body_of(resp));
        CHECKF(jnum(s, "n_past") > 16 && jnum(s, "evicted") > 0 && jnum(s, "kv_bytes") > 0, "%s", body_of(resp));
    }
    CHECK(jnum(j, "evictions") > 0);
    cJSON_Delete(j);
    free(resp);

    /* errors */
    expect_post_error(r.port, "/completion", "{\"prompt\": \"x\",", 400);                 /* bad JSON */
    expect_post_error(r.port, "/completion", "{\"prompt\": \"x\"} trailing", 400);
    expect_post_error(r.port, "/completion", "[1, 2]", 400);
    expect_post_error(r.port, "/v1/completions", "{\"max_tokens\": 4}", 400);              /* missing prompt */
    expect_post_error(r.port, "/v1/completions", "{\"prompt\": 7}", 400);
    expect_post_error(r.port, "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": -1}", 400);
    expect_post_error(r.port, "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 2.5}", 400);
    expect_post_error(r.port, "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": \"4\"}", 400);
    expect_post_error(r.port, "/completion", "{\"prompt\": \"x\", \"temperature\": -1}", 400);
    expect_post_error(r.port, "/completion", "{\"prompt\": \"x\", \"top_p\": 0}", 400);
    expect_post_error(r.port, "/completion", "{\"prompt\": \"x\", \"stream\": 1}", 400);
    expect_post_error(r.port, "/completion", "{\"prompt\": \"x\", \"stop\": [1]}", 400);
    expect_post_error(r.port, "/v1/completions", "{\"prompt\": \"x\", \"n\": 2}", 400);
    char big[4096] = "{\"prompt\": \"";
    for (int i = 0; i < 200; i++) strcat(big, "Once upon ");
    strcat(big, "\"}");
    expect_post_error(r.port, "/completion", big, 400);                                    /* longer than -c */
    expect_post_error(r.port, "/nowhere", "{}", 404);
    expect_error(r.port, "GET /v1/completions HTTP/1.1\r\n\r\n", 405);
    expect_error(r.port, "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405);
    expect_error(r.port, "POST /completion HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413);
    expect_error(r.port, "POST /completion HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n", 400);
    expect_error(r.port, "POST /completion HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400);
    expect_error(r.port, "POST /completion HTTP/1.1\r\n\r\n", 411);
    expect_error(r.port, "POST /completion HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
    expect_error(r.port, "BLAH\r\n\r\n", 400);
    expect_error(r.port, "GET /health HTTP/2.0\r\n\r\n", 505);
    expect_error(r.port, "GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400);
    char *huge = malloc(40000);
    strcpy(huge, "GET /health HTTP/1.1\r\nX-Big: ");
    memset(huge + strlen(huge), 'a', 30000);
    strcpy(huge + 30029, "\r\n\r\n");
    expect_error(r.port, huge, 431);
    free(huge);
    resp = raw(r.port, "GET /health?x=1 HTTP/1.1\r\n\r\n"); /* query strings are ignored */
    CHECK(status_of(resp) == 200);
    free(resp);
    stop(&r);
    CHECK(logs >= 25);
}

int main(void) {
    hkv_model *m;
    char err[256];
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 2;
    hkv_status st = hkv_model_load(tu_model(), &mp, &m, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return tu_done("test_server");
    test_full_server(m);
    test_h2o_server(m);
    hkv_model_free(m);
    return tu_done("test_server");
}
