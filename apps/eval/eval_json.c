/* A small recursive-descent JSON reader for the JSONL inputs of `heavykv eval` (prompts, multiple-choice
 * tasks). One value per call; strings are decoded to UTF-8 (surrogate pairs joined). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "eval.h"

#define MAX_DEPTH 64

typedef struct jparser {
    const char *s;    /* whole input */
    size_t i;         /* read position */
    char *err;
    size_t errlen;
} jparser;

static hkv_status jfail(jparser *p, const char *what) {
    snprintf(p->err, p->errlen, "invalid JSON at column %zu: %s", p->i + 1, what);
    return HKV_ERR_FORMAT;
}

static void skip_ws(jparser *p) {
    while (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r') p->i++;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* At the opening quote. The decoded string is never longer than the escaped one. */
static hkv_status parse_string(jparser *p, char **out) {
    size_t start = ++p->i, end = start;
    while (p->s[end] && p->s[end] != '"') end += p->s[end] == '\\' && p->s[end + 1] ? 2 : 1;
    if (!p->s[end]) return jfail(p, "unterminated string");
    char *o = malloc(end - start + 1);
    if (!o) return jfail(p, "out of memory");
    size_t k = 0;
    while (p->i < end) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20) { free(o); return jfail(p, "control character in string"); }
        if (c != '\\') { o[k++] = (char)c; p->i++; continue; }
        char e = p->s[p->i + 1];
        p->i += 2;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) { o[k++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]; continue; }
        unsigned cp, lo;
        if (e != 'u' || p->i + 4 > end || !hex4(p->s + p->i, &cp)) { free(o); return jfail(p, "bad escape"); }
        p->i += 4;
        if (cp >= 0xD800 && cp < 0xDC00) { /* high surrogate: a low one must follow */
            if (p->i + 6 > end || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' || !hex4(p->s + p->i + 2, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF) { free(o); return jfail(p, "unpaired surrogate"); }
            p->i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) { free(o); return jfail(p, "unpaired surrogate"); }
        if (cp == 0) { free(o); return jfail(p, "\\u0000 in string"); }
        k += put_utf8(o + k, cp);
    }
    o[k] = 0;
    p->i = end + 1;
    *out = o;
    return HKV_OK;
}

static hkv_status parse_number(jparser *p, double *out) {
    size_t j = p->i;
    if (p->s[j] == '-') j++;
    if (p->s[j] == '0') j++;
    else if (p->s[j] >= '1' && p->s[j] <= '9') while (p->s[j] >= '0' && p->s[j] <= '9') j++;
    else return jfail(p, "bad number");
    if (p->s[j] == '.') {
        if (!(p->s[++j] >= '0' && p->s[j] <= '9')) return jfail(p, "bad number");
        while (p->s[j] >= '0' && p->s[j] <= '9') j++;
    }
    if (p->s[j] == 'e' || p->s[j] == 'E') {
        j++;
        if (p->s[j] == '+' || p->s[j] == '-') j++;
        if (!(p->s[j] >= '0' && p->s[j] <= '9')) return jfail(p, "bad number");
        while (p->s[j] >= '0' && p->s[j] <= '9') j++;
    }
    /* The grammar above is locale-independent; strtod only converts the validated digits. */
    char buf[64];
    size_t len = j - p->i < sizeof buf - 1 ? j - p->i : sizeof buf - 1;
    memcpy(buf, p->s + p->i, len);
    buf[len] = 0;
    *out = strtod(buf, NULL);
    p->i = j;
    return HKV_OK;
}

static hkv_status parse_value(jparser *p, eval_json *v, int depth);

static hkv_status push_child(jparser *p, eval_json *v, int cap_needed) {
    eval_json *it = realloc(v->items, sizeof *it * (size_t)cap_needed);
    if (!it) return jfail(p, "out of memory");
    v->items = it;
    if (v->type == EJ_OBJ) {
        char **ks = realloc(v->keys, sizeof *ks * (size_t)cap_needed);
        if (!ks) return jfail(p, "out of memory");
        v->keys = ks;
    }
    return HKV_OK;
}

/* Arrays and objects: children are appended one at a time (inputs are single JSONL lines, so small). */
static hkv_status parse_container(jparser *p, eval_json *v, int depth) {
    char close = v->type == EJ_ARR ? ']' : '}';
    p->i++;
    skip_ws(p);
    if (p->s[p->i] == close) { p->i++; return HKV_OK; }
    for (;;) {
        hkv_status st = push_child(p, v, v->n + 1);
        if (st) return st;
        char *key = NULL;
        if (v->type == EJ_OBJ) {
            skip_ws(p);
            if (p->s[p->i] != '"') return jfail(p, "expected a member name");
            if ((st = parse_string(p, &key))) return st;
            skip_ws(p);
            if (p->s[p->i] != ':') { free(key); return jfail(p, "expected ':'"); }
            p->i++;
            v->keys[v->n] = key;
        }
        memset(&v->items[v->n], 0, sizeof v->items[0]);
        v->n++; /* counted before parsing so a failure frees what was allocated */
        if ((st = parse_value(p, &v->items[v->n - 1], depth + 1))) return st;
        skip_ws(p);
        if (p->s[p->i] == ',') { p->i++; continue; }
        if (p->s[p->i] == close) { p->i++; return HKV_OK; }
        return jfail(p, v->type == EJ_ARR ? "expected ',' or ']'" : "expected ',' or '}'");
    }
}

static hkv_status parse_value(jparser *p, eval_json *v, int depth) {
    memset(v, 0, sizeof *v);
    if (depth > MAX_DEPTH) return jfail(p, "nested too deeply");
    skip_ws(p);
    const char *s = p->s + p->i;
    if (*s == '"') { v->type = EJ_STR; return parse_string(p, &v->str); }
    if (*s == '[' || *s == '{') { v->type = *s == '[' ? EJ_ARR : EJ_OBJ; return parse_container(p, v, depth); }
    if (*s == '-' || (*s >= '0' && *s <= '9')) { v->type = EJ_NUM; return parse_number(p, &v->num); }
    if (!strncmp(s, "true", 4)) { v->type = EJ_BOOL; v->num = 1; p->i += 4; return HKV_OK; }
    if (!strncmp(s, "false", 5)) { v->type = EJ_BOOL; p->i += 5; return HKV_OK; }
    if (!strncmp(s, "null", 4)) { v->type = EJ_NULL; p->i += 4; return HKV_OK; }
    return jfail(p, *s ? "unexpected character" : "unexpected end of input");
}

hkv_status eval_json_parse(const char *s, eval_json *out, char *err, size_t errlen) {
    jparser p = {s, 0, err, errlen};
    hkv_status st = parse_value(&p, out, 0);
    if (!st) {
        skip_ws(&p);
        if (p.s[p.i]) st = jfail(&p, "unexpected text after the value");
    }
    if (st) eval_json_free(out);
    return st;
}

void eval_json_free(eval_json *v) {
    if (!v) return;
    for (int k = 0; k < v->n; k++) {
        eval_json_free(&v->items[k]);
        if (v->keys) free(v->keys[k]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

const eval_json *eval_json_get(const eval_json *obj, const char *key) {
    if (!obj || obj->type != EJ_OBJ) return NULL;
    for (int k = obj->n - 1; k >= 0; k--)
        if (!strcmp(obj->keys[k], key)) return &obj->items[k];
    return NULL;
}
