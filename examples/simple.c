/* simple.c — generate text with a bounded KV cache, using only heavykv.h.
 *
 *   cc simple.c $(pkg-config --cflags --libs heavykv) -o simple
 *   ./simple MODEL.gguf ["PROMPT"] [N_TOKENS]        (MODEL defaults to $HEAVYKV_MODEL)
 *
 * The cache keeps at most 32 tokens per KV head, chosen by H2O (heavy hitters + a recent window). */
#include <stdio.h>
#include <stdlib.h>
#include "heavykv.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : getenv("HEAVYKV_MODEL");
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";
    int n_gen = argc > 3 ? atoi(argv[3]) : 40;
    if (!path) { fprintf(stderr, "usage: simple MODEL.gguf [PROMPT] [N_TOKENS]\n"); return 1; }
    char err[512];

    hkv_model *model;
    if (hkv_model_load(path, NULL, &model, err, sizeof err)) { fprintf(stderr, "simple: %s\n", err); return 1; }
    hkv_model_info info;
    hkv_model_get_info(model, &info);

    /* the policy: H2O with a budget of 32 tokens per KV head */
    hkv_context_params cp = hkv_context_default_params();
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "h2o");
    if (hkv_amount_parse("32", &cp.kv.budget, err, sizeof err)) { fprintf(stderr, "simple: %s\n", err); return 1; }
    hkv_context *ctx;
    if (hkv_context_new(model, &cp, &ctx, err, sizeof err)) {
        fprintf(stderr, "simple: %s\n", err);
        hkv_model_free(model);
        return 1;
    }

    int32_t tokens[1024];
    int n = hkv_tokenize(model, prompt, info.add_bos, 0, tokens, 1024);
    hkv_sampler *sampler = NULL;
    hkv_sampler_params sp = hkv_sampler_default_params();
    sp.temp = 0; /* greedy: the output is reproducible */
    int rc = n <= 0 || hkv_sampler_new(&sp, info.n_vocab, &sampler, err, sizeof err);
    if (!rc && hkv_decode(ctx, 0, tokens, n)) rc = 1; /* the prompt */
    hkv_utf8_stream text = {.strip_space = 1};
    char piece[256];
    printf("%s", prompt);
    for (int i = 0; i < n_gen && !rc; i++) {
        int32_t tok = hkv_sampler_sample(sampler, hkv_get_logits(ctx, 0, -1));
        if (hkv_token_is_eog(model, tok)) break;
        if (hkv_utf8_stream_push(&text, model, tok, piece, sizeof piece) > 0) fputs(piece, stdout);
        if (hkv_decode(ctx, 0, &tok, 1)) rc = 1;   /* also fails at the end of the context */
    }
    printf("\n");
    if (rc) fprintf(stderr, "simple: %s\n", n <= 0 ? "cannot tokenize the prompt" : hkv_last_error(ctx));

    hkv_kv_stats st;
    hkv_get_kv_stats(ctx, &st);
    fprintf(stderr, "simple: %d positions, cache holds at most %d tokens per head, %llu evictions\n",
            hkv_n_past(ctx, 0), st.occupancy_max, (unsigned long long)st.evictions);
    hkv_sampler_free(sampler);
    hkv_context_free(ctx);   /* contexts before their model */
    hkv_model_free(model);
    return rc;
}
