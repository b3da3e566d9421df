/* Multiple-choice tasks in the lm-eval-harness style: every choice is scored by the log-likelihood of its
 * continuation after the context, with the cache policy applied while the context is read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "eval.h"

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void item_free(eval_mc_item *it) {
    free(it->context);
    for (int k = 0; k < it->n_choices; k++) free(it->choices[k]);
    free(it->choices);
    memset(it, 0, sizeof *it);
}

void eval_mc_free(eval_mc_task *t) {
    for (int i = 0; i < t->n; i++) item_free(&t->items[i]);
    free(t->items);
    memset(t, 0, sizeof *t);
}

/* The parse in progress: questions so far plus the open lm-eval group (records sharing a doc_id). */
typedef struct mc_parse {
    eval_mc_task *t;
    int cap;
    int open;          /* 1: t->items[t->n - 1] is a group still taking records */
    double doc_id;     /* of the open group */
    int gold_line;     /* line the open group started on (for its error message) */
    char *err;
    size_t errlen;
} mc_parse;

static hkv_status perr(mc_parse *p, int line, const char *msg) {
    snprintf(p->err, p->errlen, "line %d: %s", line, msg);
    return HKV_ERR_FORMAT;
}

static hkv_status oom(mc_parse *p) { snprintf(p->err, p->errlen, "out of memory"); return HKV_ERR_NOMEM; }

static eval_mc_item *new_item(mc_parse *p) {
    if (p->t->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        eval_mc_item *it = realloc(p->t->items, sizeof *it * (size_t)cap);
        if (!it) return NULL;
        p->t->items = it;
        p->cap = cap;
    }
    eval_mc_item *it = &p->t->items[p->t->n++];
    memset(it, 0, sizeof *it);
    it->gold = -1;
    return it;
}

static hkv_status add_choice(mc_parse *p, eval_mc_item *it, const char *s) {
    char **c = realloc(it->choices, sizeof *c * (size_t)(it->n_choices + 1));
    if (!c) return oom(p);
    it->choices = c;
    if (!(c[it->n_choices] = dup_str(s))) return oom(p);
    it->n_choices++;
    return HKV_OK;
}

/* gold must be an integer in [0, n_choices). */
static hkv_status check_item(mc_parse *p, const eval_mc_item *it, int line) {
    char msg[160];
    if (it->n_choices < 1) return perr(p, line, "the question has no choices");
    if (it->gold < 0 || it->gold >= it->n_choices) {
        snprintf(msg, sizeof msg, "gold index %d is out of range for %d choices", it->gold, it->n_choices);
        return perr(p, line, msg);
    }
    for (int k = 0; k < it->n_choices; k++)
        if (!it->choices[k][0]) return perr(p, line, "a choice is an empty string");
    return HKV_OK;
}

static int as_index(const eval_json *v, int *out) {
    if (!v || v->type != EJ_NUM || v->num != floor(v->num) || fabs(v->num) > 1e9) return 0;
    *out = (int)v->num;
    return 1;
}

static const eval_json *str_field(const eval_json *j, const char *a, const char *b) {
    const eval_json *v = eval_json_get(j, a);
    if (!v && b) v = eval_json_get(j, b);
    return v && v->type == EJ_STR ? v : NULL;
}

/* {"context": "...", "choices": ["...", ...], "gold": i} */
static hkv_status simple_record(mc_parse *p, const eval_json *j, int line) {
    const eval_json *ctx = str_field(j, "context", NULL), *ch = eval_json_get(j, "choices");
    int gold;
    if (!ctx) return perr(p, line, "missing string field \"context\"");
    if (!ch || ch->type != EJ_ARR) return perr(p, line, "missing array field \"choices\"");
    if (!as_index(eval_json_get(j, "gold"), &gold))
        return perr(p, line, eval_json_get(j, "gold") ? "\"gold\" must be an integer" : "missing integer field \"gold\"");
    eval_mc_item *it = new_item(p);
    if (!it || !(it->context = dup_str(ctx->str))) return oom(p);
    it->gold = gold;
    for (int k = 0; k < ch->n; k++) {
        if (ch->items[k].type != EJ_STR) return perr(p, line, "\"choices\" must hold strings");
        hkv_status st = add_choice(p, it, ch->items[k].str);
        if (st) return st;
    }
    return check_item(p, it, line);
}

static hkv_status close_group(mc_parse *p) {
    if (!p->open) return HKV_OK;
    p->open = 0;
    return check_item(p, &p->t->items[p->t->n - 1], p->gold_line);
}

/* lm-eval loglikelihood request: one record per (question, choice), grouped by doc_id. */
static hkv_status request_record(mc_parse *p, const eval_json *j, int line) {
    const eval_json *ctx = str_field(j, "context", "prompt"), *cont = str_field(j, "continuation", "target");
    const eval_json *doc = eval_json_get(j, "doc_id");
    int gold = -1, has_gold = as_index(eval_json_get(j, "gold"), &gold);
    if (!ctx) return perr(p, line, "loglikelihood record without a string \"context\" (or \"prompt\")");
    if (!cont) return perr(p, line, "loglikelihood record without a string \"continuation\" (or \"target\")");
    if (!doc || doc->type != EJ_NUM) return perr(p, line, "loglikelihood record without a numeric \"doc_id\"");
    if (eval_json_get(j, "gold") && !has_gold) return perr(p, line, "\"gold\" must be an integer");
    eval_mc_item *it = p->open ? &p->t->items[p->t->n - 1] : NULL;
    if (it && doc->num != p->doc_id) {
        hkv_status st = close_group(p);
        if (st) return st;
        it = NULL;
    }
    if (!it) {
        if (!(it = new_item(p)) || !(it->context = dup_str(ctx->str))) return oom(p);
        p->open = 1;
        p->doc_id = doc->num;
        p->gold_line = line;
    } else if (strcmp(it->context, ctx->str))
        return perr(p, line, "records of one doc_id must share the same context");
    if (has_gold) {
        if (it->gold >= 0 && it->gold != gold) return perr(p, line, "records of one doc_id disagree on \"gold\"");
        it->gold = gold;
    }
    return add_choice(p, it, cont->str);
}

static hkv_status parse_line(mc_parse *p, const char *s, int line) {
    eval_json j;
    char jerr[200];
    if (eval_json_parse(s, &j, jerr, sizeof jerr)) return perr(p, line, jerr);
    hkv_status st;
    const eval_json *rt = eval_json_get(&j, "request_type");
    if (j.type != EJ_OBJ) st = perr(p, line, "expected a JSON object");
    else if (rt && rt->type == EJ_STR && !strcmp(rt->str, "loglikelihood")) st = request_record(p, &j, line);
    else if (rt && rt->type == EJ_STR && !strcmp(rt->str, "language-model-inference"))
        st = perr(p, line, "this is an H2O generate_task_data.py request (context and continuation joined in "
                           "\"prompt\", no gold); convert it to {\"context\",\"choices\",\"gold\"}");
    else if (rt) st = perr(p, line, "unsupported \"request_type\" (expected \"loglikelihood\")");
    else if ((st = close_group(p)) == HKV_OK) st = simple_record(p, &j, line);
    eval_json_free(&j);
    return st;
}

hkv_status eval_mc_parse(const char *text, eval_mc_task *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    mc_parse p = {.t = out, .err = err, .errlen = errlen};
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    if (!buf) return oom(&p);
    memcpy(buf, text, len + 1);
    hkv_status st = HKV_OK;
    int line = 0;
    for (char *s = buf, *nl; s && !st; s = nl ? nl + 1 : NULL) {
        line++;
        if ((nl = strchr(s, '\n'))) *nl = 0;
        const char *b = s;
        while (*b == ' ' || *b == '\t' || *b == '\r') b++;
        if (*b) st = parse_line(&p, s, line);
    }
    free(buf);
    if (!st) st = close_group(&p);
    if (!st && out->n == 0) { snprintf(err, errlen, "no questions found (the file is empty)"); st = HKV_ERR_FORMAT; }
    if (st) eval_mc_free(out);
    return st;
}

/* ---------------------------------------------------------------- scoring */

/* Tokens of one question: the context, then each continuation as the tokens that tokenizing
 * context + continuation adds after the context's tokens (how lm-eval splits them). */
typedef struct mc_toks {
    int32_t *ctx; int n_ctx;
    int32_t **cont; int *n_cont; int n_choices;
} mc_toks;

static void toks_free(mc_toks *t) {
    free(t->ctx);
    for (int k = 0; t->cont && k < t->n_choices; k++) free(t->cont[k]);
    free(t->cont);
    free(t->n_cont);
    memset(t, 0, sizeof *t);
}

static int32_t *tokenize(const hkv_model *m, const char *s, int add_bos, int *n) {
    int cap = (int)strlen(s) + 8;
    int32_t *t = malloc(sizeof *t * (size_t)cap);
    *n = t ? hkv_tokenize(m, s, add_bos, 0, t, cap) : -1;
    return t;
}

static hkv_status item_toks(const hkv_model *m, int add_bos, const eval_mc_item *it, int q, mc_toks *t, char *err,
                            size_t errlen) {
    memset(t, 0, sizeof *t);
    t->ctx = tokenize(m, it->context, add_bos, &t->n_ctx);
    t->cont = calloc((size_t)it->n_choices, sizeof *t->cont);
    t->n_cont = calloc((size_t)it->n_choices, sizeof *t->n_cont);
    t->n_choices = it->n_choices;
    if (!t->ctx || !t->cont || !t->n_cont || t->n_ctx < 0) goto nomem;
    if (t->n_ctx == 0) {
        snprintf(err, errlen, "question %d: the context is empty and no BOS token is added", q + 1);
        return HKV_ERR_FORMAT;
    }
    for (int k = 0; k < it->n_choices; k++) {
        size_t lc = strlen(it->context), lk = strlen(it->choices[k]);
        char *whole = malloc(lc + lk + 1);
        if (!whole) goto nomem;
        memcpy(whole, it->context, lc);
        memcpy(whole + lc, it->choices[k], lk + 1);
        int n;
        int32_t *w = tokenize(m, whole, add_bos, &n);
        free(whole);
        if (!w || n < 0) { free(w); goto nomem; }
        if (n <= t->n_ctx) {
            free(w);
            snprintf(err, errlen, "question %d: choice %d adds no tokens to the context", q + 1, k);
            return HKV_ERR_FORMAT;
        }
        t->n_cont[k] = n - t->n_ctx;
        memmove(w, w + t->n_ctx, sizeof *w * (size_t)t->n_cont[k]);
        t->cont[k] = w;
    }
    return HKV_OK;
nomem:
    snprintf(err, errlen, "out of memory");
    return HKV_ERR_NOMEM;
}

/* Sum of log p(cont[j] | context, cont[<j]): the context is one prompt decode, then one token per step. */
static hkv_status score_choice(hkv_context *c, int n_vocab, const mc_toks *t, int k, double *ll, char *err,
                               size_t errlen) {
    hkv_seq_reset(c, 0);
    hkv_status st = hkv_decode(c, 0, t->ctx, t->n_ctx);
    double sum = 0;
    for (int j = 0; j < t->n_cont[k] && !st; j++) {
        sum -= eval_nll(hkv_get_logits(c, 0, -1), n_vocab, t->cont[k][j]);
        if (j + 1 < t->n_cont[k]) st = hkv_decode(c, 0, &t->cont[k][j], 1);
    }
    if (st) snprintf(err, errlen, "%s", hkv_last_error(c));
    *ll = sum;
    return st;
}

static hkv_status score_item(const eval_env *env, const eval_mc_item *it, int q, double *ll, double *budget,
                             char *err, size_t errlen) {
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    mc_toks t;
    hkv_status st = item_toks(env->model, eval_add_bos(env), it, q, &t, err, errlen);
    int longest = 0;
    for (int k = 0; !st && k < t.n_choices; k++) longest = t.n_cont[k] > longest ? t.n_cont[k] : longest;
    hkv_context *c = NULL;
    if (!st) {
        hkv_context_params cp = hkv_context_default_params();
        cp.n_ctx = t.n_ctx + longest;
        cp.n_threads = env->n_threads;
        cp.ref_len = t.n_ctx + longest;
        cp.kv = env->kv;
        st = hkv_context_new(env->model, &cp, &c, err, errlen);
    }
    if (!st) *budget = hkv_context_budget(c).total;
    for (int k = 0; !st && k < t.n_choices; k++) st = score_choice(c, mi.n_vocab, &t, k, &ll[k], err, errlen);
    hkv_context_free(c);
    toks_free(&t);
    return st;
}

hkv_status eval_mc(const eval_env *env, const eval_mc_task *t, eval_metrics *out, double *ll_out, char *err,
                   size_t errlen) {
    memset(out, 0, sizeof *out);
    int max_choices = 1;
    for (int q = 0; q < t->n; q++) max_choices = t->items[q].n_choices > max_choices ? t->items[q].n_choices : max_choices;
    double *ll = malloc(sizeof *ll * (size_t)max_choices), budget_sum = 0;
    if (!ll) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    long acc = 0, acc_norm = 0, off = 0;
    hkv_status st = HKV_OK;
    for (int q = 0; q < t->n && !st; q++) {
        const eval_mc_item *it = &t->items[q];
        double budget = 0;
        if ((st = score_item(env, it, q, ll, &budget, err, errlen))) break;
        budget_sum += budget;
        int best = 0, best_norm = 0;
        for (int k = 1; k < it->n_choices; k++) {
            if (ll[k] > ll[best]) best = k;
            if (ll[k] / (double)strlen(it->choices[k]) > ll[best_norm] / (double)strlen(it->choices[best_norm]))
                best_norm = k;
        }
        acc += best == it->gold;
        acc_norm += best_norm == it->gold;
        if (ll_out) memcpy(ll_out + off, ll, sizeof *ll * (size_t)it->n_choices);
        off += it->n_choices;
        if (env->progress) env->progress(env->progress_ud, q + 1, t->n);
    }
    free(ll);
    if (st) return st;
    eval_metrics_add(out, "acc", 100.0 * acc / t->n);
    eval_metrics_add(out, "acc_norm", 100.0 * acc_norm / t->n);
    eval_metrics_add(out, "items", t->n);
    /* standard errors of the accuracies (sample standard deviation of 0/1 outcomes / sqrt(items), lm-eval's) */
    for (int k = 0; k < 2; k++) {
        double p = (k ? acc_norm : acc) / (double)t->n;
        eval_metrics_add(out, k ? "acc_norm_se" : "acc_se", t->n > 1 ? 100.0 * sqrt(p * (1 - p) / (t->n - 1)) : NAN);
    }
    out->budget_tokens = budget_sum / t->n;
    return HKV_OK;
}
