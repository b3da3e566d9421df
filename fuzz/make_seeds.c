/* Writes the binary seeds of fuzz/corpus/ (the text seeds are written by hand):
 *   gguf/     tiny models built with the project's GGUF writer: llama (SentencePiece vocabulary, output tied
 *             and untied), qwen2 (biases, byte-level vocabulary with merges), qwen3 (q/k norms), F16 weights
 *   sampler/  parameter + logit blobs for the cases of issue 12 defect 1
 * Run from the repository root: build/fuzz/fuzz_make_seeds fuzz/corpus  (deterministic output). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"

static uint64_t rng = 42;
static float rnd(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(rng >> 40) / (float)(1 << 24) - 0.5f) * 0.5f;
}

static void tensor(gguf_writer *w, const char *name, int64_t cols, int64_t rows, int f16, float fill) {
    int64_t ne[2] = { cols, rows };
    size_t n = (size_t)(cols * rows);
    float *v = malloc(sizeof(float) * n);
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    for (size_t i = 0; i < n; i++) v[i] = fill != 0 ? fill : rnd();
    if (f16 && rows > 1) {
        for (size_t i = 0; i < n; i++) {   /* round-to-nearest binary16 of small normal values */
            float x = v[i];
            uint32_t b;
            memcpy(&b, &x, 4);
            uint32_t sign = b >> 16 & 0x8000, exp = b >> 23 & 0xff, man = b & 0x7fffff;
            int e = (int)exp - 127 + 15;
            h[i] = (uint16_t)(e <= 0 ? sign : sign | (uint32_t)e << 10 | man >> 13);
        }
        gguf_w_tensor(w, name, 1, rows > 1 ? 2 : 1, ne, h, n * 2);
    } else {
        gguf_w_tensor(w, name, 0, rows > 1 ? 2 : 1, ne, v, n * 4);
    }
    free(v);
    free(h);
}

/* arch: "llama" (SentencePiece vocab), "qwen2" (biases, byte-level BPE), "qwen3" (q/k norms, byte-level BPE) */
static void model(const char *dir, const char *file, const char *arch, int tied, int f16) {
    enum { E = 8, H = 2, HKV = 1, HD = 4, FF = 8 };
    gguf_writer *w = gguf_writer_new();
    char k[96];
    gguf_w_str(w, "general.architecture", arch);
    gguf_w_str(w, "general.name", file);
#define KEY(s) (snprintf(k, sizeof k, "%s." s, arch), k)
    gguf_w_u32(w, KEY("context_length"), 64);
    gguf_w_u32(w, KEY("embedding_length"), E);
    gguf_w_u32(w, KEY("block_count"), 1);
    gguf_w_u32(w, KEY("feed_forward_length"), FF);
    gguf_w_u32(w, KEY("attention.head_count"), H);
    gguf_w_u32(w, KEY("attention.head_count_kv"), HKV);
    gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    gguf_w_f32(w, KEY("rope.freq_base"), 10000.0f);
    int spm = !strcmp(arch, "llama");
    const char *spm_toks[] = { "<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\342\226\201a", "ab",
                               "<0x0A>", "<0x41>" };
    int32_t spm_types[] = { 2, 3, 3, 1, 1, 1, 1, 1, 6, 6 };
    float spm_scores[] = { 0, 0, 0, -1, -2, -3, -4, -5, 0, 0 };
    const char *bpe_toks[] = { "<|endoftext|>", "a", "b", "\xc4\xa0", "ab", "\304\240a", "c", "\n", "<|im_start|>",
                               "<|im_end|>" };
    int32_t bpe_types[] = { 3, 1, 1, 1, 1, 1, 1, 1, 3, 3 };
    const char *merges[] = { "a b", "\xc4\xa0 a" };
    int nv = 10;
    gguf_w_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) gguf_w_str(w, "tokenizer.ggml.pre", "qwen2");
    gguf_w_arr(w, "tokenizer.ggml.tokens", GGUF_STRING, spm ? spm_toks : bpe_toks, (uint64_t)nv);
    gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_I32, spm ? spm_types : bpe_types, (uint64_t)nv);
    if (spm) gguf_w_arr(w, "tokenizer.ggml.scores", GGUF_F32, spm_scores, (uint64_t)nv);
    else gguf_w_arr(w, "tokenizer.ggml.merges", GGUF_STRING, merges, 2);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", spm ? 1 : 0);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", spm ? 2 : 9);
    tensor(w, "token_embd.weight", E, nv, f16, 0);
    tensor(w, "output_norm.weight", E, 1, 0, 1.0f);
    if (!tied) tensor(w, "output.weight", E, nv, f16, 0);
    tensor(w, "blk.0.attn_norm.weight", E, 1, 0, 1.0f);
    tensor(w, "blk.0.attn_q.weight", E, H * HD, f16, 0);
    tensor(w, "blk.0.attn_k.weight", E, HKV * HD, f16, 0);
    tensor(w, "blk.0.attn_v.weight", E, HKV * HD, f16, 0);
    tensor(w, "blk.0.attn_output.weight", H * HD, E, f16, 0);
    tensor(w, "blk.0.ffn_norm.weight", E, 1, 0, 1.0f);
    tensor(w, "blk.0.ffn_gate.weight", E, FF, f16, 0);
    tensor(w, "blk.0.ffn_up.weight", E, FF, f16, 0);
    tensor(w, "blk.0.ffn_down.weight", FF, E, f16, 0);
    if (!strcmp(arch, "qwen2")) {
        tensor(w, "blk.0.attn_q.bias", H * HD, 1, 0, 0.01f);
        tensor(w, "blk.0.attn_k.bias", HKV * HD, 1, 0, 0.01f);
        tensor(w, "blk.0.attn_v.bias", HKV * HD, 1, 0, 0.01f);
    }
    if (!strcmp(arch, "qwen3")) {
        tensor(w, "blk.0.attn_q_norm.weight", HD, 1, 0, 1.0f);
        tensor(w, "blk.0.attn_k_norm.weight", HD, 1, 0, 1.0f);
    }
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/gguf/%s", dir, file);
    if (gguf_writer_write(w, path, err, sizeof err)) fprintf(stderr, "%s: %s\n", path, err);
    gguf_writer_free(w);
}

/* Layout of fuzz_sampler.c: [mode][temp][top_k][top_p][min_p][penalty][last_n u16][seed u64][n_hist][hist u16...]
 * [logits f32...] */
static void sampler(const char *dir, const char *file, unsigned char mode, float temp, int32_t top_k, float top_p,
                    float min_p, float pen, int n_hist, const float *logits, int n) {
    char path[512];
    snprintf(path, sizeof path, "%s/sampler/%s", dir, file);
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return; }
    uint16_t last_n = 64;
    uint64_t seed = 1;
    unsigned char nh = (unsigned char)n_hist;
    fwrite(&mode, 1, 1, f);
    fwrite(&temp, 4, 1, f); fwrite(&top_k, 4, 1, f); fwrite(&top_p, 4, 1, f); fwrite(&min_p, 4, 1, f);
    fwrite(&pen, 4, 1, f); fwrite(&last_n, 2, 1, f); fwrite(&seed, 8, 1, f); fwrite(&nh, 1, 1, f);
    for (int i = 0; i < n_hist; i++) { uint16_t h = (uint16_t)(i * 3 % n); fwrite(&h, 2, 1, f); }
    fwrite(logits, 4, (size_t)n, f);
    fclose(f);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus";
    model(dir, "llama_tiny.gguf", "llama", 0, 0);
    model(dir, "llama_tied_f16.gguf", "llama", 1, 1);
    model(dir, "qwen2_tiny.gguf", "qwen2", 1, 0);
    model(dir, "qwen3_tiny.gguf", "qwen3", 0, 1);
    float l[16], nan16[16], inf16[16], mix[16];
    for (int i = 0; i < 16; i++) {
        l[i] = (float)(i % 5) - 2.0f;
        nan16[i] = NAN;
        inf16[i] = INFINITY;
        mix[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? INFINITY : -INFINITY;
    }
    sampler(dir, "defaults", 1, 0.8f, 40, 0.95f, 0.05f, 1.0f, 0, l, 16);
    sampler(dir, "tiny_penalty", 1, 0.8f, 40, 0.95f, 0.05f, 1e-45f, 8, l, 16);   /* the reported request */
    sampler(dir, "all_nan", 1, 0.8f, 40, 0.95f, 0.05f, 1.0f, 0, nan16, 16);
    sampler(dir, "all_inf", 1, 0.8f, 0, 1.0f, 0.05f, 1.0f, 0, inf16, 16);
    sampler(dir, "mixed_nonfinite", 1, 1.0f, 0, 0.5f, 1.0f, 1.0f, 4, mix, 16);
    sampler(dir, "raw_params", 0, -0.0f, -7, 2.0f, 1.0f, 100.0f, 2, l, 16);
    sampler(dir, "greedy_huge", 1, 0.0f, 1, 1e-45f, 0.0f, 3.4e38f, 16, l, 16);
    return 0;
}
