/* Tokenizer core: vocabulary tables, special-token splitting, SentencePiece-style BPE (merge the adjacent pair
 * whose concatenation is the highest-scoring vocab entry), decoding, UTF-8 streaming and the GGUF
 * tokenizer.ggml.* keys. Byte-level BPE lives in tokenizer_bpe.c, tokenizer.json import in tokenizer_hf.c. */
#include "alloc.h"
#include "tokenizer_int.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---------------------------------------------------------------- string -> id hash */

static uint32_t hash_bytes(const char *s, int n) {
    uint32_t h = 2166136261u;                      /* FNV-1a */
    for (int i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 16777619u; }
    return h;
}

uint32_t tok_table_cap(uint64_t n) {
    if (n > (1ull << 30)) return 0;   /* 2n would pass 2^31 and the doubling would wrap (the old loop spun) */
    uint32_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    return cap;
}

static int map_build(tok_map *m, int n_vocab, char *const *keys, const int *lens) {
    uint32_t cap = tok_table_cap(n_vocab > 0 ? (uint64_t)n_vocab : 0);
    if (!cap) return 0;
    m->slot = hkv_malloc(sizeof(int32_t) * cap);
    if (!m->slot) return 0;
    memset(m->slot, 0xff, sizeof(int32_t) * cap);
    m->cap = cap; m->keys = keys; m->lens = lens;
    for (int id = 0; id < n_vocab; id++) {
        if (!keys[id]) continue;
        uint32_t h = hash_bytes(keys[id], lens[id]) & (cap - 1);
        int dup = 0;
        for (; m->slot[h] >= 0; h = (h + 1) & (cap - 1)) {
            int32_t o = m->slot[h];
            if (lens[o] == lens[id] && memcmp(keys[o], keys[id], (size_t)lens[id]) == 0) { dup = 1; break; }
        }
        if (!dup) m->slot[h] = id;   /* a duplicate string keeps its first id */
    }
    return 1;
}

static int32_t map_find(const tok_map *m, const char *s, int n) {
    if (!m->slot) return -1;
    for (uint32_t h = hash_bytes(s, n) & (m->cap - 1); m->slot[h] >= 0; h = (h + 1) & (m->cap - 1)) {
        int32_t id = m->slot[h];
        if (m->lens[id] == n && memcmp(m->keys[id], s, (size_t)n) == 0) return id;
    }
    return -1;
}

/* ---------------------------------------------------------------- lifecycle */

hkv_tokenizer *tok_alloc(int n_vocab) {
    if (n_vocab <= 0 || n_vocab > TOK_MAX_VOCAB) return NULL;
    hkv_tokenizer *t = hkv_calloc(1, sizeof *t);
    if (!t) return NULL;
    size_t n = (size_t)n_vocab;
    t->n_vocab = n_vocab;
    t->text = hkv_calloc(n, sizeof(char *));
    t->len = hkv_calloc(n, sizeof(int));
    t->score = hkv_calloc(n, sizeof(float));
    t->type = hkv_malloc(n);
    t->is_eog = hkv_calloc(n, 1);
    if (!t->text || !t->len || !t->score || !t->type || !t->is_eog) { tok_free(t); return NULL; }
    memset(t->type, TOKT_NORMAL, n);
    t->bos = t->eos = t->eot = t->eom = t->unk = t->pad = -1;
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    return t;
}

void tok_free(hkv_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->text) hkv_free(t->text[i]);
        if (t->raw) hkv_free(t->raw[i]);
    }
    hkv_free(t->text); hkv_free(t->len); hkv_free(t->score); hkv_free(t->type); hkv_free(t->raw); hkv_free(t->raw_len);
    hkv_free(t->by_text.slot); hkv_free(t->by_raw.slot);
    hkv_free(t->merge_a); hkv_free(t->merge_b); hkv_free(t->merge_res); hkv_free(t->pair_key); hkv_free(t->pair_rank);
    hkv_free(t->special); hkv_free(t->is_eog); hkv_free(t->chat_template);
    hkv_free(t);
}

int tok_set_text(hkv_tokenizer *t, int id, const char *s, int len) {
    char *c = hkv_malloc((size_t)len + 1);
    if (!c) return 0;
    memcpy(c, s, (size_t)len);
    c[len] = 0;
    hkv_free(t->text[id]);
    t->text[id] = c;
    t->len[id] = len;
    return 1;
}

int tok_index(hkv_tokenizer *t) {
    for (int i = 0; i < t->n_vocab; i++)   /* an id the source skipped gets an empty string */
        if (!t->text[i] && !tok_set_text(t, i, "", 0)) return 0;
    hkv_free(t->by_text.slot);
    return map_build(&t->by_text, t->n_vocab, t->text, t->len);
}

int32_t tok_find(const hkv_tokenizer *t, const char *s, int len) { return map_find(&t->by_text, s, len); }
int32_t tok_find_raw(const hkv_tokenizer *t, const char *s, int len) { return map_find(&t->by_raw, s, len); }

int tok_add_merge(hkv_tokenizer *t, const char *a, int alen, const char *b, int blen) {
    int32_t ia = tok_find(t, a, alen), ib = tok_find(t, b, blen);
    if (ia < 0 || ib < 0) return 0;
    char stackbuf[256];
    char *cat = alen + blen <= (int)sizeof stackbuf ? stackbuf : hkv_malloc((size_t)alen + (size_t)blen);
    if (!cat) return -1;
    memcpy(cat, a, (size_t)alen);
    memcpy(cat + alen, b, (size_t)blen);
    int32_t ir = tok_find(t, cat, alen + blen);
    if (cat != stackbuf) hkv_free(cat);
    if (ir < 0) return 0;
    if (t->n_merges >= TOK_MAX_MERGES) return -1;   /* keeps the doubling below and n_merges far from INT_MAX */
    if ((t->n_merges & (t->n_merges - 1)) == 0) {   /* grow at powers of two */
        size_t cap = t->n_merges ? 2 * (size_t)t->n_merges : 64;
        int32_t *na = hkv_realloc(t->merge_a, cap * sizeof(int32_t));
        if (!na) return -1;
        t->merge_a = na;
        int32_t *nb = hkv_realloc(t->merge_b, cap * sizeof(int32_t));
        if (!nb) return -1;
        t->merge_b = nb;
        int32_t *nr = hkv_realloc(t->merge_res, cap * sizeof(int32_t));
        if (!nr) return -1;
        t->merge_res = nr;
    }
    t->merge_a[t->n_merges] = ia; t->merge_b[t->n_merges] = ib; t->merge_res[t->n_merges] = ir;
    t->n_merges++;
    return 1;
}

/* ---- tok_finish helpers */

/* BPE: the bytes each normal token stands for (vocab strings are in the GPT-2 byte alphabet). */
static int build_raw(hkv_tokenizer *t) {
    t->raw = hkv_calloc((size_t)t->n_vocab, sizeof(char *));
    t->raw_len = hkv_calloc((size_t)t->n_vocab, sizeof(int));
    if (!t->raw || !t->raw_len) return 0;
    for (int id = 0; id < t->n_vocab; id++) {
        if (t->type[id] != TOKT_NORMAL) continue;
        char *r = hkv_malloc((size_t)t->len[id] + 1);
        if (!r) return 0;
        int n = 0, ok = 1;
        for (int i = 0; i < t->len[id] && ok;) {
            uint32_t cp;
            i += tok_utf8_next(t->text[id], t->len[id], i, &cp);
            int b = tok_cp_to_byte(cp);
            if (b < 0) ok = 0; else r[n++] = (char)b;
        }
        if (!ok || n == 0) { hkv_free(r); continue; }   /* not a byte-level token: decoded as its text */
        t->raw[id] = r; t->raw_len[id] = n;
    }
    return map_build(&t->by_raw, t->n_vocab, t->raw, t->raw_len);
}

static int build_pairs(hkv_tokenizer *t) {
    uint32_t cap = tok_table_cap(t->n_merges > 0 ? (uint64_t)t->n_merges : 0);
    if (!cap) return 0;
    t->pair_key = hkv_calloc(cap, sizeof(uint64_t));
    t->pair_rank = hkv_malloc(cap * sizeof(int32_t));
    if (!t->pair_key || !t->pair_rank) return 0;
    t->pair_cap = cap;
    for (int r = 0; r < t->n_merges; r++) {
        uint64_t key = ((uint64_t)(uint32_t)t->merge_a[r] << 32 | (uint32_t)t->merge_b[r]) + 1;
        uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
        while (t->pair_key[h] && t->pair_key[h] != key) h = (h + 1) & (cap - 1);
        if (!t->pair_key[h]) { t->pair_key[h] = key; t->pair_rank[h] = r; }  /* first rank wins */
    }
    return 1;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Tokens matched literally in the text, longest first (so "<|im_start|>" beats a prefix of it). */
static int build_specials(hkv_tokenizer *t) {
    uint64_t *keys = hkv_malloc(sizeof(uint64_t) * (size_t)t->n_vocab);
    t->special = hkv_malloc(sizeof(int32_t) * (size_t)t->n_vocab);
    if (!keys || !t->special) { hkv_free(keys); return 0; }
    int n = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        int ty = t->type[id];
        if ((ty == TOKT_CONTROL || ty == TOKT_UNKNOWN || ty == TOKT_USER_DEFINED) && t->len[id] > 0)
            keys[n++] = (uint64_t)(0x7fffffff - t->len[id]) << 32 | (uint32_t)id;
    }
    qsort(keys, (size_t)n, sizeof(uint64_t), cmp_u64);
    for (int k = 0; k < n; k++) {
        t->special[k] = (int32_t)(keys[k] & 0xffffffffu);
        t->special_first[(uint8_t)t->text[t->special[k]][0]] = 1;
    }
    t->n_special = n;
    hkv_free(keys);
    return 1;
}

static void mark_eog(hkv_tokenizer *t) {
    static const char *const names[] = { "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
        "<|endoftext|>", "<|end_of_text|>", "<EOT>", "<|return|>", "<|call|>" };
    if (t->eos >= 0) t->is_eog[t->eos] = 1;
    if (t->eot >= 0) t->is_eog[t->eot] = 1;
    if (t->eom >= 0) t->is_eog[t->eom] = 1;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        int32_t id = tok_find(t, names[k], (int)strlen(names[k]));
        if (id >= 0 && (t->type[id] == TOKT_CONTROL || t->type[id] == TOKT_USER_DEFINED)) t->is_eog[id] = 1;
    }
}

hkv_status tok_finish(hkv_tokenizer *t, char *err, size_t errlen) {
    if (!t->by_text.slot && !tok_index(t)) goto nomem;
    if (t->kind == TOK_BPE) {
        if (!build_raw(t) || !build_pairs(t)) goto nomem;
        for (int b = 0; b < 256; b++) { char c = (char)b; t->byte_tok[b] = map_find(&t->by_raw, &c, 1); }
    } else {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            int32_t id = tok_find(t, name, 6);
            t->byte_tok[b] = id >= 0 && t->type[id] == TOKT_BYTE ? id : -1;
        }
    }
    for (int id = 0; id < t->n_vocab && t->unk < 0; id++)   /* no unknown_token_id: the UNKNOWN-typed token */
        if (t->type[id] == TOKT_UNKNOWN) t->unk = id;
    if (!build_specials(t)) goto nomem;
    mark_eog(t);
    return HKV_OK;
nomem:
    snprintf(err, errlen, "out of memory building the tokenizer tables");
    return HKV_ERR_NOMEM;
}

/* ---------------------------------------------------------------- accessors */

int tok_n_vocab(const hkv_tokenizer *t) { return t->n_vocab; }
tok_kind tok_get_kind(const hkv_tokenizer *t) { return t->kind; }
int32_t tok_bos(const hkv_tokenizer *t) { return t->bos; }
int32_t tok_eos(const hkv_tokenizer *t) { return t->eos; }
int tok_add_bos(const hkv_tokenizer *t) { return t->add_bos; }
int tok_is_eog(const hkv_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab && t->is_eog[id]; }
const char *tok_chat_template(const hkv_tokenizer *t) { return t->chat_template; }
const char *tok_text(const hkv_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->text[id] : NULL;
}

/* ---------------------------------------------------------------- SentencePiece-style BPE */

/* A candidate merge of symbol `left` with its right neighbour; `size` is their byte length when queued, so a
 * stale entry (one side merged meanwhile) is recognised when popped. */
typedef struct spm_bigram { float score; int left; int size; } spm_bigram;

static int spm_before(const spm_bigram *a, const spm_bigram *b) {   /* pops first: best score, then leftmost */
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(spm_bigram *h, int *n, spm_bigram e) {
    int i = (*n)++;
    while (i > 0 && spm_before(&e, &h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = e;
}

static spm_bigram heap_pop(spm_bigram *h, int *n) {
    spm_bigram top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && spm_before(&h[c + 1], &h[c])) c++;
        if (!spm_before(&h[c], &last)) break;
        h[i] = h[c]; i = c;
    }
    h[i] = last;
    return top;
}

/* Symbols are UTF-8 characters of buf, linked in a list; a merged symbol spans its parts' bytes. */
typedef struct spm_state {
    const hkv_tokenizer *t;
    const char *buf;
    int *start, *size, *prev, *next;  /* [n_sym] byte offset, byte length (0 = merged away), links */
    spm_bigram *heap;
    int n_heap;
} spm_state;

static int spm_mergeable(const hkv_tokenizer *t, int32_t id) {
    return id >= 0 && (t->type[id] == TOKT_NORMAL || t->type[id] == TOKT_USER_DEFINED);
}

static void spm_try_pair(spm_state *st, int left, int right) {
    if (left < 0 || right < 0) return;
    int n = st->size[left] + st->size[right];
    int32_t id = tok_find(st->t, st->buf + st->start[left], n);
    if (!spm_mergeable(st->t, id)) return;
    heap_push(st->heap, &st->n_heap, (spm_bigram){ st->t->score[id], left, n });
}

static int emit(int32_t *out, int cap, int count, int32_t id) {
    if (count < cap) out[count] = id;
    return count + 1;
}

/* Encodes one text fragment (no special tokens inside). Returns the new count, -1 on allocation failure. */
static int spm_fragment(const hkv_tokenizer *t, const char *s, int n, int prefix, int32_t *out, int cap,
                        int count) {
    size_t blen = (size_t)n * 3 + 3;
    char *buf = hkv_malloc(blen);
    int *ints = hkv_malloc(sizeof(int) * 4 * ((size_t)n + 1));
    spm_bigram *heap = hkv_malloc(sizeof(spm_bigram) * (3 * (size_t)n + 4));
    if (!buf || !ints || !heap) { hkv_free(buf); hkv_free(ints); hkv_free(heap); return -1; }
    /* U+2581 stands for a space; the dummy prefix makes a word at the start look like one after a space */
    int m = 0;
    if (prefix) { memcpy(buf, "\xe2\x96\x81", 3); m = 3; }
    for (int i = 0; i < n; i++) {
        if (s[i] == ' ') { memcpy(buf + m, "\xe2\x96\x81", 3); m += 3; }
        else buf[m++] = s[i];
    }
    spm_state st = { t, buf, ints, ints + (n + 1), ints + 2 * (n + 1), ints + 3 * (n + 1), heap, 0 };
    int n_sym = 0;
    for (int i = 0; i < m;) {
        uint32_t cp;
        int l = tok_utf8_next(buf, m, i, &cp);
        st.start[n_sym] = i; st.size[n_sym] = l;
        st.prev[n_sym] = n_sym - 1; st.next[n_sym] = -1;
        if (n_sym > 0) st.next[n_sym - 1] = n_sym;
        n_sym++;
        i += l;
    }
    for (int i = 0; i + 1 < n_sym; i++) spm_try_pair(&st, i, i + 1);
    while (st.n_heap > 0) {
        spm_bigram b = heap_pop(st.heap, &st.n_heap);
        int l = b.left, r = st.next[l];
        if (r < 0 || st.size[l] == 0 || st.size[r] == 0 || st.size[l] + st.size[r] != b.size) continue;
        st.size[l] += st.size[r];
        st.size[r] = 0;
        st.next[l] = st.next[r];
        if (st.next[r] >= 0) st.prev[st.next[r]] = l;
        spm_try_pair(&st, st.prev[l], l);
        spm_try_pair(&st, l, st.next[l]);
    }
    for (int i = n_sym > 0 ? 0 : -1; i >= 0; i = st.next[i]) {
        int32_t id = tok_find(t, buf + st.start[i], st.size[i]);
        if (spm_mergeable(t, id)) { count = emit(out, cap, count, id); continue; }
        for (int k = 0; k < st.size[i]; k++) {   /* not in the vocab: byte fallback, else <unk> */
            int32_t bt = t->byte_tok[(uint8_t)buf[st.start[i] + k]];
            if (bt >= 0) count = emit(out, cap, count, bt);
            else if (t->unk >= 0) { count = emit(out, cap, count, t->unk); break; }
        }
    }
    hkv_free(buf); hkv_free(ints); hkv_free(heap);
    return count;
}

/* ---------------------------------------------------------------- encode */

/* Special token spelled at s[i..n), longest first; -1 if none. CONTROL/UNKNOWN only when parse_special,
 * USER_DEFINED always (as llama.cpp and Hugging Face do). */
static int32_t match_special(const hkv_tokenizer *t, const char *s, int n, int i, int parse_special) {
    if (!t->special_first[(uint8_t)s[i]]) return -1;
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        int l = t->len[id];
        if (l > n - i || t->text[id][0] != s[i]) continue;
        if (!parse_special && t->type[id] != TOKT_USER_DEFINED) continue;
        if (memcmp(t->text[id], s + i, (size_t)l) == 0) return id;
    }
    return -1;
}

/* Every fragment starts the text or follows a special token, so each gets the SentencePiece dummy prefix
 * (llama.cpp and Hugging Face agree: "<s> x" encodes " x" as "\u2581\u2581x"). */
static int encode_fragment(const hkv_tokenizer *t, const char *s, int n, int32_t *out, int cap, int count) {
    if (n == 0) return count;
    if (t->kind == TOK_SPM) return spm_fragment(t, s, n, t->add_space_prefix, out, cap, count);
    if (!t->nfc) return tok_bpe_fragment(t, s, n, out, cap, count);
    char *tmp = hkv_malloc((size_t)n + 1);
    if (!tmp) return -1;
    memcpy(tmp, s, (size_t)n);
    tmp[n] = 0;
    char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)tmp);   /* NULL for invalid UTF-8: keep as is */
    if (nfc) count = tok_bpe_fragment(t, nfc, (int)strlen(nfc), out, cap, count);
    else count = tok_bpe_fragment(t, tmp, n, out, cap, count);
    hkv_free(nfc);
    hkv_free(tmp);
    return count;
}

int tok_encode(const hkv_tokenizer *t, const char *text, int add_bos, int parse_special, int32_t *out, int max) {
    if (!t || !text || max < 0 || (max > 0 && !out)) return 0;
    /* -1 asks for the vocabulary's own choice: Qwen2/2.5 files carry a BOS id but add_bos_token = false,
     * and llama.cpp then adds none. EOS follows add_eos_token unless the caller asked for raw text (0). */
    int bos = add_bos < 0 ? t->add_bos : add_bos, eos = add_bos != 0 && t->add_eos;
    int n = (int)strlen(text), count = 0, frag = 0;
    if (bos && t->bos >= 0) count = emit(out, max, count, t->bos);
    for (int i = 0; i < n && count >= 0;) {
        int32_t id = match_special(t, text, n, i, parse_special);
        if (id < 0) { i++; continue; }
        count = encode_fragment(t, text + frag, i - frag, out, max, count);
        if (count < 0) break;
        count = emit(out, max, count, id);
        i += t->len[id];
        frag = i;
    }
    if (count >= 0) count = encode_fragment(t, text + frag, n - frag, out, max, count);
    if (count >= 0 && eos && t->eos >= 0) count = emit(out, max, count, t->eos);
    if (count < 0) return 0;   /* allocation failure: nothing usable */
    return count <= max ? count : -count;
}

/* ---------------------------------------------------------------- decode */

/* Writes token id's bytes into buf when they fit; returns their length in any case (-1 for a bad id). */
static int piece_bytes(const hkv_tokenizer *t, int32_t id, char *buf, int buflen) {
    if (id < 0 || id >= t->n_vocab) return -1;
    int ty = t->type[id];
    if (ty == TOKT_CONTROL) return 0;
    if (t->kind == TOK_BPE && t->raw[id]) {
        if (t->raw_len[id] <= buflen) memcpy(buf, t->raw[id], (size_t)t->raw_len[id]);
        return t->raw_len[id];
    }
    if (t->kind == TOK_SPM && ty == TOKT_BYTE) {
        unsigned v;
        if (sscanf(t->text[id], "<0x%2X>", &v) != 1) return 0;
        if (buflen >= 1) buf[0] = (char)v;
        return 1;
    }
    if (t->kind == TOK_SPM && ty == TOKT_UNKNOWN) {   /* SentencePiece shows <unk> as " ⁇ " */
        if (buflen >= 5) memcpy(buf, " \xe2\x81\x87 ", 5);
        return 5;
    }
    const char *s = t->text[id];
    int n = 0;
    for (int i = 0; i < t->len[id]; i++) {   /* SPM: U+2581 -> ' '; anything else verbatim */
        if (t->kind == TOK_SPM && i + 2 < t->len[id] && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            if (n < buflen) buf[n] = ' ';
            n++; i += 2;
        } else {
            if (n < buflen) buf[n] = s[i];
            n++;
        }
    }
    return n;
}

int tok_piece(const hkv_tokenizer *t, int32_t id, char *buf, int buflen) {
    if (!t || buflen < 0 || (buflen > 0 && !buf)) return 0;
    int n = piece_bytes(t, id, buf, buflen);
    if (n < 0) return 0;
    return n <= buflen ? n : -n;
}

int tok_decode(const hkv_tokenizer *t, const int32_t *ids, int n, char *buf, int buflen) {
    if (!t || n < 0 || (n > 0 && !ids) || buflen < 0 || (buflen > 0 && !buf)) return 0;
    int strip = n > 0 && ids[0] == t->bos ? 1 : 0;   /* index of the token that may carry the dummy space */
    int total = 0;
    for (int k = 0; k < n; k++) {
        char tmp[256];
        int l = piece_bytes(t, ids[k], tmp, (int)sizeof tmp);
        if (l < 0) continue;   /* bad ids decode to nothing */
        char *p = tmp;
        if (l > (int)sizeof tmp) {
            p = hkv_malloc((size_t)l);
            if (!p) return 0;
            piece_bytes(t, ids[k], p, l);
        }
        int off = t->kind == TOK_SPM && t->add_space_prefix && k == strip && l > 0 && p[0] == ' ' ? 1 : 0;
        for (int i = off; i < l; i++, total++)
            if (total < buflen - 1) buf[total] = p[i];
        if (p != tmp) hkv_free(p);
    }
    if (total + 1 > buflen) {
        if (buflen > 0) buf[buflen - 1] = 0;
        return -(total + 1);
    }
    buf[total] = 0;
    return total;
}

/* ---------------------------------------------------------------- UTF-8 streaming */

/* Length of the valid prefix of the UTF-8 sequence at s[0..n) and (via *need) the sequence's full length.
 * need = 0 for a byte that cannot start a sequence. Ranges per Unicode Table 3-7 (no overlongs/surrogates). */
static int utf8_valid_prefix(const unsigned char *s, int n, int *need) {
    unsigned c = s[0];
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) { *need = 1; return 1; }
    if (c >= 0xC2 && c <= 0xDF) *need = 2;
    else if (c >= 0xE0 && c <= 0xEF) { *need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { *need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else { *need = 0; return 0; }
    int k = 1;
    if (k < n && s[k] >= lo && s[k] <= hi) k++; else return k;
    while (k < *need && k < n && s[k] >= 0x80 && s[k] <= 0xBF) k++;
    return k;
}

/* Converts bytes to valid UTF-8 (U+FFFD per maximal invalid subpart). With hold, an incomplete but so far
 * valid sequence at the end is not converted: its length is returned in *held. Returns the output length;
 * writes only when out has room (out may be NULL to measure). */
static int utf8_sanitize(const unsigned char *s, int n, int hold, char *out, int outlen, int *held) {
    int o = 0, i = 0;
    *held = 0;
    while (i < n) {
        int need, k = utf8_valid_prefix(s + i, n - i, &need);
        if (need > 0 && k == need) {
            for (int j = 0; j < k; j++, o++) if (out && o < outlen) out[o] = (char)s[i + j];
            i += k;
        } else if (hold && need > 0 && i + k == n) {
            *held = k;
            break;
        } else {
            for (int j = 0; j < 3; j++, o++) if (out && o < outlen) out[o] = "\xef\xbf\xbd"[j];
            i += k > 0 ? k : 1;
        }
    }
    return o;
}

int tok_utf8_stream_push(hkv_utf8_stream *s, const hkv_tokenizer *t, int32_t token, char *out, int outlen) {
    if (!s || !t || outlen < 0 || (outlen > 0 && !out)) return 0;
    if (s->n < 0 || s->n > 3) s->n = 0;   /* a corrupted state cannot hold more than an incomplete character */
    int plen = piece_bytes(t, token, NULL, 0);
    if (plen < 0) plen = 0;
    unsigned char *all = hkv_malloc((size_t)s->n + (size_t)plen + 1);
    if (!all) return 0;
    memcpy(all, s->pend, (size_t)s->n);
    if (plen > 0) piece_bytes(t, token, (char *)all + s->n, plen);
    int total = s->n + plen, held;
    int need = utf8_sanitize(all, total, 1, NULL, 0, &held);
    if (need + 1 > outlen) { hkv_free(all); return -(need + 1); }   /* state untouched: caller can retry */
    utf8_sanitize(all, total, 1, out, outlen, &held);
    out[need] = 0;
    memcpy(s->pend, all + total - held, (size_t)held);
    s->n = held;
    hkv_free(all);
    if (need > 0 && s->strip_space) {   /* the SentencePiece dummy prefix of the first word */
        s->strip_space = 0;
        if (t->kind == TOK_SPM && t->add_space_prefix && out[0] == ' ') memmove(out, out + 1, (size_t)need--);
    }
    return need;
}

int tok_utf8_stream_flush(hkv_utf8_stream *s, char *out, int outlen) {
    if (!s || outlen < 0 || (outlen > 0 && !out)) return 0;
    int n = s->n < 0 || s->n > 3 ? 0 : s->n, held;
    int need = utf8_sanitize(s->pend, n, 0, NULL, 0, &held);
    if (need + 1 > outlen) return -(need + 1);
    utf8_sanitize(s->pend, n, 0, out, outlen, &held);
    out[need] = 0;
    s->n = 0;
    return need;
}

/* ---------------------------------------------------------------- GGUF */

__attribute__((format(printf, 5, 6)))
static hkv_status fail(hkv_tokenizer *t, hkv_status st, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    tok_free(t);
    return st;
}

/* Reads an optional id key; absent or negative = -1. An id past the vocabulary is an error. */
static int read_id(const gguf_file *g, const char *key, int n_vocab, int32_t *out) {
    int64_t v;
    *out = -1;
    if (!gguf_get_i64(g, key, &v) || v < 0 || v == 0xFFFFFFFFll) return 1;
    if (v >= n_vocab) return 0;
    *out = (int32_t)v;
    return 1;
}

static const struct { const char *name; tok_pre pre; } pre_names[] = {
    { "default", TOK_PRE_DEFAULT }, { "gpt2", TOK_PRE_GPT2 }, { "gpt-2", TOK_PRE_GPT2 },
    { "llama-bpe", TOK_PRE_LLAMA3 }, { "llama3", TOK_PRE_LLAMA3 }, { "llama-v3", TOK_PRE_LLAMA3 },
    { "qwen2", TOK_PRE_QWEN2 }, { "deepseek-r1-qwen", TOK_PRE_QWEN2 },
};

static hkv_status load_merges(hkv_tokenizer *t, const gguf_kv *kv, char *err, size_t errlen) {
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING || !kv->arr_str) {
        snprintf(err, errlen, "byte-level BPE tokenizer without a tokenizer.ggml.merges string array");
        return HKV_ERR_FORMAT;
    }
    if (kv->arr_n > TOK_MAX_MERGES) {
        snprintf(err, errlen, "tokenizer.ggml.merges has %llu entries, more than the %d supported",
                 (unsigned long long)kv->arr_n, TOK_MAX_MERGES);
        return HKV_ERR_FORMAT;
    }
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        gguf_str m = kv->arr_str[i];
        uint64_t sp = 1;   /* split at the first space after the first byte: the left side is never empty */
        while (sp < m.len && m.s[sp] != ' ') sp++;
        if (m.len > 0x7fffffff || sp + 1 >= m.len) {
            snprintf(err, errlen, "merge %llu is not of the form \"left right\"", (unsigned long long)i);
            return HKV_ERR_FORMAT;
        }
        if (tok_add_merge(t, m.s, (int)sp, m.s + sp + 1, (int)(m.len - sp - 1)) < 0) {
            snprintf(err, errlen, "out of memory reading the merges");
            return HKV_ERR_NOMEM;
        }
    }
    return HKV_OK;
}

hkv_status tok_load_gguf(const gguf_file *g, hkv_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    gguf_str model;
    char name[64];
    if (!gguf_get_str(g, "tokenizer.ggml.model", &model))
        return fail(NULL, HKV_ERR_FORMAT, err, errlen, "the file has no %s key", "tokenizer.ggml.model");
    gguf_str_copy(model, name, sizeof name);
    tok_kind kind;
    if (strcmp(name, "llama") == 0) kind = TOK_SPM;
    else if (strcmp(name, "gpt2") == 0) kind = TOK_BPE;
    else return fail(NULL, HKV_ERR_UNSUPPORTED, err, errlen, "tokenizer model \"%s\" is not supported", name);
    const gguf_kv *tk = gguf_find(g, "tokenizer.ggml.tokens");
    if (!tk || tk->type != GGUF_ARRAY || tk->arr_type != GGUF_STRING || !tk->arr_str || tk->arr_n == 0)
        return fail(NULL, HKV_ERR_FORMAT, err, errlen, "%s is missing or not a non-empty string array",
                    "tokenizer.ggml.tokens");
    if (tk->arr_n > TOK_MAX_VOCAB)
        return fail(NULL, HKV_ERR_FORMAT, err, errlen, "%s has %llu entries, more than the %d supported",
                    "tokenizer.ggml.tokens", (unsigned long long)tk->arr_n, TOK_MAX_VOCAB);
    int n = (int)tk->arr_n;
    hkv_tokenizer *t = tok_alloc(n);
    if (!t) return fail(NULL, HKV_ERR_NOMEM, err, errlen, "out of memory allocating %s", "the vocabulary");
    t->kind = kind;
    for (int i = 0; i < n; i++) {
        if (tk->arr_str[i].len > 0x7fffffff)
            return fail(t, HKV_ERR_FORMAT, err, errlen, "a %s entry is too long", "tokenizer.ggml.tokens");
        if (!tok_set_text(t, i, tk->arr_str[i].s, (int)tk->arr_str[i].len))
            return fail(t, HKV_ERR_NOMEM, err, errlen, "out of memory allocating %s", "the vocabulary");
    }
    const gguf_kv *sc = gguf_find(g, "tokenizer.ggml.scores");
    if (sc) {
        if (sc->type != GGUF_ARRAY || sc->arr_n != (uint64_t)n)
            return fail(t, HKV_ERR_FORMAT, err, errlen, "%s must be an array with one entry per token",
                        "tokenizer.ggml.scores");
        for (int i = 0; i < n; i++) {
            double v;
            if (!gguf_arr_f64(sc, (uint64_t)i, &v))
                return fail(t, HKV_ERR_FORMAT, err, errlen, "%s must hold numbers", "tokenizer.ggml.scores");
            t->score[i] = (float)v;
        }
    }
    const gguf_kv *ty = gguf_find(g, "tokenizer.ggml.token_type");
    if (ty) {
        if (ty->type != GGUF_ARRAY || ty->arr_n != (uint64_t)n)
            return fail(t, HKV_ERR_FORMAT, err, errlen, "%s must be an array with one entry per token",
                        "tokenizer.ggml.token_type");
        for (int i = 0; i < n; i++) {
            int64_t v;
            if (!gguf_arr_i64(ty, (uint64_t)i, &v) || v < TOKT_NORMAL || v > TOKT_BYTE)
                return fail(t, HKV_ERR_FORMAT, err, errlen, "%s holds a value outside 1..6",
                            "tokenizer.ggml.token_type");
            t->type[i] = (uint8_t)v;
        }
    }
    if (!read_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos) ||
        !read_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos) ||
        !read_id(g, "tokenizer.ggml.eot_token_id", n, &t->eot) ||
        !read_id(g, "tokenizer.ggml.eom_token_id", n, &t->eom) ||
        !read_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk) ||
        !read_id(g, "tokenizer.ggml.padding_token_id", n, &t->pad))
        return fail(t, HKV_ERR_FORMAT, err, errlen, "a special token id in %s is past the vocabulary",
                    "tokenizer.ggml.*_token_id");
    if (!tok_index(t)) return fail(t, HKV_ERR_NOMEM, err, errlen, "out of memory indexing %s", "the vocabulary");
    if (kind == TOK_BPE) {
        gguf_str pre;
        t->pre = TOK_PRE_DEFAULT;
        if (gguf_get_str(g, "tokenizer.ggml.pre", &pre)) {
            gguf_str_copy(pre, name, sizeof name);
            size_t k = 0, np = sizeof pre_names / sizeof pre_names[0];
            while (k < np && strcmp(pre_names[k].name, name) != 0) k++;
            if (k == np)
                return fail(t, HKV_ERR_UNSUPPORTED, err, errlen, "pre-tokenizer \"%s\" is not supported", name);
            t->pre = pre_names[k].pre;
        }
        /* Llama 3 skips merging for a pre-token that is itself in the vocab; Qwen2 NFC-normalises its input */
        t->ignore_merges = t->pre == TOK_PRE_LLAMA3;
        t->nfc = t->pre == TOK_PRE_QWEN2;
        hkv_status st = load_merges(t, gguf_find(g, "tokenizer.ggml.merges"), err, errlen);
        if (st) { tok_free(t); return st; }
    }
    int b;
    t->add_bos = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) ? b
               : (kind == TOK_SPM || t->pre == TOK_PRE_LLAMA3) && t->bos >= 0;
    t->add_eos = gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b) ? b : 0;
    t->add_space_prefix = kind == TOK_SPM && (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b) ? b : 1);
    gguf_str tmpl;   /* kept for chat: src/chat.c recognises its family */
    if (gguf_get_str(g, "tokenizer.chat_template", &tmpl)) {
        if (!(t->chat_template = hkv_malloc((size_t)tmpl.len + 1)))
            return fail(t, HKV_ERR_NOMEM, err, errlen, "out of memory copying %s", "tokenizer.chat_template");
        memcpy(t->chat_template, tmpl.s, (size_t)tmpl.len);
        t->chat_template[tmpl.len] = 0;
    }
    hkv_status st = tok_finish(t, err, errlen);
    if (st) { tok_free(t); return st; }
    *out = t;
    return HKV_OK;
}

static const char *pre_name(tok_pre p) {
    switch (p) {
    case TOK_PRE_LLAMA3: return "llama-bpe";
    case TOK_PRE_QWEN2: return "qwen2";
    case TOK_PRE_GPT2: return "gpt2";
    default: return "default";
    }
}

void tok_write_gguf(const hkv_tokenizer *t, gguf_writer *w) {
    int n = t->n_vocab;
    const char **strs = hkv_malloc(sizeof(char *) * (size_t)n);
    int32_t *types = hkv_malloc(sizeof(int32_t) * (size_t)n);
    if (!strs || !types) { hkv_free(strs); hkv_free(types); return; }
    gguf_w_str(w, "tokenizer.ggml.model", t->kind == TOK_SPM ? "llama" : "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", t->kind == TOK_SPM ? "default" : pre_name(t->pre));
    for (int i = 0; i < n; i++) { strs[i] = t->text[i]; types[i] = t->type[i]; }
    gguf_w_arr(w, "tokenizer.ggml.tokens", GGUF_STRING, strs, (uint64_t)n);
    if (t->kind == TOK_SPM) gguf_w_arr(w, "tokenizer.ggml.scores", GGUF_F32, t->score, (uint64_t)n);
    gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, (uint64_t)n);
    if (t->kind == TOK_BPE) {
        char **ms = hkv_calloc((size_t)t->n_merges + 1, sizeof(char *));
        int ok = ms != NULL;
        for (int r = 0; ok && r < t->n_merges; r++) {
            int la = t->len[t->merge_a[r]], lb = t->len[t->merge_b[r]];
            ms[r] = hkv_malloc((size_t)la + (size_t)lb + 2);
            if (!ms[r]) { ok = 0; break; }
            memcpy(ms[r], t->text[t->merge_a[r]], (size_t)la);
            ms[r][la] = ' ';
            memcpy(ms[r] + la + 1, t->text[t->merge_b[r]], (size_t)lb + 1);
        }
        if (ok) gguf_w_arr(w, "tokenizer.ggml.merges", GGUF_STRING, (const char **)ms, (uint64_t)t->n_merges);
        for (int r = 0; ms && r < t->n_merges; r++) hkv_free(ms[r]);
        hkv_free(ms);
    }
    if (t->bos >= 0) gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (t->eos >= 0) gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
    if (t->eot >= 0) gguf_w_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)t->eot);
    if (t->eom >= 0) gguf_w_u32(w, "tokenizer.ggml.eom_token_id", (uint32_t)t->eom);
    if (t->unk >= 0) gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk);
    if (t->pad >= 0) gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)t->pad);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos);
    if (t->kind == TOK_SPM) gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix);
    if (t->chat_template) gguf_w_str(w, "tokenizer.chat_template", t->chat_template);
    hkv_free(strs);
    hkv_free(types);
}

/* ---------------------------------------------------------------- public API (heavykv.h) */

/* A .gguf (by its magic, whatever the file is called) or a tokenizer.json. */
hkv_status hkv_tokenizer_load(const char *path, hkv_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) { snprintf(err, errlen, "cannot open tokenizer '%s'", path ? path : "(null)"); return HKV_ERR_IO; }
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got < 4 || memcmp(magic, "GGUF", 4)) return tok_load_hf(path, out, err, errlen);
    gguf_file *g;
    hkv_status st = gguf_open(path, &g, err, errlen);
    if (st) return st;
    char e2[256];
    st = tok_load_gguf(g, out, e2, sizeof e2);
    if (st) snprintf(err, errlen, "%s: %s", path, e2);
    gguf_close(g);
    return st;
}
void hkv_tokenizer_free(hkv_tokenizer *t) { tok_free(t); }
int hkv_tokenizer_n_vocab(const hkv_tokenizer *t) { return tok_n_vocab(t); }
int hkv_tokenizer_encode(const hkv_tokenizer *t, const char *text, int add_bos, int parse_special, int32_t *tokens, int max_tokens) {
    return tok_encode(t, text, add_bos, parse_special, tokens, max_tokens);
}
int hkv_tokenizer_decode(const hkv_tokenizer *t, const int32_t *tokens, int n, char *buf, int buflen) {
    return tok_decode(t, tokens, n, buf, buflen);
}
int hkv_tokenizer_piece(const hkv_tokenizer *t, int32_t token, char *buf, int buflen) { return tok_piece(t, token, buf, buflen); }
const char *hkv_tokenizer_text(const hkv_tokenizer *t, int32_t token) { return tok_text(t, token); }
