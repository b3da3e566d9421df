/* Passkey retrieval (the "needle in a haystack" test of landmark attention / StreamingLLM): a 5-digit number
 * hidden at a chosen depth of repetitive filler text; can the model still repeat it once the cache has
 * evicted most of the input? */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "eval.h"

static const char *const intro = "There is an important info hidden inside a lot of irrelevant text. Find it and "
                                 "memorize it. I will quiz you about the important info there.\n";
static const char *const filler_unit = "The grass is green. The sky is blue. The sun is yellow. Here we go. There "
                                       "and back again. ";
static const char *const question = "\nWhat is the pass key? The pass key is";

#define GEN_TOKENS 8

char *eval_passkey_text(int key, int depth, int filler) {
    char needle[96];
    snprintf(needle, sizeof needle, "The pass key is %05d. Remember it. %05d is the pass key. ", key, key);
    size_t cap = strlen(intro) + strlen(needle) + strlen(question) + strlen(filler_unit) * (size_t)filler + 1;
    char *s = malloc(cap);
    if (!s) return NULL;
    int at = (int)((long)depth * filler / 100 + ((long)depth * filler % 100 >= 50)); /* rounded */
    strcpy(s, intro);
    size_t n = strlen(s);
    for (int i = 0; i <= filler; i++) {
        if (i == at) { strcpy(s + n, needle); n += strlen(needle); }
        if (i < filler) { strcpy(s + n, filler_unit); n += strlen(filler_unit); }
    }
    strcpy(s + n, question);
    return s;
}

/* Deterministic 5-digit keys: splitmix64 of (seed, cell, trial). */
static int make_key(uint64_t seed, int cell, int trial) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(cell * 1000 + trial + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return 10000 + (int)(z % 90000);
}

/* Tokens of the prompt for (key, depth, filler); NULL on failure. */
static int32_t *prompt_tokens(const hkv_model *m, int add_bos, int key, int depth, int filler, int *n) {
    char *s = eval_passkey_text(key, depth, filler);
    if (!s) return NULL;
    int cap = (int)strlen(s) + 8;
    int32_t *t = malloc(sizeof *t * (size_t)cap);
    *n = t ? hkv_tokenize(m, s, add_bos, 0, t, cap) : -1;
    free(s);
    if (*n < 0) { free(t); return NULL; }
    return t;
}

/* Most filler repetitions whose prompt stays within `length` tokens (-1 if even none fits). */
static int filler_for(const hkv_model *m, int add_bos, int length, int *n_out) {
    int n0 = 0, n1 = 0;
    int32_t *t0 = prompt_tokens(m, add_bos, 12345, 50, 0, &n0), *t1 = prompt_tokens(m, add_bos, 12345, 50, 1, &n1);
    int bad = !t0 || !t1 || n0 > length;
    free(t0);
    free(t1);
    if (bad) return -1;
    int per = n1 - n0 > 0 ? n1 - n0 : 1;
    int f = (length - n0) / per + 1, n = 0;
    for (; f >= 0; f--) { /* the estimate can be a little off where tokens merge across units */
        int32_t *t = prompt_tokens(m, add_bos, 12345, 50, f, &n);
        int fits = t && n <= length;
        free(t);
        if (fits) break;
    }
    *n_out = n;
    return f;
}

/* First run of digits in s equals the 5-digit key. */
static int answer_ok(const char *s, int key) {
    while (*s && !(*s >= '0' && *s <= '9')) s++;
    long v = 0;
    int digits = 0;
    for (; *s >= '0' && *s <= '9' && digits < 9; s++, digits++) v = v * 10 + (*s - '0');
    return digits == 5 && v == key;
}

static hkv_status one_trial(const eval_env *env, const int32_t *toks, int n, int key, int *ok, double *budget,
                            char *err, size_t errlen) {
    hkv_model_info mi;
    hkv_model_get_info(env->model, &mi);
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = n + GEN_TOKENS;
    cp.n_threads = env->n_threads;
    cp.ref_len = n;
    cp.kv = env->kv;
    hkv_context *c;
    hkv_status st = hkv_context_new(env->model, &cp, &c, err, errlen);
    if (st) return st;
    *budget = hkv_context_budget(c).total;
    int32_t gen[GEN_TOKENS];
    int n_gen = 0;
    st = hkv_decode(c, 0, toks, n);
    while (!st && n_gen < GEN_TOKENS) {
        int32_t t = hkv_argmax(hkv_get_logits(c, 0, -1), mi.n_vocab);
        if (hkv_token_is_eog(env->model, t)) break;
        gen[n_gen++] = t;
        if (n_gen < GEN_TOKENS) st = hkv_decode(c, 0, &t, 1);
    }
    if (st) snprintf(err, errlen, "%s", hkv_last_error(c));
    hkv_context_free(c);
    if (st) return st;
    char text[256] = "";
    if (n_gen > 0 && hkv_detokenize(env->model, gen, n_gen, text, sizeof text) < 0) text[0] = 0;
    *ok = answer_ok(text, key);
    return HKV_OK;
}

hkv_status eval_passkey(const eval_env *env, const eval_passkey_opts *o, eval_metrics *out, char *err,
                        size_t errlen) {
    memset(out, 0, sizeof *out);
    if (o->n_lengths < 1 || o->n_depths < 1 || o->trials < 1 ||
        o->n_lengths * o->n_depths > EVAL_PASSKEY_MAX_CELLS) {
        snprintf(err, errlen, "passkey needs 1..%d (length, depth) cells and at least 1 trial", EVAL_PASSKEY_MAX_CELLS);
        return HKV_ERR_ARG;
    }
    long total = (long)o->n_lengths * o->n_depths * o->trials, done = 0, right = 0;
    double budget_sum = 0;
    double cell_acc[EVAL_PASSKEY_MAX_CELLS];
    for (int li = 0; li < o->n_lengths; li++) {
        int n_est, filler = filler_for(env->model, eval_add_bos(env), o->lengths[li], &n_est);
        if (filler < 0) {
            snprintf(err, errlen, "passkey length %d tokens is shorter than the prompt without filler", o->lengths[li]);
            return HKV_ERR_ARG;
        }
        for (int di = 0; di < o->n_depths; di++) {
            int cell = li * o->n_depths + di, ok_cell = 0;
            for (int tr = 0; tr < o->trials; tr++) {
                int key = make_key(o->seed, cell, tr), n, ok = 0;
                double budget = 0;
                int32_t *toks = prompt_tokens(env->model, eval_add_bos(env), key, o->depths[di], filler, &n);
                if (!toks) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
                hkv_status st = one_trial(env, toks, n, key, &ok, &budget, err, errlen);
                free(toks);
                if (st) return st;
                ok_cell += ok;
                budget_sum += budget;
                if (env->progress) env->progress(env->progress_ud, ++done, total);
            }
            right += ok_cell;
            cell_acc[cell] = 100.0 * ok_cell / o->trials;
        }
    }
    eval_metrics_add(out, "acc", 100.0 * right / total);
    for (int li = 0; li < o->n_lengths; li++)
        for (int di = 0; di < o->n_depths; di++) {
            char name[24];
            snprintf(name, sizeof name, "acc_L%d_D%d", o->lengths[li], o->depths[di]);
            eval_metrics_add(out, name, cell_acc[li * o->n_depths + di]);
        }
    out->budget_tokens = budget_sum / total;
    return HKV_OK;
}
