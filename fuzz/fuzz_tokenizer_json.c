/* Fuzz target: tokenizer.json import (and tokenizer_config.json beside it), then encoding and decoding with
 * whatever loaded. Input: the tokenizer.json text, optionally followed by "\n#config#\n" and the
 * tokenizer_config.json text. Invariants: a failure is a status with a message; a loaded tokenizer encodes and
 * decodes any text into ids in [0, n_vocab) without a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fuzz.h"
#include "tokenizer.h"

static const char SEP[] = "\n#config#\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; return 0; }

static void exercise(const hkv_tokenizer *t) {
    static const char *const texts[] = { "Hello world", " a  b\n\tc", "<s>x</s><|im_start|>", "\xff\xfe\xc3",
                                         "\303\274n\303\257c\303\266d\303\251 \344\275\240\345\245\275", "" };
    int nv = tok_n_vocab(t);
    int32_t ids[256];
    char buf[1024];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (int mode = 0; mode < 4; mode++) {
            int n = tok_encode(t, texts[i], mode & 1, mode >> 1, ids, 256);
            int k = n < 256 ? n : 256;
            for (int j = 0; j < k; j++)
                if (ids[j] < 0 || ids[j] >= nv) fuzz_fail("encoded id %d outside [0, %d)", (int)ids[j], nv);
            if (k > 0) (void)tok_decode(t, ids, k, buf, sizeof buf);
        }
    hkv_utf8_stream us;
    memset(&us, 0, sizeof us);
    for (int32_t id = -1; id < nv && id < 96; id++) {
        (void)tok_piece(t, id, buf, sizeof buf);
        (void)tok_text(t, id);
        (void)tok_is_eog(t, id);
        (void)tok_utf8_stream_push(&us, t, id, buf, sizeof buf);
    }
    (void)tok_utf8_stream_flush(&us, buf, sizeof buf);
    (void)tok_chat_template(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char json[512], cfg[512];   /* fuzz_tmp returns a static buffer */
    snprintf(json, sizeof json, "%s", fuzz_tmp("tokenizer.json"));
    snprintf(cfg, sizeof cfg, "%s", fuzz_tmp("tokenizer_config.json"));
    const uint8_t *cut = NULL;
    for (size_t i = 0; i + sizeof SEP - 1 <= size && !cut; i++)
        if (!memcmp(data + i, SEP, sizeof SEP - 1)) cut = data + i;
    size_t n_json = cut ? (size_t)(cut - data) : size;
    unlink(cfg);
    if (cut && !fuzz_write(cfg, cut + sizeof SEP - 1, size - n_json - (sizeof SEP - 1))) return 0;
    if (!fuzz_write(json, data, n_json)) return 0;
    hkv_tokenizer *t = NULL;
    char err[512] = "";
    hkv_status st = tok_load_hf(json, &t, err, sizeof err);
    if (st != HKV_OK) {
        if (t || !err[0]) fuzz_fail("tok_load_hf failed without a message");
        return 0;
    }
    exercise(t);
    tok_free(t);
    return 0;
}
