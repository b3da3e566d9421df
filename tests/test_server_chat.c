/* heavykv serve, chat: a synthetic model with Qwen's tokenizer and ChatML template (heavykv synth, Q8_0), served
 * in process on 127.0.0.1. Greedy chat through the server equals `heavykv run` on the same rendered prompt
 * (full cache, and H2O per request with the server's prefill chunk), streamed equals non-streamed, fields and
 * errors follow OpenAI, and a second turn reuses the first turn's cached tokens. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "heavykv.h"
#include "server.h"
#include "testutil.h"

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 60};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { close(fd); return -1; }
    return fd;
}

/* POST json with "Connection: close"; returns the body (chunked framing removed), status in *st. */
static char *post(int port, const char *path, const char *json, int *st) {
    int fd = connect_to(port);
    *st = 0;
    if (fd < 0) return NULL;
    char head[512];
    int k = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                     path, strlen(json));
    if (send(fd, head, (size_t)k, MSG_NOSIGNAL) != k || send(fd, json, strlen(json), MSG_NOSIGNAL) != (ssize_t)strlen(json)) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap);
    ssize_t r;
    while (b && n + 1 < cap && (r = recv(fd, b + n, cap - n - 1, 0)) > 0) n += (size_t)r;
    close(fd);
    if (!b) return NULL;
    b[n] = 0;
    sscanf(b, "HTTP/1.1 %d", st);
    char *body = strstr(b, "\r\n\r\n");
    if (!body) { free(b); return NULL; }
    body += 4;
    char *out = malloc(strlen(body) + 1), *o = out;
    if (strstr(b, "Transfer-Encoding: chunked") && strstr(b, "Transfer-Encoding: chunked") < body) {
        for (char *in = body;;) {
            char *e;
            unsigned long len = strtoul(in, &e, 16);
            char *nl = strstr(in, "\r\n");
            if (!nl || e == in || !len) break;
            in = nl + 2;
            if (strlen(in) < len) break;
            memcpy(o, in, len);
            o += len;
            in += len + 2;
        }
        *o = 0;
    } else strcpy(out, body);
    free(b);
    return out;
}

/* A metric's value from /metrics (-1 when absent). */
static double metric(int port, const char *name) {
    int fd = connect_to(port);
    if (fd < 0) return -1;
    const char *req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) { close(fd); return -1; }
    static char b[1 << 16];
    size_t n = 0;
    ssize_t r;
    while (n + 1 < sizeof b && (r = recv(fd, b + n, sizeof b - n - 1, 0)) > 0) n += (size_t)r;
    close(fd);
    b[n] = 0;
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(b, pat);
    return p ? atof(p + strlen(pat)) : -1;
}

typedef struct call { int port; const char *json; char *resp; int st; pthread_t th; } call;
static void *call_thread(void *a) {
    call *c = a;
    c->resp = post(c->port, "/v1/chat/completions", c->json, &c->st);
    return NULL;
}

typedef struct running { hkv_server *s; pthread_t th; } running;
static void *serve_thread(void *arg) { hkv_server_run(((running *)arg)->s); return NULL; }

/* The reference: `heavykv run` greedy on the rendered prompt (it echoes the prompt, then the reply). */
static int run_reference(const char *model, const char *rendered, const char *kv_flags, int n, char *out, size_t outlen) {
    const char *pf = tu_tmp("chat_prompt.txt");
    FILE *f = fopen(pf, "wb");
    if (!f) return 0;
    fputs(rendered, f);
    fclose(f);
    char args[2048];
    snprintf(args, sizeof args, "run -m '%s' -f '%s' --temp 0 -n %d -c 256 -t 1 %s 2>/dev/null | cat", model, pf, n, kv_flags);
    char *buf = malloc(1 << 16);
    int rc = tu_cli(args, buf, 1 << 16);
    int ok = rc == 0 && !strncmp(buf, rendered, strlen(rendered));
    CHECKF(ok, "run failed or did not echo the prompt (rc %d): %.300s", rc, buf);
    snprintf(out, outlen, "%s", ok ? buf + strlen(rendered) : "");
    size_t n_out = strlen(out);
    if (n_out && out[n_out - 1] == '\n') out[n_out - 1] = 0; /* run ends its output with a newline */
    free(buf);
    return ok;
}

static const char *content_of(cJSON *j) {
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "message");
    cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "content");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static const char *finish_of(cJSON *j) {
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
    return cJSON_IsString(f) ? f->valuestring : "";
}

static double usage_of(cJSON *j, const char *name) {
    cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (!strcmp(name, "cached_tokens")) u = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details");
    cJSON *x = cJSON_GetObjectItemCaseSensitive(u, name);
    return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

/* Streamed chat: concatenated delta contents; *done: [DONE] seen; fin: last finish_reason. */
static void stream_text(const char *body, char *out, size_t outlen, int *done, char *fin, size_t finlen, int *role_first) {
    size_t len = 0;
    int first = 1;
    *done = 0;
    *role_first = 0;
    out[0] = fin[0] = 0;
    for (const char *p = body ? strstr(body, "data: ") : NULL; p; p = strstr(p, "data: ")) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e) break;
        if (!strncmp(p, "[DONE]", 6)) { *done = 1; break; }
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(e - p));
        CHECKF(j != NULL, "bad chunk %.*s", (int)(e - p), p);
        cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "object");
        CHECK(cJSON_IsString(o) && !strcmp(o->valuestring, "chat.completion.chunk"));
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
        cJSON *d = cJSON_GetObjectItemCaseSensitive(c, "delta"), *t = cJSON_GetObjectItemCaseSensitive(d, "content");
        cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        if (first) *role_first = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(d, "role"));
        first = 0;
        if (cJSON_IsString(t) && len + strlen(t->valuestring) < outlen) { strcpy(out + len, t->valuestring); len += strlen(t->valuestring); }
        if (cJSON_IsString(f)) snprintf(fin, finlen, "%s", f->valuestring);
        cJSON_Delete(j);
        p = e;
    }
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const char *model = tu_tmp("server_chat.gguf");
    char out[4096], args[1024];
    snprintf(args, sizeof args, "synth --preset tiny --tokenizer '%s' --type Q8_0 -t 2 -o '%s'",
             tu_shared("tokenizers/qwen3/tokenizer.json"), model);
    int rc = tu_cli(args, out, sizeof out);
    CHECKF(rc == 0, "synth: %s", out);
    if (rc) return tu_done("test_server_chat");
    hkv_model *m;
    char err[256];
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 1;
    CHECKF(hkv_model_load(model, &mp, &m, err, sizeof err) == HKV_OK, "%s", err);
    hkv_server_params p = hkv_server_default_params();
    p.port = 0;
    p.n_ctx = 256;
    p.n_threads = 1;
    p.n_parallel = 4;
    running r;
    CHECKF(hkv_server_new(m, &p, &r.s, err, sizeof err) == HKV_OK, "%s", err);
    int port = hkv_server_port(r.s);
    pthread_create(&r.th, NULL, serve_thread, &r);

    /* the rendered prompt, as the library renders it */
    hkv_chat_message msgs[2] = {{"system", "You are terse."}, {"user", "Say hello."}};
    char rendered[2048];
    CHECK(hkv_chat_apply_template(m, NULL, msgs, 2, 1, rendered, sizeof rendered) > 0);
    CHECKF(strstr(rendered, "<|im_start|>assistant\n") != NULL, "%s", rendered);
#define CHAT_BODY(extra) "{\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},{\"role\":\"user\"," \
                         "\"content\":\"Say hello.\"}],\"max_tokens\":24,\"temperature\":0" extra "}"
    char json[1024], ref[4096];
    /* 1. full cache: server == run */
    snprintf(json, sizeof json, "%s", CHAT_BODY(""));
    int st;
    char *resp = post(port, "/v1/chat/completions", json, &st);
    cJSON *j = cJSON_Parse(resp ? resp : "");
    const char *text = content_of(j);
    CHECKF(st == 200 && text, "%s", resp ? resp : "");
    cJSON *obj = cJSON_GetObjectItemCaseSensitive(j, "object");
    CHECK(cJSON_IsString(obj) && !strcmp(obj->valuestring, "chat.completion"));
    CHECK(usage_of(j, "completion_tokens") >= 1 && usage_of(j, "completion_tokens") <= 24 &&
          usage_of(j, "total_tokens") == usage_of(j, "prompt_tokens") + usage_of(j, "completion_tokens"));
    CHECK(!strcmp(finish_of(j), "stop") || !strcmp(finish_of(j), "length"));
    if (run_reference(model, rendered, "", (int)usage_of(j, "completion_tokens"), ref, sizeof ref))
        CHECKF(text && !strcmp(text, ref), "server chat differs from heavykv run:\n  server: %s\n  run:    %s", text, ref);
    char plain[4096];
    snprintf(plain, sizeof plain, "%s", text ? text : "");
    double n_gen = usage_of(j, "completion_tokens");
    cJSON_Delete(j);
    free(resp);
    /* 2. streamed == non-streamed */
    snprintf(json, sizeof json, "%s", CHAT_BODY(",\"stream\":true"));
    resp = post(port, "/v1/chat/completions", json, &st);
    char stext[4096], fin[32];
    int done, role_first;
    stream_text(resp, stext, sizeof stext, &done, fin, sizeof fin, &role_first);
    CHECKF(st == 200 && done && role_first && !strcmp(stext, plain), "stream: %s vs %s", stext, plain);
    free(resp);
    /* 3. H2O per request (budget 12 tokens, evicting while it generates 40): server == run with the same policy
     * and the server's prefill chunk */
    snprintf(json, sizeof json, "{\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},{\"role\":\"user\","
             "\"content\":\"Say hello.\"}],\"max_completion_tokens\":40,\"temperature\":0,\"kv\":{\"policy\":\"h2o\",\"budget\":12}}");
    resp = post(port, "/v1/chat/completions", json, &st);
    j = cJSON_Parse(resp ? resp : "");
    text = content_of(j);
    cJSON *kv = cJSON_GetObjectItemCaseSensitive(j, "kv");
    CHECKF(st == 200 && text && cJSON_GetObjectItemCaseSensitive(kv, "budget") &&
           cJSON_GetObjectItemCaseSensitive(kv, "budget")->valuedouble == 12, "%s", resp ? resp : "");
    if (run_reference(model, rendered, "--kv-policy h2o --kv-budget 12 --prefill-chunk 64", (int)usage_of(j, "completion_tokens"), ref, sizeof ref))
        CHECKF(text && !strcmp(text, ref), "h2o chat differs from heavykv run:\n  server: %s\n  run:    %s", text, ref);
    cJSON_Delete(j);
    free(resp);
    /* 4. a second turn reuses the first: turn 1 generates one token (never decoded), so the cached tokens are
     * exactly turn 1's prompt, which the rendered turn 2 starts with */
    const char *t1 = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi.\"}],\"max_tokens\":1,\"temperature\":0,"
                     "\"conversation_id\":\"conv-7\"}";
    resp = post(port, "/v1/chat/completions", t1, &st);
    j = cJSON_Parse(resp ? resp : "");
    double p1 = usage_of(j, "prompt_tokens");
    char reply[256];
    snprintf(reply, sizeof reply, "%s", content_of(j) ? content_of(j) : "");
    cJSON_Delete(j);
    free(resp);
    cJSON *t2 = cJSON_Parse("{\"messages\":[{\"role\":\"user\",\"content\":\"Hi.\"}],\"max_tokens\":4,\"temperature\":0,"
                            "\"conversation_id\":\"conv-7\"}");
    cJSON *ms = cJSON_GetObjectItemCaseSensitive(t2, "messages"), *a = cJSON_CreateObject(), *u = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "role", "assistant");
    cJSON_AddStringToObject(a, "content", reply);
    cJSON_AddStringToObject(u, "role", "user");
    cJSON_AddStringToObject(u, "content", "And now?");
    cJSON_AddItemToArray(ms, a);
    cJSON_AddItemToArray(ms, u);
    char *t2s = cJSON_PrintUnformatted(t2);
    cJSON_Delete(t2);
    resp = post(port, "/v1/chat/completions", t2s, &st);
    free(t2s);
    j = cJSON_Parse(resp ? resp : "");
    CHECKF(st == 200 && usage_of(j, "cached_tokens") == p1 && usage_of(j, "prompt_tokens") > p1, "turn 2: %s (turn 1 prompt %g)",
           resp ? resp : "", p1);
    cJSON_Delete(j);
    free(resp);
    /* 6. batching: 4 streams at once (admitted while the engine is paused) decode as one group, one
     * hkv_decode_tokens call per step; each stream equals the same request alone, for `full` and for h2o (budget
     * 12, evicting). The first is test 1's / test 3's request, whose text alone equals `heavykv run`. */
    const char *users[4] = {"Say hello.", "Count to three.", "Name a colour.", "What is rain?"};
    for (int pol = 0; pol < 2; pol++) {
        char bodies[4][512], alone[4][4096], got[4096];
        for (int i = 0; i < 4; i++) {
            snprintf(bodies[i], sizeof bodies[i], "{\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                     "{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":%d,\"temperature\":0,\"stream\":true%s}", users[i],
                     24, pol ? ",\"kv\":{\"policy\":\"h2o\",\"budget\":12}" : "");
            resp = post(port, "/v1/chat/completions", bodies[i], &st);
            stream_text(resp, alone[i], sizeof alone[i], &done, fin, sizeof fin, &role_first);
            CHECKF(st == 200 && done && alone[i][0], "alone %d: %s", i, resp ? resp : "");
            free(resp);
        }
        if (!pol) CHECKF(!strcmp(alone[0], plain), "full alone: %s vs %s", alone[0], plain);
        hkv_server_pause(r.s, 1);
        call c[4];
        for (int i = 0; i < 4; i++) {
            c[i] = (call){.port = port, .json = bodies[i]};
            pthread_create(&c[i].th, NULL, call_thread, &c[i]);
        }
        for (int t = 0; t < 1000 && metric(port, "heavykv_slots_busy") != 4; t++) usleep(10000);
        CHECK(metric(port, "heavykv_slots_busy") == 4);
        hkv_server_pause(r.s, 0);
        for (int i = 0; i < 4; i++) {
            pthread_join(c[i].th, NULL);
            stream_text(c[i].resp, got, sizeof got, &done, fin, sizeof fin, &role_first);
            CHECKF(c[i].st == 200 && done && !strcmp(got, alone[i]),
                   "%s stream %d batched differs from alone:\n  batched: %s\n  alone:   %s", pol ? "h2o" : "full", i, got, alone[i]);
            free(c[i].resp);
        }
        CHECKF(metric(port, "heavykv_batch_sequences_max") == 4, "most sequences in one call: %g",
               metric(port, "heavykv_batch_sequences_max"));
    }
    /* 5. errors */
    const char *bad[] = {"{\"messages\":[]}", "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}",
                         "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}",
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":-2}",
                         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "{\"prompt\":\"x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp = post(port, "/v1/chat/completions", bad[i], &st);
        CHECKF(st == 400 && resp && strstr(resp, "\"error\""), "%s -> %d %s", bad[i], st, resp ? resp : "");
        free(resp);
    }
    (void)n_gen;
    hkv_server_stop(r.s);
    pthread_join(r.th, NULL);
    hkv_server_free(r.s);
    hkv_model_free(m);
    return tu_done("test_server_chat");
}
