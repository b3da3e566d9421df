/* heavykv eval: quality lost to KV eviction. Tools built only on the public API (heavykv.h): perplexity,
 * fidelity against the full cache, multiple-choice log-likelihood scoring, passkey retrieval, and the
 * reports (table, CSV, JSON, SVG) of a sweep over policies x budgets. Nothing here prints: progress goes
 * through a callback and reports are written to FILE*s the caller opened. */
#ifndef HKV_EVAL_H
#define HKV_EVAL_H
#include "heavykv.h"

/* Called after each unit of work (a token, a question, a trial); total is fixed for one run. */
typedef void (*eval_progress_fn)(void *ud, long done, long total);

/* What every evaluation needs besides its data. */
typedef struct eval_env {
    hkv_model *model;
    hkv_kv_config kv;          /* policy and budget of this run (budgets refer to the evaluated length) */
    int n_ctx;                 /* 0: the model's training context (at most 4096) */
    int n_threads;             /* <= 0: the model's setting */
    eval_progress_fn progress; /* may be NULL */
    void *progress_ud;
    int bos;                   /* EVAL_BOS_MODEL (0: the model's add_bos_token), EVAL_BOS_ADD or EVAL_BOS_NONE */
} eval_env;

/* BOS choice of the texts an eval tokenizes; zero (the default of a {0}-initialized env) follows the model. */
enum { EVAL_BOS_MODEL = 0, EVAL_BOS_ADD = 1, EVAL_BOS_NONE = 2 };
/* The hkv_tokenize add_bos argument for env->bos (-1, 1 or 0). */
static inline int eval_add_bos(const eval_env *env) { return env->bos == EVAL_BOS_ADD ? 1 : env->bos == EVAL_BOS_NONE ? 0 : -1; }

/* Results: a few named metrics plus the budget each run actually used. */
#define EVAL_MAX_METRICS 48
typedef struct eval_metrics {
    int n;                               /* metrics filled */
    char names[EVAL_MAX_METRICS][24];    /* e.g. "ppl", "nll", "acc_L256_D50" */
    double values[EVAL_MAX_METRICS];
    double budget_tokens;                /* resolved total budget per KV head (mean over items when it varies) */
} eval_metrics;

void eval_metrics_add(eval_metrics *m, const char *name, double value);
/* The value of a named metric, or NAN. */
double eval_metrics_get(const eval_metrics *m, const char *name);

/* ---------------------------------------------------------------- JSON (one JSONL line at a time) */

typedef enum eval_json_type { EJ_NULL, EJ_BOOL, EJ_NUM, EJ_STR, EJ_ARR, EJ_OBJ } eval_json_type;

typedef struct eval_json {
    eval_json_type type;
    double num;                /* EJ_NUM; EJ_BOOL: 0 or 1 */
    char *str;                 /* EJ_STR: NUL-terminated UTF-8 (\u0000 is rejected) */
    int n;                     /* EJ_ARR, EJ_OBJ: number of children */
    struct eval_json *items;   /* [n] children */
    char **keys;               /* EJ_OBJ: [n] member names */
} eval_json;

/* Parses one complete JSON value (RFC 8259; nesting at most 64 deep); trailing non-space is an error. */
hkv_status eval_json_parse(const char *s, eval_json *out, char *err, size_t errlen);
void eval_json_free(eval_json *v);
/* Member of an object by name (the last one when repeated), or NULL. */
const eval_json *eval_json_get(const eval_json *obj, const char *key);

/* ---------------------------------------------------------------- perplexity */

typedef enum eval_ppl_mode {
    EVAL_PPL_STREAM = 0,  /* one token per hkv_decode through the bounded cache (StreamingLLM / H2O style) */
    EVAL_PPL_CHUNKED,     /* strided sliding windows, each a fresh sequence decoded in one hkv_decode */
    EVAL_PPL_LLAMA,       /* llama-perplexity's scoring: disjoint chunks of n_ctx, second half scored */
} eval_ppl_mode;

typedef struct eval_ppl_opts {
    eval_ppl_mode mode;
    int window;   /* chunked: tokens per window (0: the context length) */
    int stride;   /* chunked: start-to-start distance of windows (0: window / 2) */
    int chunks;   /* llama: score at most this many chunks (llama-perplexity --chunks; 0: all) */
    int bins;     /* stream: also report "ppl@P" for the tokens at positions [P, P + bins) (0: off) */
} eval_ppl_opts;

/* At most this many position bins fit the metrics next to ppl, nll, tokens, ppl_se and nll_se. */
#define EVAL_MAX_BINS (EVAL_MAX_METRICS - 5)

/* Scores tokens[1..n-1], each given everything before it; tokens[0] (usually BOS) is only context.
 * Metrics: ppl, nll (mean negative log-likelihood, nats), tokens (scored), then the standard errors nll_se
 * (sample standard deviation of the per-token NLL / sqrt(tokens - 1), llama-perplexity's estimate) and ppl_se
 * (= ppl * nll_se, the first-order error of exp). Budget percentages refer to n (streaming) or to the window
 * (chunked, llama). Streaming sets the context length to n; chunked fails with HKV_ERR_CONTEXT when a window
 * does not fit the context.
 * Llama mode reproduces llama.cpp's llama-perplexity exactly: the context length env->n_ctx (-c) is the chunk
 * size; chunk i is tokens[i*n_ctx .. (i+1)*n_ctx) (a partial last chunk is dropped) decoded as a fresh sequence,
 * its first token replaced by BOS when the model adds BOS (env->bos), and only tokens n_ctx/2+1 .. n_ctx-1 of
 * each chunk are scored. Needs n >= 2 * n_ctx (llama-perplexity refuses shorter texts too). */
hkv_status eval_ppl(const eval_env *env, const eval_ppl_opts *o, const int32_t *tokens, int n, eval_metrics *out,
                    char *err, size_t errlen);

/* The ppl metrics (ppl, nll, tokens, ppl_se, nll_se) from the sum and sum of squares of `scored` per-token
 * NLLs; several texts combine by adding their sums. */
void eval_ppl_metrics(eval_metrics *out, double nll_sum, double nll_sum2, long scored, double budget);

/* Negative log-likelihood (nats) of token `target` under logits[n_vocab] (log-softmax in double). */
double eval_nll(const float *logits, int n_vocab, int32_t target);

/* ---------------------------------------------------------------- fidelity against the full cache */

typedef struct eval_prompts {
    int n;            /* prompts */
    int32_t **toks;   /* [n] token arrays (BOS included where the model adds one) */
    int *len;         /* [n] */
} eval_prompts;

void eval_prompts_free(eval_prompts *p);
/* Prompts from text: one per non-empty line, or JSONL lines {"prompt": "..."} (a line starting with '{'),
 * tokenized with hkv_tokenize's add_bos convention (-1: the model's default). Errors name the line. */
hkv_status eval_prompts_parse(const hkv_model *m, const char *text, int add_bos, eval_prompts *out, char *err,
                              size_t errlen);
/* K prompts of len tokens sampled by the model itself from BOS (full cache, temperature 1, top-k 40, seed
 * seed + k for prompt k): reproducible text the model finds natural. */
hkv_status eval_prompts_self(hkv_model *m, int k, int len, uint64_t seed, int n_threads, eval_prompts *out,
                             char *err, size_t errlen);

/* For each prompt: the full cache generates n_gen greedy tokens R (its logits are kept: n_gen x n_vocab floats);
 * the policy (a) generates its own n_gen
 * greedy tokens P from the same prompt and (b) is teacher-forced with R. EOS does not stop generation.
 * Metrics (means over prompts, agreement in %):
 *   agree      positions i with P[i] == R[i] over n_gen (overall greedy agreement)
 *   agree_pre  length of the common prefix of P and R over n_gen (agreement before the first divergence)
 *   top1       teacher-forced positions where argmax(policy) == argmax(full)
 *   kl_mean    mean over positions of KL(full || policy) of the next-token distributions (nats)
 *   kl_max     max over all positions and prompts
 * then prompts and the standard errors agree_se, agree_pre_se, top1_se (over prompts) and kl_mean_se (over
 * positions); NAN when there is only one sample.
 * Budget percentages refer to prompt length + n_gen. */
hkv_status eval_fidelity(const eval_env *env, const eval_prompts *pr, int n_gen, eval_metrics *out, char *err,
                         size_t errlen);

/* KL(p || q) in nats of the softmax distributions of two logit vectors (exactly 0 when they are equal). */
double eval_kl(const float *logits_p, const float *logits_q, int n_vocab);

/* ---------------------------------------------------------------- multiple choice */

typedef struct eval_mc_item {
    char *context;
    int n_choices;
    char **choices;   /* continuations, appended to the context as given (include the leading space) */
    int gold;         /* index into choices */
} eval_mc_item;

typedef struct eval_mc_task { int n; eval_mc_item *items; } eval_mc_task;

void eval_mc_free(eval_mc_task *t);
/* Parses a JSONL task: {"context","choices","gold"} lines, or lm-eval loglikelihood request records grouped
 * by doc_id (see the README section "eval mc" for the exact fields). Errors name the line. */
hkv_status eval_mc_parse(const char *text, eval_mc_task *out, char *err, size_t errlen);
/* Scores every choice by the sum of log p(continuation token | context, previous continuation tokens):
 * the context is decoded as a prompt under the policy, the continuation one token at a time.
 * Metrics: acc (argmax of the sum), acc_norm (argmax of the sum divided by the continuation's byte length),
 * items, acc_se, acc_norm_se (standard errors, NAN for one item); accuracies in %. Ties go to the lower index. Budget percentages refer to the context length plus
 * the longest continuation of the question. If ll != NULL it receives the summed log-likelihoods of all
 * choices, question after question. */
hkv_status eval_mc(const eval_env *env, const eval_mc_task *t, eval_metrics *out, double *ll, char *err,
                   size_t errlen);

/* ---------------------------------------------------------------- passkey retrieval */

typedef struct eval_passkey_opts {
    int n_lengths, lengths[8];    /* target input lengths in tokens */
    int n_depths, depths[11];     /* needle depth in % of the filler (0 = start, 100 = end) */
    int trials;                   /* keys per (length, depth) */
    uint64_t seed;
} eval_passkey_opts;

/* Builds the passkey prompt text for a 5-digit key at depth (%) with `filler` repetitions of the filler
 * sentences. Returns a malloc'ed string. */
char *eval_passkey_text(int key, int depth, int filler);
/* At most this many (length, depth) cells, so every cell gets a metric. */
#define EVAL_PASSKEY_MAX_CELLS 40
/* For each (length, depth, trial): a random 5-digit key hidden in filler text of about `length` tokens,
 * then "What is the pass key? The pass key is"; the model greedily generates 8 tokens and is right when the
 * first number in them equals the key. Metrics: acc (overall, %), acc_L<len>_D<depth> per cell. Budget
 * percentages refer to the input length. */
hkv_status eval_passkey(const eval_env *env, const eval_passkey_opts *o, eval_metrics *out, char *err,
                        size_t errlen);

/* ---------------------------------------------------------------- sweep reports */

typedef struct eval_row {
    char policy[16];
    char budget[24];          /* as given ("10%", "256", "0.2") or "-" when unset */
    double budget_pct;        /* the budget in % when given as a percentage/ratio, else NAN */
    eval_metrics m;
} eval_row;

/* Aligned table: policy, budget, budget_tokens, then the metrics of the first row. */
void eval_write_table(FILE *f, const eval_row *rows, int n);
/* CSV with a header: policy,budget,budget_tokens,<metrics...>. The header and single rows can be written on
 * their own, so a sweep appends each row as soon as it is measured. */
void eval_write_csv(FILE *f, const eval_row *rows, int n);
void eval_write_csv_header(FILE *f, const eval_metrics *names);
void eval_write_csv_row(FILE *f, const eval_row *r);
/* {"command": ..., "rows": [{"policy":..., "budget":..., "budget_tokens":..., <metric>: value, ...}]} */
void eval_write_json(FILE *f, const char *command, const eval_row *rows, int n);
/* One row as a JSON line (JSONL): {"policy":..., "budget":..., "budget_tokens":..., <metric>: value, ...}\n */
void eval_write_jsonl_row(FILE *f, const eval_row *r);
/* Rows back from what eval_write_csv / eval_write_jsonl_row wrote (for --resume): *rows is malloc'ed, budget_pct
 * is NAN. A last line without its newline (the sweep was killed while writing it) is ignored. */
hkv_status eval_read_csv(const char *text, eval_row **rows, int *n, char *err, size_t errlen);
hkv_status eval_read_jsonl(const char *text, eval_row **rows, int *n, char *err, size_t errlen);
/* SVG line plot of `metric` against the budget (x in % when every budget is a percentage or ratio, else the
 * resolved tokens per head), one <polyline> per policy with a marker per point (Okabe-Ito colours, one shape
 * per policy), error bars of +-1 standard error when the rows have `<metric>_se`, axes, ticks and a legend.
 * subtitle (may be NULL) goes under the title (model, data, token count). HKV_ERR_ARG when the metric is
 * unknown. */
hkv_status eval_write_svg(FILE *f, const char *title, const char *subtitle, const char *metric, const eval_row *rows,
                          int n, char *err, size_t errlen);
/* SVG of the binned streaming perplexity ("ppl@P" metrics, eval ppl --bins) against the position P + bins/2,
 * log-scale y, one line per row with markers (colour and marker per policy; a row labelled "NAME+cache"
 * solid, others dashed). subtitle as for eval_write_svg. */
hkv_status eval_write_position_svg(FILE *f, const char *title, const char *subtitle, const eval_row *rows, int n,
                                   char *err, size_t errlen);

#endif
