/* Chat templates: turn a list of {role, content} messages into the exact prompt text a chat model was trained
 * on. No Jinja interpreter: a model's tokenizer.chat_template is recognised by the markers that are distinctive
 * of its family (the special-token strings each family uses), and each family is rendered by a few lines of C
 * that follow its published template. The leading BOS of the published templates is left to the tokenizer
 * (add_bos_token), exactly as llama.cpp does, so a model that says add_bos_token = false gets none. */
#include "alloc.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"
#include "model.h"
#include "tokenizer.h"

typedef enum chat_family { F_CHATML, F_LLAMA3, F_LLAMA2, F_MISTRAL, F_GEMMA, F_PHI3, F_ZEPHYR, F_NONE } chat_family;

static const char *const family_names[] = {"chatml", "llama3", "llama2", "mistral", "gemma", "phi3", "zephyr", NULL};

const char *const *hkv_chat_template_names(void) { return family_names; }

const char *hkv_model_chat_template(const hkv_model *m) { return m ? tok_chat_template(m->tok) : NULL; }

static int has(const char *s, const char *marker) { return strstr(s, marker) != NULL; }

/* Order matters: Phi-3 and Zephyr share <|user|>/<|assistant|> (only Phi-3 closes turns with <|end|>); Llama 2
 * and Mistral share [INST] (only Llama 2 has a <<SYS>> block). */
static chat_family detect(const char *t) {
    if (has(t, "<|im_start|>")) return F_CHATML;
    if (has(t, "<|start_header_id|>")) return F_LLAMA3;
    if (has(t, "<start_of_turn>")) return F_GEMMA;
    if (has(t, "<|assistant|>") && has(t, "<|end|>")) return F_PHI3;
    if (has(t, "<|user|>") && has(t, "<|assistant|>")) return F_ZEPHYR;
    if (has(t, "[INST]") && has(t, "<<SYS>>")) return F_LLAMA2;
    if (has(t, "[INST]")) return F_MISTRAL;
    return F_NONE;
}

const char *hkv_chat_template_detect(const char *template_text) {
    chat_family f = template_text ? detect(template_text) : F_NONE;
    return f == F_NONE ? NULL : family_names[f];
}

__attribute__((format(printf, 4, 5)))
static hkv_status fail(hkv_status st, char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

#define NAME_LIST "chatml, llama3, llama2, mistral, gemma, phi3, zephyr"

/* *src (may be NULL) gets the template text the family was recognised in; for a named family, the model's own
 * template when it is of that family (so naming the model's own family renders exactly like not naming one, as
 * the server does after resolving the name once), else NULL. */
static hkv_status resolve(const hkv_model *m, const char *tmpl, chat_family *out, const char **src, char *err,
                          size_t errlen) {
    if (src) *src = tmpl;
    if (tmpl) {
        for (int i = 0; family_names[i]; i++)
            if (strcmp(tmpl, family_names[i]) == 0) {
                *out = (chat_family)i;
                const char *own = hkv_model_chat_template(m);
                if (src) *src = own && detect(own) == *out ? own : NULL;
                return HKV_OK;
            }
        /* not a name: a template text when it looks like Jinja */
        if (!has(tmpl, "{%") && !has(tmpl, "{{"))
            return fail(HKV_ERR_ARG, err, errlen, "unknown chat template \"%.64s\" (known: " NAME_LIST ")", tmpl);
        if ((*out = detect(tmpl)) == F_NONE)
            return fail(HKV_ERR_UNSUPPORTED, err, errlen, "the given chat template is not one of the recognised "
                        "families (" NAME_LIST "); name one of them instead");
        return HKV_OK;
    }
    const char *own = hkv_model_chat_template(m);
    if (src) *src = own;
    if (!own)
        return fail(HKV_ERR_UNSUPPORTED, err, errlen, "the model has no chat template (tokenizer.chat_template); "
                    "name one of: " NAME_LIST);
    if ((*out = detect(own)) == F_NONE)
        return fail(HKV_ERR_UNSUPPORTED, err, errlen, "the model's chat template is not one of the recognised "
                    "families (" NAME_LIST "); name one of them to force it");
    return HKV_OK;
}

/* Families whose published templates take a system message only as the first one (they fold it into the first
 * turn); the others render a system turn anywhere. */
static int system_first_only(chat_family f) { return f == F_LLAMA2 || f == F_MISTRAL || f == F_GEMMA; }

static hkv_status validate(chat_family f, const hkv_chat_message *msgs, int n, char *err, size_t errlen) {
    if (n < 0 || (n > 0 && !msgs))
        return fail(HKV_ERR_ARG, err, errlen, "bad message list (n = %d%s)", n, msgs ? "" : ", no messages");
    for (int i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r || !msgs[i].content)
            return fail(HKV_ERR_ARG, err, errlen, "message %d has no %s", i, r ? "content" : "role");
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return fail(HKV_ERR_ARG, err, errlen, "message %d has role \"%.32s\" (use system, user or assistant)",
                        i, r);
        if (i > 0 && !strcmp(r, "system") && system_first_only(f))
            return fail(HKV_ERR_ARG, err, errlen, "the %s template takes a system message only as the first "
                        "message (message %d is one)", family_names[f], i);
    }
    return HKV_OK;
}

hkv_status hkv_chat_template_check(const hkv_model *m, const char *tmpl, const hkv_chat_message *msgs, int n,
                                   const char **family, char *err, size_t errlen) {
    chat_family f;
    hkv_status st = resolve(m, tmpl, &f, NULL, err, errlen);
    if (!st) st = validate(f, msgs, n, err, errlen);
    if (!st && family) *family = family_names[f];
    return st;
}

/* ---------------------------------------------------------------- rendering */

/* Output buffer that keeps counting past its end, so one pass gives the size required. */
typedef struct outbuf {
    char *buf;
    size_t cap;          /* bytes of buf (room for the NUL included) */
    size_t len;          /* bytes rendered so far (may exceed cap) */
} outbuf;

static void put_n(outbuf *o, const char *s, size_t n) {
    if (o->len < o->cap) {
        size_t room = o->cap - 1 - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}
static void put(outbuf *o, const char *s) { put_n(o, s, strlen(s)); }

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Jinja's |trim and Python's str.strip() on ASCII whitespace. */
static void put_trim(outbuf *o, const char *s) {
    size_t a = 0, b = strlen(s);
    while (a < b && is_space(s[a])) a++;
    while (b > a && is_space(s[b - 1])) b--;
    put_n(o, s + a, b - a);
}

static int is_role(const hkv_chat_message *m, const char *r) { return strcmp(m->role, r) == 0; }

/* Qwen2/2.5 templates open a conversation that has no system message with a default one, written as one Jinja
 * string literal: {{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }} (the newline is the two
 * characters backslash-n in the template source). Finds such a literal; Qwen3's and other templates, which only
 * concatenate the caller's system message there, have none. */
static int default_system(const char *src, const char **text, size_t *len) {
    static const char head[] = "<|im_start|>system\\n";
    for (const char *p = src ? strstr(src, head) : NULL; p; p = strstr(p + 1, head)) {
        const char *t = p + sizeof head - 1, *end = strstr(t, "<|im_end|>");
        if (!end || end == t) continue;
        size_t n = (size_t)(end - t);
        if (strcspn(t, "'\"{}+\\") < n) continue;   /* an expression, not literal text */
        *text = t;
        *len = n;
        return 1;
    }
    return 0;
}

/* ChatML (Qwen2/2.5/3, SmolLM, ...): every turn is <|im_start|>ROLE\nCONTENT<|im_end|>\n; src is the template
 * text (for a default system message), NULL when the family was named. */
static void render_chatml(outbuf *o, const hkv_chat_message *msgs, int n, int add_ass, const char *src) {
    const char *dsys;
    size_t dlen;
    if (n > 0 && !is_role(&msgs[0], "system") && default_system(src, &dsys, &dlen)) {
        put(o, "<|im_start|>system\n"); put_n(o, dsys, dlen); put(o, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        put(o, "<|im_start|>"); put(o, msgs[i].role); put(o, "\n"); put(o, msgs[i].content); put(o, "<|im_end|>\n");
    }
    if (add_ass) put(o, "<|im_start|>assistant\n");
}

/* Llama 3: headers around the role, trimmed content, <|eot_id|> ends a turn. */
static void render_llama3(outbuf *o, const hkv_chat_message *msgs, int n, int add_ass) {
    for (int i = 0; i < n; i++) {
        put(o, "<|start_header_id|>"); put(o, msgs[i].role); put(o, "<|end_header_id|>\n\n");
        put_trim(o, msgs[i].content); put(o, "<|eot_id|>");
    }
    if (add_ass) put(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 2 chat (Meta's template): the system text goes in a <<SYS>> block inside the first turn, each user turn
 * is <s>[INST] CONTENT [/INST] (content stripped), each reply " CONTENT </s>". No generation header. */
static hkv_status render_llama2(outbuf *o, const hkv_chat_message *msgs, int n) {
    int start = n > 0 && is_role(&msgs[0], "system");
    for (int i = start; i < n; i++) {
        const char *c = msgs[i].content;
        char *joined = NULL;
        if (i == start && start) {   /* the template strips the joined text, so join first */
            const char *sys = msgs[0].content;
            size_t len = strlen(sys) + strlen(c) + 32;
            if (!(joined = hkv_malloc(len))) return HKV_ERR_NOMEM;
            snprintf(joined, len, "<<SYS>>\n%s\n<</SYS>>\n\n%s", sys, c);
            c = joined;
        }
        if (is_role(&msgs[i], "user")) {
            put(o, i == start ? "[INST] " : "<s>[INST] ");   /* the first BOS comes from the tokenizer */
            put_trim(o, c);
            put(o, " [/INST]");
        } else if (is_role(&msgs[i], "assistant")) {
            put(o, " "); put_trim(o, c); put(o, " </s>");
        }
        hkv_free(joined);
    }
    return HKV_OK;
}

/* Mistral Instruct v0.1/v0.2: [INST] USER [/INST]REPLY</s>. Their templates reject a system role; heavykv puts
 * it before the first user message with a blank line, so the rendered history never changes as turns are added
 * (v0.3 moves it to the last user message, which would defeat reuse of the cached history). */
static void render_mistral(outbuf *o, const hkv_chat_message *msgs, int n) {
    int start = n > 0 && is_role(&msgs[0], "system"), sys_done = !start;
    for (int i = start; i < n; i++) {
        if (is_role(&msgs[i], "user")) {
            put(o, "[INST] ");
            if (!sys_done) { put(o, msgs[0].content); put(o, "\n\n"); sys_done = 1; }
            put(o, msgs[i].content);
            put(o, " [/INST]");
        } else if (is_role(&msgs[i], "assistant")) {
            put(o, msgs[i].content); put(o, "</s>");
        }
    }
}

/* Gemma (1/2/3): <start_of_turn>user|model\nCONTENT<end_of_turn>\n, content trimmed; a system message is
 * prefixed to the first turn with a blank line (Gemma 3's template; Gemma 1/2 reject a system role). */
static void render_gemma(outbuf *o, const hkv_chat_message *msgs, int n, int add_ass) {
    int start = n > 0 && is_role(&msgs[0], "system");
    for (int i = start; i < n; i++) {
        put(o, "<start_of_turn>");
        put(o, is_role(&msgs[i], "assistant") ? "model" : msgs[i].role);
        put(o, "\n");
        if (i == start && start) { put(o, msgs[0].content); put(o, "\n\n"); }
        put_trim(o, msgs[i].content);
        put(o, "<end_of_turn>\n");
    }
    if (add_ass) put(o, "<start_of_turn>model\n");
}

/* Phi-3 (mini/medium instruct): <|ROLE|>\nCONTENT<|end|>\n; without a generation prompt the published template
 * ends the text with eos_token. */
static void render_phi3(outbuf *o, const hkv_chat_message *msgs, int n, int add_ass) {
    for (int i = 0; i < n; i++) {
        put(o, "<|"); put(o, msgs[i].role); put(o, "|>\n"); put(o, msgs[i].content); put(o, "<|end|>\n");
    }
    put(o, add_ass ? "<|assistant|>\n" : "<|endoftext|>");
}

/* Zephyr (HuggingFaceH4/zephyr-7b): <|ROLE|>\nCONTENT</s>\n; the generation prompt is emitted inside the
 * message loop (after the last message), so an empty conversation renders nothing. */
static void render_zephyr(outbuf *o, const hkv_chat_message *msgs, int n, int add_ass) {
    for (int i = 0; i < n; i++) {
        put(o, "<|"); put(o, msgs[i].role); put(o, "|>\n"); put(o, msgs[i].content); put(o, "</s>\n");
    }
    if (add_ass && n > 0) put(o, "<|assistant|>\n");
}

int hkv_chat_apply_template(const hkv_model *m, const char *tmpl, const hkv_chat_message *msgs, int n,
                            int add_assistant, char *buf, int buflen) {
    chat_family f;
    const char *src;
    if (resolve(m, tmpl, &f, &src, NULL, 0) || validate(f, msgs, n, NULL, 0)) return HKV_CHAT_ERROR;
    if (buflen < 0 || (buflen > 0 && !buf)) return HKV_CHAT_ERROR;
    outbuf o = {buf, (size_t)buflen, 0};
    switch (f) {
    case F_CHATML: render_chatml(&o, msgs, n, add_assistant, src); break;
    case F_LLAMA3: render_llama3(&o, msgs, n, add_assistant); break;
    case F_LLAMA2: if (render_llama2(&o, msgs, n)) return HKV_CHAT_ERROR; break;
    case F_MISTRAL: render_mistral(&o, msgs, n); break;
    case F_GEMMA: render_gemma(&o, msgs, n, add_assistant); break;
    case F_PHI3: render_phi3(&o, msgs, n, add_assistant); break;
    case F_ZEPHYR: render_zephyr(&o, msgs, n, add_assistant); break;
    case F_NONE: return HKV_CHAT_ERROR;
    }
    if (o.len >= 0x7fffffff) return HKV_CHAT_ERROR;   /* cannot be reported in an int */
    if (o.len + 1 > o.cap) {
        if (o.cap) buf[o.cap - 1] = 0;   /* a truncated prefix, never an unterminated buffer */
        return -(int)(o.len + 1);
    }
    buf[o.len] = 0;
    return (int)o.len;
}
