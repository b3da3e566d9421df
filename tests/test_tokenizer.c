/* Tokenizer tests: exact parity with reference encodings of three real tokenizer.json files (SentencePiece-style
 * BPE, Llama 3 and Qwen2 byte-level BPE), tokenizer.json -> GGUF -> tokenizer round trips, and the real
 * stories260K vocabulary: hand-checked encodings, byte fallback, special tokens, UTF-8 streaming. */
#include "testutil.h"
#include "tokenizer.h"
#include "tokenizer_int.h"
#include "gguf.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define MAXTOK 4096

/* One line of reference.jsonl: text and the reference ids (no BOS, special tokens parsed). */
typedef struct ref_case { char *text; int32_t ids[MAXTOK]; int n; } ref_case;

static int load_refs(const char *path, ref_case **out) {
    char *all = tu_read_file(path, NULL);
    if (!all) return 0;
    int cap = 64, n = 0;
    ref_case *r = malloc(sizeof(ref_case) * (size_t)cap);
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *txt = cJSON_GetObjectItem(j, "text"), *ids = cJSON_GetObjectItem(j, "ids"), *e;
        if (cJSON_IsString(txt) && cJSON_IsArray(ids) && cJSON_GetArraySize(ids) <= MAXTOK) {
            if (n == cap) r = realloc(r, sizeof(ref_case) * (size_t)(cap *= 2));
            r[n].text = strdup(txt->valuestring);
            r[n].n = 0;
            cJSON_ArrayForEach(e, ids) r[n].ids[r[n].n++] = (int32_t)e->valuedouble;
            n++;
        }
        cJSON_Delete(j);
    }
    free(all);
    *out = r;
    return n;
}

static void free_refs(ref_case *r, int n) {
    for (int i = 0; i < n; i++) free(r[i].text);
    free(r);
}

/* Decoding drops control tokens, so only texts without them can round-trip. */
static int has_special(const hkv_tokenizer *t, const int32_t *ids, int n) {
    char buf[64];
    for (int i = 0; i < n; i++)
        if (tok_piece(t, ids[i], buf, sizeof buf) == 0 || ids[i] == tok_bos(t) || ids[i] == tok_eos(t)) return 1;
    return 0;
}

/* Encodes every reference text; returns the number that matched exactly. */
static int check_refs(const char *label, const hkv_tokenizer *t, const ref_case *r, int n) {
    static int32_t ids[MAXTOK];
    static char dec[65536];
    int ok = 0, rt = 0, rt_n = 0;
    for (int i = 0; i < n; i++) {
        int m = tok_encode(t, r[i].text, 0, 1, ids, MAXTOK);
        int same = m == r[i].n && memcmp(ids, r[i].ids, sizeof(int32_t) * (size_t)m) == 0;
        CHECKF(same, "%s: text %d (%.40s...) encodes to %d tokens, reference %d", label, i, r[i].text, m, r[i].n);
        if (same) ok++;
        if (has_special(t, r[i].ids, r[i].n)) continue;
        rt_n++;
        int l = tok_decode(t, ids, m > 0 ? m : 0, dec, sizeof dec);
        CHECKF(l >= 0 && strcmp(dec, r[i].text) == 0, "%s: text %d does not decode back: [%s]", label, i, dec);
        if (l >= 0 && strcmp(dec, r[i].text) == 0) rt++;
    }
    printf("%s: %d/%d reference encodings match, %d/%d decode back\n", label, ok, n, rt, rt_n);
    return ok;
}

/* tokenizer -> tok_write_gguf -> file -> gguf_open -> tok_load_gguf. */
static hkv_tokenizer *gguf_round_trip(const hkv_tokenizer *t, const char *name) {
    char err[256];
    gguf_writer *w = gguf_writer_new();
    tok_write_gguf(t, w);
    gguf_w_str(w, "general.architecture", "llama");
    const char *path = tu_tmp(name);
    hkv_status st = gguf_writer_write(w, path, err, sizeof err);
    gguf_writer_free(w);
    CHECKF(st == HKV_OK, "write %s: %s", path, err);
    gguf_file *g = NULL;
    hkv_tokenizer *t2 = NULL;
    if (!st) st = gguf_open(path, &g, err, sizeof err);
    CHECKF(st == HKV_OK, "open %s: %s", path, err);
    if (!st) st = tok_load_gguf(g, &t2, err, sizeof err);
    CHECKF(st == HKV_OK, "load tokenizer from %s: %s", path, err);
    gguf_close(g);   /* the tokenizer copies everything it needs */
    remove(path);
    return st ? NULL : t2;
}

static void test_hf(const char *family, tok_kind expect_kind, int expect_vocab) {
    char rel[128], label[64], err[256];
    snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", family);
    hkv_tokenizer *t = NULL;
    hkv_status st = tok_load_hf(tu_shared(rel), &t, err, sizeof err);
    CHECKF(st == HKV_OK, "%s: %s", family, err);
    if (st) return;
    CHECK(tok_get_kind(t) == expect_kind);
    CHECKF(tok_n_vocab(t) == expect_vocab, "%s: %d tokens", family, tok_n_vocab(t));
    ref_case *r = NULL;
    snprintf(rel, sizeof rel, "tokenizers/%s/reference.jsonl", family);
    int n = load_refs(tu_shared(rel), &r);
    CHECKF(n >= 40, "%s: only %d reference lines", family, n);
    snprintf(label, sizeof label, "%s (tokenizer.json)", family);
    CHECK(check_refs(label, t, r, n) == n);
    hkv_tokenizer *t2 = gguf_round_trip(t, "tok.gguf");
    if (t2) {
        snprintf(label, sizeof label, "%s (via GGUF)", family);
        CHECK(check_refs(label, t2, r, n) == n);
        CHECK(tok_n_vocab(t2) == tok_n_vocab(t) && tok_bos(t2) == tok_bos(t) && tok_eos(t2) == tok_eos(t));
        CHECK(tok_add_bos(t2) == tok_add_bos(t));
        tok_free(t2);
    }
    free_refs(r, n);
    tok_free(t);
}

/* Family-specific facts from the tokenizer_config.json files. */
static void test_hf_specials(void) {
    char err[256];
    hkv_tokenizer *t = NULL;
    if (tok_load_hf(tu_shared("tokenizers/qwen3/tokenizer.json"), &t, err, sizeof err) == HKV_OK) {
        CHECK(tok_bos(t) == -1 && tok_eos(t) == 151645 && !tok_add_bos(t));
        CHECK(tok_is_eog(t, 151645) && tok_is_eog(t, 151643) && !tok_is_eog(t, 151644));
        int32_t ids[8];
        CHECK(tok_encode(t, "<|im_start|>", 0, 1, ids, 8) == 1 && ids[0] == 151644);
        CHECK(tok_encode(t, "<|im_start|>", 0, 0, ids, 8) > 1);   /* parse_special off: spelled out */
        tok_free(t);
    }
    if (tok_load_hf(tu_shared("tokenizers/llama3/tokenizer.json"), &t, err, sizeof err) == HKV_OK) {
        CHECK(tok_bos(t) == 128000 && tok_eos(t) == 128001 && tok_add_bos(t));
        int32_t ids[8];
        CHECK(tok_encode(t, "Hi", 1, 1, ids, 8) == 2 && ids[0] == 128000);
        int32_t eot = -1;
        for (int i = 0; i < tok_n_vocab(t); i++) if (strcmp(tok_text(t, i), "<|eot_id|>") == 0) eot = i;
        CHECK(eot >= 0 && tok_is_eog(t, eot));
        /* (?i) contractions: "'S" splits off like "'s"; a number splits into groups of three digits */
        char buf[64];
        int n = tok_encode(t, "HE'S", 0, 0, ids, 8);
        CHECK(n >= 2 && tok_piece(t, ids[n - 1], buf, sizeof buf) == 2 && memcmp(buf, "'S", 2) == 0);
        /* invalid UTF-8 goes through byte by byte and decodes back unchanged */
        const char *junk = "\xff\xfe ok \xe6\x97 \xc0\xaf end";
        int32_t jids[64];
        n = tok_encode(t, junk, 0, 0, jids, 64);
        CHECK(n > 0 && tok_decode(t, jids, n, buf, sizeof buf) == (int)strlen(junk) && strcmp(buf, junk) == 0);
        tok_free(t);
    }
    CHECK(tok_load_hf(tu_shared("tokenizers/nonexistent/tokenizer.json"), &t, err, sizeof err) == HKV_ERR_IO);
    CHECK(t == NULL && strlen(err) > 0);
}

static int piece_is(const hkv_tokenizer *t, int32_t id, const char *s) {
    char buf[64];
    int n = tok_piece(t, id, buf, sizeof buf);
    return n == (int)strlen(s) && memcmp(buf, s, (size_t)n) == 0;
}

static void test_stories(void) {
    char err[256];
    gguf_file *g = NULL;
    hkv_tokenizer *t = NULL;
    hkv_status st = gguf_open(tu_model(), &g, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return;
    st = tok_load_gguf(g, &t, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    gguf_close(g);
    if (st) return;
    CHECK(tok_get_kind(t) == TOK_SPM && tok_n_vocab(t) == 512);
    CHECK(tok_bos(t) == 1 && tok_eos(t) == 2 && tok_add_bos(t) == 1);
    CHECK(tok_is_eog(t, 2) && !tok_is_eog(t, 1) && !tok_is_eog(t, 403));

    /* hand-checked against the vocabulary: ▁Once=403 ▁upon=407 ▁a=261 ▁time=378 */
    int32_t ids[256];
    char buf[4096];
    int n = tok_encode(t, "Once upon a time", 1, 1, ids, 256);
    CHECK(n == 5 && ids[0] == 1 && ids[1] == 403 && ids[2] == 407 && ids[3] == 261 && ids[4] == 378);
    CHECK(strcmp(tok_text(t, 403), "\xe2\x96\x81Once") == 0 && piece_is(t, 403, " Once"));
    CHECK(tok_decode(t, ids, n, buf, sizeof buf) == 16 && strcmp(buf, "Once upon a time") == 0);
    CHECK(tok_decode(t, ids + 1, n - 1, buf, sizeof buf) == 16);   /* no BOS: the first token's space goes too */
    CHECK(tok_decode(t, ids, n, buf, 5) == -17);                    /* too small: minus the size needed */
    CHECK(tok_encode(t, "Once upon a time", 1, 1, ids, 3) == -5);
    CHECK(tok_encode(t, "Once upon a time", 0, 1, ids, 256) == 4 && ids[0] == 403);
    CHECK(tok_encode(t, "", 1, 1, ids, 256) == 1 && tok_encode(t, "", 0, 1, ids, 256) == 0);
    /* "Hello  world": ▁He ll o ▁ ▁w or ld — the second space stands alone */
    n = tok_encode(t, "Hello  world", 0, 1, ids, 256);
    CHECK(n == 7 && ids[0] == 346 && ids[1] == 306 && ids[2] == 414 && ids[3] == 410 && ids[4] == 263);

    /* byte fallback: 日 (E6 97 A5) is not in the 512-token vocab, é is */
    n = tok_encode(t, "café 日本", 0, 1, ids, 256);
    CHECK(n == 11 && ids[3] == 485 && ids[5] == 233 && ids[6] == 154 && ids[7] == 168);
    CHECK(strcmp(tok_text(t, 233), "<0xE6>") == 0 && tok_piece(t, 233, buf, 8) == 1 && (uint8_t)buf[0] == 0xE6);
    CHECK(tok_decode(t, ids, n, buf, sizeof buf) > 0 && strcmp(buf, "café 日本") == 0);
    const char *mixed = "Zürich — naïve 🙂 Ωμέγα\ttab\nnewline  end ";
    n = tok_encode(t, mixed, 1, 0, ids, 256);
    CHECK(n > 0 && tok_decode(t, ids, n, buf, sizeof buf) > 0 && strcmp(buf, mixed) == 0);

    /* special tokens: matched only with parse_special; each fragment gets the dummy-prefix space */
    n = tok_encode(t, "<s>hi</s> there", 0, 1, ids, 256);
    CHECK(n == 6 && ids[0] == 1 && ids[1] == 270 && ids[2] == 417 && ids[3] == 2 && ids[4] == 410 && ids[5] == 383);
    n = tok_encode(t, "<s>hi</s> there", 0, 0, ids, 256);
    int found = 0;
    for (int i = 0; i < n; i++) found |= ids[i] == 1 || ids[i] == 2;
    CHECK(n > 6 && !found);
    CHECK(tok_decode(t, ids, n, buf, sizeof buf) > 0 && strcmp(buf, "<s>hi</s> there") == 0);
    CHECK(tok_piece(t, 1, buf, sizeof buf) == 0 && tok_piece(t, 9999, buf, sizeof buf) == 0);

    /* UTF-8 streaming: 日 arrives as three byte tokens; only the third releases it */
    hkv_utf8_stream s = { {0}, 0, 1 };   /* strip_space: the first word's dummy-prefix space is dropped */
    CHECK(tok_utf8_stream_push(&s, t, 1, buf, sizeof buf) == 0 && s.strip_space == 1);   /* BOS: nothing */
    CHECK(tok_utf8_stream_push(&s, t, 403, buf, sizeof buf) == 4 && strcmp(buf, "Once") == 0);
    CHECK(tok_utf8_stream_push(&s, t, 403, buf, sizeof buf) == 5 && strcmp(buf, " Once") == 0);
    CHECK(tok_utf8_stream_push(&s, t, 233, buf, sizeof buf) == 0 && buf[0] == 0 && s.n == 1);
    CHECK(tok_utf8_stream_push(&s, t, 154, buf, sizeof buf) == 0 && s.n == 2);
    CHECK(tok_utf8_stream_push(&s, t, 168, buf, 2) == -4 && s.n == 2);   /* too small: nothing consumed */
    CHECK(tok_utf8_stream_push(&s, t, 168, buf, sizeof buf) == 3 && strcmp(buf, "日") == 0 && s.n == 0);
    /* a lead byte followed by a non-continuation: U+FFFD, then the text; a lone 0xFF is never held */
    CHECK(tok_utf8_stream_push(&s, t, 233, buf, sizeof buf) == 0);
    CHECK(tok_utf8_stream_push(&s, t, 378, buf, sizeof buf) == 8 && strcmp(buf, "\xef\xbf\xbd time") == 0);
    int32_t ff = tok_encode(t, "x", 0, 0, ids, 4) > 0 ? 3 + 0xFF : -1;   /* <0xFF> is id 3 + 255 */
    CHECK(strcmp(tok_text(t, ff), "<0xFF>") == 0);
    CHECK(tok_utf8_stream_push(&s, t, ff, buf, sizeof buf) == 3 && strcmp(buf, "\xef\xbf\xbd") == 0 && s.n == 0);
    CHECK(tok_utf8_stream_push(&s, t, 233, buf, sizeof buf) == 0 && s.n == 1);
    CHECK(tok_utf8_stream_flush(&s, buf, sizeof buf) == 3 && s.n == 0);

    /* a long text (100k characters) encodes in O(n log n) and round-trips */
    const char *unit = "Once upon a time, there was a little girl named Lily. She loved to play outside. ";
    size_t ul = strlen(unit), reps = 100000 / ul + 1;
    char *big = malloc(ul * reps + 1);
    for (size_t i = 0; i < reps; i++) memcpy(big + i * ul, unit, ul);
    big[ul * reps] = 0;
    int need = -tok_encode(t, big, 1, 1, NULL, 0);
    int32_t *bid = malloc(sizeof(int32_t) * (size_t)(need > 0 ? need : 1));
    char *back = malloc(ul * reps + 2);
    CHECK(need > 1000 && tok_encode(t, big, 1, 1, bid, need) == need);
    CHECK(need > 0 && tok_decode(t, bid, need, back, (int)(ul * reps + 2)) == (int)(ul * reps));
    CHECK(strcmp(back, big) == 0);
    free(big); free(bid); free(back);

    /* the stories vocabulary survives a GGUF round trip */
    hkv_tokenizer *t2 = gguf_round_trip(t, "stories_tok.gguf");
    if (t2) {
        n = tok_encode(t2, mixed, 1, 1, ids, 256);
        int32_t ids1[256];
        CHECK(n == tok_encode(t, mixed, 1, 1, ids1, 256) && memcmp(ids, ids1, sizeof(int32_t) * (size_t)n) == 0);
        tok_free(t2);
    }
    tok_free(t);
}

/* Malformed tokenizer.json files are rejected with a message, never a crash. */
static void test_hf_errors(void) {
    static const char *const bad[] = {
        "not json",
        "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}, "
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = tu_tmp("bad_tokenizer.json");
        FILE *f = fopen(path, "wb");
        fputs(bad[i], f);
        fclose(f);
        char err[256] = "";
        hkv_tokenizer *t = (hkv_tokenizer *)1;
        hkv_status st = tok_load_hf(path, &t, err, sizeof err);
        CHECKF(st != HKV_OK && t == NULL && strlen(err) > 0, "case %zu accepted", i);
        remove(path);
    }
}

/* Writes a GGUF with a tiny vocabulary, breaking one thing per case; loading must fail cleanly. */
static hkv_status load_tiny(int breakage, char *err, size_t errlen) {
    const char *toks[] = { "<unk>", "<s>", "</s>", "a", "b", "ab" };
    float scores[] = { 0, 0, 0, -1, -2, -3 };
    int32_t types[] = { TOKT_UNKNOWN, TOKT_CONTROL, TOKT_CONTROL, TOKT_NORMAL, TOKT_NORMAL, breakage == 1 ? 9 : 1 };
    const char *merges[] = { breakage == 5 ? "ab" : "a b" };
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_str(w, "tokenizer.ggml.model", breakage == 2 ? "bert" : breakage >= 5 ? "gpt2" : "llama");
    if (breakage == 6) gguf_w_str(w, "tokenizer.ggml.pre", "no-such-pre");
    if (breakage != 3) gguf_w_arr(w, "tokenizer.ggml.tokens", GGUF_STRING, toks, 6);
    gguf_w_arr(w, "tokenizer.ggml.scores", GGUF_F32, scores, breakage == 4 ? 5 : 6);
    gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, 6);
    if (breakage >= 5) gguf_w_arr(w, "tokenizer.ggml.merges", GGUF_STRING, merges, 1);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", breakage == 7 ? 6 : 1);
    gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", 0);   /* no U+2581 in this vocabulary */
    const char *path = tu_tmp("tiny.gguf");
    hkv_status st = gguf_writer_write(w, path, err, errlen);
    gguf_writer_free(w);
    gguf_file *g = NULL;
    hkv_tokenizer *t = NULL;
    if (!st) st = gguf_open(path, &g, err, errlen);
    if (!st) {
        st = tok_load_gguf(g, &t, err, errlen);
        if (!st) {   /* the intact vocabulary works: "ab" merges, "ba" does not */
            int32_t ids[8];
            CHECK(tok_encode(t, "ab", 0, 0, ids, 8) == 1 && ids[0] == 5);
            CHECK(tok_encode(t, "ba", 0, 0, ids, 8) == 2 && ids[0] == 4 && ids[1] == 3);
            CHECK(tok_encode(t, "c", 0, 0, ids, 8) == 1 && ids[0] == 0);   /* no byte tokens: <unk> */
            CHECK(tok_encode(t, "<s>", 0, 1, ids, 8) == 1 && ids[0] == 1);
        }
        CHECK(st != HKV_OK || t != NULL);
        tok_free(t);
        gguf_close(g);
    }
    remove(path);
    return st;
}

static void test_gguf_errors(void) {
    char err[256];
    hkv_status st = load_tiny(0, err, sizeof err);
    CHECKF(st == HKV_OK, "intact vocabulary: %s", err);
    for (int b = 1; b <= 7; b++) {
        err[0] = 0;
        st = load_tiny(b, err, sizeof err);
        CHECKF(st != HKV_OK && strlen(err) > 0, "breakage %d accepted", b);
    }
}

static hkv_status load_json_text(const char *json, char *err, size_t errlen, int *n_vocab) {
    const char *path = tu_tmp("limits_tokenizer.json");
    FILE *f = fopen(path, "wb");
    fputs(json, f);
    fclose(f);
    hkv_tokenizer *t = NULL;
    hkv_status st = tok_load_hf(path, &t, err, errlen);
    if (n_vocab) *n_vocab = t ? tok_n_vocab(t) : 0;
    tok_free(t);
    remove(path);
    return st;
}

/* Issue 12 defect 8 and 10b: table sizes come from what the file holds, and capacity doubling is checked. */
static void test_limits(void) {
    char err[256] = "";
    int nv = 0;
    /* the reported 121-byte file: two entries, ids 0 and 16777215 (1.1 GB and 29 s before) */
    const char *huge = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":16777215},\"merges\":[]},"
                       "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}";
    hkv_status st = load_json_text(huge, err, sizeof err, &nv);
    CHECKF(st == HKV_ERR_FORMAT && strstr(err, "16777215"), "sparse huge id: status %d (%d tokens): %s", st, nv, err);
    /* a few unnamed ids are fine (real files reserve some) */
    const char *gap = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":1000},\"merges\":[\"a b\"]},"
                      "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}";
    st = load_json_text(gap, err, sizeof err, &nv);
    CHECKF(st == HKV_OK && nv == 1001, "small gap: status %d, %d tokens: %s", st, nv, err);
    /* ids must be integers: 1.5 used to be truncated into id 1 */
    const char *frac = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1.5},\"merges\":[]},"
                       "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}";
    CHECK(load_json_text(frac, err, sizeof err, NULL) == HKV_ERR_FORMAT);
    /* checked capacity: the old loop doubled a uint32_t past 2^31 to 0 and spun forever */
    CHECK(tok_table_cap(0) == 16 && tok_table_cap(8) == 16 && tok_table_cap(9) == 32);
    CHECK(tok_table_cap(1u << 30) == (1u << 31));
    CHECK(tok_table_cap((1u << 30) + 1) == 0);
    CHECK(tok_table_cap(UINT64_MAX / 2 + 1) == 0);   /* 2n wraps to 0 in 64 bits */
    CHECK(tok_table_cap(UINT64_MAX) == 0);
    CHECK(tok_alloc(TOK_MAX_VOCAB + 1) == NULL);
    /* the merge count stops at TOK_MAX_MERGES instead of growing towards INT_MAX */
    hkv_tokenizer *t = NULL;
    if (tok_load_hf(tu_shared("tokenizers/llama3/tokenizer.json"), &t, err, sizeof err) == HKV_OK) {
        int saved = t->n_merges;
        int32_t *sa = t->merge_a;
        t->n_merges = TOK_MAX_MERGES;
        CHECK(tok_add_merge(t, "a", 1, "b", 1) == -1);
        CHECK(t->merge_a == sa);
        t->n_merges = saved;
        tok_free(t);
    } else CHECKF(0, "%s", err);
}

int main(void) {
    test_gguf_errors();
    test_stories();
    test_hf("llama2", TOK_SPM, 32000);
    test_hf("llama3", TOK_BPE, 128256);
    test_hf("qwen3", TOK_BPE, 151669);
    test_hf_specials();
    test_hf_errors();
    test_limits();
    return tu_done("tokenizer");
}
