/* Hugging Face tokenizer.json import (model.type BPE): byte-level BPE (ByteLevel pre-tokenizer with the Llama 3,
 * Qwen2 or GPT-2 split regex) or SentencePiece-style BPE with byte fallback (U+2581 spaces), plus the special
 * tokens and add_bos/add_eos flags of tokenizer_config.json next to it. */
#include "alloc.h"
#include "tokenizer_int.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

/* Ids not named by any entry get an empty token; a file may leave at most this many more unnamed than named
 * (real files have none or a few), so the tables stay proportional to what the file holds. */
#define MAX_UNNAMED_SLACK 1024

static const char LLAMA3_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* The whole file, NUL-terminated; NULL when it cannot be read (*nomem = 1: out of memory). */
static char *read_text(const char *path, int *nomem) {
    *nomem = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long n = -1;
    struct stat sb;
    /* a directory opens fine and reports a huge size: only regular files are read */
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && !(buf = hkv_malloc((size_t)n + 1))) *nomem = 1;
    if (buf) {
        if (fread(buf, 1, (size_t)n, f) == (size_t)n) buf[n] = 0;
        else { hkv_free(buf); buf = NULL; }
    }
    fclose(f);
    return buf;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jtype_is(const cJSON *o, const char *type) {
    const char *s = jstr(o, "type");
    return s && strcmp(s, type) == 0;
}

/* The component of `type` in o, or inside o's Sequence list (normalizers/pretokenizers/decoders). */
static const cJSON *find_component(const cJSON *o, const char *list_key, const char *type) {
    if (!cJSON_IsObject(o)) return NULL;
    if (jtype_is(o, type)) return o;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, list_key), *e;
    cJSON_ArrayForEach(e, list) if (jtype_is(e, type)) return e;
    return NULL;
}

typedef struct hf_ctx {
    hkv_tokenizer *t;
    char *err;
    size_t errlen;
} hf_ctx;

__attribute__((format(printf, 3, 4)))
static hkv_status bad(hf_ctx *c, hkv_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return st;
}

/* An integral id in [0, TOK_MAX_VOCAB) (1.5 or 1e300 would be truncated into some other id). */
static int valid_id(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < TOK_MAX_VOCAB &&
           v->valuedouble == (double)(int)v->valuedouble;
}

/* Vocabulary size: one past the largest id of model.vocab and added_tokens, bounded by what the file holds:
 * every id below it is allocated, so a few entries naming a huge id are a malformed file, not a request for
 * gigabytes of empty tokens. */
static hkv_status count_vocab(hf_ctx *c, const cJSON *vocab, const cJSON *added, int *n) {
    double mx = -1;
    long named = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!valid_id(e))
            return bad(c, HKV_ERR_FORMAT, "model.vocab entry \"%.64s\" has no valid id", e->string ? e->string : "");
        if (e->valuedouble > mx) mx = e->valuedouble;
        named++;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!valid_id(id) || !jstr(e, "content"))
            return bad(c, HKV_ERR_FORMAT, "an %s entry lacks a valid id or content", "added_tokens");
        if (id->valuedouble > mx) mx = id->valuedouble;
        named++;
    }
    if (mx < 0) return bad(c, HKV_ERR_FORMAT, "the %s is empty", "vocabulary");
    if (mx + 1 > 2.0 * (double)named + MAX_UNNAMED_SLACK)
        return bad(c, HKV_ERR_FORMAT, "the largest token id is %.0f but the file names only %ld tokens (more "
                   "unnamed ids than named ones plus %d: a malformed vocabulary)", mx, named, MAX_UNNAMED_SLACK);
    *n = (int)mx + 1;
    return HKV_OK;
}

static int is_byte_piece(const char *s) {   /* "<0xNN>" */
    return strlen(s) == 6 && strncmp(s, "<0x", 3) == 0 && s[5] == '>' &&
           strchr("0123456789ABCDEF", s[3]) && strchr("0123456789ABCDEF", s[4]);
}

static hkv_status fill_vocab(hf_ctx *c, const cJSON *model, const cJSON *added, int byte_fallback) {
    hkv_tokenizer *t = c->t;
    const cJSON *e;
    for (int i = 0; i < t->n_vocab; i++) t->type[i] = TOKT_UNUSED;   /* ids no entry names */
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(model, "vocab")) {
        int id = (int)e->valuedouble;
        if (!tok_set_text(t, id, e->string, (int)strlen(e->string)))
            return bad(c, HKV_ERR_NOMEM, "out of memory reading %s", "the vocabulary");
        t->type[id] = t->kind == TOK_SPM && byte_fallback && is_byte_piece(e->string) ? TOKT_BYTE : TOKT_NORMAL;
    }
    cJSON_ArrayForEach(e, added) {
        int id = (int)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        const char *s = jstr(e, "content");
        if (!tok_set_text(t, id, s, (int)strlen(s)))
            return bad(c, HKV_ERR_NOMEM, "out of memory reading %s", "the vocabulary");
        t->type[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? TOKT_CONTROL : TOKT_USER_DEFINED;
    }
    if (!tok_index(t)) return bad(c, HKV_ERR_NOMEM, "out of memory indexing %s", "the vocabulary");
    const char *unk = jstr(model, "unk_token");
    if (unk && (t->unk = tok_find(t, unk, (int)strlen(unk))) >= 0) t->type[t->unk] = TOKT_UNKNOWN;
    return HKV_OK;
}

/* Merges as "left right" strings or [left, right] pairs, in rank order. */
static hkv_status read_merges(hf_ctx *c, const cJSON *merges) {
    const cJSON *e;
    if (cJSON_GetArraySize(merges) > TOK_MAX_MERGES)
        return bad(c, HKV_ERR_FORMAT, "model.merges has %d entries, more than the %d supported",
                   cJSON_GetArraySize(merges), TOK_MAX_MERGES);
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        int alen, blen;
        if (cJSON_IsString(e)) {
            a = e->valuestring;
            const char *sp = a[0] ? strchr(a + 1, ' ') : NULL;
            if (!sp) return bad(c, HKV_ERR_FORMAT, "merge \"%s\" is not of the form \"left right\"", a);
            alen = (int)(sp - a); b = sp + 1; blen = (int)strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring; alen = (int)strlen(a);
            b = cJSON_GetArrayItem(e, 1)->valuestring; blen = (int)strlen(b);
        } else {
            return bad(c, HKV_ERR_FORMAT, "a %s entry is neither a string nor a pair of strings", "model.merges");
        }
        if (tok_add_merge(c->t, a, alen, b, blen) < 0)
            return bad(c, HKV_ERR_NOMEM, "out of memory reading %s", "the merges");
    }
    return HKV_OK;
}

/* SentencePiece-style encoding merges the pair whose result scores highest; scoring a token by minus the
 * rank of the first merge that creates it makes that order the merge-rank order. Tokens no merge creates
 * (single characters, byte and special pieces) keep 0: they are never a merge result. */
static void scores_from_merges(hkv_tokenizer *t) {
    for (int i = 0; i < t->n_vocab; i++) t->score[i] = 0;
    for (int r = t->n_merges - 1; r >= 0; r--) t->score[t->merge_res[r]] = -(float)(r + 1);
    hkv_free(t->merge_a); hkv_free(t->merge_b); hkv_free(t->merge_res);
    t->merge_a = t->merge_b = t->merge_res = NULL;
    t->n_merges = 0;
}

/* Byte-level: which split regex precedes the ByteLevel step. */
static hkv_status pick_pre(hf_ctx *c, const cJSON *pre) {
    const cJSON *bl = find_component(pre, "pretokenizers", "ByteLevel");
    const cJSON *split = find_component(pre, "pretokenizers", "Split");
    if (bl && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bl, "add_prefix_space")))
        return bad(c, HKV_ERR_UNSUPPORTED, "%s with add_prefix_space is not supported", "ByteLevel");
    if (split) {
        const char *rx = jstr(cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex");
        if (rx && strcmp(rx, LLAMA3_SPLIT) == 0) c->t->pre = TOK_PRE_LLAMA3;
        else if (rx && strcmp(rx, QWEN2_SPLIT) == 0) c->t->pre = TOK_PRE_QWEN2;
        else return bad(c, HKV_ERR_UNSUPPORTED, "split pattern %s is not one of the known pre-tokenizers",
                        rx ? rx : "(none)");
    } else if (bl && !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(bl, "use_regex"))) {
        c->t->pre = TOK_PRE_GPT2;
    } else {
        return bad(c, HKV_ERR_UNSUPPORTED, "byte-level tokenizer without a known %s", "split regex");
    }
    return HKV_OK;
}

/* SentencePiece-style: spaces become U+2581 through a Replace normalizer (+ Prepend for the dummy prefix) or a
 * non-splitting Metaspace pre-tokenizer. */
static hkv_status pick_spm(hf_ctx *c, const cJSON *norm, const cJSON *pre) {
    const cJSON *meta = find_component(pre, "pretokenizers", "Metaspace");
    if (meta) {
        if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(meta, "split")))
            return bad(c, HKV_ERR_UNSUPPORTED, "a splitting %s pre-tokenizer is not supported", "Metaspace");
        const char *scheme = jstr(meta, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(meta, "add_prefix_space");
        c->t->add_space_prefix = scheme ? strcmp(scheme, "never") != 0 : !cJSON_IsFalse(aps);
        return HKV_OK;
    }
    const cJSON *rep = find_component(norm, "normalizers", "Replace");
    const char *from = rep ? jstr(cJSON_GetObjectItemCaseSensitive(rep, "pattern"), "String") : NULL;
    const char *to = rep ? jstr(rep, "content") : NULL;
    if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, "\xe2\x96\x81") != 0)
        return bad(c, HKV_ERR_UNSUPPORTED, "SentencePiece-style tokenizer without the %s normalizer", "' ' -> U+2581");
    const cJSON *prep = find_component(norm, "normalizers", "Prepend");
    const char *p = prep ? jstr(prep, "prepend") : NULL;
    c->t->add_space_prefix = p && strcmp(p, "\xe2\x96\x81") == 0;
    return HKV_OK;
}

/* A token named in tokenizer_config.json: a string or {"content": ...}. */
static int32_t config_token(const hkv_tokenizer *t, const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    return s ? tok_find(t, s, (int)strlen(s)) : -1;
}

/* chat_template is a string, or a list of {"name", "template"} where "default" is the one chat uses. Stores a
 * copy in t->chat_template (NULL when absent); 0 when memory ran out (an error, not a missing template: a
 * tokenizer that silently lost its template would make chat fail later with a misleading message). */
static int config_template(hkv_tokenizer *t, const cJSON *cfg) {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), *e;
    const cJSON *list = cJSON_IsArray(ct) ? ct : NULL;
    const char *s = cJSON_IsString(ct) ? ct->valuestring : NULL;
    cJSON_ArrayForEach(e, list) {
        const char *name = jstr(e, "name");
        if (!s || (name && strcmp(name, "default") == 0)) s = jstr(e, "template");
    }
    if (!s) return 1;
    if (!(t->chat_template = hkv_malloc(strlen(s) + 1))) return 0;
    strcpy(t->chat_template, s);
    return 1;
}

/* tokenizer_config.json next to the tokenizer.json: absent or unreadable is fine (conventions apply), read but
 * unparsable is an error (cJSON cannot tell a syntax error from running out of memory, so the message names both). */
static hkv_status read_config(hf_ctx *c, const char *json_path, const cJSON *root) {
    hkv_tokenizer *t = c->t;
    char path[4096];
    const char *slash = strrchr(json_path, '/');
    int dir = slash ? (int)(slash - json_path) + 1 : 0;
    snprintf(path, sizeof path, "%.*stokenizer_config.json", dir, json_path);
    int nomem;
    char *txt = read_text(path, &nomem);
    if (nomem) return bad(c, HKV_ERR_NOMEM, "out of memory reading %s", path);
    cJSON *cfg = txt ? cJSON_Parse(txt) : NULL;
    hkv_free(txt);
    if (txt && !cfg)
        return bad(c, HKV_ERR_FORMAT, "%s is not valid JSON (or memory ran out while parsing it)", path);
    if (cfg) {
        t->bos = config_token(t, cfg, "bos_token");
        t->eos = config_token(t, cfg, "eos_token");
        t->pad = config_token(t, cfg, "pad_token");
        int32_t unk = config_token(t, cfg, "unk_token");
        if (unk >= 0) t->unk = unk;
    } else if (t->kind == TOK_SPM) {   /* SentencePiece convention */
        t->bos = tok_find(t, "<s>", 3);
        t->eos = tok_find(t, "</s>", 4);
    }
    /* without an explicit flag: a post-processor template that starts with a special token adds BOS */
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *tp = find_component(pp, "processors", "TemplateProcessing");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(tp, "single");
    int template_bos = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken") != NULL;
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    t->add_bos = cJSON_IsBool(ab) ? cJSON_IsTrue(ab)
               : t->bos >= 0 && (template_bos || t->kind == TOK_SPM || t->pre == TOK_PRE_LLAMA3);
    t->add_eos = cJSON_IsBool(ae) ? cJSON_IsTrue(ae) : 0;
    int ok = config_template(t, cfg);
    cJSON_Delete(cfg);
    return ok ? HKV_OK : bad(c, HKV_ERR_NOMEM, "out of memory copying the chat template of %s", path);
}

static hkv_status load(hf_ctx *c, const char *path, const cJSON *root) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(model) || !jtype_is(model, "BPE"))
        return bad(c, HKV_ERR_UNSUPPORTED, "only model.type %s tokenizers are supported", "BPE");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return bad(c, HKV_ERR_FORMAT, "model.vocab or model.merges is missing in %s", path);
    int byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    tok_kind kind = find_component(pre, "pretokenizers", "ByteLevel") ? TOK_BPE : TOK_SPM;
    int n = 0;
    hkv_status st = count_vocab(c, vocab, added, &n);
    if (st) return st;
    if (!(c->t = tok_alloc(n))) return bad(c, HKV_ERR_NOMEM, "out of memory allocating %s", "the vocabulary");
    hkv_tokenizer *t = c->t;
    t->kind = kind;
    if ((st = kind == TOK_BPE ? pick_pre(c, pre) : pick_spm(c, norm, pre))) return st;
    if (kind == TOK_BPE) {
        if (norm && !cJSON_IsNull(norm) && !jtype_is(norm, "NFC"))
            return bad(c, HKV_ERR_UNSUPPORTED, "normalizer %s is not supported with byte-level BPE",
                       jstr(norm, "type") ? jstr(norm, "type") : "?");
        t->nfc = norm && jtype_is(norm, "NFC");
        t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    }
    if ((st = fill_vocab(c, model, added, byte_fallback))) return st;
    if ((st = read_merges(c, merges))) return st;
    if (kind == TOK_SPM) scores_from_merges(t);
    if ((st = read_config(c, path, root))) return st;
    return tok_finish(t, c->err, c->errlen);
}

hkv_status tok_load_hf(const char *tokenizer_json_path, hkv_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    int nomem;
    char *txt = read_text(tokenizer_json_path, &nomem);
    if (nomem) {
        snprintf(err, errlen, "out of memory reading %s", tokenizer_json_path);
        return HKV_ERR_NOMEM;
    }
    if (!txt) {
        snprintf(err, errlen, "cannot read %s (not a readable regular file)", tokenizer_json_path);
        return HKV_ERR_IO;
    }
    cJSON *root = cJSON_Parse(txt);
    hkv_free(txt);
    if (!root) {
        snprintf(err, errlen, "%s is not valid JSON (or memory ran out while parsing it)", tokenizer_json_path);
        return HKV_ERR_FORMAT;
    }
    hf_ctx c = { NULL, err, errlen };
    hkv_status st = load(&c, tokenizer_json_path, root);
    cJSON_Delete(root);
    if (st) { tok_free(c.t); return st; }
    *out = c.t;
    return HKV_OK;
}
