/* KV cache configuration: defaults, parsing of budget amounts ("512", "20%", "0.2") and resolving a policy's
 * budget into token counts per KV head (total = heavy + recent + sink). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "heavykv.h"

/* Largest token count accepted: floats hold every integer up to 2^24 exactly. */
#define HKV_MAX_AMOUNT_TOKENS 16777216

static const char *const policy_names[] = { "full", "window", "sink", "h2o", "tova", NULL };

const char *const *hkv_policy_names(void) { return policy_names; }

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

static int is_policy_name(const char *name) {
    for (int i = 0; policy_names[i]; i++)
        if (strcmp(policy_names[i], name) == 0) return 1;
    return 0;
}

/* The split being derived; -1 = not given yet. */
typedef struct split { int total, heavy, recent, sink; } split;

/* A part the policy does not use must be absent or 0; it is then 0. */
static hkv_status no_part(const char *policy, const char *part, int *v, char *err, size_t errlen) {
    if (*v > 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "the %s policy has no %s part; leave the %s budget unset", policy, part, part);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    *v = 0;
    return HKV_OK;
}

/* window: all of the budget is the recent window. */
static hkv_status derive_window(split *s, char *err, size_t errlen) {
    hkv_status st;
    if ((st = no_part("window", "heavy", &s->heavy, err, errlen)) != HKV_OK) return st;
    if ((st = no_part("window", "sink", &s->sink, err, errlen)) != HKV_OK) return st;
    if (s->recent < 0) s->recent = s->total;
    if (s->total < 0) s->total = s->recent;
    return HKV_OK;
}

/* sink: sink tokens + recent window. The default of 4 sinks shrinks for tiny budgets so one recent slot is left. */
static hkv_status derive_sink(split *s, char *err, size_t errlen) {
    hkv_status st = no_part("sink", "heavy", &s->heavy, err, errlen);
    if (st != HKV_OK) return st;
    if (s->total >= 0 && s->sink < 0 && s->recent >= 0) s->sink = s->total - s->recent;
    if (s->sink < 0) s->sink = s->total >= 0 && s->total <= 4 ? (s->total > 0 ? s->total - 1 : 0) : 4;
    if (s->total >= 0 && s->recent < 0) s->recent = s->total - s->sink;
    if (s->recent < 0) s->recent = 0;
    if (s->total < 0) s->total = s->sink + s->recent;
    return HKV_OK;
}

/* h2o: sink (default 0) + heavy hitters + recent window; an even split of the rest when neither is given
 * (recent = half rounded down, heavy gets the odd token). */
static void derive_h2o(split *s) {
    if (s->total >= 0 && s->sink < 0 && s->heavy >= 0 && s->recent >= 0) s->sink = s->total - s->heavy - s->recent;
    if (s->sink < 0) s->sink = 0;
    if (s->total >= 0) {
        int rest = s->total - s->sink;
        if (s->heavy < 0 && s->recent < 0) { s->recent = rest / 2; s->heavy = rest - s->recent; }
        else if (s->heavy < 0) s->heavy = rest - s->recent;
        else if (s->recent < 0) s->recent = rest - s->heavy;
    } else {
        if (s->heavy < 0) s->heavy = 0;
        if (s->recent < 0) s->recent = 0;
        s->total = s->heavy + s->recent + s->sink;
    }
}

/* tova: everything is ranked by the latest query; only optional sinks are protected, no recent window. */
static hkv_status derive_tova(split *s, char *err, size_t errlen) {
    hkv_status st = no_part("tova", "recent", &s->recent, err, errlen);
    if (st != HKV_OK) return st;
    if (s->total >= 0 && s->sink < 0 && s->heavy >= 0) s->sink = s->total - s->heavy;
    if (s->sink < 0) s->sink = 0;
    if (s->heavy < 0) s->heavy = s->total >= 0 ? s->total - s->sink : 0;
    if (s->total < 0) s->total = s->heavy + s->sink;
    return HKV_OK;
}

hkv_status hkv_budget_resolve(const hkv_kv_config *c, int ref_len, int n_ctx, hkv_budget *out, char *err,
                              size_t errlen) {
    char msg[256];
    if (!c || !out) return fail(err, errlen, HKV_ERR_ARG, "hkv_budget_resolve needs a config and an output");
    if (n_ctx < 1) {
        snprintf(msg, sizeof msg, "context length %d must be at least 1", n_ctx);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if (!is_policy_name(c->policy)) {
        snprintf(msg, sizeof msg, "unknown KV policy \"%.16s\"; expected full, window, sink, h2o or tova", c->policy);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if (strcmp(c->policy, "full") == 0) {     /* budget flags do not apply: the cache holds the whole context */
        hkv_budget b = { n_ctx, 0, n_ctx, 0 };
        *out = b;
        return HKV_OK;
    }
    if (ref_len <= 0) ref_len = n_ctx;
    split s = { amount_tokens(c->budget, ref_len), amount_tokens(c->heavy, ref_len),
                amount_tokens(c->recent, ref_len), amount_tokens(c->sink, ref_len) };
    int given_parts = s.heavy >= 0 || s.recent >= 0 || s.sink >= 0;
    if (s.total < 0 && !given_parts) {
        snprintf(msg, sizeof msg, "the %s policy needs a KV budget (total tokens, a percentage or its split)",
                 c->policy);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    split given = s;
    hkv_status st = HKV_OK;
    if (strcmp(c->policy, "window") == 0) st = derive_window(&s, err, errlen);
    else if (strcmp(c->policy, "sink") == 0) st = derive_sink(&s, err, errlen);
    else if (strcmp(c->policy, "h2o") == 0) derive_h2o(&s);
    else st = derive_tova(&s, err, errlen);
    if (st != HKV_OK) return st;

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
        snprintf(msg, sizeof msg, "the %s budget split (%s) does not fit a total of %d tokens", c->policy, parts,
                 s.total);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if (s.recent < 1 && (strcmp(c->policy, "window") == 0 || strcmp(c->policy, "sink") == 0)) {
        snprintf(msg, sizeof msg, "the %s policy needs a recent window of at least 1 token (sink %d of %d)",
                 c->policy, s.sink, s.total);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    if (c->h2o_replace && s.heavy + s.recent == 0) {   /* every kept token is a sink: no slot to replace */
        snprintf(msg, sizeof msg, "the replace order needs a heavy or recent part (the budget of %d is all sink)",
                 s.total);
        return fail(err, errlen, HKV_ERR_ARG, msg);
    }
    hkv_budget b = { s.total, s.heavy, s.recent, s.sink };
    *out = b;
    return HKV_OK;
}
