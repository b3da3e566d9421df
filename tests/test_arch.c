/* Architectures: for llama (plain, Llama 3 RoPE scaling as a tensor and as keys), qwen2 (Q/K/V biases) and
 * qwen3 (per-head Q/K RMSNorm, head_dim != n_embd/n_head), a tiny synthetic model is written with synth_write,
 * reloaded with hkv_model_load and run through hkv_decode; its logits must match a straightforward F32
 * reference forward pass written here from the same (dequantized) weights, for F32, Q8_0 and Q4_K_M files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "heavykv.h"
#include "refmodel.h"
#include "synth.h"
#include "tensor.h"
#include "testutil.h"

/* ---------------------------------------------------------------- the comparison */

#define N_TOK 16

/* Writes the model, compares engine vs reference logits at every position; returns the relative error
 * (max |diff| / max |ref|) or -1 on a setup failure. */
static double compare(const synth_params *sp, const char *file) {
    char err[512];
    const char *path = tu_tmp(file);
    hkv_status st = synth_write(sp, path, NULL, err, sizeof err);
    CHECKF(st == HKV_OK, "synth_write %s: %s", file, err);
    if (st) return -1;
    gguf_file *g;
    st = gguf_open(path, &g, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st) return -1;
    ref_model r;
    int ok = ref_load(g, &r);
    CHECK(ok);
    hkv_model *m;
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 2;
    st = hkv_model_load(path, &mp, &m, err, sizeof err);
    CHECKF(st == HKV_OK, "load %s: %s", file, err);
    double rel = -1;
    if (ok && !st) {
        hkv_context_params cp = hkv_context_default_params();
        cp.logits_all = 1;
        cp.n_ctx = 64;
        cp.kv.type = HKV_KV_F32;
        hkv_context *c;
        st = hkv_context_new(m, &cp, &c, err, sizeof err);
        CHECKF(st == HKV_OK, "%s", err);
        int32_t tok[N_TOK];
        for (int i = 0; i < N_TOK; i++) tok[i] = (int32_t)((i * 37 + 5) % r.n_vocab);
        float *want = malloc(sizeof(float) * N_TOK * (size_t)r.n_vocab);
        ref_forward(&r, tok, N_TOK, want);
        /* prompt of 8 in one call, then 4 single-token steps: both paths are compared */
        st = st ? st : hkv_decode(c, 0, tok, 8);
        double max_diff = 0, max_ref = 0;
        int non_finite = 0;
        for (int i = 0; i < N_TOK && !st; i++) {
            if (i >= 8) st = hkv_decode(c, 0, tok + i, 1);
            const float *got = st ? NULL : hkv_get_logits(c, 0, i >= 8 ? 0 : i);
            CHECKF(got != NULL, "%s: no logits for position %d (%s)", file, i, hkv_last_error(c));
            if (!got) break;
            for (int v = 0; v < r.n_vocab; v++) {
                double w = want[(size_t)i * r.n_vocab + v], d = fabs(got[v] - w);
                non_finite += !isfinite(got[v]);
                if (d > max_diff) max_diff = d;
                if (fabs(w) > max_ref) max_ref = fabs(w);
            }
        }
        CHECKF(non_finite == 0, "%s: %d logits are not finite", file, non_finite);
        /* non-degenerate: the reference logits spread over a useful range */
        CHECKF(max_ref > 1.0 && max_ref < 100.0, "%s: reference logits have max |logit| %g", file, max_ref);
        rel = max_ref > 0 ? max_diff / max_ref : 1;
        free(want);
        hkv_context_free(c);
        hkv_model_free(m);
    }
    ref_free(&r);
    gguf_close(g);
    remove(path);
    return rel;
}

static void check_arch(const char *label, synth_params sp) {
    static const quant_ftype types[] = {QFT_F32, QFT_Q8_0, QFT_Q4_K_M};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        sp.ftype = types[i];
        char file[64];
        snprintf(file, sizeof file, "arch_%s_%s.gguf", label, quant_ftype_name(types[i]));
        double rel = compare(&sp, file);
        CHECKF(rel >= 0 && rel < 1e-3, "%s %s: engine vs reference relative error %g", label, quant_ftype_name(types[i]), rel);
        printf("%-14s %-7s max |engine - reference| / max |reference| = %.2e\n", label, quant_ftype_name(types[i]), rel);
    }
}

int main(void) {
    synth_params sp = synth_default_params();
    sp.preset = "tiny";
    sp.tokenizer = tu_model(); /* stories260K's 512-token vocabulary keeps the models small */
    sp.seed = 7;
    sp.n_threads = 2;

    sp.arch = "llama";
    check_arch("llama", sp);
    sp.rope_scaling = SYNTH_ROPE_TENSOR;   /* rope_freqs.weight, as converted Llama 3.x files have */
    check_arch("llama3-tensor", sp);
    sp.rope_scaling = SYNTH_ROPE_KEYS;     /* llama.rope.scaling.* keys only */
    check_arch("llama3-keys", sp);
    sp.rope_scaling = SYNTH_ROPE_PRESET;

    sp.arch = "qwen2";
    check_arch("qwen2", sp);
    sp.arch = "qwen3";
    sp.head_dim = 96;                      /* like Qwen3: n_head * head_dim != n_embd */
    check_arch("qwen3", sp);

    /* the reference must notice what it checks: the llama3 divisors change the logits */
    synth_params a = synth_default_params(), b;
    a.preset = "tiny"; a.tokenizer = tu_model(); a.arch = "llama"; a.n_threads = 2;
    b = a;
    b.rope_scaling = SYNTH_ROPE_TENSOR;
    char err[512];
    const char *pa = tu_tmp("arch_plain.gguf"), *pb = tu_tmp("arch_l3.gguf");
    CHECK(synth_write(&a, pa, NULL, err, sizeof err) == HKV_OK);
    CHECK(synth_write(&b, pb, NULL, err, sizeof err) == HKV_OK);
    gguf_file *ga = NULL, *gb = NULL;
    CHECK(gguf_open(pa, &ga, err, sizeof err) == HKV_OK);
    CHECK(gguf_open(pb, &gb, err, sizeof err) == HKV_OK);
    if (ga && gb) {
        ref_model ra, rb;
        CHECK(ref_load(ga, &ra) && ref_load(gb, &rb));
        int32_t tok[N_TOK];
        for (int i = 0; i < N_TOK; i++) tok[i] = (int32_t)((i * 37 + 5) % ra.n_vocab);
        float *la = malloc(sizeof(float) * N_TOK * (size_t)ra.n_vocab), *lb = malloc(sizeof(float) * N_TOK * (size_t)ra.n_vocab);
        ref_forward(&ra, tok, N_TOK, la);
        ref_forward(&rb, tok, N_TOK, lb);
        double d = 0, mx = 0;
        for (size_t i = 0; i < N_TOK * (size_t)ra.n_vocab; i++) d = fmax(d, fabs(la[i] - lb[i])), mx = fmax(mx, fabs(la[i]));
        CHECKF(d / mx > 2e-3, "llama3 rope scaling changes logits by only %g of their range", d / mx);
        free(la); free(lb);
        ref_free(&ra); ref_free(&rb);
    }
    if (ga) gguf_close(ga);
    if (gb) gguf_close(gb);
    remove(pa);
    remove(pb);
    return tu_done("test_arch");
}
