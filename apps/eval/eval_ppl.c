/* Perplexity under a bounded KV cache: streaming (one token per step, the cache evicting as it goes, as
 * StreamingLLM and H2O evaluate), strided sliding windows (each window a fresh sequence) and llama.cpp's
 * llama-perplexity scoring (so the number can be put next to the one every GGUF user quotes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "eval.h"

double eval_nll(const float *logits, int n_vocab, int32_t target) {
    double mx = logits[0];
    for (int i = 1; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    return -((double)logits[target] - mx - log(sum));
}

/* The context length an eval run uses: the caller's, else the library's default for the model. */
static int default_ctx(const eval_env *env) {
    if (env->n_ctx > 0) return env->n_ctx;
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    return mi.n_ctx_default;
}

static hkv_status new_ctx(const eval_env *env, int n_ctx, int ref_len, int logits_all, hkv_context **c, char *err,
                          size_t errlen) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = env->n_threads;
    cp.logits_all = logits_all;
    cp.ref_len = ref_len;
    cp.kv = env->kv;
    return hkv_context_new(env->model, &cp, c, err, errlen);
}

static hkv_status ctx_fail(hkv_context *c, char *err, size_t errlen, hkv_status st) {
    snprintf(err, errlen, "%s", hkv_last_error(c));
    hkv_context_free(c);
    return st;
}

/* Sums of the per-token negative log-likelihoods and of their squares (for the standard error). */
typedef struct nll_acc { double sum, sum2; long n; } nll_acc;

static void acc_add(nll_acc *a, double v) { a->sum += v; a->sum2 += v * v; a->n++; }

void eval_ppl_metrics(eval_metrics *out, double nll_sum, double nll_sum2, long scored, double budget) {
    memset(out, 0, sizeof *out);
    double nll = nll_sum / (double)scored, var = nll_sum2 / (double)scored - nll * nll;
    /* llama-perplexity's estimate: sqrt of the sample variance over (count - 1) */
    double se = scored > 1 && var > 0 ? sqrt(var / (double)(scored - 1)) : 0;
    eval_metrics_add(out, "ppl", exp(nll));
    eval_metrics_add(out, "nll", nll);
    eval_metrics_add(out, "tokens", (double)scored);
    eval_metrics_add(out, "ppl_se", exp(nll) * se);
    eval_metrics_add(out, "nll_se", se);
    out->budget_tokens = budget;
}

static void finish(eval_metrics *out, const nll_acc *a, double budget) {
    eval_ppl_metrics(out, a->sum, a->sum2, a->n, budget);
}

/* Token t+1 is scored from the logits after feeding token t alone, so every prediction sees exactly what the
 * policy kept. The context length is n so positions never run out. With o->bins, the tokens at positions
 * [P, P + bins) also get their own "ppl@P" (position 0, the first token, is never scored). */
static hkv_status ppl_stream(const eval_env *env, const eval_ppl_opts *o, const int32_t *tokens, int n,
                             eval_metrics *out, char *err, size_t errlen) {
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    int n_bins = o->bins > 0 ? (n - 1) / o->bins + 1 : 0;
    if (n_bins > EVAL_MAX_BINS) {
        snprintf(err, errlen, "%d tokens in bins of %d make %d bins, more than %d (use larger --bins)", n, o->bins,
                 n_bins, EVAL_MAX_BINS);
        return HKV_ERR_ARG;
    }
    double bin_nll[EVAL_MAX_BINS] = {0};
    long bin_n[EVAL_MAX_BINS] = {0};
    hkv_context *c;
    hkv_status st = new_ctx(env, n, n, 0, &c, err, errlen);
    if (st) return st;
    nll_acc a = {0};
    for (int t = 0; t + 1 < n; t++) {
        if ((st = hkv_decode(c, 0, tokens + t, 1))) return ctx_fail(c, err, errlen, st);
        double e = eval_nll(hkv_get_logits(c, 0, -1), mi.n_vocab, tokens[t + 1]);
        acc_add(&a, e);
        if (n_bins) { bin_nll[(t + 1) / o->bins] += e; bin_n[(t + 1) / o->bins]++; }
        if (env->progress) env->progress(env->progress_ud, t + 1, n - 1);
    }
    finish(out, &a, hkv_context_budget(c).total);
    for (int k = 0; k < n_bins; k++) {
        char name[24];
        snprintf(name, sizeof name, "ppl@%d", k * o->bins);
        eval_metrics_add(out, name, bin_n[k] ? exp(bin_nll[k] / (double)bin_n[k]) : NAN);
    }
    hkv_context_free(c);
    return HKV_OK;
}

/* Standard strided evaluation (as in the Hugging Face perplexity guide): windows of `window` tokens start
 * every `stride` tokens; each window is a fresh sequence decoded in one hkv_decode (the policy evicts between
 * kv.prefill_chunk pieces) and scores only the tokens not scored by an earlier window, so every token is
 * scored once with up to window - stride tokens of extra context. */
static hkv_status ppl_chunked(const eval_env *env, const eval_ppl_opts *o, const int32_t *tokens, int n,
                              eval_metrics *out, char *err, size_t errlen) {
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    int n_ctx = default_ctx(env);
    int window = o->window > 0 ? o->window : n_ctx;
    if (window > n) window = n;
    if (window > n_ctx) {
        snprintf(err, errlen, "a window of %d tokens is longer than the context length %d (use streaming mode, "
                 "a smaller --window or a larger -c)", window, n_ctx);
        return HKV_ERR_CONTEXT;
    }
    int stride = o->stride > 0 ? o->stride : (window / 2 > 0 ? window / 2 : 1);
    if (stride > window) {
        snprintf(err, errlen, "the stride (%d) must not exceed the window (%d)", stride, window);
        return HKV_ERR_ARG;
    }
    hkv_context *c;
    hkv_status st = new_ctx(env, n_ctx, window, 1, &c, err, errlen);
    if (st) return st;
    nll_acc a = {0};
    for (int begin = 0, prev_end = 0; prev_end < n; begin += stride) {
        int end = begin + window < n ? begin + window : n;
        hkv_seq_reset(c, 0);
        if ((st = hkv_decode(c, 0, tokens + begin, end - begin))) return ctx_fail(c, err, errlen, st);
        for (int j = prev_end > begin + 1 ? prev_end : begin + 1; j < end; j++)
            acc_add(&a, eval_nll(hkv_get_logits(c, 0, j - 1 - begin), mi.n_vocab, tokens[j]));
        prev_end = end;
        if (env->progress) env->progress(env->progress_ud, a.n, n - 1);
    }
    finish(out, &a, hkv_context_budget(c).total);
    hkv_context_free(c);
    return HKV_OK;
}

/* llama-perplexity (llama.cpp examples/perplexity, perplexity()): disjoint chunks of n_ctx tokens, each a fresh
 * sequence whose first token is overwritten with BOS when the vocabulary adds BOS; the first half of a chunk is
 * context only, the logits at positions n_ctx/2 .. n_ctx-2 score the tokens after them. */
static hkv_status ppl_llama(const eval_env *env, const eval_ppl_opts *o, const int32_t *tokens, int n,
                            eval_metrics *out, char *err, size_t errlen) {
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    int n_ctx = default_ctx(env);
    if (n_ctx < 4 || n < 2 * n_ctx) {
        snprintf(err, errlen, "llama mode needs at least 2 x %d tokens (the -c chunk size) and -c >= 4, the text "
                 "has %d (use a longer text or a smaller -c)", n_ctx, n);
        return HKV_ERR_ARG;
    }
    int n_chunk = n / n_ctx, first = n_ctx / 2;
    if (o->chunks > 0 && o->chunks < n_chunk) n_chunk = o->chunks;
    int bos = env->bos == EVAL_BOS_ADD || (env->bos == EVAL_BOS_MODEL && mi.add_bos);
    int32_t *chunk = malloc(sizeof *chunk * (size_t)n_ctx);
    if (!chunk) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    hkv_context *c;
    hkv_status st = new_ctx(env, n_ctx, n_ctx, 1, &c, err, errlen);
    if (st) { free(chunk); return st; }
    nll_acc a = {0};
    for (int i = 0; i < n_chunk; i++) {
        memcpy(chunk, tokens + (size_t)i * n_ctx, sizeof *chunk * (size_t)n_ctx);
        if (bos && mi.bos >= 0) chunk[0] = mi.bos;
        hkv_seq_reset(c, 0);
        if ((st = hkv_decode(c, 0, chunk, n_ctx))) { free(chunk); return ctx_fail(c, err, errlen, st); }
        for (int k = first; k < n_ctx - 1; k++)
            acc_add(&a, eval_nll(hkv_get_logits(c, 0, k), mi.n_vocab, chunk[k + 1]));
        if (env->progress) env->progress(env->progress_ud, i + 1, n_chunk);
    }
    free(chunk);
    finish(out, &a, hkv_context_budget(c).total);
    hkv_context_free(c);
    return HKV_OK;
}

hkv_status eval_ppl(const eval_env *env, const eval_ppl_opts *o, const int32_t *tokens, int n, eval_metrics *out,
                    char *err, size_t errlen) {
    if (n < 2) {
        snprintf(err, errlen, "perplexity needs at least 2 tokens, the text has %d", n);
        return HKV_ERR_ARG;
    }
    return o->mode == EVAL_PPL_STREAM ? ppl_stream(env, o, tokens, n, out, err, errlen)
         : o->mode == EVAL_PPL_LLAMA  ? ppl_llama(env, o, tokens, n, out, err, errlen)
                                      : ppl_chunked(env, o, tokens, n, out, err, errlen);
}
