/* Perplexity under a bounded KV cache: streaming (one token per step, the cache evicting as it goes, as
 * StreamingLLM and H2O evaluate) and strided sliding windows (each window a fresh sequence). */
#include <math.h>
#include <stdio.h>
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

static void finish(eval_metrics *out, double nll_sum, long scored, double budget) {
    memset(out, 0, sizeof *out);
    double nll = nll_sum / (double)scored;
    eval_metrics_add(out, "ppl", exp(nll));
    eval_metrics_add(out, "nll", nll);
    eval_metrics_add(out, "tokens", (double)scored);
    out->budget_tokens = budget;
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
    double nll = 0;
    for (int t = 0; t + 1 < n; t++) {
        if ((st = hkv_decode(c, 0, tokens + t, 1))) return ctx_fail(c, err, errlen, st);
        double e = eval_nll(hkv_get_logits(c, 0, -1), mi.n_vocab, tokens[t + 1]);
        nll += e;
        if (n_bins) { bin_nll[(t + 1) / o->bins] += e; bin_n[(t + 1) / o->bins]++; }
        if (env->progress) env->progress(env->progress_ud, t + 1, n - 1);
    }
    finish(out, nll, n - 1, hkv_context_budget(c).total);
    for (int b = 0; b < n_bins; b++) {
        char name[24];
        snprintf(name, sizeof name, "ppl@%d", b * o->bins);
        eval_metrics_add(out, name, bin_n[b] ? exp(bin_nll[b] / (double)bin_n[b]) : NAN);
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
    double nll = 0;
    long scored = 0;
    for (int begin = 0, prev_end = 0; prev_end < n; begin += stride) {
        int end = begin + window < n ? begin + window : n;
        hkv_seq_reset(c, 0);
        if ((st = hkv_decode(c, 0, tokens + begin, end - begin))) return ctx_fail(c, err, errlen, st);
        for (int j = prev_end > begin + 1 ? prev_end : begin + 1; j < end; j++, scored++)
            nll += eval_nll(hkv_get_logits(c, 0, j - 1 - begin), mi.n_vocab, tokens[j]);
        prev_end = end;
        if (env->progress) env->progress(env->progress_ud, scored, n - 1);
    }
    finish(out, nll, scored, hkv_context_budget(c).total);
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
                                      : ppl_chunked(env, o, tokens, n, out, err, errlen);
}
