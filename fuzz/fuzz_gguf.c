/* Fuzz target: the GGUF reader on arbitrary bytes, then (when it parses) the model loader, the dump, and a
 * short decode + sampling on whatever model loaded. Invariants: every failure is a status with a message,
 * never a crash, an out-of-bounds read (ASan) or undefined behaviour (UBSan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "gguf.h"
#include "heavykv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; return 0; }

/* Reads every metadata value through the typed getters and array accessors. */
static void walk(const gguf_file *g) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        char key[256];
        gguf_str_copy(kv->key, key, sizeof key);
        uint64_t u; int64_t s; float f; int b; gguf_str str;
        (void)gguf_get_u64(g, key, &u); (void)gguf_get_i64(g, key, &s); (void)gguf_get_f32(g, key, &f);
        (void)gguf_get_bool(g, key, &b); (void)gguf_get_str(g, key, &str);
        if (kv->type == GGUF_ARRAY) {
            uint64_t n = kv->arr_n < 64 ? kv->arr_n : 64;
            for (uint64_t k = 0; k < n; k++) {
                double d; int64_t v;
                (void)gguf_arr_f64(kv, k, &d); (void)gguf_arr_i64(kv, k, &v);
                if (kv->arr_str) { char e[64]; gguf_str_copy(kv->arr_str[k], e, sizeof e); }
            }
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        char name[128];
        gguf_str_copy(g->tensors[i].name, name, sizeof name);
        (void)gguf_find_tensor(g, name);
    }
}

/* A small decode on a model that loaded: the forward pass over fuzzed (but validated) shapes and weights. */
static void run_model(hkv_model *m) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    if (mi.weight_bytes > (8u << 20) || mi.n_layer > 8 || mi.n_embd > 1024 || mi.n_vocab > 1 << 16) return;
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = 16;
    cp.n_threads = 1;
    hkv_context *c = NULL;
    char err[256];
    if (hkv_context_new(m, &cp, &c, err, sizeof err) != HKV_OK) return;
    int32_t toks[16];
    int n = hkv_tokenize(m, "Once upon a time", 1, 1, toks, 16);
    if (n <= 0) { toks[0] = 0; n = 1; }
    if (n > 8) n = 8;
    hkv_sampler *s = NULL;
    if (hkv_decode(c, 0, toks, n) == HKV_OK && hkv_sampler_new(NULL, mi.n_vocab, &s, err, sizeof err) == HKV_OK) {
        for (int i = 0; i < 3; i++) {
            int32_t t = hkv_sampler_sample(s, hkv_get_logits(c, 0, -1));
            if (t < 0 || t >= mi.n_vocab) fuzz_fail("sampled token %d of %d", (int)t, mi.n_vocab);
            char piece[64];
            (void)hkv_token_to_piece(m, t, piece, sizeof piece);
            if (hkv_decode(c, 0, &t, 1) != HKV_OK) break;
        }
    }
    hkv_sampler_free(s);
    hkv_context_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512] = "";
    gguf_file *g = NULL;
    hkv_status st = gguf_open_memory(data, size, &g, err, sizeof err);
    if (st != HKV_OK) {
        if (g || !err[0]) fuzz_fail("gguf_open_memory failed without a message");
        return 0;
    }
    walk(g);
    gguf_close(g);
    const char *path = fuzz_tmp("input.gguf");
    if (!fuzz_write(path, data, size)) return 0;
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) { (void)hkv_gguf_dump(path, devnull, 8, err, sizeof err); fclose(devnull); }
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 1;
    hkv_model *m = NULL;
    err[0] = 0;
    st = hkv_model_load(path, &mp, &m, err, sizeof err);
    if (st != HKV_OK && (m || !err[0])) fuzz_fail("model load failed without a message");
    if (m) run_model(m);
    hkv_model_free(m);
    return 0;
}
