/* Fidelity against the full cache: how far a policy's next-token distributions and greedy outputs drift from
 * what the same model produces with every token kept. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "eval.h"

/* Log-sum-exp in double, so both distributions are normalized the same way. */
static double lse(const float *x, int n) {
    double mx = x[0], s = 0;
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

double eval_kl(const float *lp, const float *lq, int n_vocab) {
    double zp = lse(lp, n_vocab), zq = lse(lq, n_vocab), kl = 0;
    for (int i = 0; i < n_vocab; i++) {
        double a = (double)lp[i] - zp, b = (double)lq[i] - zq;
        kl += exp(a) * (a - b);
    }
    return kl > 0 ? kl : 0; /* rounding can leave -1e-17 for near-identical distributions */
}

/* ---------------------------------------------------------------- prompts */

void eval_prompts_free(eval_prompts *p) {
    for (int i = 0; i < p->n; i++) free(p->toks[i]);
    free(p->toks);
    free(p->len);
    memset(p, 0, sizeof *p);
}

static hkv_status add_prompt(eval_prompts *p, const hkv_model *m, const char *text, int add_bos, int line, char *err,
                             size_t errlen) {
    int cap = (int)strlen(text) + 8;
    int32_t *t = malloc(sizeof *t * (size_t)cap);
    int32_t **nt = realloc(p->toks, sizeof *nt * (size_t)(p->n + 1));
    if (nt) p->toks = nt;
    int *nl = realloc(p->len, sizeof *nl * (size_t)(p->n + 1));
    if (nl) p->len = nl;
    if (!t || !nt || !nl) { free(t); snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    int n = hkv_tokenize(m, text, add_bos, 0, t, cap);
    if (n <= 0) {
        free(t);
        snprintf(err, errlen, "line %d: the prompt is empty after tokenization", line);
        return HKV_ERR_FORMAT;
    }
    p->toks[p->n] = t;
    p->len[p->n++] = n;
    return HKV_OK;
}

hkv_status eval_prompts_parse(const hkv_model *m, const char *text, int add_bos, eval_prompts *out, char *err,
                              size_t errlen) {
    memset(out, 0, sizeof *out);
    hkv_status st = HKV_OK;
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    if (!buf) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    memcpy(buf, text, len + 1);
    int line = 0;
    for (char *s = buf, *nl; s && !st; s = nl ? nl + 1 : NULL) {
        line++;
        if ((nl = strchr(s, '\n'))) *nl = 0;
        size_t l = strlen(s);
        if (l && s[l - 1] == '\r') s[--l] = 0;
        char *b = s;
        while (*b == ' ' || *b == '\t') b++;
        if (!*b) continue;
        if (*b != '{') { st = add_prompt(out, m, s, add_bos, line, err, errlen); continue; }
        eval_json j;
        char jerr[200];
        if (eval_json_parse(b, &j, jerr, sizeof jerr)) {
            snprintf(err, errlen, "line %d: %s", line, jerr);
            st = HKV_ERR_FORMAT;
            continue;
        }
        const eval_json *p = eval_json_get(&j, "prompt");
        if (!p || p->type != EJ_STR) {
            snprintf(err, errlen, "line %d: a JSON prompt line needs a string field \"prompt\"", line);
            st = HKV_ERR_FORMAT;
        } else st = add_prompt(out, m, p->str, add_bos, line, err, errlen);
        eval_json_free(&j);
    }
    free(buf);
    if (!st && out->n == 0) { snprintf(err, errlen, "no prompts found (the file is empty)"); st = HKV_ERR_FORMAT; }
    if (st) eval_prompts_free(out);
    return st;
}

hkv_status eval_prompts_self(hkv_model *m, int k, int len, uint64_t seed, int n_threads, eval_prompts *out,
                             char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    if (k < 1 || len < 2 || mi.bos < 0) {
        snprintf(err, errlen, mi.bos < 0 ? "self-prompts need a model with a BOS token"
                                         : "self-prompts need K >= 1 prompts of at least 2 tokens");
        return HKV_ERR_ARG;
    }
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = len;
    cp.n_threads = n_threads;
    hkv_context *c;
    hkv_status st = hkv_context_new(m, &cp, &c, err, errlen);
    if (st) return st;
    out->toks = calloc((size_t)k, sizeof *out->toks);
    out->len = calloc((size_t)k, sizeof *out->len);
    if (!out->toks || !out->len) { st = HKV_ERR_NOMEM; snprintf(err, errlen, "out of memory"); }
    for (int p = 0; p < k && !st; p++) {
        hkv_sampler_params sp = hkv_sampler_default_params();
        sp.temp = 1.0f; sp.top_k = 40; sp.top_p = 1.0f; sp.min_p = 0.0f; sp.repeat_penalty = 1.0f;
        sp.seed = seed + (uint64_t)p;
        hkv_sampler *s;
        if ((st = hkv_sampler_new(&sp, mi.n_vocab, &s, err, errlen))) break;
        int32_t *t = malloc(sizeof *t * (size_t)len);
        if (!t) { hkv_sampler_free(s); st = HKV_ERR_NOMEM; snprintf(err, errlen, "out of memory"); break; }
        out->toks[out->n] = t;
        out->len[out->n++] = len;
        hkv_seq_reset(c, 0);
        t[0] = mi.bos;
        for (int i = 1; i < len && !st; i++) {
            if ((st = hkv_decode(c, 0, t + i - 1, 1))) { snprintf(err, errlen, "%s", hkv_last_error(c)); break; }
            t[i] = hkv_sampler_sample(s, hkv_get_logits(c, 0, -1));
        }
        hkv_sampler_free(s);
    }
    hkv_context_free(c);
    if (st) eval_prompts_free(out);
    return st;
}

/* ---------------------------------------------------------------- fidelity */

typedef struct fid_sums {
    double agree, agree_pre, top1, kl_sum, kl_max, budget;
    double agree2, agree_pre2, top12, kl_sum2;   /* sums of squares, for the standard errors */
    long kl_n;
} fid_sums;

/* Standard error of a mean from n samples' sum and sum of squares (sample standard deviation / sqrt(n));
 * NAN for a single sample. */
static double std_err(double sum, double sum2, double n) {
    if (n < 2) return NAN;
    double mean = sum / n, var = (sum2 - n * mean * mean) / (n - 1);
    return var > 0 ? sqrt(var / n) : 0;
}

/* The scratch of one prompt: the full cache's greedy tokens and its logits at each of them. */
typedef struct fid_ref {
    int32_t *tok;   /* [n_gen] */
    float *logits;  /* [n_gen][n_vocab] */
} fid_ref;

static hkv_status ctx_for(const eval_env *env, const hkv_kv_config *kv, int n_ctx, int ref_len, hkv_context **c,
                          char *err, size_t errlen) {
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = env->n_threads;
    cp.ref_len = ref_len;
    cp.kv = *kv;
    return hkv_context_new(env->model, &cp, c, err, errlen);
}

static hkv_status step_err(hkv_context *c, char *err, size_t errlen, hkv_status st) {
    snprintf(err, errlen, "%s", hkv_last_error(c));
    return st;
}

/* Decodes the prompt, then n_gen steps. ref == NULL: the full-cache pass (greedy, records tokens and
 * logits into r). Otherwise the policy is teacher-forced with r->tok and compared with r->logits. */
static hkv_status fid_pass(hkv_context *c, int nv, const int32_t *prompt, int n_prompt, int n_gen, fid_ref *r,
                           int forced, fid_sums *s, char *err, size_t errlen) {
    hkv_status st = hkv_decode(c, 0, prompt, n_prompt);
    long top1 = 0;
    for (int i = 0; i < n_gen && !st; i++) {
        const float *l = hkv_get_logits(c, 0, -1);
        float *lf = r->logits + (size_t)i * nv;
        if (!forced) {
            memcpy(lf, l, sizeof *lf * (size_t)nv);
            r->tok[i] = hkv_argmax(l, nv);
        } else {
            top1 += hkv_argmax(l, nv) == r->tok[i];
            double kl = eval_kl(lf, l, nv);
            s->kl_sum += kl;
            s->kl_sum2 += kl * kl;
            s->kl_max = kl > s->kl_max ? kl : s->kl_max;
            s->kl_n++;
        }
        if (i + 1 < n_gen) st = hkv_decode(c, 0, r->tok + i, 1);
    }
    if (st) return step_err(c, err, errlen, st);
    if (forced) {
        double v = 100.0 * top1 / n_gen;
        s->top1 += v;
        s->top12 += v * v;
    }
    return HKV_OK;
}

/* The policy generates its own greedy continuation; compared token by token with the full cache's. */
static hkv_status fid_free_run(hkv_context *c, int nv, const int32_t *prompt, int n_prompt, int n_gen,
                               const fid_ref *r, fid_sums *s, char *err, size_t errlen) {
    hkv_seq_reset(c, 0);
    hkv_status st = hkv_decode(c, 0, prompt, n_prompt);
    long same = 0, prefix = 0;
    for (int i = 0; i < n_gen && !st; i++) {
        int32_t t = hkv_argmax(hkv_get_logits(c, 0, -1), nv);
        same += t == r->tok[i];
        if (prefix == i && t == r->tok[i]) prefix++;
        if (i + 1 < n_gen) st = hkv_decode(c, 0, &t, 1);
    }
    if (st) return step_err(c, err, errlen, st);
    double a = 100.0 * same / n_gen, p = 100.0 * prefix / n_gen;
    s->agree += a;
    s->agree2 += a * a;
    s->agree_pre += p;
    s->agree_pre2 += p * p;
    return HKV_OK;
}

/* One prompt. The full cache runs first and keeps its logits, so only one context (and its worker threads)
 * exists at a time; both contexts are set up identically (same n_ctx and ref_len), so `full` against `full`
 * matches bit for bit. Percentage budgets refer to this prompt's length + n_gen. */
static hkv_status fid_prompt(const eval_env *env, const int32_t *prompt, int n_prompt, int n_gen, int n_ctx,
                             fid_ref *r, fid_sums *s, char *err, size_t errlen) {
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    hkv_kv_config full_kv = env->kv;
    snprintf(full_kv.policy, sizeof full_kv.policy, "full");
    hkv_context *c;
    hkv_status st = ctx_for(env, &full_kv, n_ctx, n_prompt + n_gen, &c, err, errlen);
    if (st) return st;
    st = fid_pass(c, mi.n_vocab, prompt, n_prompt, n_gen, r, 0, s, err, errlen);
    hkv_context_free(c);
    if (st || (st = ctx_for(env, &env->kv, n_ctx, n_prompt + n_gen, &c, err, errlen))) return st;
    s->budget += hkv_context_budget(c).total;
    st = fid_pass(c, mi.n_vocab, prompt, n_prompt, n_gen, r, 1, s, err, errlen);
    if (!st) st = fid_free_run(c, mi.n_vocab, prompt, n_prompt, n_gen, r, s, err, errlen);
    hkv_context_free(c);
    return st;
}

hkv_status eval_fidelity(const eval_env *env, const eval_prompts *pr, int n_gen, eval_metrics *out, char *err,
                         size_t errlen) {
    memset(out, 0, sizeof *out);
    if (n_gen < 1 || pr->n < 1) { snprintf(err, errlen, "fidelity needs at least 1 prompt and 1 generated token"); return HKV_ERR_ARG; }
    int max_len = 0;
    for (int i = 0; i < pr->n; i++) max_len = pr->len[i] > max_len ? pr->len[i] : max_len;
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    fid_ref r = {malloc(sizeof *r.tok * (size_t)n_gen), malloc(sizeof *r.logits * (size_t)n_gen * mi.n_vocab)};
    if (!r.tok || !r.logits) {
        free(r.tok); free(r.logits);
        snprintf(err, errlen, "out of memory for %d x %d reference logits", n_gen, mi.n_vocab);
        return HKV_ERR_NOMEM;
    }
    fid_sums s = {0};
    hkv_status st = HKV_OK;
    for (int p = 0; p < pr->n && !st; p++) {
        st = fid_prompt(env, pr->toks[p], pr->len[p], n_gen, max_len + n_gen, &r, &s, err, errlen);
        if (env->progress) env->progress(env->progress_ud, p + 1, pr->n);
    }
    free(r.tok);
    free(r.logits);
    if (st) return st;
    eval_metrics_add(out, "agree", s.agree / pr->n);
    eval_metrics_add(out, "agree_pre", s.agree_pre / pr->n);
    eval_metrics_add(out, "top1", s.top1 / pr->n);
    eval_metrics_add(out, "kl_mean", s.kl_sum / (double)s.kl_n);
    eval_metrics_add(out, "kl_max", s.kl_max);
    eval_metrics_add(out, "prompts", pr->n);
    /* standard errors: agreement over prompts, KL over every compared position */
    eval_metrics_add(out, "agree_se", std_err(s.agree, s.agree2, pr->n));
    eval_metrics_add(out, "agree_pre_se", std_err(s.agree_pre, s.agree_pre2, pr->n));
    eval_metrics_add(out, "top1_se", std_err(s.top1, s.top12, pr->n));
    eval_metrics_add(out, "kl_mean_se", std_err(s.kl_sum, s.kl_sum2, (double)s.kl_n));
    out->budget_tokens = s.budget / pr->n;
    return HKV_OK;
}
