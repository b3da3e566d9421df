/* KV cache configuration: defaults, parsing of budget amounts ("512", "20%", "0.2") and resolving a policy's
 * budget into token counts per KV head (total = heavy + recent + sink). */
#include "alloc.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "policy.h"

/* Largest token count accepted: floats hold every integer up to 2^24 exactly. */
#define HKV_MAX_AMOUNT_TOKENS 16777216

hkv_kv_config hkv_kv_default_config(void) {
    hkv_kv_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.policy, sizeof c.policy, "%s", "full");
    c.type = HKV_KV_F16;
    return c;
}

static hkv_status fail(char *err, size_t errlen, hkv_status st, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    return st;
}

/* Grammar: DIGITS ["." DIGITS] ["%"] with at least one digit; no sign, exponent, spaces or suffixes. The value
 * is accumulated by hand (not strtod) so the result does not depend on the C locale's decimal point. */
hkv_status hkv_amount_parse(const char *s, hkv_amount *out, char *err, size_t errlen) {
    char msg[256];
    if (!s || !*s)
        return fail(err, errlen, HKV_ERR_ARG,
                    "empty budget amount; expected a token count (\"512\"), a percentage (\"20%\") or a ratio (\"0.2\")");
    const char *p = s;
    double mant = 0;
    int ndig = 0, nfrac = 0, has_dot = 0, is_pct = 0;
    for (; *p >= '0' && *p <= '9'; p++, ndig++) mant = mant * 10 + (*p - '0');
    if (*p == '.') {
        has_dot = 1;
        for (p++; *p >= '0' && *p <= '9'; p++, ndig++, nfrac++) mant = mant * 10 + (*p - '0');
    }
    if (*p == '%') { is_pct = 1; p++; }
    if (*p || ndig == 0 || ndig > 30) {
        snprintf(msg, sizeof msg, "budget amount \"%.40s\" %s; expected a token count (\"512\"), a percentage "
                 "(\"20%%\") or a ratio (\"0.2\")", s, s[0] == '-' ? "is negative" : "is not a number");
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    double v = mant / pow(10.0, nfrac);
    hkv_amount a = { 0.0f, 0, 1 };
    if (is_pct) {
        if (!(v > 0 && v <= 100)) {
            snprintf(msg, sizeof msg, "budget percentage \"%.40s\" must be above 0%% and at most 100%%", s);
            return fail(err, errlen, HKV_ERR_ARG, msg);
        }
        a.value = (float)(v / 100.0); a.is_ratio = 1;
    } else if (has_dot) {
        if (!(v > 0 && v <= 1)) {
            snprintf(msg, sizeof msg, "budget ratio \"%.40s\" must be above 0 and at most 1 (write token counts "
                     "without a decimal point)", s);
            return fail(err, errlen, HKV_ERR_ARG, msg);
        }
        a.value = (float)v; a.is_ratio = 1;
    } else {
        if (v > HKV_MAX_AMOUNT_TOKENS) {
            snprintf(msg, sizeof msg, "budget amount \"%.40s\" is too large (at most %d tokens)", s,
                     HKV_MAX_AMOUNT_TOKENS);
            return fail(err, errlen, HKV_ERR_ARG, msg);
        }
        a.value = (float)v;
    }
    if (out) *out = a;
    return HKV_OK;
}

/* ---------------------------------------------------------------- resolving */

/* One amount in tokens (-1 when unset). Ratios round to nearest and are floored at HKV_MIN_RATIO_BUDGET so a
 * percentage of a very short prompt still keeps a few tokens. */
static int amount_tokens(hkv_amount a, int ref_len) {
    if (!a.set) return -1;
    if (!a.is_ratio) return (int)a.value;
    long r = lround((double)a.value * ref_len);
    return r < HKV_MIN_RATIO_BUDGET ? HKV_MIN_RATIO_BUDGET : (int)r;
}

/* A policy without derive_budget: sink and recent default to 0 and heavy is the rest. */
static void derive_default(hkv_budget *s) {
    if (s->sink < 0) s->sink = 0;
    if (s->recent < 0) s->recent = 0;
    if (s->total >= 0 && s->heavy < 0) s->heavy = s->total - s->recent - s->sink;
    if (s->heavy < 0) s->heavy = 0;
    if (s->total < 0) s->total = s->heavy + s->recent + s->sink;
}

/* Derives and validates one split (the given parts, -1 = unset) with the policy's rules. */
static hkv_status derive_split(const hkv_policy_ops *ops, const hkv_policy_cfg *cfg, hkv_budget given, int n_ctx,
                               hkv_budget *out, char *err, size_t errlen) {
    char msg[256];
    hkv_budget s = given;
    if (ops->derive_budget) {
        hkv_status st = ops->derive_budget(cfg, &s, msg, sizeof msg);
        if (st != HKV_OK) return fail(err, errlen, st, msg);
    } else {
        derive_default(&s);
    }
    if (s.total < 1) {
        snprintf(msg, sizeof msg, "KV budget of %d tokens is too small; it must be at least 1", s.total);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if (s.total > n_ctx) {
        snprintf(msg, sizeof msg, "KV budget of %d tokens exceeds the context length %d", s.total, n_ctx);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if (s.heavy < 0 || s.recent < 0 || s.sink < 0 || s.heavy + s.recent + s.sink != s.total) {
        char parts[96] = "";
        const char *names[3] = { "heavy", "recent", "sink" };
        int vals[3] = { given.heavy, given.recent, given.sink };
        for (int i = 0, o = 0; i < 3; i++)
            if (vals[i] >= 0 && o < (int)sizeof parts)
                o += snprintf(parts + o, sizeof parts - (size_t)o, "%s%s %d", o ? ", " : "", names[i], vals[i]);
        snprintf(msg, sizeof msg, "the %s budget split (%s) does not fit a total of %d tokens", ops->name, parts,
                 s.total);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    *out = s;
    return HKV_OK;
}

/* Policy, options and the given parts of a config; the shared first half of resolving. */
static hkv_status resolve_start(const hkv_kv_config *c, int ref_len, int n_ctx, const hkv_policy_ops **ops,
                                hkv_policy_cfg *cfg, hkv_budget *given, char *err, size_t errlen) {
    char msg[256];
    if (n_ctx < 1) {
        snprintf(msg, sizeof msg, "context length %d must be at least 1", n_ctx);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if (!(*ops = hkv_policy_of(c, msg, sizeof msg))) return fail(err, errlen, HKV_ERR_ARG, msg);
    memset(cfg, 0, sizeof *cfg);
    cfg->user = c->custom_user;
    hkv_status st = hkv_policy_options(*ops, c->options, cfg->opt, msg, sizeof msg);
    if (st) return fail(err, errlen, st, msg);
    if (ref_len <= 0) ref_len = n_ctx;
    hkv_budget g = { amount_tokens(c->budget, ref_len), amount_tokens(c->heavy, ref_len),
                     amount_tokens(c->recent, ref_len), amount_tokens(c->sink, ref_len) };
    *given = g;
    return HKV_OK;
}

hkv_status hkv_budget_resolve(const hkv_kv_config *c, int ref_len, int n_ctx, hkv_budget *out, char *err,
                              size_t errlen) {
    char msg[256];
    if (!c || !out) return fail(err, errlen, HKV_ERR_ARG, "hkv_budget_resolve needs a config and an output");
    const hkv_policy_ops *ops;
    hkv_policy_cfg cfg;
    hkv_budget given;
    hkv_status st = resolve_start(c, ref_len, n_ctx, &ops, &cfg, &given, err, errlen);
    if (st) return st;
    if (ops->never_evicts) {     /* budget flags do not apply: the cache holds the whole context */
        hkv_budget b = { n_ctx, 0, n_ctx, 0 };
        *out = b;
        return HKV_OK;
    }
    if (given.total < 0 && given.heavy < 0 && given.recent < 0 && given.sink < 0) {
        snprintf(msg, sizeof msg, "the %s policy needs a KV budget (total tokens, a percentage or its split)",
                 ops->name);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if ((st = derive_split(ops, &cfg, given, n_ctx, out, err, errlen))) return st;
    if (c->replace_order && out->heavy + out->recent == 0) {   /* every kept token is a sink: no slot to replace */
        snprintf(msg, sizeof msg, "the replace order needs a heavy or recent part (the budget of %d is all sink)",
                 out->total);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    return HKV_OK;
}

/* ---------------------------------------------------------------- per-layer schedules */

/* PyramidKV (Cai et al. 2024): budgets fall linearly from the lowest layer to the highest, the top layer gets
 * avg / beta (beta = 20, the paper's default) and the sum over layers equals avg * n_layer, the uniform total.
 * Integer budgets: floors, then the remainder to the largest fractions (lower layers first on ties). */
#define HKV_PYRAMID_BETA 20.0
static void pyramid_totals(int avg, int n_layer, int *tot) {
    if (n_layer == 1) { tot[0] = avg; return; }
    double top = avg / HKV_PYRAMID_BETA;
    if (top < 1) top = 1;
    double bottom = 2.0 * avg - top;
    long sum = 0, want = (long)avg * n_layer;
    for (int l = 0; l < n_layer; l++) {
        double k = bottom - (bottom - top) * l / (n_layer - 1);
        tot[l] = (int)floor(k);
        sum += tot[l];
    }
    while (sum < want) {       /* hand out the remainder, largest fraction first */
        int best = 0;
        double best_f = -1;
        for (int l = 0; l < n_layer; l++) {
            double k = bottom - (bottom - top) * l / (n_layer - 1), f = k - tot[l];
            if (f > best_f) { best = l; best_f = f; }
        }
        tot[best]++;
        sum++;
    }
    while (sum > want)         /* floating error the other way: take from the largest layer */
        for (int l = 0; l < n_layer && sum > want; l++) if (tot[l] > 1) { tot[l]--; sum--; }
}

/* "a,b,c": one amount per layer (tokens, P% or 0.R of ref_len). */
static hkv_status list_totals(const char *s, int ref_len, int n_layer, int *tot, char *err, size_t errlen) {
    char msg[256], item[40];
    int n = 0;
    for (const char *p = s;; n++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n >= n_layer) {
            snprintf(msg, sizeof msg, "--kv-budget-layers lists more budgets than the model's %d layers", n_layer);
            return fail(err, errlen, HKV_ERR_ARG, msg);
        }
        snprintf(item, sizeof item, "%.*s", (int)(len < 38 ? len : 38), p);
        hkv_amount a;
        char aerr[200];
        if (len >= 38 || hkv_amount_parse(item, &a, aerr, sizeof aerr)) {
            snprintf(msg, sizeof msg, "--kv-budget-layers item %d: %s", n + 1, len >= 38 ? "too long" : aerr);
            return fail(err, errlen, HKV_ERR_ARG, msg);
        }
        tot[n] = amount_tokens(a, ref_len);
        if (!e) break;
        p = e + 1;
    }
    if (n + 1 != n_layer) {
        snprintf(msg, sizeof msg, "--kv-budget-layers lists %d budgets but the model has %d layers", n + 1, n_layer);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    return HKV_OK;
}

hkv_status hkv_layer_budgets(const hkv_kv_config *c, int ref_len, int n_ctx, int n_layer, hkv_budget *out,
                             char *err, size_t errlen) {
    char msg[256];
    if (!c || !out || n_layer < 1) return fail(err, errlen, HKV_ERR_ARG, "hkv_layer_budgets needs a config, layers and an output");
    const hkv_policy_ops *ops;
    hkv_policy_cfg cfg;
    hkv_budget given;
    hkv_status st = resolve_start(c, ref_len, n_ctx, &ops, &cfg, &given, err, errlen);
    if (st) return st;
    const char *sched = c->budget_layers[0] ? c->budget_layers : ops->default_layers ? ops->default_layers : "uniform";
    int is_list = strcmp(sched, "uniform") && strcmp(sched, "pyramid");
    hkv_budget base;
    if (!is_list || ops->never_evicts) {
        if ((st = hkv_budget_resolve(c, ref_len, n_ctx, &base, err, errlen))) return st;
        if (ops->never_evicts || !strcmp(sched, "uniform")) {
            for (int l = 0; l < n_layer; l++) out[l] = base;
            return HKV_OK;
        }
    }
    int *tot = hkv_malloc(sizeof(int) * (size_t)n_layer);
    if (!tot) return fail(err, errlen, HKV_ERR_NOMEM, "out of memory for the per-layer budgets");
    if (is_list) {
        if (!strchr(sched, ',') && n_layer > 1 && !(sched[0] >= '0' && sched[0] <= '9')) {
            snprintf(msg, sizeof msg, "--kv-budget-layers expects uniform, pyramid or a list of per-layer budgets, "
                     "got '%.40s'", sched);
            st = fail(err, errlen, HKV_ERR_ARG, msg);
        } else {
            if (ref_len <= 0) ref_len = n_ctx;
            st = list_totals(sched, ref_len, n_layer, tot, err, errlen);
        }
    } else {
        pyramid_totals(base.total, n_layer, tot);
    }
    /* each layer: the policy's split of that layer's total, keeping the parts the user gave */
    for (int l = 0; !st && l < n_layer; l++) {
        hkv_budget g = given;
        g.total = tot[l];
        cfg.layer = l;
        cfg.n_layer = n_layer;
        st = derive_split(ops, &cfg, g, n_ctx, &out[l], msg, sizeof msg);
        if (st) {
            char m2[320];
            snprintf(m2, sizeof m2, "layer %d (budget %d): %s", l, tot[l], msg);
            fail(err, errlen, st, m2);
        }
    }
    hkv_free(tot);
    return st;
}
