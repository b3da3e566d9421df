/* Private to the tokenizer sources (tokenizer.c, tokenizer_bpe.c, tokenizer_hf.c): the tokenizer struct and
 * the helpers the loaders and encoders share. */
#ifndef HKV_TOKENIZER_INT_H
#define HKV_TOKENIZER_INT_H
#include <stdint.h>
#include <stddef.h>
#include "tokenizer.h"

/* Open-addressing hash from a byte string to a token id. The keys are not copied: slot i holds a token id
 * and the key is read from the owning arrays (keys[id], lens[id]). */
typedef struct tok_map {
    int32_t *slot;            /* [cap] token id, -1 = empty */
    uint32_t cap;             /* power of two, >= 2 * number of keys */
    char *const *keys;        /* [n_vocab] key bytes per id */
    const int *lens;          /* [n_vocab] key length per id */
} tok_map;

struct hkv_tokenizer {
    tok_kind kind;
    tok_pre pre;
    int n_vocab;
    char **text;              /* [n_vocab] vocab strings as stored (NUL-terminated; SPM uses U+2581 for
                                 spaces, BPE the GPT-2 byte-to-unicode alphabet) */
    int *len;                 /* [n_vocab] byte length of text[i] */
    float *score;             /* [n_vocab] SentencePiece scores (SPM merge priority); 0 for BPE */
    uint8_t *type;            /* [n_vocab] TOKT_* */
    char **raw;               /* [n_vocab] BPE: the bytes the token stands for (NULL for SPM) */
    int *raw_len;             /* [n_vocab] BPE: length of raw[i] */
    tok_map by_text;          /* text -> id */
    tok_map by_raw;           /* BPE: raw bytes -> id of a normal token */
    int n_merges;             /* BPE merges kept, in rank order */
    int32_t *merge_a, *merge_b, *merge_res; /* [n_merges] left id, right id, merged id */
    uint64_t *pair_key;       /* [pair_cap] (a << 32 | b) + 1, 0 = empty */
    int32_t *pair_rank;       /* [pair_cap] rank (index into merge_*) */
    uint32_t pair_cap;
    int32_t byte_tok[256];    /* token for a single byte: SPM <0xNN>, BPE the one-byte token; -1 if none */
    int32_t bos, eos, eot, eom, unk, pad; /* -1 when absent */
    int add_bos, add_eos;
    int add_space_prefix;     /* SPM: prepend U+2581 to a text fragment at the start or after a special */
    int ignore_merges;        /* BPE: a pre-token that is a whole vocab entry is emitted as is (Llama 3) */
    int nfc;                  /* BPE: NFC-normalise text fragments before pre-tokenizing (Qwen2) */
    int n_special;            /* tokens matched literally in the text, longest first */
    int32_t *special;         /* [n_special] ids (CONTROL, UNKNOWN, USER_DEFINED) */
    uint8_t special_first[256]; /* 1 for bytes some special token starts with (fast skip) */
    uint8_t *is_eog;          /* [n_vocab] 1 for end-of-generation tokens */
    char *chat_template;      /* tokenizer.chat_template (Jinja text, NUL-terminated), NULL when absent */
};

/* Limits that keep memory proportional to the input (a 121-byte tokenizer.json naming id 16777215 allocated
 * 1.1 GB): the largest vocabularies in use have ~262k tokens and ~300k merges. */
#define TOK_MAX_VOCAB (1 << 24)
#define TOK_MAX_MERGES (1 << 24)
/* Capacity of an open-addressing table for n keys: the smallest power of two >= 2n (at least 16), or 0 when
 * that is beyond 2^31 (the doubling would wrap a uint32_t). */
uint32_t tok_table_cap(uint64_t n);

/* Allocates a tokenizer with n_vocab empty slots (text NULL, score 0, type NORMAL, ids -1). */
hkv_tokenizer *tok_alloc(int n_vocab);
/* Sets token id's text (copied; len bytes). Returns 0 on allocation failure. */
int tok_set_text(hkv_tokenizer *t, int id, const char *s, int len);
/* Builds the text -> id map once all texts are set. Returns 0 on allocation failure. */
int tok_index(hkv_tokenizer *t);
int32_t tok_find(const hkv_tokenizer *t, const char *s, int len); /* id of a vocab string, -1 if absent */
int32_t tok_find_raw(const hkv_tokenizer *t, const char *s, int len); /* BPE: normal token of these bytes */
/* Appends a BPE merge of vocab strings a + b. Returns 1 if added, 0 if a, b or a+b is not in the vocab,
 * -1 on allocation failure or past TOK_MAX_MERGES (callers check the count first for a precise message). */
int tok_add_merge(hkv_tokenizer *t, const char *a, int alen, const char *b, int blen);
/* Derives everything else (raw bytes, byte tokens, pair map, special list, EOG flags); call last. */
hkv_status tok_finish(hkv_tokenizer *t, char *err, size_t errlen);

/* ---- tokenizer_bpe.c */
/* GPT-2 byte-to-unicode alphabet: the code point standing for byte b. */
uint32_t tok_byte_to_cp(uint8_t b);
/* Inverse: the byte a code point stands for, -1 if it is not in the alphabet. */
int tok_cp_to_byte(uint32_t cp);
/* Decodes the UTF-8 code point at s[i] (n bytes total) into *cp; returns its byte length (1 for an invalid
 * byte, which yields cp = 0xFFFD). */
int tok_utf8_next(const char *s, int n, int i, uint32_t *cp);
/* Byte-level BPE of one text fragment (no special tokens inside): pre-tokenize, merge, append ids.
 * out/cap are the caller's buffer; returns the new count (may exceed cap: only the first cap are written),
 * or -1 on allocation failure. */
int tok_bpe_fragment(const hkv_tokenizer *t, const char *s, int n, int32_t *out, int cap, int count);
#endif
