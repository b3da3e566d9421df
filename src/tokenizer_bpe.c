/* Byte-level BPE: GPT-2 byte alphabet, the pre-tokenizer regexes as hand-written matchers over code points,
 * and rank-ordered merging of each pre-token's bytes. */
#include "alloc.h"
#include "tokenizer_int.h"
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---------------------------------------------------------------- GPT-2 byte alphabet */

/* Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, DEL, NBSP, soft hyphen)
 * are moved, in byte order, to U+0100 onwards. */
static int byte_is_self(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_self(b)) return b;
    uint32_t k = 0;
    for (unsigned x = 0; x < b; x++) k += !byte_is_self(x);
    return 0x100 + k;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_self(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (unsigned x = 0; x < 256; x++)
        if (!byte_is_self(x) && k-- == 0) return (int)x;
    return -1;
}

int tok_utf8_next(const char *s, int n, int i, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s + i;
    int avail = n - i;
    unsigned c = u[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    utf8proc_int32_t v;
    if (len > 0 && len <= avail && utf8proc_iterate(u, len, &v) == len) { *cp = (uint32_t)v; return len; }
    *cp = 0xFFFD;
    return 1;
}

/* ---------------------------------------------------------------- character classes */

static int is_letter(uint32_t c) {   /* \p{L} */
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    int k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static int is_number(uint32_t c) {   /* \p{N} */
    if (c < 0x80) return c >= '0' && c <= '9';
    int k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

static int is_space(uint32_t c) {    /* \s: the Unicode White_Space property */
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

static int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }
static int is_other(uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); } /* [^\s\p{L}\p{N}] */

/* ---------------------------------------------------------------- pre-tokenizers (on code points) */

static uint32_t fold(uint32_t c) {   /* the case folding (?i) needs for the contraction letters */
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';      /* LATIN SMALL LETTER LONG S folds to s */
    return c;
}

/* 's 't 're 've 'm 'll 'd at c[i]; returns the length in code points or 0. */
static int contraction(const uint32_t *c, int n, int i, int icase) {
    if (c[i] != '\'' || i + 1 >= n) return 0;
    uint32_t a = icase ? fold(c[i + 1]) : c[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= n) return 0;
    uint32_t b = icase ? fold(c[i + 2]) : c[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static int run(const uint32_t *c, int n, int i, int (*cls)(uint32_t)) {   /* end of a run of cls from i */
    while (i < n && cls(c[i])) i++;
    return i;
}

/* \s+(?!\S) then \s+ : a whitespace run, minus its last char when a non-space follows (that char then
 * joins the next word as its leading space), unless the run is that single char. */
static int space_run(const uint32_t *c, int n, int i) {
    int e = run(c, n, i, is_space);
    if (e < n && e - i >= 2) return e - 1;
    return e;
}

/* Llama 3 / Qwen2:
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|
 *   \s+(?!\S)|\s+
 * (Qwen2 has \p{N} instead of \p{N}{1,3}). Returns the end of the pre-token starting at i. */
static int pretok_llama3(const uint32_t *c, int n, int i, int max_digits) {
    int k = contraction(c, n, i, 1);
    if (k) return i + k;
    if (is_letter(c[i])) return run(c, n, i + 1, is_letter);
    if (!is_crlf(c[i]) && !is_number(c[i]) && i + 1 < n && is_letter(c[i + 1])) return run(c, n, i + 2, is_letter);
    if (is_number(c[i])) {
        int e = i + 1;
        while (e < n && e - i < max_digits && is_number(c[e])) e++;
        return e;
    }
    int j = c[i] == ' ' ? i + 1 : i;
    if (j < n && is_other(c[j])) return run(c, n, run(c, n, j + 1, is_other), is_crlf);
    if (is_space(c[i])) {
        int e = run(c, n, i, is_space), last = -1;   /* \s*[\r\n]+ ends after the run's last CR/LF */
        for (int p = i; p < e; p++) if (is_crlf(c[p])) last = p;
        if (last >= 0) return last + 1;
        return space_run(c, n, i);
    }
    return i + 1;   /* unreachable: every code point is a letter, number, space or other */
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static int pretok_gpt2(const uint32_t *c, int n, int i) {
    int k = contraction(c, n, i, 0);
    if (k) return i + k;
    int j = c[i] == ' ' && i + 1 < n ? i + 1 : i;
    if (is_letter(c[j])) return run(c, n, j + 1, is_letter);
    if (is_number(c[j])) return run(c, n, j + 1, is_number);
    if (is_other(c[j])) return run(c, n, j + 1, is_other);
    return space_run(c, n, i);
}

static int pretok(tok_pre pre, const uint32_t *c, int n, int i) {
    switch (pre) {
    case TOK_PRE_LLAMA3: return pretok_llama3(c, n, i, 3);
    case TOK_PRE_QWEN2: return pretok_llama3(c, n, i, 1);
    default: return pretok_gpt2(c, n, i);
    }
}

/* ---------------------------------------------------------------- merging */

typedef struct bpe_pair { int rank, left, right; } bpe_pair;   /* candidate merge of adjacent symbols */

static int pair_before(const bpe_pair *a, const bpe_pair *b) {   /* lowest rank first, then leftmost */
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void pq_push(bpe_pair *h, int *n, bpe_pair e) {
    int i = (*n)++;
    while (i > 0 && pair_before(&e, &h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = e;
}

static bpe_pair pq_pop(bpe_pair *h, int *n) {
    bpe_pair top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && pair_before(&h[c + 1], &h[c])) c++;
        if (!pair_before(&h[c], &last)) break;
        h[i] = h[c]; i = c;
    }
    h[i] = last;
    return top;
}

static int pair_lookup(const hkv_tokenizer *t, int32_t a, int32_t b) {   /* rank of merge (a, b), -1 if none */
    if (a < 0 || b < 0 || !t->pair_cap) return -1;
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (t->pair_cap - 1);
    for (; t->pair_key[h]; h = (h + 1) & (t->pair_cap - 1))
        if (t->pair_key[h] == key) return t->pair_rank[h];
    return -1;
}

/* Working arrays for merging one pre-token, sized for the whole fragment once. */
typedef struct bpe_work {
    int32_t *id;     /* [n] symbol token id (-1: a byte with no token), valid while alive */
    int *prev, *next;/* [n] links; next = -1 at the end */
    uint8_t *alive;  /* [n] */
    bpe_pair *heap;  /* [3n] */
    int n_heap;
} bpe_work;

static void try_pair(const hkv_tokenizer *t, bpe_work *w, int l, int r) {
    if (l < 0 || r < 0) return;
    int rank = pair_lookup(t, w->id[l], w->id[r]);
    if (rank >= 0) pq_push(w->heap, &w->n_heap, (bpe_pair){ rank, l, r });
}

static int emit(int32_t *out, int cap, int count, int32_t id) {
    if (count < cap) out[count] = id;
    return count + 1;
}

static int bpe_word(const hkv_tokenizer *t, bpe_work *w, const uint8_t *s, int n, int32_t *out, int cap,
                    int count) {
    if (t->ignore_merges || n == 1) {
        int32_t id = tok_find_raw(t, (const char *)s, n);
        if (id >= 0) return emit(out, cap, count, id);
    }
    for (int i = 0; i < n; i++) {
        w->id[i] = t->byte_tok[s[i]];
        w->prev[i] = i - 1; w->next[i] = i + 1 < n ? i + 1 : -1; w->alive[i] = 1;
    }
    w->n_heap = 0;
    for (int i = 0; i + 1 < n; i++) try_pair(t, w, i, i + 1);
    while (w->n_heap > 0) {
        bpe_pair p = pq_pop(w->heap, &w->n_heap);
        /* stale when either side was merged away or changed since the pair was queued */
        if (!w->alive[p.left] || !w->alive[p.right] || w->next[p.left] != p.right ||
            pair_lookup(t, w->id[p.left], w->id[p.right]) != p.rank) continue;
        w->id[p.left] = t->merge_res[p.rank];
        w->alive[p.right] = 0;
        w->next[p.left] = w->next[p.right];
        if (w->next[p.right] >= 0) w->prev[w->next[p.right]] = p.left;
        try_pair(t, w, w->prev[p.left], p.left);
        try_pair(t, w, p.left, w->next[p.left]);
    }
    for (int i = 0; i >= 0; i = w->next[i]) {
        if (w->id[i] >= 0) count = emit(out, cap, count, w->id[i]);
        else if (t->unk >= 0) count = emit(out, cap, count, t->unk);   /* a byte the vocab lacks */
    }
    return count;
}

int tok_bpe_fragment(const hkv_tokenizer *t, const char *s, int n, int32_t *out, int cap, int count) {
    size_t sz = (size_t)n + 1;
    uint32_t *cps = hkv_malloc(sizeof(uint32_t) * sz);
    int *off = hkv_malloc(sizeof(int) * sz);      /* byte offset of each code point, off[ncp] = n */
    bpe_work w = { hkv_malloc(sizeof(int32_t) * sz), hkv_malloc(sizeof(int) * sz), hkv_malloc(sizeof(int) * sz),
                   hkv_malloc(sz), hkv_malloc(sizeof(bpe_pair) * 3 * sz), 0 };
    if (cps && off && w.id && w.prev && w.next && w.alive && w.heap) {
        int ncp = 0;
        for (int i = 0; i < n; ncp++) { off[ncp] = i; i += tok_utf8_next(s, n, i, &cps[ncp]); }
        off[ncp] = n;
        for (int i = 0; i < ncp;) {
            int e = pretok(t->pre, cps, ncp, i);
            if (e <= i) e = i + 1;
            count = bpe_word(t, &w, (const uint8_t *)s + off[i], off[e] - off[i], out, cap, count);
            i = e;
        }
    } else {
        count = -1;
    }
    hkv_free(cps); hkv_free(off); hkv_free(w.id); hkv_free(w.prev); hkv_free(w.next); hkv_free(w.alive); hkv_free(w.heap);
    return count;
}
