/* batched.c — several sequences decoded together with the multi-token batch API (hkv_decode_tokens).
 *
 *   cc batched.c $(pkg-config --cflags --libs heavykv) -o batched
 *   ./batched MODEL.gguf [N_TOKENS]                  (MODEL defaults to $HEAVYKV_MODEL)
 *
 * Sequence 0 starts decoding at once; every step also feeds the next prompt piece of a waiting sequence, so
 * prompts are prefilled in between decode steps (what a server does). A sequence's result does not depend on
 * what else is in the batch: each has its own KV cache and policy state. Then sequence 0 is forked
 * (hkv_seq_cp) and both copies continue identically. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"

#define N_SEQ 3
#define PIECE 4   /* prompt tokens fed per step */

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : getenv("HEAVYKV_MODEL");
    int n_gen = argc > 2 ? atoi(argv[2]) : 24;
    if (!path) { fprintf(stderr, "usage: batched MODEL.gguf [N_TOKENS]\n"); return 1; }
    const char *prompts[N_SEQ] = {"Once upon a time", "The little dog was very happy because", "Lily and Ben went"};
    char err[512];
    hkv_model *model;
    if (hkv_model_load(path, NULL, &model, err, sizeof err)) { fprintf(stderr, "batched: %s\n", err); return 1; }
    hkv_model_info info;
    hkv_model_get_info(model, &info);
    hkv_context_params cp = hkv_context_default_params();
    cp.n_seq = N_SEQ + 1;                       /* one more for the fork */
    cp.n_ctx = 256;
    cp.kv.prefill_chunk = PIECE;
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "h2o");
    hkv_amount_parse("24", &cp.kv.budget, err, sizeof err);
    hkv_context *ctx;
    if (hkv_context_new(model, &cp, &ctx, err, sizeof err)) { fprintf(stderr, "batched: %s\n", err); return 1; }

    int32_t prompt[N_SEQ][64], out[N_SEQ + 1][256];
    int n_prompt[N_SEQ], fed[N_SEQ] = {0}, n_out[N_SEQ + 1] = {0}, rc = 0;
    for (int s = 0; s < N_SEQ; s++) n_prompt[s] = hkv_tokenize(model, prompts[s], info.add_bos, 0, prompt[s], 64);

    /* one call per step: every sequence whose prompt is in gets its next token, and the first sequence whose
     * prompt is not complete gets its next PIECE prompt tokens */
    int32_t tok[64];
    int seq[64];
    int8_t want[64];
    for (int step = 0; !rc; step++) {
        int n = 0, waiting = -1;
        for (int s = 0; s < N_SEQ; s++) {
            if (fed[s] < n_prompt[s]) { if (waiting < 0) waiting = s; continue; }
            if (n_out[s] >= n_gen) continue;
            tok[n] = out[s][n_out[s] - 1];
            seq[n] = s;
            want[n++] = 1;
        }
        if (waiting >= 0) {
            int k = n_prompt[waiting] - fed[waiting] < PIECE ? n_prompt[waiting] - fed[waiting] : PIECE;
            for (int i = 0; i < k; i++) {
                tok[n] = prompt[waiting][fed[waiting] + i];
                seq[n] = waiting;
                want[n++] = i == k - 1 && fed[waiting] + k == n_prompt[waiting]; /* logits of the prompt's end */
            }
        }
        if (n == 0) break;
        hkv_batch b = {n, tok, seq, want};
        if (hkv_decode_tokens(ctx, &b)) { fprintf(stderr, "batched: %s\n", hkv_last_error(ctx)); rc = 1; break; }
        for (int i = 0; i < n; i++) {
            int s = seq[i];
            if (fed[s] < n_prompt[s]) fed[s]++;
            if (want[i]) out[s][n_out[s]++] = hkv_argmax(hkv_get_logits_ith(ctx, i), info.n_vocab);
        }
    }
    /* fork sequence 0 and continue both copies a few tokens: they must agree */
    if (!rc && hkv_seq_cp(ctx, 0, N_SEQ)) rc = 1;
    int32_t a = out[0][n_out[0] - 1], c = a;
    for (int i = 0; i < 8 && !rc; i++) {
        int seqs[2] = {0, N_SEQ};
        int32_t toks[2] = {a, c};
        if (hkv_decode_batch(ctx, seqs, toks, 2)) { rc = 1; break; }
        a = hkv_argmax(hkv_get_logits(ctx, 0, -1), info.n_vocab);
        c = hkv_argmax(hkv_get_logits(ctx, N_SEQ, -1), info.n_vocab);
        if (a != c) { fprintf(stderr, "batched: the fork diverged\n"); rc = 1; }
    }
    for (int s = 0; s < N_SEQ && !rc; s++) {
        printf("[%d] %s", s, prompts[s]);
        hkv_utf8_stream text = {.strip_space = 0};  /* mid-text: keep each token's leading space */
        char piece[256];
        for (int i = 0; i < n_out[s]; i++)
            if (hkv_utf8_stream_push(&text, model, out[s][i], piece, sizeof piece) > 0) fputs(piece, stdout);
        printf("\n");
    }
    hkv_context_free(ctx);
    hkv_model_free(model);
    return rc;
}
