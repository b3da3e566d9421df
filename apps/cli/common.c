#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

int cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("heavykv: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        cli_error("%s expects an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

int cli_u64(const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-') { cli_error("%s expects a non-negative integer, got '%s'", flag, s); return 0; }
    *out = v;
    return 1;
}

int cli_float(const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        cli_error("%s expects a number in [%g, %g], got '%s'", flag, lo, hi, s);
        return 0;
    }
    *out = (float)v;
    return 1;
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) { cli_error("%s needs a value", argv[*i]); return NULL; }
    return argv[++*i];
}

const char *cli_default_model(void) {
    const char *m = getenv("HEAVYKV_MODEL");
    return m && *m ? m : "../shared/models/stories260K.gguf";
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { cli_error("cannot open '%s': %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (size_t r; b && (r = fread(b + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (cap - n < 2) { char *nb = realloc(b, cap * 2); if (!nb) { free(b); b = NULL; break; } b = nb; cap *= 2; }
    }
    int bad = ferror(f), e = errno;
    fclose(f);
    if (!b || bad) { free(b); cli_error("cannot read '%s': %s", path, b ? strerror(e) : "out of memory"); return NULL; }
    b[n] = 0;
    if (len) *len = n;
    return b;
}

static int amount(const char *flag, const char *s, hkv_amount *a) {
    char err[256];
    if (hkv_amount_parse(s, a, err, sizeof err)) { cli_error("%s: %s", flag, err); return 0; }
    return 1;
}

static int choice(const char *flag, const char *s, const char *a, const char *b, int *out) {
    if (!strcmp(s, a)) { *out = 0; return 1; }
    if (!strcmp(s, b)) { *out = 1; return 1; }
    cli_error("%s expects '%s' or '%s', got '%s'", flag, a, b, s);
    return 0;
}

/* --POLICY-NAME VALUE for an option NAME of a policy in the table (e.g. --h2o-score, --snapkv-window): 1 if
 * flag is one, with *pol and *opt set. */
static int policy_option_flag(const char *flag, const hkv_policy_ops **pol, const hkv_policy_option **opt) {
    if (strncmp(flag, "--", 2)) return 0;
    for (int i = 0; hkv_policy_at(i); i++) {
        const hkv_policy_ops *p = hkv_policy_at(i);
        size_t n = strlen(p->name);
        if (strncmp(flag + 2, p->name, n) || flag[2 + n] != '-') continue;
        for (int k = 0; k < p->n_options; k++)
            if (!strcmp(flag + 3 + n, p->options[k].name)) { *pol = p; *opt = &p->options[k]; return 1; }
    }
    return 0;
}

int cli_kv_flag(int argc, char **argv, int *i, hkv_kv_config *kv) {
    const char *f = argv[*i];
    static const char *const with_value[] = {"--kv-policy", "--kv-budget", "--kv-heavy", "--kv-recent", "--kv-sink",
                                             "--gqa-agg", "--prefill-chunk", "--kv-type", "--kv-budget-layers", "--kv-order",
                                             "--h2o-order",
                                             "--kv-positions", NULL};
    if (!strcmp(f, "--kv-simulate")) { kv->simulate = 1; return 1; }
    if (!strcmp(f, "--allow-long-context")) { kv->allow_long_ctx = 1; return 1; }
    const hkv_policy_ops *pol = NULL;
    const hkv_policy_option *opt = NULL;
    int known = policy_option_flag(f, &pol, &opt);
    for (int k = 0; with_value[k]; k++) known |= !strcmp(f, with_value[k]);
    if (!known) return 0;
    const char *v = cli_value(argc, argv, i);
    if (!v) return -1;
    int ok = 1;
    char err[512];
    if (pol) {
        if (hkv_kv_set_option(kv, pol->name, opt->name, v, err, sizeof err)) return cli_error("%s: %s", f, err), -1;
    } else if (!strcmp(f, "--kv-policy")) {
        if (hkv_policy_check(v, err, sizeof err)) return cli_error("%s", err), -1;
        snprintf(kv->policy, sizeof kv->policy, "%s", v);
    } else if (!strcmp(f, "--kv-budget")) ok = amount(f, v, &kv->budget);
    else if (!strcmp(f, "--kv-heavy")) ok = amount(f, v, &kv->heavy);
    else if (!strcmp(f, "--kv-recent")) ok = amount(f, v, &kv->recent);
    else if (!strcmp(f, "--kv-sink")) ok = amount(f, v, &kv->sink);
    else if (!strcmp(f, "--gqa-agg")) ok = choice(f, v, "sum", "mean", &kv->gqa_mean);
    else if (!strcmp(f, "--kv-order") || !strcmp(f, "--h2o-order")) ok = choice(f, v, "append", "replace", &kv->replace_order);
    else if (!strcmp(f, "--prefill-chunk")) ok = cli_int(f, v, 0, 1 << 20, &kv->prefill_chunk);
    else if (!strcmp(f, "--kv-budget-layers")) {
        if (strlen(v) >= sizeof kv->budget_layers) return cli_error("%s: list '%.40s...' is too long", f, v), -1;
        snprintf(kv->budget_layers, sizeof kv->budget_layers, "%s", v);
    } else if (!strcmp(f, "--kv-positions")) ok = choice(f, v, "original", "cache", &kv->positions_cache);
    else if (!strcmp(f, "--kv-type")) {
        int t = hkv_kv_type_parse(v);
        if (t < 0) {
            cli_error("%s expects f16, bf16, f32, q8_0 or q4_0, got '%s'", f, v);
            ok = 0;
        } else kv->type = (hkv_kv_type)t;
    }
    return ok ? 1 : -1;
}

/* Appends to the help buffer (truncates silently: the buffer is sized for far more than the table holds). */
static void help_add(char *buf, size_t len, size_t *o, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void help_add(char *buf, size_t len, size_t *o, const char *fmt, ...) {
    if (*o >= len) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *o, len - *o, fmt, ap);
    va_end(ap);
    if (n > 0) *o += (size_t)n;
}

/* Built once from the policy table, so a new policy (and its options) appears here without editing this file. */
const char *cli_kv_help(void) {
    static char buf[8192];
    if (buf[0]) return buf;
    size_t o = 0, L = sizeof buf;
    help_add(buf, L, &o, "KV cache (per KV head; see README 'KV cache policies'):\n"
             "  --kv-policy NAME      (default full)\n");
    for (int i = 0; hkv_policy_at(i); i++)
        help_add(buf, L, &o, "      %-14s    %s\n", hkv_policy_at(i)->name, hkv_policy_at(i)->help ? hkv_policy_at(i)->help : "");
    help_add(buf, L, &o,
             "  --kv-budget B         tokens kept per head: N tokens, P%% of the prompt, or a ratio 0.R\n"
             "  --kv-heavy B          score-ranked part of the budget (h2o default: half)\n"
             "  --kv-recent B         recent-window part (default: the rest; snapkv: its observation window)\n"
             "  --kv-sink B           first tokens always kept (sink default 4, others 0)\n"
             "  --kv-budget-layers S  per-layer budgets: uniform | pyramid (PyramidKV: more in lower layers, same\n"
             "                        total) | a list of one budget per layer \"64,48,32,16\" (default: the policy's)\n"
             "  --gqa-agg A           sum | mean over the query heads of a KV group\n"
             "  --kv-order O          append (paper: attend with budget+1 then evict) | replace (FlexGen: evict\n"
             "                        first; --h2o-order is the same flag)\n"
             "  --kv-simulate         full cache + mask hiding evicted tokens (same outputs, no memory saved)\n"
             "  --prefill-chunk N     prompt tokens per forward chunk, evicting between chunks (peak = budget + N);\n"
             "                        0 = whole prompt, then cut (the paper's order; default)\n"
             "  --kv-type T           f16 (default) | bf16 | f32 | q8_0 | q4_0: element type of stored K/V rows,\n"
             "                        quantized when written (README 'Quantized K/V')\n"
             "  --kv-positions P      original (default): keys rotated at their position | cache: rotated by their\n"
             "                        index in the cache (StreamingLLM position rolling; endless with bounded policies)\n"
             "  --allow-long-context  allow -c above the model's training context (refused without it)\n"
             "Policy options (--POLICY-OPTION VALUE; only the chosen policy's apply):\n");
    for (int i = 0; hkv_policy_at(i); i++) {
        const hkv_policy_ops *p = hkv_policy_at(i);
        for (int k = 0; k < p->n_options; k++) {
            char flag[64];
            snprintf(flag, sizeof flag, "--%s-%s %s", p->name, p->options[k].name, p->options[k].choices ? "S" : "N");
            help_add(buf, L, &o, "  %-21s %s\n", flag, p->options[k].help ? p->options[k].help : "");
        }
    }
    return buf;
}

void cli_warn_long_ctx(const hkv_model *m, int n_ctx, const hkv_kv_config *kv) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    if (kv->allow_long_ctx && n_ctx > mi.n_ctx_train)
        fprintf(stderr, "heavykv: warning: context length %d is above the model's training context %d: positions "
                "past it were never trained and output quality may collapse\n", n_ctx, mi.n_ctx_train);
}

int cli_bos_flag(const char *flag, int *add_bos) {
    if (!strcmp(flag, "--bos")) { *add_bos = 1; return 1; }
    if (!strcmp(flag, "--no-bos")) { *add_bos = 0; return 1; }
    return 0;
}

int cli_sampler_flag(int argc, char **argv, int *i, hkv_sampler_params *sp) {
    const char *a = argv[*i], *v;
    int ok;
    if (!strcmp(a, "--temp") || !strcmp(a, "--top-k") || !strcmp(a, "--top-p") || !strcmp(a, "--min-p") ||
        !strcmp(a, "--repeat-penalty") || !strcmp(a, "--repeat-last-n") || !strcmp(a, "-s") || !strcmp(a, "--seed")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
    } else {
        return 0;
    }
    if (!strcmp(a, "--temp")) ok = cli_float(a, v, 0, 100, &sp->temp);
    else if (!strcmp(a, "--top-k")) ok = cli_int(a, v, 0, 1 << 24, &sp->top_k);
    else if (!strcmp(a, "--top-p")) ok = cli_float(a, v, 1e-6, 1, &sp->top_p);
    else if (!strcmp(a, "--min-p")) ok = cli_float(a, v, 0, 1, &sp->min_p);
    else if (!strcmp(a, "--repeat-penalty")) ok = cli_float(a, v, 1e-3, 100, &sp->repeat_penalty);
    else if (!strcmp(a, "--repeat-last-n")) ok = cli_int(a, v, 0, 1 << 20, &sp->repeat_last_n);
    else ok = cli_u64(a, v, &sp->seed);
    return ok ? 1 : -1;
}

hkv_model *cli_load_model(const char *path, int n_threads) {
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = n_threads;
    hkv_model *m;
    char err[512];
    if (hkv_model_load(path, &mp, &m, err, sizeof err)) { cli_error("%s", err); return NULL; }
    return m;
}
