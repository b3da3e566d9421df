/* The integer path's promise at the level of whole generations: greedy decoding of quantized models gives
 * the same logits, bit for bit, with 1 or 2 threads and for a sequence decoded alone or in a batch of 4
 * (sequences with different prompts), with the full cache and with H2O eviction. A kernel that depended on
 * the thread split or on how many tokens a matmul call carries would break this. */
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"
#include "synth.h"
#include "testutil.h"

#define N_GEN 12
#define N_SEQ 4

/* Greedy generation of N_GEN tokens for N_SEQ prompts, decoded together (batch = 1) or one at a time;
 * every step's logits of every sequence go to logits[seq][step][n_vocab]. Returns 0 on success. */
static int generate(hkv_model *m, int n_threads, int batched, const char *policy, float *logits, int32_t *toks) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = 64;
    cp.n_seq = N_SEQ;
    cp.n_threads = n_threads;
    cp.ref_len = 20;
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "%s", policy);
    hkv_amount_parse("10", &cp.kv.budget, NULL, 0);
    hkv_context *c;
    char err[256];
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    int seqs[N_SEQ], rc = 0;
    int32_t cur[N_SEQ];
    size_t V = (size_t)mi.n_vocab;
    for (int s = 0; s < N_SEQ && !rc; s++) {
        int32_t prompt[20];
        for (int i = 0; i < 20; i++) prompt[i] = (int32_t)((i * 31 + s * 97 + 3) % mi.n_vocab);
        rc = hkv_decode(c, s, prompt, 20);
        seqs[s] = s;
        if (!rc) cur[s] = hkv_argmax(hkv_get_logits(c, s, -1), mi.n_vocab);
    }
    for (int step = 0; step < N_GEN && !rc; step++) {
        if (batched) rc = hkv_decode_batch(c, seqs, cur, N_SEQ);
        for (int s = 0; s < N_SEQ && !rc; s++) {
            if (!batched) rc = hkv_decode(c, s, &cur[s], 1);
            const float *l = rc ? NULL : hkv_get_logits(c, s, -1);
            if (!l) { rc = 1; break; }
            memcpy(logits + ((size_t)s * N_GEN + step) * V, l, V * sizeof(float));
            toks[s * N_GEN + step] = cur[s] = hkv_argmax(l, mi.n_vocab);
        }
    }
    if (rc) fprintf(stderr, "generate: %s\n", hkv_last_error(c));
    hkv_context_free(c);
    return rc;
}

static void check_model(quant_ftype ft) {
    synth_params sp = synth_default_params();
    sp.preset = "tiny";
    sp.tokenizer = tu_model();
    sp.seed = 11;
    sp.n_threads = 2;
    sp.ftype = ft;
    char err[512], file[64];
    snprintf(file, sizeof file, "det_%s.gguf", quant_ftype_name(ft));
    const char *path = tu_tmp(file);
    CHECKF(synth_write(&sp, path, NULL, err, sizeof err) == HKV_OK, "%s", err);
    hkv_model *m;
    hkv_model_params mp = hkv_model_default_params();
    if (hkv_model_load(path, &mp, &m, err, sizeof err)) { CHECKF(0, "%s", err); return; }
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    size_t n = (size_t)N_SEQ * N_GEN * mi.n_vocab;
    const char *policies[] = {"full", "h2o"};
    for (int p = 0; p < 2; p++) {
        float *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
        int32_t tref[N_SEQ * N_GEN], tgot[N_SEQ * N_GEN];
        CHECK(generate(m, 1, 0, policies[p], ref, tref) == 0); /* 1 thread, one sequence at a time */
        const int variants[][2] = {{2, 0}, {1, 1}, {2, 1}};   /* (threads, batched) */
        for (int v = 0; v < 3; v++) {
            CHECK(generate(m, variants[v][0], variants[v][1], policies[p], got, tgot) == 0);
            CHECKF(memcmp(tref, tgot, sizeof tref) == 0, "%s %s: greedy tokens differ with %d threads, batch %d",
                   quant_ftype_name(ft), policies[p], variants[v][0], variants[v][1] ? N_SEQ : 1);
            CHECKF(memcmp(ref, got, n * sizeof(float)) == 0, "%s %s: logits differ with %d threads, batch %d",
                   quant_ftype_name(ft), policies[p], variants[v][0], variants[v][1] ? N_SEQ : 1);
        }
        /* the prompts differ, so the sequences must not all produce one token stream */
        CHECK(memcmp(tref, tref + N_GEN, N_GEN * sizeof(int32_t)) != 0 || memcmp(tref, tref + 2 * N_GEN, N_GEN * sizeof(int32_t)) != 0);
        free(ref);
        free(got);
    }
    hkv_model_free(m);
    remove(path);
}

int main(void) {
    check_model(QFT_Q8_0);
    check_model(QFT_Q4_K_M);
    return tu_done("test_determinism");
}
