/* heavykv serve: request bodies in (completion, chat) and result objects out, all through cJSON.
 *
 * Every field is checked for its type and range; a bad one is a 400 naming the field. Defaults follow each
 * API: OpenAI completions/chat sample with plain temperature 1 (top_p 1, no top_k/min_p/penalty); llama.cpp's
 * /completion uses the library's default sampler chain. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cjson/cJSON.h>
#include "salloc.h"
#include "server_int.h"

int buf_add(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = srv_realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 1;
}

void buf_free(buf *b) { srv_free(b->p); memset(b, 0, sizeof *b); }

void request_free(request *r) {
    for (int i = 0; i < r->n_stop; i++) srv_free(r->stop[i]);
    srv_free(r->prompt);
    memset(r, 0, sizeof *r);
}

char *json_print(cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* cJSON's builders skip a field whose allocation failed and carry on, which would send a 200 that silently
 * lacks "content": an object built while any allocation of this thread failed is dropped (NULL) instead. */
static cJSON *whole_or_null(cJSON *j, long failures_before) {
    if (srv_alloc_failures() == failures_before) return j;
    cJSON_Delete(j);
    return NULL;
}

/* cJSON_AddItemToArray leaves the item with the caller when it fails (no array: an earlier allocation
 * failed), and every caller here had dropped it: a leak per failure, found by test_server_alloc. */
void json_array_add(cJSON *arr, cJSON *item) {
    if (!cJSON_AddItemToArray(arr, item)) cJSON_Delete(item);
}

static cJSON *error_json_build(int status, const char *msg, const char *type);
cJSON *error_json(int status, const char *msg, const char *type) {
    long f0 = srv_alloc_failures();
    return whole_or_null(error_json_build(status, msg, type), f0);
}

const char *error_body_nomem(void) {
    return "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":500}}";
}

/* OpenAI's error shape: {"error": {"message", "type", "param", "code"}}. */
static cJSON *error_json_build(int status, const char *msg, const char *type) {
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type ? type : status == 404 ? "not_found_error"
                            : status == 401 ? "authentication_error"
                            : status < 500 ? "invalid_request_error" : "server_error");
    cJSON_AddNullToObject(e, "param");
    if (status == 401) cJSON_AddStringToObject(e, "code", "invalid_api_key");
    else cJSON_AddNumberToObject(e, "code", status);
    return j;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- field readers */

/* Absent or null leaves *out unchanged and returns 0; a wrong type or range writes msg and returns 400. */
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
        if (!(r->stop[r->n_stop] = srv_strdup(e->valuestring))) { snprintf(msg, ml, "out of memory"); return 500; }
        r->n_stop++;
    }
    return 0;
}

static int get_sampling(const cJSON *o, request *r, char *msg, size_t ml) {
    hkv_sampler_params *sp = &r->sp;
    *sp = hkv_sampler_default_params();
    if (r->api != API_LLAMA) { sp->temp = 1.0f; sp->top_k = 0; sp->top_p = 1.0f; sp->min_p = 0.0f; }
    double top_k = sp->top_k, seed = -1;
    int st;
    if ((st = get_num(o, "temperature", 0, 0, 100, &sp->temp, msg, ml)) ||
        (st = get_num(o, "top_p", 0, 1, 1, &sp->top_p, msg, ml)) ||
        (st = get_num(o, "min_p", 0, 0, 1, &sp->min_p, msg, ml)) ||
        (st = get_num(o, "repeat_penalty", 0.01, 0, 100, &sp->repeat_penalty, msg, ml)) ||
        (st = get_int(o, "top_k", 0, 1 << 30, &top_k, msg, ml)) ||
        (st = get_int(o, "seed", -1, 9007199254740992.0, &seed, msg, ml)))
        return st;
    sp->top_k = (int)top_k;
    /* seed -1 or absent: a fresh one per request (llama.cpp's convention) */
    sp->seed = seed >= 0 ? (uint64_t)seed : mix64((uint64_t)(hkv_time_sec() * 1e9) ^ (r->id * 0x9E3779B97F4A7C15ull));
    return 0;
}

/* ---------------------------------------------------------------- KV config per request */

int resolve_kv(hkv_server *s, const hkv_kv_config *kv, hkv_budget *b, uint64_t *bytes, char *msg, size_t ml) {
    char err[256];
    if (hkv_budget_resolve(kv, s->n_ctx, s->n_ctx, b, err, sizeof err)) {
        snprintf(msg, ml, "invalid KV budget: %s", err);
        return 400;
    }
    int rows;
    const hkv_policy_ops *ops = kv->custom ? kv->custom : hkv_policy_find(kv->policy);
    if ((ops && ops->never_evicts) || kv->simulate) rows = s->n_ctx;
    else {
        /* a context gives every layer the slots of its largest layer budget: with a per-layer schedule
         * (PyramidKV's default "pyramid", or kv.budget_layers) that is above the average budget b->total */
        int top = b->total, nl = s->mi.n_layer > 0 ? s->mi.n_layer : 1;
        hkv_budget *lb = srv_malloc(sizeof *lb * (size_t)nl);
        if (!lb) { snprintf(msg, ml, "out of memory"); return 500; }
        if (hkv_layer_budgets(kv, s->n_ctx, s->n_ctx, nl, lb, err, sizeof err)) {
            srv_free(lb);
            snprintf(msg, ml, "invalid per-layer KV budgets: %s", err);
            return 400;
        }
        for (int l = 0; l < nl; l++) if (lb[l].total > top) top = lb[l].total;
        srv_free(lb);
        long r = (long)top + s->p.prefill_chunk;
        rows = r > s->n_ctx ? s->n_ctx : (int)r;
    }
    uint64_t elt = kv->type == HKV_KV_F32 ? 4 : 2;
    *bytes = (uint64_t)rows * s->row_bytes / 2 * elt; /* row_bytes is for F16 */
    return 0;
}

/* "kv": {"policy": NAME, "budget": "20%" | 0.2 | 512, "heavy"/"recent"/"sink": same forms}. */
static int get_amount(const cJSON *o, const char *name, hkv_amount *a, char *msg, size_t ml) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    char txt[64], err[256];
    if (cJSON_IsString(f)) snprintf(txt, sizeof txt, "%s", f->valuestring);
    else if (cJSON_IsNumber(f) && isfinite(f->valuedouble) && f->valuedouble > 0 && f->valuedouble <= 1e9) {
        double v = f->valuedouble;
        if (v == floor(v) && v >= 1) snprintf(txt, sizeof txt, "%.0f", v);
        else snprintf(txt, sizeof txt, "%.9f", v);
    } else {
        snprintf(msg, ml, "'kv.%s' must be a string like \"20%%\" or a positive number", name);
        return 400;
    }
    if (hkv_amount_parse(txt, a, err, sizeof err)) { snprintf(msg, ml, "'kv.%s': %s", name, err); return 400; }
    return 0;
}

static int get_kv(hkv_server *s, const cJSON *o, request *r, char *msg, size_t ml) {
    r->kv = s->p.kv;
    const cJSON *k = field(o, "kv");
    if (k) {
        if (!cJSON_IsObject(k)) { snprintf(msg, ml, "'kv' must be an object like {\"policy\": \"h2o\", \"budget\": \"20%%\"}"); return 400; }
        const cJSON *pol = field(k, "policy");
        if (pol) {
            char err[256];
            if (!cJSON_IsString(pol) || hkv_policy_check(pol->valuestring, err, sizeof err)) {
                if (!cJSON_IsString(pol)) hkv_policy_check("", err, sizeof err);
                snprintf(msg, ml, "'kv.policy': %s", err);
                return 400;
            }
            if (strcmp(pol->valuestring, r->kv.policy)) { /* another policy: the server's split does not apply */
                r->kv.budget.set = r->kv.heavy.set = r->kv.recent.set = r->kv.sink.set = 0;
            }
            snprintf(r->kv.policy, sizeof r->kv.policy, "%s", pol->valuestring);
        }
        int st;
        hkv_amount before = r->kv.budget;
        if ((st = get_amount(k, "budget", &r->kv.budget, msg, ml))) return st;
        if (memcmp(&before, &r->kv.budget, sizeof before)) r->kv.heavy.set = r->kv.recent.set = r->kv.sink.set = 0;
        if ((st = get_amount(k, "heavy", &r->kv.heavy, msg, ml)) || (st = get_amount(k, "recent", &r->kv.recent, msg, ml)) ||
            (st = get_amount(k, "sink", &r->kv.sink, msg, ml)))
            return st;
        if (!hkv_policy_find(r->kv.policy)->never_evicts && !r->kv.budget.set) {
            snprintf(msg, ml, "'kv.budget' is required for policy '%s'", r->kv.policy);
            return 400;
        }
    }
    r->kv.prefill_chunk = s->p.prefill_chunk;
    int st = resolve_kv(s, &r->kv, &r->budget, &r->kv_bytes, msg, ml);
    if (st) return st;
    if (s->p.kv_memory && r->kv_bytes > s->p.kv_memory) {
        snprintf(msg, ml, "this KV config needs %llu bytes per sequence, more than the server's --kv-memory %llu",
                 (unsigned long long)r->kv_bytes, (unsigned long long)s->p.kv_memory);
        return 400;
    }
    return 0;
}

/* ---------------------------------------------------------------- prompts */

static int tokenize_prompt(hkv_server *s, const char *text, int parse_special, request *r, char *msg, size_t ml) {
    size_t cap = strlen(text) + 16;
    if (cap > (size_t)s->n_ctx * 64 + 64) cap = (size_t)s->n_ctx * 64 + 64; /* longer can only be refused */
    if (!(r->prompt = srv_malloc(sizeof(int32_t) * cap))) { snprintf(msg, ml, "out of memory"); return 500; }
    r->n_prompt = hkv_tokenize(s->m, text, s->mi.add_bos, parse_special, r->prompt, (int)cap);
    /* hkv_tokenize returns 0 when the library runs out of memory; a non-empty text always has a token */
    if (r->n_prompt == 0 && *text) { snprintf(msg, ml, "out of memory tokenizing the prompt"); return 500; }
    if (r->n_prompt < 0 || r->n_prompt >= s->n_ctx) {
        snprintf(msg, ml, "the prompt has %s%d tokens; it must be shorter than the context length %d",
                 r->n_prompt < 0 ? "more than " : "", r->n_prompt < 0 ? (int)cap : r->n_prompt, s->n_ctx);
        return 400;
    }
    if (r->n_prompt == 0) {
        snprintf(msg, ml, "the prompt is empty after tokenization and the model has no BOS token");
        return 400;
    }
    return 0;
}

static int get_prompt(hkv_server *s, const cJSON *o, request *r, int parse_special, char *msg, size_t ml) {
    const cJSON *p = field(o, "prompt");
    if (!p) { snprintf(msg, ml, "'prompt' is required"); return 400; }
    if (!cJSON_IsString(p)) { snprintf(msg, ml, "'prompt' must be a string"); return 400; }
    r->prompt_empty = !*p->valuestring;
    return tokenize_prompt(s, p->valuestring, parse_special, r, msg, ml);
}

/* "messages": [{"role", "content"}] rendered with the chat template; content may be a string or an array of
 * {"type": "text", "text"} parts (OpenAI's multi-part form; other part types are refused). Message text is
 * always tokenized with special-token parsing, as llama.cpp does: the template's own markers must become
 * control tokens (parse_special:false is refused for chat, since it would break them). */
static int get_messages(hkv_server *s, const cJSON *o, request *r, char *msg, size_t ml) {
#ifdef HKV_CHAT_ERROR
    const cJSON *ms = field(o, "messages");
    if (!ms || !cJSON_IsArray(ms) || cJSON_GetArraySize(ms) < 1) {
        snprintf(msg, ml, "'messages' must be a non-empty array of {\"role\", \"content\"} objects");
        return 400;
    }
    if (!s->chat_family[0]) { snprintf(msg, ml, "chat is not available: %s", s->chat_err); return 400; }
    int n = cJSON_GetArraySize(ms), st = 0;
    if (n > 4096) { snprintf(msg, ml, "at most 4096 messages are accepted"); return 400; }
    hkv_chat_message *cm = srv_calloc((size_t)n, sizeof *cm);
    char **owned = srv_calloc((size_t)n, sizeof *owned);
    char *text = NULL;
    if (!cm || !owned) { st = 500; snprintf(msg, ml, "out of memory"); goto done; }
    for (int i = 0; i < n && !st; i++) {
        const cJSON *e = cJSON_GetArrayItem(ms, i), *role = field(e, "role"), *content = field(e, "content");
        if (!cJSON_IsObject(e) || !cJSON_IsString(role)) {
            snprintf(msg, ml, "messages[%d] must be an object with a string 'role'", i);
            st = 400;
            break;
        }
        const char *rl = role->valuestring;
        if (strcmp(rl, "system") && strcmp(rl, "user") && strcmp(rl, "assistant") && strcmp(rl, "developer")) {
            snprintf(msg, ml, "messages[%d].role must be system, developer, user or assistant", i);
            st = 400;
            break;
        }
        cm[i].role = strcmp(rl, "developer") ? rl : "system";
        if (cJSON_IsString(content)) cm[i].content = content->valuestring;
        else if (cJSON_IsArray(content)) {
            buf b = {0};
            const cJSON *part;
            cJSON_ArrayForEach(part, content) {
                const cJSON *ty = field(part, "type"), *tx = field(part, "text");
                if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
                    snprintf(msg, ml, "messages[%d].content parts must be {\"type\": \"text\", \"text\": ...}", i);
                    st = 400;
                    break;
                }
                if (!buf_add(&b, tx->valuestring, strlen(tx->valuestring))) { st = 500; snprintf(msg, ml, "out of memory"); break; }
            }
            if (!st && !buf_add(&b, "", 0)) { st = 500; snprintf(msg, ml, "out of memory"); }
            owned[i] = b.p;
            cm[i].content = b.p ? b.p : "";
        } else if (!content && !strcmp(rl, "assistant")) cm[i].content = "";
        else {
            snprintf(msg, ml, "messages[%d].content must be a string or an array of text parts", i);
            st = 400;
        }
    }
    if (st) goto done;
    char err[256];
    const char *fam = NULL;
    if (hkv_chat_template_check(s->m, s->chat_family, cm, n, &fam, err, sizeof err)) {
        snprintf(msg, ml, "%s", err);
        st = 400;
        goto done;
    }
    /* the messages passed the check, so a render that still fails ran out of memory (the llama2 renderer
     * allocates) or is past 2 GiB: the server's problem, not the client's */
    int need = hkv_chat_apply_template(s->m, s->chat_family, cm, n, 1, NULL, 0);
    if (need == HKV_CHAT_ERROR) { snprintf(msg, ml, "out of memory rendering the chat template"); st = 500; goto done; }
    if (need < 0) need = -need;
    if (!(text = srv_malloc((size_t)need + 1))) { st = 500; snprintf(msg, ml, "out of memory"); goto done; }
    if (hkv_chat_apply_template(s->m, s->chat_family, cm, n, 1, text, need + 1) < 0) {
        snprintf(msg, ml, "out of memory rendering the chat template");
        st = 500;
        goto done;
    }
    st = tokenize_prompt(s, text, 1, r, msg, ml);
done:
    for (int i = 0; owned && i < n; i++) srv_free(owned[i]);
    srv_free(owned);
    srv_free(cm);
    srv_free(text);
    return st;
#else
    (void)s; (void)r;
    const cJSON *ms = field(o, "messages");
    if (!ms || !cJSON_IsArray(ms) || cJSON_GetArraySize(ms) < 1) {
        snprintf(msg, ml, "'messages' must be a non-empty array of {\"role\", \"content\"} objects");
        return 400;
    }
    snprintf(msg, ml, "chat templates are not available in this build");
    return 501;
#endif
}

/* ---------------------------------------------------------------- the whole body */

int parse_request(hkv_server *s, api_kind api, const char *body, size_t n, request *r, char *msg, size_t ml) {
    double n_max = api == API_OAI ? 16 : -1, n_choices = 1, max_completion = -2;
    const char *end = NULL;
    memset(r, 0, sizeof *r);
    r->api = api;
    r->id = atomic_fetch_add(&s->n_requests, 1) + 1;
    r->created = (long long)time(NULL);
    long f0 = srv_alloc_failures();
    cJSON *o = cJSON_ParseWithLengthOpts(body, n, &end, 0);
    int st = 0, parse_special = 1;
    /* cJSON says only "failed": whether an allocation of its failed tells out of memory from bad JSON */
    if (!o && srv_alloc_failures() != f0) { snprintf(msg, ml, "out of memory parsing the request"); return 500; }
    if (o && end) /* only whitespace may follow the JSON value */
        for (const char *e = end; e < body + n; e++)
            if (!*e || !strchr(" \t\r\n", *e)) { cJSON_Delete(o); o = NULL; break; }
    if (!o) { snprintf(msg, ml, "the request body is not valid JSON"); return 400; }
    if (!cJSON_IsObject(o)) { snprintf(msg, ml, "the request body must be a JSON object"); st = 400; goto done; }
    const cJSON *so = field(o, "stream_options");
    if (so && !cJSON_IsObject(so)) { snprintf(msg, ml, "'stream_options' must be an object"); st = 400; goto done; }
    if ((st = get_int(o, api == API_OAI || api == API_CHAT ? "max_tokens" : "n_predict", api == API_LLAMA ? -1 : 0,
                      1 << 30, &n_max, msg, ml)) ||
        (api == API_CHAT && (st = get_int(o, "max_completion_tokens", 0, 1 << 30, &max_completion, msg, ml))) ||
        (st = get_int(o, "n", 1, 1, &n_choices, msg, ml)) ||
        (st = get_bool(o, "stream", &r->stream, msg, ml)) ||
        (so && (st = get_bool(so, "include_usage", &r->include_usage, msg, ml))) ||
        (st = get_bool(o, "cache_prompt", &r->cache_prompt, msg, ml)) ||
        (st = get_bool(o, "parse_special", &parse_special, msg, ml)) ||
        (st = get_stop(o, r, msg, ml)) ||
        (st = get_sampling(o, r, msg, ml)) ||
        (st = get_kv(s, o, r, msg, ml)))
        goto done;
    if (max_completion >= 0) n_max = max_completion;
    if (api == API_CHAT && n_max == 16 && !field(o, "max_tokens")) n_max = -1; /* chat: until EOS or context */
    const cJSON *conv = field(o, "conversation_id");
    if (conv) {
        if (!cJSON_IsString(conv) || strlen(conv->valuestring) >= sizeof r->conv || !*conv->valuestring) {
            snprintf(msg, ml, "'conversation_id' must be a non-empty string of at most %zu bytes", sizeof r->conv - 1);
            st = 400;
            goto done;
        }
        snprintf(r->conv, sizeof r->conv, "%s", conv->valuestring);
        r->cache_prompt = 1;
    }
    if (api == API_CHAT) {
        if (!parse_special) { snprintf(msg, ml, "'parse_special': false is not supported for chat (the template's markers are special tokens)"); st = 400; goto done; }
        st = get_messages(s, o, r, msg, ml);
    } else st = get_prompt(s, o, r, parse_special, msg, ml);
    if (st) goto done;
    r->n_max = (int)n_max;
    /* the sampler is made by the engine; check its parameters now so that a bad one is a 400 here */
    char err[256];
    hkv_sampler *smp;
    hkv_status ss = hkv_sampler_new(&r->sp, s->mi.n_vocab, &smp, err, sizeof err);
    if (ss) { snprintf(msg, ml, "%s", err); st = ss == HKV_ERR_NOMEM ? 500 : 400; }
    else hkv_sampler_free(smp);
done:
    cJSON_Delete(o);
    if (st) request_free(r);
    return st;
}

/* ---------------------------------------------------------------- results */

static const char *fin_name(int fin) {
    return fin == FIN_LENGTH ? "length" : fin == FIN_ABORT ? "abort" : "stop";
}

static void add_usage(cJSON *j, const job *jb, const slot *sl) {
    cJSON *u = cJSON_AddObjectToObject(j, "usage");
    int g = sl ? sl->n_gen : 0;
    cJSON_AddNumberToObject(u, "prompt_tokens", jb->req.n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", g);
    cJSON_AddNumberToObject(u, "total_tokens", jb->req.n_prompt + g);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", jb->n_prompt_reused);
}

static void add_kv(cJSON *j, const job *jb, const slot *sl) {
    cJSON *k = cJSON_AddObjectToObject(j, "kv");
    cJSON_AddStringToObject(k, "policy", jb->req.kv.policy);
    cJSON_AddNumberToObject(k, "budget", jb->req.budget.total);
    cJSON_AddNumberToObject(k, "heavy", jb->req.budget.heavy);
    cJSON_AddNumberToObject(k, "recent", jb->req.budget.recent);
    cJSON_AddNumberToObject(k, "sink", jb->req.budget.sink);
    cJSON_AddNumberToObject(k, "reserved_bytes", (double)jb->req.kv_bytes);
    cJSON_AddNumberToObject(k, "prompt_reused", jb->n_prompt_reused);
    if (sl) cJSON_AddNumberToObject(k, "slot", jb->slot);
}

/* fin < 0: a delta chunk without finish reason. is_chunk: streamed object. */
static cJSON *result_json_build(hkv_server *s, const job *jb, const slot *sl, const char *text, int fin, const char *word,
                                int is_chunk, int first_chunk) {
    const request *r = &jb->req;
    cJSON *j = cJSON_CreateObject();
    if (r->api == API_LLAMA) {
        cJSON_AddStringToObject(j, "content", text);
        cJSON_AddBoolToObject(j, "stop", fin >= 0);
        if (fin < 0) return j;
        cJSON_AddStringToObject(j, "model", s->model_name);
        cJSON_AddNumberToObject(j, "id_slot", jb->slot);
        cJSON_AddNumberToObject(j, "tokens_predicted", sl ? sl->n_gen : 0);
        cJSON_AddNumberToObject(j, "tokens_evaluated", r->n_prompt);
        cJSON_AddNumberToObject(j, "tokens_cached", jb->n_prompt_reused);
        cJSON_AddStringToObject(j, "stop_type", fin == FIN_EOS ? "eos" : fin == FIN_LENGTH ? "limit" : fin == FIN_ABORT ? "abort" : "word");
        cJSON_AddBoolToObject(j, "stopped_eos", fin == FIN_EOS);
        cJSON_AddBoolToObject(j, "stopped_limit", fin == FIN_LENGTH);
        cJSON_AddBoolToObject(j, "stopped_word", fin == FIN_WORD);
        cJSON_AddStringToObject(j, "stopping_word", word ? word : "");
        add_kv(j, jb, sl);
        double tp = sl ? sl->t1 - sl->t0 : 0, tg = sl && jb->t_last > sl->t1 ? jb->t_last - sl->t1 : 0;
        int n_eval = r->n_prompt - jb->n_prompt_reused;
        cJSON *t = cJSON_AddObjectToObject(j, "timings");
        cJSON_AddNumberToObject(t, "prompt_n", n_eval);
        cJSON_AddNumberToObject(t, "prompt_ms", tp * 1e3);
        cJSON_AddNumberToObject(t, "prompt_per_second", tp > 0 ? n_eval / tp : 0);
        cJSON_AddNumberToObject(t, "predicted_n", sl ? sl->n_gen : 0);
        cJSON_AddNumberToObject(t, "predicted_ms", tg * 1e3);
        cJSON_AddNumberToObject(t, "predicted_per_second", tg > 0 && sl ? (sl->n_gen > 1 ? sl->n_gen - 1 : 1) / tg : 0);
        return j;
    }
    char id[40];
    snprintf(id, sizeof id, "%s-%llu", r->api == API_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)r->id);
    cJSON_AddStringToObject(j, "id", id);
    cJSON_AddStringToObject(j, "object", r->api == API_CHAT ? (is_chunk ? "chat.completion.chunk" : "chat.completion")
                                                            : "text_completion");
    cJSON_AddNumberToObject(j, "created", (double)r->created);
    cJSON_AddStringToObject(j, "model", s->model_name);
    cJSON_AddStringToObject(j, "system_fingerprint", "heavykv-" HKV_VERSION_STRING);
    cJSON *ch = cJSON_AddArrayToObject(j, "choices"), *c0 = cJSON_CreateObject();
    if (!cJSON_AddItemToArray(ch, c0)) { cJSON_Delete(c0); c0 = NULL; } /* the rest then adds nothing */
    cJSON_AddNumberToObject(c0, "index", 0);
    if (r->api == API_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(c0, is_chunk ? "delta" : "message");
        if (!is_chunk || first_chunk) cJSON_AddStringToObject(m, "role", "assistant");
        if (!is_chunk || fin < 0 || *text) cJSON_AddStringToObject(m, "content", text);
        if (!is_chunk) cJSON_AddNullToObject(m, "refusal");
    } else cJSON_AddStringToObject(c0, "text", text);
    cJSON_AddNullToObject(c0, "logprobs");
    if (fin < 0) cJSON_AddNullToObject(c0, "finish_reason");
    else cJSON_AddStringToObject(c0, "finish_reason", fin_name(fin));
    if (!is_chunk || (fin >= 0 && (r->api != API_CHAT || r->include_usage))) add_usage(j, jb, sl);
    if (fin >= 0) add_kv(j, jb, sl);
    return j;
}

cJSON *result_json(hkv_server *s, const job *jb, const slot *sl, const char *text, int fin, const char *word,
                   int is_chunk, int first_chunk) {
    long f0 = srv_alloc_failures();
    return whole_or_null(result_json_build(s, jb, sl, text, fin, word, is_chunk, first_chunk), f0);
}

/* A job for a completion / chat body (the HTTP request context holds the first reference once the caller
 * links it). NULL with *status (400, 500, ...) and msg when the body is refused or memory ran out. */
job *job_create(hkv_server *s, api_kind api, const char *body, size_t n, int *status, char *msg, size_t ml) {
    job *j = srv_calloc(1, sizeof *j);
    if (!j) { *status = 500; snprintf(msg, ml, "out of memory"); return NULL; }
    if ((*status = parse_request(s, api, body, n, &j->req, msg, ml))) { srv_free(j); return NULL; }
    j->refs = 1;
    j->slot = -1;
    return j;
}
