/* The policy table (the one list of policies, see HKV_POLICY_TABLE in policy.h) and what is derived from it:
 * lookup by name, the names list, the "unknown policy" message, per-policy option parsing. */
#include "alloc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "policy.h"

#define HKV_POLICY_ENTRY(n) &hkv_policy_##n,
static const hkv_policy_ops *const policy_table[] = { HKV_POLICY_TABLE(HKV_POLICY_ENTRY) NULL };
#undef HKV_POLICY_ENTRY
#define HKV_POLICY_NAME(n) #n,
static const char *const policy_names[] = { HKV_POLICY_TABLE(HKV_POLICY_NAME) NULL };
#undef HKV_POLICY_NAME

const hkv_policy_ops *hkv_policy_at(int i) {
    if (i < 0 || i >= (int)(sizeof policy_table / sizeof policy_table[0])) return NULL;
    return policy_table[i];
}

const char *const *hkv_policy_names(void) { return policy_names; }

const hkv_policy_ops *hkv_policy_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; policy_table[i]; i++)
        if (strcmp(policy_table[i]->name, name) == 0) return policy_table[i];
    return NULL;
}

hkv_status hkv_policy_check(const char *name, char *err, size_t errlen) {
    if (hkv_policy_find(name)) return HKV_OK;
    if (err && errlen) {
        size_t o = (size_t)snprintf(err, errlen, "unknown KV policy '%.32s' (choose", name ? name : "");
        for (int i = 0; policy_table[i] && o < errlen; i++)
            o += (size_t)snprintf(err + o, errlen - o, "%s %s", i ? "," : "", policy_table[i]->name);
        if (o < errlen) snprintf(err + o, errlen - o, ")");
    }
    return HKV_ERR_ARG;
}

const hkv_policy_ops *hkv_policy_of(const hkv_kv_config *c, char *err, size_t errlen) {
    if (c->custom) return c->custom;
    return hkv_policy_check(c->policy, err, errlen) == HKV_OK ? hkv_policy_find(c->policy) : NULL;
}

/* ---------------------------------------------------------------- options */

static hkv_status opt_fail(char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    return HKV_ERR_ARG;
}

/* The option called name (length len) of ops, or -1. */
static int option_index(const hkv_policy_ops *ops, const char *name, size_t len) {
    for (int i = 0; i < ops->n_options; i++)
        if (strlen(ops->options[i].name) == len && strncmp(ops->options[i].name, name, len) == 0) return i;
    return -1;
}

/* "a|b|c" as the text "a, b or c" style list is not needed: the choices string is shown as it is. */
static hkv_status option_value(const hkv_policy_ops *ops, int i, const char *v, size_t len, int *out, char *err,
                               size_t errlen) {
    const hkv_policy_option *o = &ops->options[i];
    char val[48];
    snprintf(val, sizeof val, "%.*s", (int)(len < 40 ? len : 40), v);
    if (o->choices) {
        int k = 0;
        for (const char *p = o->choices; *p; k++) {
            const char *e = strchr(p, '|');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            if (n == len && strncmp(p, v, len) == 0) { *out = k; return HKV_OK; }
            p += n + (e ? 1 : 0);
        }
        if (err && errlen)
            snprintf(err, errlen, "%s option '%s' expects %s, got '%s'", ops->name, o->name, o->choices, val);
        return HKV_ERR_ARG;
    }
    char *end;
    long x = strtol(val, &end, 10);
    if (!len || *end || len > 12 || x < o->lo || x > o->hi) {
        if (err && errlen)
            snprintf(err, errlen, "%s option '%s' expects an integer in [%d, %d], got '%s'", ops->name, o->name,
                     o->lo, o->hi, val);
        return HKV_ERR_ARG;
    }
    *out = (int)x;
    return HKV_OK;
}

static hkv_status unknown_option(const hkv_policy_ops *ops, const char *name, size_t len, char *err, size_t errlen) {
    if (!err || !errlen) return HKV_ERR_ARG;
    size_t o = (size_t)snprintf(err, errlen, "the %s policy has no option '%.*s'", ops->name,
                                (int)(len < 40 ? len : 40), name);
    for (int i = 0; i < ops->n_options && o < errlen; i++)
        o += (size_t)snprintf(err + o, errlen - o, "%s%s", i ? ", " : " (choose ", ops->options[i].name);
    if (o < errlen) snprintf(err + o, errlen - o, "%s", ops->n_options ? ")" : " (it has none)");
    return HKV_ERR_ARG;
}

hkv_status hkv_policy_options(const hkv_policy_ops *ops, const char *opts, int *out, char *err, size_t errlen) {
    for (int i = 0; i < HKV_POLICY_MAX_OPTIONS; i++) out[i] = i < ops->n_options ? ops->options[i].def : 0;
    if (ops->n_options > HKV_POLICY_MAX_OPTIONS || ops->n_options < 0)
        return opt_fail(err, errlen, "a KV policy declares more options than HKV_POLICY_MAX_OPTIONS");
    size_t nl = strlen(ops->name);
    for (const char *p = opts ? opts : ""; *p;) {
        const char *e = strchr(p, ','), *end = e ? e : p + strlen(p);
        const char *dot = memchr(p, '.', (size_t)(end - p)), *eq = memchr(p, '=', (size_t)(end - p));
        if (!dot || !eq || dot > eq) {
            if (err && errlen)
                snprintf(err, errlen, "malformed KV policy option '%.*s' (expected POLICY.NAME=VALUE)",
                         (int)(end - p < 60 ? end - p : 60), p);
            return HKV_ERR_ARG;
        }
        if ((size_t)(dot - p) == nl && strncmp(p, ops->name, nl) == 0) {
            int i = option_index(ops, dot + 1, (size_t)(eq - dot - 1));
            if (i < 0) return unknown_option(ops, dot + 1, (size_t)(eq - dot - 1), err, errlen);
            hkv_status st = option_value(ops, i, eq + 1, (size_t)(end - eq - 1), &out[i], err, errlen);
            if (st) return st;
        }
        p = e ? e + 1 : end;
    }
    return HKV_OK;
}

hkv_status hkv_kv_set_option(hkv_kv_config *c, const char *policy, const char *name, const char *value, char *err,
                             size_t errlen) {
    if (!c || !policy || !name || !value)
        return opt_fail(err, errlen, "hkv_kv_set_option needs a config, a policy, a name and a value");
    const hkv_policy_ops *ops = c->custom && !strcmp(c->custom->name, policy) ? c->custom : hkv_policy_find(policy);
    if (!ops) return hkv_policy_check(policy, err, errlen);
    int i = option_index(ops, name, strlen(name)), v;
    if (i < 0) return unknown_option(ops, name, strlen(name), err, errlen);
    hkv_status st = option_value(ops, i, value, strlen(value), &v, err, errlen);
    if (st) return st;
    if (strchr(value, ',') || strchr(value, '='))
        return opt_fail(err, errlen, "a KV policy option value may not contain ',' or '='");
    /* rebuild the list without an earlier entry for the same option, then append the new one */
    char key[64], out[sizeof c->options] = "";
    int kl = snprintf(key, sizeof key, "%s.%s=", policy, name);
    size_t o = 0;
    for (const char *p = c->options; *p;) {
        const char *e = strchr(p, ','), *end = e ? e : p + strlen(p);
        if (!(end - p >= kl && strncmp(p, key, (size_t)kl) == 0))
            o += (size_t)snprintf(out + o, sizeof out - o, "%s%.*s", o ? "," : "", (int)(end - p), p);
        p = e ? e + 1 : end;
        if (o >= sizeof out) break;
    }
    if (o + strlen(key) + strlen(value) + 2 > sizeof out)
        return opt_fail(err, errlen, "too many KV policy options (at most 159 characters in all)");
    snprintf(out + o, sizeof out - o, "%s%s%s", o ? "," : "", key, value);
    memcpy(c->options, out, sizeof out);
    return HKV_OK;
}

/* ---------------------------------------------------------------- batch selection helper */

/* Stable bottom-up merge sort of idx[n] by rank[idx] ascending (stable = ties stay in ascending j). */
static void sort_by_rank(int *idx, int *tmp, int n, const float *rank) {
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, a = lo, b = mid, o = lo;
            while (a < mid && b < hi) tmp[o++] = rank[idx[b]] < rank[idx[a]] ? idx[b++] : idx[a++];
            while (a < mid) tmp[o++] = idx[a++];
            while (b < hi) tmp[o++] = idx[b++];
        }
        memcpy(idx, tmp, sizeof(int) * (size_t)n);
    }
}

int hkv_select_lowest(const hkv_head_view *h, const float *rank, const uint8_t *prot, int target, uint8_t *keep) {
    int *idx = hkv_malloc(sizeof(int) * 2 * (size_t)(h->n ? h->n : 1)), nc = 0;
    if (!idx) return -1;
    for (int j = 0; j < h->n; j++) {
        keep[j] = 1;
        if (!prot[j]) idx[nc++] = j;
    }
    sort_by_rank(idx, idx + h->n, nc, rank);
    int drop = h->n - target, kept = h->n;
    for (int k = 0; k < nc && k < drop; k++) { keep[idx[k]] = 0; kept--; }
    hkv_free(idx);
    return kept;
}

void hkv_budget_split_heavy_recent(hkv_budget *s) {
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
