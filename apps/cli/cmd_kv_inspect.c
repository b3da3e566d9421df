/* heavykv kv-inspect: for a prompt and a greedy continuation, an SVG heatmap per (layer, KV head) of which
 * positions the cache kept after every step (x = step, y = position; a filled cell = kept) — the picture the
 * H2O paper uses to explain heavy hitters, drawn from the user's own model and policy. Public API only:
 * hkv_decode step by step and hkv_kv_positions after each step.
 *
 * SVG structure (tests rely on it): one <g class="head" data-layer="L" data-head="H"> per (layer, KV head);
 * inside, one <rect class="kept" data-step="S" data-pos="P" data-n="N"> per run of N consecutive kept
 * positions starting at P after step S. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

typedef struct inspect_opts {
    const char *model, *prompt, *out;
    int n_gen, n_ctx, n_threads, add_bos, prompt_steps, cell;
    hkv_kv_config kv;
} inspect_opts;

static void inspect_help(void) {
    printf("usage: heavykv kv-inspect [-m MODEL.gguf] -p PROMPT -o OUT.svg [options]\n\n"
           "Draws which positions each layer / KV head kept after every step: the prompt (one step, or one\n"
           "token per step with --prompt-steps), then -n greedy tokens. Columns are steps, rows positions.\n\n"
           "  -m, --model PATH      GGUF model (default $HEAVYKV_MODEL or ../shared/models/stories260K.gguf)\n"
           "  -p, --prompt TEXT     prompt\n"
           "  -o, --output PATH     SVG file to write\n"
           "  -n, --n-predict N     greedy tokens after the prompt (default 64)\n"
           "      --prompt-steps    feed the prompt one token per step (eviction visible inside the prompt)\n"
           "      --cell PX         cell size in pixels (default 3)\n"
           "  -c, --ctx-size N      context length (default: the model's, at most 4096)\n"
           "  -t, --threads N       worker threads\n"
           CLI_BOS_HELP "\n%s", cli_kv_help());
}

static int parse_inspect(int argc, char **argv, inspect_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = cli_default_model();
    o->n_gen = 64;
    o->cell = 3;
    o->add_bos = -1;
    o->kv = hkv_kv_default_config();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r = cli_kv_flag(argc, argv, &i, &o->kv);
        if (r < 0) return 1;
        if (r > 0) continue;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { inspect_help(); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { VAL(); o->prompt = v; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { VAL(); o->out = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { VAL(); if (!cli_int(a, v, 0, 4096, &o->n_gen)) return 1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VAL(); if (!cli_int(a, v, 0, 1 << 24, &o->n_ctx)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &o->n_threads)) return 1; }
        else if (!strcmp(a, "--cell")) { VAL(); if (!cli_int(a, v, 1, 50, &o->cell)) return 1; }
        else if (!strcmp(a, "--prompt-steps")) o->prompt_steps = 1;
        else if (cli_bos_flag(a, &o->add_bos)) continue;
        else return cli_error("unknown option '%s' for 'kv-inspect' (see heavykv kv-inspect --help)", a);
#undef VAL
    }
    if (!o->prompt || !*o->prompt) return cli_error("kv-inspect needs a prompt (-p TEXT)");
    if (!o->out) return cli_error("kv-inspect needs an output file (-o OUT.svg)");
    return 0;
}

/* Kept positions of every (layer, head) after each step: kept[step][layer][head] as a bitmap over positions. */
typedef struct history {
    int n_layer, n_head, n_pos, n_steps;
    uint8_t *bits;             /* [n_steps][n_layer][n_head][n_pos] */
    int *step_pos;             /* [n_steps] newest position after the step */
} history;

static uint8_t *hist_at(history *h, int s, int l, int k) {
    return h->bits + (((size_t)s * h->n_layer + l) * h->n_head + k) * h->n_pos;
}

static int record(history *h, hkv_context *c, int step, int32_t *buf) {
    for (int l = 0; l < h->n_layer; l++)
        for (int k = 0; k < h->n_head; k++) {
            int n = hkv_kv_positions(c, 0, l, k, buf, h->n_pos);
            if (n < 0) return 0;
            uint8_t *row = hist_at(h, step, l, k);
            for (int j = 0; j < n; j++) if (buf[j] >= 0 && buf[j] < h->n_pos) row[buf[j]] = 1;
        }
    h->step_pos[step] = hkv_n_past(c, 0) - 1;
    return 1;
}

static void write_svg(FILE *f, history *h, const inspect_opts *o, const char *policy, hkv_budget b) {
    const int cell = o->cell, gap = 24, top = 40, left = 10;
    int pw = h->n_steps * cell, ph = h->n_pos * cell;
    int W = left + h->n_head * (pw + gap), H = top + h->n_layer * (ph + gap + 14);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
            "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"13\">kept positions per layer / KV head: policy %s, budget %d "
            "(heavy %d, recent %d, sink %d); x = step, y = position (0 at top)</text>\n", left, policy, b.total,
            b.heavy, b.recent, b.sink);
    for (int l = 0; l < h->n_layer; l++)
        for (int k = 0; k < h->n_head; k++) {
            int x0 = left + k * (pw + gap), y0 = top + l * (ph + gap + 14);
            fprintf(f, "<g class=\"head\" data-layer=\"%d\" data-head=\"%d\" transform=\"translate(%d,%d)\">\n", l, k,
                    x0, y0);
            fprintf(f, "<text x=\"0\" y=\"-3\">layer %d head %d</text>\n", l, k);
            fprintf(f, "<rect class=\"frame\" width=\"%d\" height=\"%d\" fill=\"#f2f2f2\" stroke=\"#999\"/>\n", pw, ph);
            for (int s = 0; s < h->n_steps; s++) {
                const uint8_t *row = hist_at(h, s, l, k);
                for (int p = 0; p < h->n_pos;) {
                    if (!row[p]) { p++; continue; }
                    int q = p;
                    while (q < h->n_pos && row[q]) q++;
                    fprintf(f, "<rect class=\"kept\" data-step=\"%d\" data-pos=\"%d\" data-n=\"%d\" x=\"%d\" y=\"%d\" "
                            "width=\"%d\" height=\"%d\" fill=\"#0072b2\"/>\n", s, p, q - p, s * cell, p * cell, cell,
                            (q - p) * cell);
                    p = q;
                }
            }
            fputs("</g>\n", f);
        }
    fputs("</svg>\n", f);
}

static int inspect(hkv_model *m, const inspect_opts *o) {
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    int cap = (int)strlen(o->prompt) + 16;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)cap);
    int n = toks ? hkv_tokenize(m, o->prompt, o->add_bos, 1, toks, cap) : 0;
    int n_ctx = o->n_ctx ? o->n_ctx : mi.n_ctx_default;
    if (n <= 0) { free(toks); return cli_error("the prompt is empty after tokenization"); }
    int n_gen = o->n_gen;
    if (n + n_gen > n_ctx) n_gen = n_ctx - n > 0 ? n_ctx - n : 0;
    if (n > n_ctx) { free(toks); return cli_error("the prompt has %d tokens, more than the context length %d", n, n_ctx); }
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = o->n_threads;
    cp.kv = o->kv;
    cp.ref_len = n;
    hkv_context *c;
    char err[512];
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) { free(toks); return cli_error("%s", err); }
    history h = { mi.n_layer, mi.n_head_kv, n + n_gen, (o->prompt_steps ? n : 1) + n_gen, NULL, NULL };
    h.bits = calloc((size_t)h.n_steps * h.n_layer * h.n_head * h.n_pos, 1);
    h.step_pos = calloc((size_t)h.n_steps, sizeof(int));
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)h.n_pos);
    int rc = 0, step = 0;
    if (!h.bits || !h.step_pos || !buf) rc = cli_error("out of memory for %d steps x %d positions", h.n_steps, h.n_pos);
    for (int i = 0; !rc && i < (o->prompt_steps ? n : 1); i++) {
        if (hkv_decode(c, 0, toks + (o->prompt_steps ? i : 0), o->prompt_steps ? 1 : n)) rc = cli_error("%s", hkv_last_error(c));
        else record(&h, c, step++, buf);
    }
    for (int i = 0; !rc && i < n_gen; i++) {
        int32_t t = hkv_argmax(hkv_get_logits(c, 0, -1), mi.n_vocab);
        if (hkv_decode(c, 0, &t, 1)) rc = cli_error("%s", hkv_last_error(c));
        else record(&h, c, step++, buf);
    }
    if (!rc) {
        FILE *f = fopen(o->out, "w");
        if (!f) rc = cli_error("cannot open '%s' for writing", o->out);
        else {
            write_svg(f, &h, o, o->kv.policy, hkv_context_budget(c));
            if (fclose(f)) rc = cli_error("cannot write '%s'", o->out);
            else fprintf(stderr, "kv-inspect: %d steps x %d positions, %d layers x %d KV heads -> %s\n", h.n_steps,
                         h.n_pos, h.n_layer, h.n_head, o->out);
        }
    }
    free(buf);
    free(h.bits);
    free(h.step_pos);
    free(toks);
    hkv_context_free(c);
    return rc;
}

int cmd_kv_inspect(int argc, char **argv) {
    inspect_opts o;
    int r = parse_inspect(argc, argv, &o);
    if (r) return r == 2 ? 0 : 1;
    hkv_model *m = cli_load_model(o.model, o.n_threads);
    if (!m) return 1;
    int rc = inspect(m, &o);
    hkv_model_free(m);
    return rc;
}
