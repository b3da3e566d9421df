/* heavykv eval: perplexity against an independent computation, full-vs-full fidelity, multiple-choice scores
 * by hand, the JSON reader, and the CLI sweep (CSV rows, well-formed SVG, error messages). */
#include <stdlib.h>
#include <string.h>
#include "eval.h"
#include "testutil.h"

static const char *const text = "Once upon a time, there was a little girl named Lily. She loved to play outside "
                                "in the park with her friends.";

/* exp(mean NLL) computed here from the logits of one plain forward pass (full cache, logits_all). */
static double reference_ppl(hkv_model *m, const int32_t *t, int n) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    hkv_context_params cp = hkv_context_default_params();
    cp.logits_all = 1;
    cp.n_ctx = n;
    hkv_context *c;
    char err[256];
    if (hkv_context_new(m, &cp, &c, err, sizeof err) || hkv_decode(c, 0, t, n)) return NAN;
    double nll = 0;
    for (int i = 0; i + 1 < n; i++) {
        const float *l = hkv_get_logits(c, 0, i);
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < mi.n_vocab; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < mi.n_vocab; v++) s += exp(l[v] - mx);
        nll += log(s) + mx - l[t[i + 1]];
    }
    hkv_context_free(c);
    return exp(nll / (n - 1));
}

/* llama-perplexity's scoring, recomputed here: chunks of c tokens, BOS over each chunk's first token, tokens
 * c/2+1 .. c-1 scored; plus its standard error (sample sd of the NLLs / sqrt(count - 1)). */
static void test_ppl_llama(hkv_model *m, eval_env *env, const int32_t *t, int n) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    snprintf(env->kv.policy, sizeof env->kv.policy, "full");
    const int c = 10;
    env->n_ctx = c;
    int n_chunk = n / c;
    CHECK(n_chunk >= 2);
    double sum = 0, sum2 = 0;
    long count = 0;
    for (int i = 0; i < n_chunk; i++) {
        int32_t chunk[10];
        memcpy(chunk, t + i * c, sizeof chunk);
        chunk[0] = mi.bos;
        hkv_context_params cp = hkv_context_default_params();
        cp.logits_all = 1;
        cp.n_ctx = c;
        hkv_context *ctx;
        char err[256];
        CHECK(hkv_context_new(m, &cp, &ctx, err, sizeof err) == HKV_OK && hkv_decode(ctx, 0, chunk, c) == HKV_OK);
        for (int k = c / 2; k < c - 1; k++, count++) {
            double v = eval_nll(hkv_get_logits(ctx, 0, k), mi.n_vocab, chunk[k + 1]);
            sum += v;
            sum2 += v * v;
        }
        hkv_context_free(ctx);
    }
    double nll = sum / count, se = sqrt((sum2 / count - nll * nll) / (count - 1));
    eval_ppl_opts lo = {.mode = EVAL_PPL_LLAMA};
    eval_metrics r;
    char err[256];
    CHECK(eval_ppl(env, &lo, t, n, &r, err, sizeof err) == HKV_OK);
    CHECK_NEAR(eval_metrics_get(&r, "tokens"), n_chunk * (c - c / 2 - 1), 0);
    CHECK_NEAR(eval_metrics_get(&r, "nll"), nll, 1e-6);
    CHECK_NEAR(eval_metrics_get(&r, "nll_se"), se, 1e-6);
    CHECK_NEAR(eval_metrics_get(&r, "ppl_se"), exp(nll) * se, 1e-5);
    lo.chunks = 1;
    CHECK(eval_ppl(env, &lo, t, n, &r, err, sizeof err) == HKV_OK);
    CHECK_NEAR(eval_metrics_get(&r, "tokens"), c - c / 2 - 1, 0);
    /* BOS: without it the first token of each chunk stays the text's, and chunk 2 scores differently */
    env->bos = EVAL_BOS_NONE;
    lo.chunks = 0;
    eval_metrics nb;
    CHECK(eval_ppl(env, &lo, t, n, &nb, err, sizeof err) == HKV_OK);
    CHECK(fabs(eval_metrics_get(&nb, "nll") - nll) > 1e-6);
    env->bos = EVAL_BOS_MODEL;
    /* llama-perplexity refuses a text shorter than two chunks */
    CHECK(eval_ppl(env, &lo, t, 2 * c - 1, &r, err, sizeof err) == HKV_ERR_ARG && strstr(err, "2 x 10"));
    env->n_ctx = 0;
}

static void test_ppl(hkv_model *m) {
    int32_t t[256];
    int n = hkv_tokenize(m, text, 1, 0, t, 256);
    CHECK(n > 10);
    double ref = reference_ppl(m, t, n);
    CHECK(isfinite(ref) && ref > 1);
    eval_env env = {.model = m, .kv = hkv_kv_default_config()};
    eval_metrics r;
    char err[256];
    eval_ppl_opts fwd = {.mode = EVAL_PPL_CHUNKED, .window = n, .stride = n};
    CHECK(eval_ppl(&env, &fwd, t, n, &r, err, sizeof err) == HKV_OK);
    CHECK_NEAR(eval_metrics_get(&r, "ppl"), ref, 1e-9 * ref);
    CHECK_NEAR(eval_metrics_get(&r, "tokens"), n - 1, 0);
    CHECK_NEAR(exp(eval_metrics_get(&r, "nll")), eval_metrics_get(&r, "ppl"), 1e-12);
    double se = eval_metrics_get(&r, "nll_se");
    CHECK(se > 0 && se < eval_metrics_get(&r, "nll"));
    CHECK_NEAR(eval_metrics_get(&r, "ppl_se"), se * eval_metrics_get(&r, "ppl"), 1e-9);
    eval_ppl_opts stream = {.mode = EVAL_PPL_STREAM};
    CHECK(eval_ppl(&env, &stream, t, n, &r, err, sizeof err) == HKV_OK);
    CHECK_NEAR(eval_metrics_get(&r, "ppl"), ref, 1e-5 * ref); /* one token per step == one batched pass */
    CHECK_NEAR(r.budget_tokens, n, 0);
    /* Strided windows score every token once. */
    eval_ppl_opts chunked = {.mode = EVAL_PPL_CHUNKED, .window = 12, .stride = 5};
    CHECK(eval_ppl(&env, &chunked, t, n, &r, err, sizeof err) == HKV_OK);
    CHECK_NEAR(eval_metrics_get(&r, "tokens"), n - 1, 0);
    /* A small h2o budget changes the streaming result; 100% equals full. */
    snprintf(env.kv.policy, sizeof env.kv.policy, "h2o");
    hkv_amount_parse("100%", &env.kv.budget, err, sizeof err);
    CHECK(eval_ppl(&env, &stream, t, n, &r, err, sizeof err) == HKV_OK);
    CHECK_NEAR(eval_metrics_get(&r, "ppl"), ref, 1e-5 * ref);
    hkv_amount_parse("8", &env.kv.budget, err, sizeof err);
    CHECK(eval_ppl(&env, &stream, t, n, &r, err, sizeof err) == HKV_OK);
    CHECK(fabs(eval_metrics_get(&r, "ppl") - ref) > 1e-6);
    CHECK_NEAR(r.budget_tokens, 8, 0);
    CHECK(eval_ppl(&env, &stream, t, 1, &r, err, sizeof err) == HKV_ERR_ARG);
    test_ppl_llama(m, &env, t, n);
}

static void test_fidelity(hkv_model *m) {
    eval_prompts pr;
    char err[256];
    CHECK(eval_prompts_self(m, 2, 12, 7, 0, &pr, err, sizeof err) == HKV_OK);
    CHECK(pr.n == 2 && pr.len[0] == 12);
    eval_prompts again;
    CHECK(eval_prompts_self(m, 2, 12, 7, 0, &again, err, sizeof err) == HKV_OK);
    CHECK(!memcmp(pr.toks[1], again.toks[1], sizeof(int32_t) * 12)); /* same seed, same prompts */
    eval_prompts_free(&again);
    eval_env env = {.model = m, .kv = hkv_kv_default_config()};
    eval_metrics r;
    CHECK(eval_fidelity(&env, &pr, 16, &r, err, sizeof err) == HKV_OK);
    CHECK(eval_metrics_get(&r, "agree") == 100 && eval_metrics_get(&r, "agree_pre") == 100);
    CHECK(eval_metrics_get(&r, "top1") == 100);
    CHECK(eval_metrics_get(&r, "kl_mean") == 0 && eval_metrics_get(&r, "kl_max") == 0);
    snprintf(env.kv.policy, sizeof env.kv.policy, "window");
    hkv_amount_parse("4", &env.kv.budget, err, sizeof err);
    CHECK(eval_fidelity(&env, &pr, 16, &r, err, sizeof err) == HKV_OK);
    CHECK(eval_metrics_get(&r, "kl_mean") > 0 && eval_metrics_get(&r, "kl_max") >= eval_metrics_get(&r, "kl_mean"));
    CHECK(eval_metrics_get(&r, "agree_pre") <= eval_metrics_get(&r, "agree"));
    eval_prompts_free(&pr);
    /* KL by hand: p = softmax(0, log 3) = (1/4, 3/4), q = uniform. */
    float lp[2] = {0, (float)log(3.0)}, lq[2] = {5, 5};
    CHECK_NEAR(eval_kl(lp, lq, 2), 0.25 * log(0.5) + 0.75 * log(1.5), 1e-6);
    CHECK(eval_kl(lp, lp, 2) == 0);
    /* Prompt files: plain lines and JSONL; errors name the line. */
    CHECK(eval_prompts_parse(m, "Once upon a time\n\n{\"prompt\": \"Lily \\\"ran\\\"\"}\n", -1, &pr, err, sizeof err) == HKV_OK);
    CHECK(pr.n == 2);
    eval_prompts_free(&pr);
    CHECK(eval_prompts_parse(m, "a\n{\"text\": \"b\"}\n", -1, &pr, err, sizeof err) == HKV_ERR_FORMAT);
    CHECKF(strstr(err, "line 2"), "%s", err);
}

/* The log-likelihood of cont after ctx from one full forward pass over the two, computed here. */
static double ll_by_hand(hkv_model *m, const char *ctx, const char *cont) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    char whole[512];
    snprintf(whole, sizeof whole, "%s%s", ctx, cont);
    int32_t tc[256], tw[256];
    int nc = hkv_tokenize(m, ctx, 1, 0, tc, 256), nw = hkv_tokenize(m, whole, 1, 0, tw, 256);
    memcpy(tw, tc, sizeof(int32_t) * (size_t)nc); /* context tokens as tokenized alone, like lm-eval */
    hkv_context_params cp = hkv_context_default_params();
    cp.logits_all = 1;
    cp.n_ctx = 256;
    hkv_context *c;
    char err[256];
    if (hkv_context_new(m, &cp, &c, err, sizeof err) || hkv_decode(c, 0, tw, nw)) return NAN;
    double ll = 0;
    for (int i = nc; i < nw; i++) {
        const float *l = hkv_get_logits(c, 0, i - 1);
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < mi.n_vocab; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < mi.n_vocab; v++) s += exp(l[v] - mx);
        ll += l[tw[i]] - mx - log(s);
    }
    hkv_context_free(c);
    return ll;
}

static const char *const mc_ctx[3] = {"Lily went to the park. She saw a", "Tom was sad because his toy was",
                                      "The sun was"};
static const char *const mc_ch[3][3] = {{" big dog.", " purple elephant flying.", " ball"},
                                        {" broken.", " happy and sunny today.", " a"},
                                        {" hot.", " bright and warm in the sky.", " blue"}};
static const int mc_gold[3] = {1, 0, 2};

static void test_mc(hkv_model *m) {
    FILE *f = fopen(tu_tmp("mc.jsonl"), "w"), *g = fopen(tu_tmp("mc_req.jsonl"), "w");
    for (int q = 0; q < 3; q++) {
        fprintf(f, "{\"context\": \"%s\", \"choices\": [\"%s\", \"%s\", \"%s\"], \"gold\": %d}\n", mc_ctx[q],
                mc_ch[q][0], mc_ch[q][1], mc_ch[q][2], mc_gold[q]);
        for (int k = 0; k < 3; k++)
            fprintf(g, "{\"request_type\": \"loglikelihood\", \"doc_id\": %d, \"%s\": \"%s\", \"%s\": \"%s\", "
                    "\"gold\": %d}\n", q, k ? "prompt" : "context", mc_ctx[q], k ? "target" : "continuation",
                    mc_ch[q][k], mc_gold[q]);
    }
    fclose(f);
    fclose(g);
    char *s1 = tu_read_file(tu_tmp("mc.jsonl"), NULL), *s2 = tu_read_file(tu_tmp("mc_req.jsonl"), NULL);
    eval_mc_task t1, t2;
    char err[256];
    CHECK(eval_mc_parse(s1, &t1, err, sizeof err) == HKV_OK);
    CHECK(eval_mc_parse(s2, &t2, err, sizeof err) == HKV_OK);
    CHECK(t1.n == 3 && t2.n == 3 && t2.items[1].n_choices == 3 && t2.items[2].gold == 2);
    CHECK(!strcmp(t2.items[0].choices[1], mc_ch[0][1]));
    eval_env env = {.model = m, .kv = hkv_kv_default_config()};
    eval_metrics r1, r2;
    double ll[9], ll2[9];
    CHECK(eval_mc(&env, &t1, &r1, ll, err, sizeof err) == HKV_OK);
    CHECK(eval_mc(&env, &t2, &r2, ll2, err, sizeof err) == HKV_OK);
    int acc = 0, acc_norm = 0;
    for (int q = 0; q < 3; q++) {
        int best = 0, best_norm = 0;
        double h[3];
        for (int k = 0; k < 3; k++) {
            h[k] = ll_by_hand(m, mc_ctx[q], mc_ch[q][k]);
            CHECK_NEAR(ll[q * 3 + k], h[k], 1e-3);
            CHECK(ll[q * 3 + k] == ll2[q * 3 + k]);
        }
        for (int k = 1; k < 3; k++) {
            if (h[k] > h[best]) best = k;
            if (h[k] / strlen(mc_ch[q][k]) > h[best_norm] / strlen(mc_ch[q][best_norm])) best_norm = k;
        }
        acc += best == mc_gold[q];
        acc_norm += best_norm == mc_gold[q];
    }
    CHECK_NEAR(eval_metrics_get(&r1, "acc"), 100.0 * acc / 3, 1e-9);
    CHECK_NEAR(eval_metrics_get(&r1, "acc_norm"), 100.0 * acc_norm / 3, 1e-9);
    CHECK(eval_metrics_get(&r1, "acc") == eval_metrics_get(&r2, "acc"));
    eval_mc_free(&t1);
    eval_mc_free(&t2);
    free(s1);
    free(s2);
    /* Bad tasks name the line. */
    CHECK(eval_mc_parse("{\"context\": \"a\", \"choices\": [\" b\"], \"gold\": 0}\n{\"context\": \"a\", \"choices\"",
                        &t1, err, sizeof err) == HKV_ERR_FORMAT);
    CHECKF(strstr(err, "line 2") != NULL, "%s", err);
    CHECK(eval_mc_parse("\n{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"gold\": 2}", &t1, err, sizeof err) == HKV_ERR_FORMAT);
    CHECKF(strstr(err, "line 2") && strstr(err, "out of range"), "%s", err);
    CHECK(eval_mc_parse("{\"request_type\": \"language-model-inference\", \"prompt\": \"x\"}", &t1, err, sizeof err) == HKV_ERR_FORMAT);
    CHECK(eval_mc_parse(" \n\n", &t1, err, sizeof err) == HKV_ERR_FORMAT);
}

static void test_json(void) {
    eval_json j;
    char err[200];
    CHECK(eval_json_parse(" {\"a\": [1, -2.5e1, true, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\"} ", &j, err, sizeof err) == HKV_OK);
    const eval_json *a = eval_json_get(&j, "a"), *s = eval_json_get(&j, "s");
    CHECK(a && a->type == EJ_ARR && a->n == 4 && a->items[1].num == -25 && a->items[2].type == EJ_BOOL);
    CHECK(s && !strcmp(s->str, "x\xc3\xa9\xf0\x9f\x98\x80\n"));
    eval_json_free(&j);
    const char *bad[] = {"{\"a\": }", "[1, 2", "\"abc", "{\"a\": 1} x", "01", "\"\\ud800\"", "{1: 2}", "[1,]"};
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++)
        CHECKF(eval_json_parse(bad[i], &j, err, sizeof err) == HKV_ERR_FORMAT, "%s", bad[i]);
}

/* Minimal XML well-formedness: every <tag> closed in order, self-closing tags allowed. */
static int svg_balanced(const char *s, int *polylines) {
    char stack[64][32];
    int depth = 0;
    *polylines = 0;
    for (const char *p = strchr(s, '<'); p; p = strchr(p + 1, '<')) {
        const char *e = strchr(p, '>');
        if (!e) return 0;
        if (p[1] == '?' || p[1] == '!') continue;
        if (!strncmp(p, "<polyline", 9)) ++*polylines;
        if (p[1] == '/') {
            if (depth == 0 || strncmp(p + 2, stack[depth - 1], strlen(stack[depth - 1]))) return 0;
            depth--;
        } else if (e[-1] != '/') {
            if (depth == 64) return 0;
            size_t n = strcspn(p + 1, " >/");
            snprintf(stack[depth++], 32, "%.*s", (int)n, p + 1);
        }
    }
    return depth == 0;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

/* An interrupted sweep keeps its finished rows, and --resume computes only the missing ones; the result is
 * the same file an uninterrupted sweep writes. */
static void test_resume(void) {
    static char out[16384];
    char args[2048], base[1024];
    const char *csv = tu_tmp("resume.csv"), *jsonl = tu_tmp("resume.jsonl"), *ref = tu_tmp("resume_ref.csv");
    remove(csv);
    remove(jsonl);
    snprintf(base, sizeof base, "eval ppl -m '%s' --self-prompts 1 --prompt-len 40 -q --kv-policy full,h2o,window "
             "--kv-budget 25%%,50%%", tu_model());
    snprintf(args, sizeof args, "%s --csv '%s'", base, ref);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);
    /* killed (SIGKILL, the test hook) right after the first computed row was written */
    setenv("HEAVYKV_EVAL_KILL_AFTER_ROWS", "1", 1);
    snprintf(args, sizeof args, "%s --csv '%s' --jsonl '%s'", base, csv, jsonl);
    CHECK(tu_cli(args, out, sizeof out) != 0);
    unsetenv("HEAVYKV_EVAL_KILL_AFTER_ROWS");
    char *c = tu_read_file(csv, NULL), *j = tu_read_file(jsonl, NULL), *r = tu_read_file(ref, NULL);
    CHECKF(count_lines(c) == 2, "%d lines after the kill", count_lines(c));
    CHECKF(count_lines(j) == 1, "%d JSON lines after the kill", count_lines(j));
    CHECK(c && r && !strncmp(c, r, strlen(c)));      /* header + the full row, as the whole sweep writes them */
    CHECK(j && strstr(j, "{\"policy\": \"full\", \"budget\": \"25%\""));
    free(c);
    free(j);
    /* a line cut short by the kill is dropped, not kept half-written */
    FILE *f = fopen(jsonl, "a");
    fputs("{\"policy\": \"h2o\", \"bud", f);
    fclose(f);
    snprintf(args, sizeof args, "%s --jsonl '%s' --resume", base, jsonl);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);
    CHECKF(strstr(out, "eval: 4 row(s) computed, 1 taken from"), "%s", out);  /* full 50% is copied */
    j = tu_read_file(jsonl, NULL);
    CHECKF(count_lines(j) == 6 && !strstr(j, "\"bud\n"), "%s", j ? j : "");
    free(j);
    snprintf(args, sizeof args, "%s --csv '%s' --resume", base, csv);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);
    CHECKF(strstr(out, "eval: 4 row(s) computed, 1 taken from"), "%s", out);
    c = tu_read_file(csv, NULL);
    CHECKF(c && r && !strcmp(c, r), "resumed:\n%s\nuninterrupted:\n%s", c ? c : "", r ? r : "");
    free(c);
    /* everything done: nothing is recomputed */
    CHECKF(tu_cli(args, out, sizeof out) == 0 && strstr(out, "eval: 0 row(s) computed, 6 taken from"), "%s", out);
    c = tu_read_file(csv, NULL);
    CHECK(c && r && !strcmp(c, r));
    free(c);
    free(r);
    /* a file of another subcommand is refused, not mixed */
    snprintf(args, sizeof args, "eval fidelity -m '%s' --self-prompts 1 --prompt-len 8 -n 4 -q --csv '%s' --resume",
             tu_model(), csv);
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "other columns"));
    remove(csv);
    remove(jsonl);
    remove(ref);
}

static void test_cli(void) {
    static char out[16384];
    char args[2048];
    const char *csv = tu_tmp("sweep.csv"), *svg = tu_tmp("sweep.svg");
    snprintf(args, sizeof args, "eval ppl -m '%s' --self-prompts 1 --prompt-len 48 -q --kv-policy full,h2o,window "
             "--kv-budget 25%%,50%%,100%% --csv '%s' --svg '%s'", tu_model(), csv, svg);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);
    CHECK(strstr(out, "policy") && strstr(out, "ppl") && strstr(out, "window"));
    char *c = tu_read_file(csv, NULL);
    CHECK(c != NULL);
    if (c) {
        int lines = 0;
        for (char *p = c; *p; p++) lines += *p == '\n';
        CHECKF(lines == 1 + 9, "%d lines", lines);
        CHECK(!strncmp(c, "policy,budget,budget_tokens,ppl,nll,tokens,ppl_se,nll_se\n", 57));
        const char *pol[3] = {"full", "h2o", "window"}, *bud[3] = {"25%", "50%", "100%"};
        for (int p = 0; p < 3; p++)
            for (int b = 0; b < 3; b++) {
                char row[32];
                snprintf(row, sizeof row, "\n%s,%s,", pol[p], bud[b]);
                CHECKF(strstr(c, row), "row %s", row + 1);
            }
        free(c);
    }
    char *s = tu_read_file(svg, NULL);
    int poly = 0;
    CHECK(s && strstr(s, "<svg") && svg_balanced(s, &poly));
    CHECKF(poly == 3, "%d polylines", poly);
    /* markers, Okabe-Ito colours, and the run described under the title */
    CHECK(s && strstr(s, "<circle") && strstr(s, "#0072B2") && strstr(s, "#D55E00"));
    CHECK(s && strstr(s, "model stories260K.gguf | data 1 self-generated texts | 48 tokens"));
    free(s);
    test_resume();
    /* Errors: one clear line, non-zero exit. */
    struct { const char *args, *expect; } errs[] = {
        {"eval ppl -f /nonexistent/x.txt", "cannot open"},
        {"eval mc -f '%s'", "line 2"},
        {"eval mc -f '%s'", "out of range"},
        {"eval ppl -f '%s'", "empty"},
        {"eval ppl -f '%s' --mode forward -c 8", "context length 8"},
        {"eval ppl -f '%s' --mode llama -c 3000", "trained on"},   /* the warning comes before the error */
        {"eval ppl -f '%s' --mode llama", "2 x 2048"},
        {"eval ppl -f '%s' --metric bogus", "no metric"},
        {"eval bogus", "unknown eval subcommand"},
        {"eval ppl -f '%s' --kv-policy h2o,nope", "unknown KV policy"},
        {"eval fidelity --self-prompts 1 --kv-policy h2o", "needs a KV budget"},
    };
    const char *files[] = {NULL, "bad.jsonl", "gold.jsonl", "empty.txt", "text.txt", "text.txt", "text.txt", "text.txt",
                           NULL, "text.txt", NULL};
    FILE *f = fopen(tu_tmp("bad.jsonl"), "w");
    fputs("{\"context\": \"a\", \"choices\": [\" b\"], \"gold\": 0}\n{\"context\": oops}\n", f);
    fclose(f);
    f = fopen(tu_tmp("gold.jsonl"), "w");
    fputs("{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"gold\": 5}\n", f);
    fclose(f);
    f = fopen(tu_tmp("empty.txt"), "w");
    fclose(f);
    f = fopen(tu_tmp("text.txt"), "w");
    fputs(text, f);
    fclose(f);
    for (int i = 0; i < (int)(sizeof errs / sizeof errs[0]); i++) {
        char a[1024], full[1500];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral" /* errs[] is a table of argument templates with one %s */
        snprintf(a, sizeof a, errs[i].args, files[i] ? tu_tmp(files[i]) : "");
#pragma GCC diagnostic pop
        snprintf(full, sizeof full, "%s -m '%s' -q", a, tu_model());
        int rc = tu_cli(full, out, sizeof out);
        CHECKF(rc != 0 && strstr(out, "heavykv: error:") && strstr(out, errs[i].expect), "%s -> %d: %s", full, rc, out);
    }
    CHECK(tu_cli("eval --help", out, sizeof out) == 0 && strstr(out, "passkey"));
    CHECK(tu_cli("eval mc --help", out, sizeof out) == 0 && strstr(out, "loglikelihood"));
    remove(csv); remove(svg);
    const char *tmp[] = {"bad.jsonl", "gold.jsonl", "empty.txt", "text.txt", "mc.jsonl", "mc_req.jsonl"};
    for (int i = 0; i < 6; i++) remove(tu_tmp(tmp[i]));
}

/* --bins: per-position-bin perplexities whose token-weighted log-mean is the overall nll; the CLI sweeps both
 * position modes (rows NAME+cache) and plots ppl against the position, one line per row. */
static void test_stream_bins(hkv_model *m) {
    int32_t t[256];
    int n = hkv_tokenize(m, text, 1, 0, t, 256), w = 7;
    eval_env env = {.model = m, .kv = hkv_kv_default_config()};
    eval_metrics r;
    char err[256];
    eval_ppl_opts stream = {.mode = EVAL_PPL_STREAM, .bins = w};
    CHECK(eval_ppl(&env, &stream, t, n, &r, err, sizeof err) == HKV_OK);
    double sum = 0;
    int bins = 0;
    for (int p = 0; p < n; p += w, bins++) {
        char name[24];
        snprintf(name, sizeof name, "ppl@%d", p);
        double v = eval_metrics_get(&r, name), tokens = (p + w < n ? p + w : n) - (p ? p : 1);
        CHECKF(isfinite(v), "%s missing", name);
        sum += log(v) * tokens;
    }
    CHECK(bins == (n - 1) / w + 1 && r.n == 5 + bins);
    CHECK_NEAR(sum / (n - 1), eval_metrics_get(&r, "nll"), 1e-9);
    stream.bins = 1;
    CHECK(eval_ppl(&env, &stream, t, n, &r, err, sizeof err) == (n > EVAL_MAX_BINS ? HKV_ERR_ARG : HKV_OK));

    static char out[16384];
    char args[2048];
    const char *csv = tu_tmp("stream.csv"), *svg = tu_tmp("stream.svg");
    snprintf(args, sizeof args, "eval ppl -m '%s' --self-prompts 1 --prompt-len 60 -q --kv-policy full,sink "
             "--kv-budget 12 --kv-positions original,cache --bins 20 --csv '%s' --svg '%s'", tu_model(), csv, svg);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);
    char *c = tu_read_file(csv, NULL), *s = tu_read_file(svg, NULL);
    CHECKF(c && strstr(c, "ppl@0,ppl@20,ppl@40") && strstr(c, "\nsink+cache,12,") && strstr(c, "\nfull+cache,12,"),
           "%s", c ? c : "(no csv)");
    int poly = 0;
    CHECK(s && strstr(s, "position (tokens)") && svg_balanced(s, &poly));
    CHECKF(poly == 4, "%d polylines", poly);
    free(c);
    free(s);
    remove(csv); remove(svg);
    snprintf(args, sizeof args, "eval ppl -m '%s' --self-prompts 1 --mode chunked --bins 20 -q", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "--bins needs --mode stream"));
    snprintf(args, sizeof args, "eval ppl -m '%s' --self-prompts 1 --kv-positions rolling -q", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "--kv-positions"));
}

int main(void) {
    char err[512];
    hkv_model *m;
    if (hkv_model_load(tu_model(), NULL, &m, err, sizeof err)) {
        fprintf(stderr, "cannot load %s: %s\n", tu_model(), err);
        return 1;
    }
    test_json();
    test_ppl(m);
    test_fidelity(m);
    test_mc(m);
    test_stream_bins(m);
    hkv_model_free(m);
    test_cli();
    char *pk = eval_passkey_text(42, 50, 4);
    CHECK(pk && strstr(pk, "The pass key is 00042. Remember it.") && strstr(pk, "The pass key is") < strstr(pk, "What is"));
    free(pk);
    return tu_done("test_eval");
}
