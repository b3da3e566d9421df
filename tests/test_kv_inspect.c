/* heavykv kv-inspect: the SVG exists, has one cell group per (layer, KV head), and the cells of every step are
 * exactly the positions hkv_kv_positions reports after that step in an API run of the same prompt + greedy
 * continuation. Also: the bad-argument paths exit non-zero with a message. */
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"
#include "testutil.h"

#define PROMPT "Once upon a time, there was a little dog named Max"
#define NGEN 20

/* Positions kept after each step [step][layer][head][pos] by the API, same steps as kv-inspect. */
static uint8_t kept[NGEN + 1][16][16][128];

static int api_run(hkv_model *m, hkv_model_info *mi, int *n_steps) {
    hkv_context_params cp = hkv_context_default_params();
    char err[256];
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "h2o");
    hkv_amount_parse("10", &cp.kv.budget, err, sizeof err);
    int32_t toks[128], pos[128];
    int n = hkv_tokenize(m, PROMPT, -1, 1, toks, 128);
    cp.ref_len = n;
    hkv_context *c;
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) return 0;
    int ok = hkv_decode(c, 0, toks, n) == HKV_OK;
    for (int s = 0; ok && s <= NGEN; s++) {
        if (s) {
            int32_t t = hkv_argmax(hkv_get_logits(c, 0, -1), mi->n_vocab);
            ok = hkv_decode(c, 0, &t, 1) == HKV_OK;
        }
        for (int l = 0; ok && l < mi->n_layer; l++)
            for (int h = 0; h < mi->n_head_kv; h++) {
                int k = hkv_kv_positions(c, 0, l, h, pos, 128);
                for (int j = 0; j < k; j++) kept[s][l][h][pos[j]] = 1;
            }
    }
    hkv_context_free(c);
    *n_steps = NGEN + 1;
    return ok;
}

static int attr(const char *s, const char *name) {
    const char *p = strstr(s, name);
    return p ? atoi(p + strlen(name)) : -1;
}

static void test_svg(hkv_model *m, hkv_model_info *mi) {
    int n_steps = 0;
    CHECK(mi->n_layer <= 16 && mi->n_head_kv <= 16);
    CHECK(api_run(m, mi, &n_steps));
    const char *svg = tu_tmp("inspect.svg");
    char args[1024], out[4096];
    snprintf(args, sizeof args, "kv-inspect -m '%s' -p '%s' -n %d --kv-policy h2o --kv-budget 10 -o '%s'", tu_model(),
             PROMPT, NGEN, svg);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);
    size_t len;
    char *t = tu_read_file(svg, &len);
    CHECK(t && !strncmp(t, "<svg", 4) && strstr(t, "</svg>"));
    if (!t) return;
    int groups = 0, mism = 0, cells = 0;
    static uint8_t got[NGEN + 1][128];
    for (char *g = strstr(t, "<g class=\"head\""); g; g = strstr(g + 1, "<g class=\"head\"")) {
        int l = attr(g, "data-layer=\""), h = attr(g, "data-head=\"");
        char *end = strstr(g, "</g>");
        CHECK(end != NULL && l >= 0 && l < mi->n_layer && h >= 0 && h < mi->n_head_kv);
        if (!end || l < 0 || l >= mi->n_layer || h < 0 || h >= mi->n_head_kv) break;
        *end = 0;
        memset(got, 0, sizeof got);
        for (char *r = strstr(g, "class=\"kept\""); r; r = strstr(r + 1, "class=\"kept\"")) {
            int s = attr(r, "data-step=\""), p = attr(r, "data-pos=\""), n = attr(r, "data-n=\"");
            if (s < 0 || s >= n_steps || p < 0 || n < 1 || p + n > 128) { mism++; continue; }
            for (int q = p; q < p + n; q++) got[s][q] = 1;
            cells += n;
        }
        for (int s = 0; s < n_steps; s++)
            for (int q = 0; q < 128; q++) mism += got[s][q] != kept[s][l][h][q];
        *end = '<';
        groups++;
    }
    CHECKF(groups == mi->n_layer * mi->n_head_kv, "%d cell groups, want %d", groups, mi->n_layer * mi->n_head_kv);
    CHECKF(mism == 0 && cells > 0, "%d cells differ from hkv_kv_positions (%d drawn)", mism, cells);
    free(t);
    remove(svg);
}

static void test_errors(void) {
    char args[1024], out[4096];
    snprintf(args, sizeof args, "kv-inspect -m '%s' -o /nonexistent/dir/x.svg -p hi -n 2", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "cannot open"));
    snprintf(args, sizeof args, "kv-inspect -m '%s' -p hi", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "needs an output file"));
    snprintf(args, sizeof args, "kv-inspect -m '%s' -o x.svg", tu_model());
    CHECK(tu_cli(args, out, sizeof out) != 0 && strstr(out, "needs a prompt"));
    CHECK(tu_cli("kv-inspect --kv-policy nope", out, sizeof out) != 0 && strstr(out, "unknown KV policy 'nope'"));
    CHECK(tu_cli("kv-inspect --help", out, sizeof out) == 0 && strstr(out, "--prompt-steps") && strstr(out, "snapkv"));
}

int main(void) {
    hkv_model *m;
    char err[256];
    if (hkv_model_load(tu_model(), NULL, &m, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    test_svg(m, &mi);
    test_errors();
    hkv_model_free(m);
    return tu_done("kv_inspect");
}
