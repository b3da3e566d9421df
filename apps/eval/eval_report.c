/* Reports of an eval sweep: the named-metrics container, an aligned table, CSV, JSON and a hand-written SVG
 * line plot (metric vs budget, one line per policy, like the figures of the H2O paper). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "eval.h"

void eval_metrics_add(eval_metrics *m, const char *name, double value) {
    if (m->n >= EVAL_MAX_METRICS) return;
    snprintf(m->names[m->n], sizeof m->names[0], "%s", name);
    m->values[m->n++] = value;
}

double eval_metrics_get(const eval_metrics *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->names[i], name)) return m->values[i];
    return NAN;
}

/* Numbers print with 6 significant digits; integral values (counts, token budgets) without decimals. */
static void fmt_num(char *buf, size_t len, double v) {
    if (isnan(v)) snprintf(buf, len, "nan");
    else if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, len, "%.0f", v);
    else snprintf(buf, len, "%.6g", v);
}

void eval_write_table(FILE *f, const eval_row *rows, int n) {
    if (n <= 0) return;
    const eval_metrics *h = &rows[0].m;
    int wp = 6, wb = 6, w[EVAL_MAX_METRICS + 1];
    char buf[64];
    for (int r = 0; r < n; r++) {
        int lp = (int)strlen(rows[r].policy), lb = (int)strlen(rows[r].budget);
        wp = lp > wp ? lp : wp;
        wb = lb > wb ? lb : wb;
    }
    w[0] = 13; /* "budget_tokens" */
    for (int k = 0; k < h->n; k++) {
        w[k + 1] = (int)strlen(h->names[k]);
        for (int r = 0; r < n; r++) {
            fmt_num(buf, sizeof buf, rows[r].m.values[k]);
            int l = (int)strlen(buf);
            w[k + 1] = l > w[k + 1] ? l : w[k + 1];
        }
    }
    fprintf(f, "%-*s  %-*s  %*s", wp, "policy", wb, "budget", w[0], "budget_tokens");
    for (int k = 0; k < h->n; k++) fprintf(f, "  %*s", w[k + 1], h->names[k]);
    fputc('\n', f);
    for (int r = 0; r < n; r++) {
        fmt_num(buf, sizeof buf, rows[r].m.budget_tokens);
        fprintf(f, "%-*s  %-*s  %*s", wp, rows[r].policy, wb, rows[r].budget, w[0], buf);
        for (int k = 0; k < h->n; k++) {
            fmt_num(buf, sizeof buf, rows[r].m.values[k]);
            fprintf(f, "  %*s", w[k + 1], buf);
        }
        fputc('\n', f);
    }
}

void eval_write_csv_header(FILE *f, const eval_metrics *m) {
    fprintf(f, "policy,budget,budget_tokens");
    for (int k = 0; k < m->n; k++) fprintf(f, ",%s", m->names[k]);
    fputc('\n', f);
}

void eval_write_csv_row(FILE *f, const eval_row *r) {
    char buf[64];
    fmt_num(buf, sizeof buf, r->m.budget_tokens);
    fprintf(f, "%s,%s,%s", r->policy, r->budget, buf);
    for (int k = 0; k < r->m.n; k++) {
        /* full precision: a resumed sweep reads these back */
        if (isnan(r->m.values[k])) snprintf(buf, sizeof buf, "nan");
        else if (r->m.values[k] == floor(r->m.values[k]) && fabs(r->m.values[k]) < 1e15) fmt_num(buf, sizeof buf, r->m.values[k]);
        else snprintf(buf, sizeof buf, "%.10g", r->m.values[k]);
        fprintf(f, ",%s", buf);
    }
    fputc('\n', f);
}

void eval_write_csv(FILE *f, const eval_row *rows, int n) {
    if (n <= 0) return;
    eval_write_csv_header(f, &rows[0].m);
    for (int r = 0; r < n; r++) eval_write_csv_row(f, &rows[r]);
}

/* JSON numbers cannot be nan/inf: those become null. Names and labels are plain ASCII identifiers. */
static void json_num(FILE *f, double v) {
    char buf[64];
    if (!isfinite(v)) { fputs("null", f); return; }
    fmt_num(buf, sizeof buf, v);
    fputs(buf, f);
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

/* {"policy": ..., "budget": ..., "budget_tokens": ..., <metrics>} without a newline. */
static void json_row(FILE *f, const eval_row *r) {
    fputs("{\"policy\": ", f);
    json_str(f, r->policy);
    fputs(", \"budget\": ", f);
    json_str(f, r->budget);
    fputs(", \"budget_tokens\": ", f);
    json_num(f, r->m.budget_tokens);
    for (int k = 0; k < r->m.n; k++) {
        fputs(", ", f);
        json_str(f, r->m.names[k]);
        fputs(": ", f);
        json_num(f, r->m.values[k]);
    }
    fputc('}', f);
}

void eval_write_json(FILE *f, const char *command, const eval_row *rows, int n) {
    fputs("{\"command\": ", f);
    json_str(f, command);
    fputs(", \"rows\": [", f);
    for (int r = 0; r < n; r++) {
        fputs(r ? ",\n  " : "\n  ", f);
        json_row(f, &rows[r]);
    }
    fputs("\n]}\n", f);
}

void eval_write_jsonl_row(FILE *f, const eval_row *r) {
    json_row(f, r);
    fputc('\n', f);
}

/* ---------------------------------------------------------------- reading rows back (--resume) */

static hkv_status add_read_row(eval_row **rows, int *n, const eval_row *r, char *err, size_t errlen) {
    eval_row *nr = realloc(*rows, sizeof *nr * (size_t)(*n + 1));
    if (!nr) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    *rows = nr;
    nr[(*n)++] = *r;
    return HKV_OK;
}

/* One CSV field [s, e) as a number ("nan" included); 0 when it is not one. */
static int csv_num(const char *s, const char *e, double *v) {
    char buf[64], *end;
    if (e - s <= 0 || e - s >= (long)sizeof buf) return 0;
    memcpy(buf, s, (size_t)(e - s));
    buf[e - s] = 0;
    *v = strtod(buf, &end);
    return *end == 0;
}

hkv_status eval_read_csv(const char *text, eval_row **rows, int *n, char *err, size_t errlen) {
    *rows = NULL;
    *n = 0;
    eval_metrics head;
    memset(&head, 0, sizeof head);
    int line = 0;
    for (const char *s = text; *s; line++) {
        const char *nl = strchr(s, '\n');
        if (!nl) break;               /* a line cut short by an interruption: not a finished row */
        eval_row r;
        memset(&r, 0, sizeof r);
        r.m = head;
        int field = 0, bad = 0;
        for (const char *f = s; f <= nl && !bad; field++) {
            const char *e = f;
            while (e < nl && *e != ',' && *e != '\r') e++;
            size_t len = (size_t)(e - f);
            if (line == 0) {
                static const char *const fixed[] = {"policy", "budget", "budget_tokens"};
                if (field < 3) bad = len != strlen(fixed[field]) || strncmp(f, fixed[field], len);
                else if (field - 3 >= EVAL_MAX_METRICS || len == 0 || len >= sizeof head.names[0]) bad = 1;
                else { memcpy(head.names[head.n], f, len); head.names[head.n][len] = 0; head.n++; }
            } else if (field == 0 || field == 1) {
                char *dst = field ? r.budget : r.policy;
                size_t cap = field ? sizeof r.budget : sizeof r.policy;
                if (len == 0 || len >= cap) bad = 1;
                else { memcpy(dst, f, len); dst[len] = 0; }
            } else if (field == 2) bad = !csv_num(f, e, &r.m.budget_tokens);
            else if (field - 3 >= head.n) bad = 1;
            else bad = !csv_num(f, e, &r.m.values[field - 3]);
            while (e < nl && *e == '\r') e++;
            f = e + 1;
        }
        if (!bad && line > 0 && field != 3 + head.n) bad = 1;
        if (bad || (line == 0 && head.n == 0)) {
            snprintf(err, errlen, "line %d is not a row of `heavykv eval` CSV output", line + 1);
            free(*rows);
            *rows = NULL;
            *n = 0;
            return HKV_ERR_FORMAT;
        }
        r.budget_pct = NAN;
        if (line > 0 && add_read_row(rows, n, &r, err, errlen)) return HKV_ERR_NOMEM;
        s = nl + 1;
    }
    return HKV_OK;
}

hkv_status eval_read_jsonl(const char *text, eval_row **rows, int *n, char *err, size_t errlen) {
    *rows = NULL;
    *n = 0;
    int line = 0;
    hkv_status st = HKV_OK;
    for (const char *s = text; *s && !st; line++) {
        const char *nl = strchr(s, '\n');
        if (!nl) break;               /* cut short by an interruption */
        size_t len = (size_t)(nl - s);
        char *buf = malloc(len + 1);
        if (!buf) { snprintf(err, errlen, "out of memory"); st = HKV_ERR_NOMEM; break; }
        memcpy(buf, s, len);
        buf[len] = 0;
        s = nl + 1;
        if (strspn(buf, " \t\r") == len) { free(buf); continue; }
        eval_json j;
        char jerr[200];
        eval_row r;
        memset(&r, 0, sizeof r);
        r.budget_pct = NAN;
        if (eval_json_parse(buf, &j, jerr, sizeof jerr)) {
            snprintf(err, errlen, "line %d: %s", line + 1, jerr);
            st = HKV_ERR_FORMAT;
        } else {
            const eval_json *p = eval_json_get(&j, "policy"), *b = eval_json_get(&j, "budget");
            const eval_json *t = eval_json_get(&j, "budget_tokens");
            if (j.type != EJ_OBJ || !p || p->type != EJ_STR || !b || b->type != EJ_STR || !t ||
                strlen(p->str) >= sizeof r.policy || strlen(b->str) >= sizeof r.budget) {
                snprintf(err, errlen, "line %d is not a row of `heavykv eval` JSONL output", line + 1);
                st = HKV_ERR_FORMAT;
            } else {
                snprintf(r.policy, sizeof r.policy, "%s", p->str);
                snprintf(r.budget, sizeof r.budget, "%s", b->str);
                r.m.budget_tokens = t->type == EJ_NUM ? t->num : NAN;
                for (int k = 0; k < j.n; k++) {
                    const char *key = j.keys[k];
                    if (!strcmp(key, "policy") || !strcmp(key, "budget") || !strcmp(key, "budget_tokens")) continue;
                    if (strlen(key) >= sizeof r.m.names[0]) continue;
                    eval_metrics_add(&r.m, key, j.items[k].type == EJ_NUM ? j.items[k].num : NAN);
                }
                st = add_read_row(rows, n, &r, err, errlen);
            }
            eval_json_free(&j);
        }
        free(buf);
    }
    if (st) { free(*rows); *rows = NULL; *n = 0; }
    return st;
}

/* ---------------------------------------------------------------- SVG */

/* Plot geometry in SVG user units. */
#define SVG_W 720
#define SVG_H 440
#define PL 80   /* left margin (y tick labels) */
#define PR 170  /* right margin (legend) */
#define PT 40
#define PB 60

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `want` ticks over span. */
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10, floor(log10(raw))), r = raw / p;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * p;
}

static void svg_text(FILE *f, double x, double y, const char *anchor, const char *extra, const char *s) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra);
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
    fputs("</text>\n", f);
}

typedef struct axis { double lo, hi, step; } axis;

static axis make_axis(double lo, double hi) {
    if (!(hi > lo)) { double d = fabs(lo) > 0 ? fabs(lo) * 0.05 : 1; lo -= d; hi += d; }
    double step = nice_step(hi - lo, 5);
    axis a = {floor(lo / step) * step, ceil(hi / step) * step, step};
    return a;
}

static void svg_axes(FILE *f, axis ax, axis ay, const char *xlabel, const char *ylabel) {
    double x0 = PL, x1 = SVG_W - PR, y0 = SVG_H - PB, y1 = PT;
    char buf[64];
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n", PL, PT,
            SVG_W - PL - PR, SVG_H - PT - PB);
    for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step) {
        double x = x0 + (v - ax.lo) / (ax.hi - ax.lo) * (x1 - x0);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x, y0, x, y1);
        snprintf(buf, sizeof buf, "%g", fabs(v) < ax.step * 1e-6 ? 0.0 : v);
        svg_text(f, x, y0 + 18, "middle", "", buf);
    }
    for (double v = ay.lo; v <= ay.hi + ay.step * 1e-6; v += ay.step) {
        double y = y0 - (v - ay.lo) / (ay.hi - ay.lo) * (y0 - y1);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x0, y, x1, y);
        snprintf(buf, sizeof buf, "%g", fabs(v) < ay.step * 1e-6 ? 0.0 : v);
        svg_text(f, x0 - 6, y + 4, "end", "", buf);
    }
    svg_text(f, (x0 + x1) / 2, SVG_H - 18, "middle", "", xlabel);
    char rot[96];
    snprintf(rot, sizeof rot, " transform=\"rotate(-90 20 %.1f)\"", (y0 + y1) / 2);
    svg_text(f, 20, (y0 + y1) / 2, "middle", rot, ylabel);
}

/* Okabe & Ito's colour-blind-safe palette (yellow last: weakest on white); each policy also gets its own
 * marker shape, so lines stay distinguishable in grey print. */
static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
                                      "#000000", "#F0E442"};

/* Marker `shape` (0 circle, 1 square, 2 triangle, 3 diamond, then hollow versions) centred at (x, y). */
static void svg_marker(FILE *f, int shape, double x, double y, const char *col) {
    char style[96];
    snprintf(style, sizeof style, shape >= 4 ? "fill=\"white\" stroke=\"%s\" stroke-width=\"1.5\"" : "fill=\"%s\"", col);
    switch (shape % 4) {
    case 0: fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" %s/>\n", x, y, style); break;
    case 1: fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" %s/>\n", x - 3.5, y - 3.5, style); break;
    case 2: fprintf(f, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" %s/>\n", x, y - 5, x - 4.5, y + 3.5, x + 4.5,
                    y + 3.5, style); break;
    default: fprintf(f, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" %s/>\n", x, y - 5, x + 5, y, x,
                     y + 5, x - 5, y, style); break;
    }
}

static double x_of(const eval_row *r, int pct) { return pct ? r->budget_pct : r->m.budget_tokens; }

hkv_status eval_write_svg(FILE *f, const char *title, const char *subtitle, const char *metric, const eval_row *rows,
                          int n, char *err, size_t errlen) {
    if (n <= 0 || isnan(eval_metrics_get(&rows[0].m, metric))) {
        snprintf(err, errlen, "unknown metric '%s' for the plot%s%s", metric, n > 0 ? " (choose one of: " : "",
                 n > 0 ? rows[0].m.names[0] : "");
        if (n > 0) {
            size_t l = strlen(err);
            for (int k = 1; k < rows[0].m.n && l < errlen; k++, l = strlen(err))
                snprintf(err + l, errlen - l, ", %s", rows[0].m.names[k]);
            l = strlen(err);
            if (l < errlen) snprintf(err + l, errlen - l, ")");
        }
        return HKV_ERR_ARG;
    }
    int pct = 1;
    for (int r = 0; r < n; r++) pct &= !isnan(rows[r].budget_pct);
    char se_name[40];
    snprintf(se_name, sizeof se_name, "%.30s_se", metric);   /* error bars when the metric has a standard error */
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int r = 0; r < n; r++) {
        double x = x_of(&rows[r], pct), y = eval_metrics_get(&rows[r].m, metric), se = eval_metrics_get(&rows[r].m, se_name);
        if (!isfinite(x) || !isfinite(y)) continue;
        if (!isfinite(se)) se = 0;
        xlo = fmin(xlo, x); xhi = fmax(xhi, x); ylo = fmin(ylo, y - se); yhi = fmax(yhi, y + se);
    }
    if (!isfinite(xlo)) { xlo = 0; xhi = 1; ylo = 0; yhi = 1; }
    if (pct) { xlo = 0; xhi = fmax(xhi, 1); }
    axis ax = make_axis(xlo, xhi), ay = make_axis(ylo, yhi);
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", SVG_W, SVG_H, SVG_W, SVG_H);
    svg_text(f, (PL + SVG_W - PR) / 2.0, 18, "middle", " font-size=\"15\"", title);
    if (subtitle && *subtitle) svg_text(f, (PL + SVG_W - PR) / 2.0, 34, "middle", " font-size=\"11\" fill=\"#444\"", subtitle);
    svg_axes(f, ax, ay, pct ? "KV budget (% of the evaluated length)" : "KV budget (tokens per KV head)", metric);
    double x0 = PL, x1 = SVG_W - PR, y0 = SVG_H - PB, y1 = PT;
    /* One polyline per policy, in order of first appearance; points sorted by x. */
    int n_pol = 0;
    for (int r = 0; r < n; r++) {
        int seen = 0;
        for (int q = 0; q < r; q++) seen |= !strcmp(rows[q].policy, rows[r].policy);
        if (seen) continue;
        const char *col = palette[n_pol % 8];
        int shape = n_pol % 8;
        /* two passes over the policy's points by increasing x: the line, then error bars and markers on top */
        for (int pass = 0; pass < 2; pass++) {
            if (!pass) fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
            double last = -INFINITY;
            for (;;) { /* selection by increasing x keeps this allocation-free */
                int best = -1;
                for (int q = r; q < n; q++) {
                    if (strcmp(rows[q].policy, rows[r].policy)) continue;
                    double x = x_of(&rows[q], pct);
                    if (x > last && (best < 0 || x < x_of(&rows[best], pct))) best = q;
                }
                if (best < 0) break;
                last = x_of(&rows[best], pct);
                double y = eval_metrics_get(&rows[best].m, metric), se = eval_metrics_get(&rows[best].m, se_name);
                if (!isfinite(y)) continue;
                double px = x0 + (last - ax.lo) / (ax.hi - ax.lo) * (x1 - x0), py = y0 - (y - ay.lo) / (ay.hi - ay.lo) * (y0 - y1);
                if (!pass) { fprintf(f, "%.1f,%.1f ", px, py); continue; }
                if (isfinite(se) && se > 0) {
                    double dy = se / (ay.hi - ay.lo) * (y0 - y1);
                    fprintf(f, "<path d=\"M%.1f,%.1fV%.1fM%.1f,%.1fH%.1fM%.1f,%.1fH%.1f\" stroke=\"%s\" stroke-width=\"1\"/>\n",
                            px, py - dy, py + dy, px - 3, py - dy, px + 3, px - 3, py + dy, px + 3, col);
                }
                svg_marker(f, shape, px, py, col);
            }
            if (!pass) fputs("\"/>\n", f);
        }
        double ly = PT + 10 + 20 * n_pol;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                SVG_W - PR + 15, ly, SVG_W - PR + 40, ly, col);
        svg_marker(f, shape, SVG_W - PR + 27.5, ly, col);
        svg_text(f, SVG_W - PR + 46, ly + 4, "start", "", rows[r].policy);
        n_pol++;
    }
    fputs("</svg>\n", f);
    return HKV_OK;
}

/* ---------------------------------------------------------------- perplexity against the position */

/* Axes with a log10 y axis: ticks at 1, 2, 5 x 10^k between ylo and yhi (> 0). */
static void svg_log_axes(FILE *f, axis ax, double ylo, double yhi, const char *xlabel, const char *ylabel) {
    double x0 = PL, x1 = SVG_W - PR, y0 = SVG_H - PB, y1 = PT, llo = log10(ylo), lhi = log10(yhi);
    char buf[64];
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n", PL, PT,
            SVG_W - PL - PR, SVG_H - PT - PB);
    for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step) {
        double x = x0 + (v - ax.lo) / (ax.hi - ax.lo) * (x1 - x0);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x, y0, x, y1);
        snprintf(buf, sizeof buf, "%g", v);
        svg_text(f, x, y0 + 18, "middle", "", buf);
    }
    for (double p = pow(10, floor(llo)); p <= yhi * 1.0001; p *= 10)
        for (int k = 0; k < 3; k++) {
            double v = p * (k == 0 ? 1 : k == 1 ? 2 : 5);
            if (v < ylo * 0.9999 || v > yhi * 1.0001) continue;
            double y = y0 - (log10(v) - llo) / (lhi - llo) * (y0 - y1);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x0, y, x1, y);
            snprintf(buf, sizeof buf, "%g", v);
            svg_text(f, x0 - 6, y + 4, "end", "", buf);
        }
    svg_text(f, (x0 + x1) / 2, SVG_H - 18, "middle", "", xlabel);
    char rot[96];
    snprintf(rot, sizeof rot, " transform=\"rotate(-90 20 %.1f)\"", (y0 + y1) / 2);
    svg_text(f, 20, (y0 + y1) / 2, "middle", rot, ylabel);
}

/* P of metric k when it is "ppl@P"; -1 otherwise. */
static long bin_start(const eval_metrics *m, int k) {
    const char *s = m->names[k];
    if (strncmp(s, "ppl@", 4) != 0) return -1;
    char *end;
    long p = strtol(s + 4, &end, 10);
    return *end ? -1 : p;
}

#define POS_PLOT_POLICIES 8 /* distinct policies (colour + marker) in one position plot */

hkv_status eval_write_position_svg(FILE *f, const char *title, const char *subtitle, const eval_row *rows, int n,
                                   char *err, size_t errlen) {
    long width = 0, xmax = 0;
    double ylo = INFINITY, yhi = -INFINITY;
    for (int r = 0; r < n; r++)
        for (int k = 0; k < rows[r].m.n; k++) {
            long p = bin_start(&rows[r].m, k);
            double y = rows[r].m.values[k];
            if (p < 0) continue;
            if (p > 0 && (width == 0 || p < width)) width = p; /* bins start at 0, width, 2 width, ... */
            if (p > xmax) xmax = p;
            if (isfinite(y) && y > 0) { ylo = fmin(ylo, y); yhi = fmax(yhi, y); }
        }
    if (!isfinite(ylo) || width == 0) {
        snprintf(err, errlen, "no binned perplexity to plot (eval ppl --mode stream --bins N, at least 2 bins)");
        return HKV_ERR_ARG;
    }
    if (yhi <= ylo * 1.01) yhi = ylo * 1.1;
    /* widen to the 1-2-5 ticks around the data, so the lowest and highest curves have a labelled line */
    double lb = pow(10, floor(log10(ylo))), hb = pow(10, floor(log10(yhi)));
    ylo = (ylo / lb >= 5 ? 5 : ylo / lb >= 2 ? 2 : 1) * lb;
    yhi = (yhi / hb <= 1 ? 1 : yhi / hb <= 2 ? 2 : yhi / hb <= 5 ? 5 : 10) * hb;
    axis ax = make_axis(0, (double)(xmax + width));
    ax.lo = 0;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", SVG_W, SVG_H, SVG_W, SVG_H);
    svg_text(f, (PL + SVG_W - PR) / 2.0, 18, "middle", " font-size=\"15\"", title);
    if (subtitle && *subtitle) svg_text(f, (PL + SVG_W - PR) / 2.0, 34, "middle", " font-size=\"11\" fill=\"#444\"", subtitle);
    svg_log_axes(f, ax, ylo, yhi, "position (tokens)", "perplexity of the bin (log scale)");
    double x0 = PL, x1 = SVG_W - PR, y0 = SVG_H - PB, y1 = PT, llo = log10(ylo), lhi = log10(yhi);
    int n_col = 0;
    char seen[POS_PLOT_POLICIES][16];
    for (int r = 0; r < n; r++) {
        /* colour and marker per policy (the label before '+'); solid for cache positions, dashed otherwise */
        char base[16];
        snprintf(base, sizeof base, "%s", rows[r].policy);
        char *plus = strchr(base, '+');
        int cache = plus && !strcmp(plus, "+cache");
        if (plus) *plus = 0;
        int col = -1;
        for (int q = 0; q < n_col; q++) if (!strcmp(seen[q], base)) col = q;
        if (col < 0 && n_col < POS_PLOT_POLICIES) { col = n_col; snprintf(seen[n_col++], sizeof seen[0], "%s", base); }
        if (col < 0) col = 0;
        const char *dash = cache ? "" : " stroke-dasharray=\"6,4\"";
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", palette[col % 8], dash);
        for (int k = 0; k < rows[r].m.n; k++) {
            long p = bin_start(&rows[r].m, k);
            double y = rows[r].m.values[k];
            if (p < 0 || !isfinite(y) || y <= 0) continue;
            fprintf(f, "%.1f,%.1f ", x0 + ((double)p + width / 2.0 - ax.lo) / (ax.hi - ax.lo) * (x1 - x0),
                    y0 - (log10(y) - llo) / (lhi - llo) * (y0 - y1));
        }
        fputs("\"/>\n", f);
        for (int k = 0; k < rows[r].m.n; k++) {
            long p = bin_start(&rows[r].m, k);
            double y = rows[r].m.values[k];
            if (p < 0 || !isfinite(y) || y <= 0) continue;
            svg_marker(f, col + (cache ? 0 : 4), x0 + ((double)p + width / 2.0 - ax.lo) / (ax.hi - ax.lo) * (x1 - x0),
                       y0 - (log10(y) - llo) / (lhi - llo) * (y0 - y1), palette[col % 8]);
        }
        double ly = PT + 10 + 20 * r;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
                SVG_W - PR + 15, ly, SVG_W - PR + 40, ly, palette[col % 8], dash);
        svg_marker(f, col + (cache ? 0 : 4), SVG_W - PR + 27.5, ly, palette[col % 8]);
        svg_text(f, SVG_W - PR + 46, ly + 4, "start", "", rows[r].policy);
    }
    fputs("</svg>\n", f);
    return HKV_OK;
}
