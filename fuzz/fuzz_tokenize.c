/* Fuzz target: encoding and decoding arbitrary bytes with three real tokenizers: SentencePiece-style
 * (stories260K GGUF), byte-level BPE with the Llama 3 split (llama3 tokenizer.json) and with NFC + the Qwen2
 * split (qwen3 tokenizer.json). Input: [selector][text bytes...]; the selector picks the tokenizer (mod 3),
 * add_bos (bit 2), parse_special (bit 3) and a small output buffer (bit 4). The same bytes are also read as
 * token ids (any int32, valid or not) for decoding, pieces and the UTF-8 stream. Invariants: ids in range,
 * a short buffer gets minus the count needed (and that count then fits), no crash, no out-of-bounds access. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "gguf.h"
#include "tokenizer.h"

static hkv_tokenizer *toks[3];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    char err[512];
    gguf_file *g = NULL;
    if (gguf_open(fuzz_shared("models/stories260K.gguf"), &g, err, sizeof err) != HKV_OK ||
        tok_load_gguf(g, &toks[0], err, sizeof err) != HKV_OK)
        fuzz_fail("stories260K tokenizer: %s", err);
    gguf_close(g);
    if (tok_load_hf(fuzz_shared("tokenizers/llama3/tokenizer.json"), &toks[1], err, sizeof err) != HKV_OK)
        fuzz_fail("llama3 tokenizer: %s", err);
    if (tok_load_hf(fuzz_shared("tokenizers/qwen3/tokenizer.json"), &toks[2], err, sizeof err) != HKV_OK)
        fuzz_fail("qwen3 tokenizer: %s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const hkv_tokenizer *t = toks[data[0] % 3];
    int add_bos = data[0] >> 2 & 1, special = data[0] >> 3 & 1, small = data[0] >> 4 & 1;
    int nv = tok_n_vocab(t);
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;                       /* stops at an embedded NUL, as the C API does */
    int cap = small ? 3 : (int)size * 4 + 16;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) { free(text); return 0; }
    int n = tok_encode(t, text, add_bos, special, ids, cap);
    if (n < 0) {                              /* too small: minus the count needed; a full buffer gets them all */
        int need = -n;
        if (need <= cap) fuzz_fail("encode asked for %d ids with room for %d", need, cap);
        int32_t *all = malloc(sizeof(int32_t) * (size_t)need);
        if (all && tok_encode(t, text, add_bos, special, all, need) != need) fuzz_fail("encode count changed");
        free(all);
        n = 0;
    }
    int k = n;
    for (int i = 0; i < k; i++)
        if (ids[i] < 0 || ids[i] >= nv) fuzz_fail("encoded id %d outside [0, %d)", (int)ids[i], nv);
    size_t outcap = size * 8 + 64;
    char *out = malloc(outcap);
    if (out) {
        (void)tok_decode(t, ids, k, out, (int)outcap);
        (void)tok_decode(t, ids, k, out, 2);  /* truncated output */
        /* the input as raw ids: out-of-range and negative ones included */
        int m = (int)((size - 1) / 4);
        int32_t *raw = m ? malloc(sizeof(int32_t) * (size_t)m) : NULL;
        if (raw) {
            memcpy(raw, data + 1, sizeof(int32_t) * (size_t)m);
            (void)tok_decode(t, raw, m, out, (int)outcap);
            hkv_utf8_stream us;
            memset(&us, 0, sizeof us);
            us.strip_space = add_bos;
            char piece[64];
            for (int i = 0; i < m; i++) {
                (void)tok_piece(t, raw[i], piece, sizeof piece);
                (void)tok_utf8_stream_push(&us, t, raw[i], piece, small ? 2 : (int)sizeof piece);
            }
            (void)tok_utf8_stream_flush(&us, piece, sizeof piece);
            free(raw);
        }
        free(out);
    }
    free(ids);
    free(text);
    return 0;
}
