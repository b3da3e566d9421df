/* heavykv tokenize / detokenize / quantize / synth: model and tokenizer tools, on the public API only (the
 * standalone tokenizer handle, hkv_model_quantize, hkv_synth_*): a tokenizer can be used without a model. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "cli.h"

/* ---------------------------------------------------------------- shared: tokenizer source and input text */

typedef struct tok_opts {
    const char *model, *tokenizer, *prompt, *file;
    int ids, parse_special, add_bos;
} tok_opts;

/* The tokenizer of -m MODEL.gguf (only its tokenizer.* keys are read) or of --tokenizer tokenizer.json. */
static hkv_tokenizer *open_tokenizer(const tok_opts *o) {
    char err[512];
    hkv_tokenizer *t = NULL;
    if (o->tokenizer && o->model) { cli_error("give either -m MODEL.gguf or --tokenizer tokenizer.json, not both"); return NULL; }
    if (o->prompt && o->file) { cli_error("give either -p or -f, not both"); return NULL; }
    const char *path = o->tokenizer ? o->tokenizer : o->model ? o->model : cli_default_model();
    if (hkv_tokenizer_load(path, &t, err, sizeof err)) { cli_error("%s", err); return NULL; }
    return t;
}

/* The input: -p TEXT, -f FILE, or all of stdin. Returns a malloc'ed NUL-terminated string. */
static char *read_input(const tok_opts *o) {
    if (o->prompt) return strdup(o->prompt);
    if (o->file) return cli_read_file(o->file, NULL);
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (size_t r; b && (r = fread(b + n, 1, cap - n - 1, stdin)) > 0;) {
        n += r;
        if (cap - n < 2) { char *nb = realloc(b, cap * 2); if (!nb) { free(b); b = NULL; break; } b = nb; cap *= 2; }
    }
    if (!b || ferror(stdin)) { free(b); cli_error("cannot read stdin"); return NULL; }
    b[n] = 0;
    return b;
}

/* Common flags of tokenize and detokenize. Returns 1 consumed, 0 not ours, -1 error. */
static int tok_flag(int argc, char **argv, int *i, tok_opts *o) {
    const char *a = argv[*i];
    const char **dst = !strcmp(a, "-m") || !strcmp(a, "--model") ? &o->model
                     : !strcmp(a, "--tokenizer") ? &o->tokenizer
                     : !strcmp(a, "-p") || !strcmp(a, "--prompt") ? &o->prompt
                     : !strcmp(a, "-f") || !strcmp(a, "--file") ? &o->file : NULL;
    if (!dst) return 0;
    if (!(*dst = cli_value(argc, argv, i))) return -1;
    return 1;
}

/* ---------------------------------------------------------------- tokenize */

/* 1 if p[0..n) is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static int utf8_valid(const unsigned char *p, int n) {
    for (int i = 0; i < n;) {
        unsigned c = p[i];
        int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || i + len > n) return 0;
        unsigned cp = len == 1 ? c : c & (0x7f >> len);
        for (int k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* A piece between single quotes: control bytes, quote and backslash escaped; bytes >= 0x80 raw when the
 * piece is valid UTF-8, else \xNN (a byte token that is part of a character). */
static void print_piece(const char *s, int n) {
    int raw_high = utf8_valid((const unsigned char *)s, n);
    putchar('\'');
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\\' || c == '\'') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !raw_high)) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\'');
}

static void tokenize_help(void) {
    printf("usage: heavykv tokenize [-m MODEL.gguf | --tokenizer tokenizer.json] [-p TEXT | -f FILE] [options]\n\n"
           "Encodes text (from -p, -f or stdin, used verbatim including any trailing newline) and prints one\n"
           "`id 'piece'` line per token (the piece's bytes, C-escaped; a control token shows its vocabulary text).\n\n"
           "  -m, --model PATH      tokenizer of a GGUF model (default $HEAVYKV_MODEL or ../shared/models/stories260K.gguf)\n"
           "      --tokenizer PATH  a Hugging Face tokenizer.json (tokenizer_config.json next to it is read too)\n"
           "      --ids             print the ids as one JSON array instead\n"
           "      --add-bos         prepend BOS (when the tokenizer has one)\n"
           "      --no-special      do not match special-token text such as <|eot_id|> as those tokens\n");
}

int cmd_tokenize(int argc, char **argv) {
    tok_opts o = {.parse_special = 1};
    for (int i = 1; i < argc; i++) {
        int r = tok_flag(argc, argv, &i, &o);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { tokenize_help(); return 0; }
        else if (!strcmp(argv[i], "--ids")) o.ids = 1;
        else if (!strcmp(argv[i], "--add-bos")) o.add_bos = 1;
        else if (!strcmp(argv[i], "--no-special")) o.parse_special = 0;
        else return cli_error("unknown option '%s' for 'tokenize' (see heavykv tokenize --help)", argv[i]);
    }
    hkv_tokenizer *t = open_tokenizer(&o);
    if (!t) return 1;
    char *text = read_input(&o);
    int cap = text ? (int)strlen(text) + 8 : 0, n = -1;
    int32_t *ids = text ? malloc(sizeof(int32_t) * (size_t)cap) : NULL;
    if (ids) n = hkv_tokenizer_encode(t, text, o.add_bos, o.parse_special, ids, cap);
    if (n < 0 && ids) { /* more tokens than bytes + 8 cannot happen for these tokenizers, but stay correct */
        int32_t *more = realloc(ids, sizeof(int32_t) * (size_t)-n);
        if (more) { ids = more; n = hkv_tokenizer_encode(t, text, o.add_bos, o.parse_special, ids, -n); }
    }
    int rc = 0;
    if (!text) rc = 1;
    else if (n < 0) rc = cli_error("out of memory tokenizing %zu bytes", strlen(text));
    else if (o.ids) {
        putchar('[');
        for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        puts("]");
    } else {
        char piece[512];
        for (int i = 0; i < n; i++) {
            int k = hkv_tokenizer_piece(t, ids[i], piece, sizeof piece);
            const char *spelled = hkv_tokenizer_text(t, ids[i]);
            printf("%6d ", ids[i]);
            if (k <= 0 && spelled) print_piece(spelled, (int)strlen(spelled)); /* control tokens have no bytes: show <s> */
            else print_piece(piece, k < 0 ? 0 : k);
            putchar('\n');
        }
    }
    free(ids);
    free(text);
    hkv_tokenizer_free(t);
    return rc;
}

/* ---------------------------------------------------------------- detokenize */

/* Ids from "[1, 2, 3]" or "1 2 3" (commas and whitespace separate). Returns count or -1 (error printed). */
static int parse_ids(const char *s, int n_vocab, int32_t **out) {
    size_t cap = 64;
    int n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    if (!ids) return cli_error("out of memory reading token ids"), -1;
    const char *p = s;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    int bracket = *p == '[';
    if (bracket) p++;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
        if (!*p || (bracket && *p == ']')) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno) { free(ids); return cli_error("expected a token id at '%.20s'", p), -1; }
        if (v < 0 || v >= n_vocab) { free(ids); return cli_error("token id %ld is out of range [0, %d)", v, n_vocab), -1; }
        if ((size_t)n == cap) {
            int32_t *more = realloc(ids, sizeof(int32_t) * (cap *= 2));
            if (!more) { free(ids); return cli_error("out of memory reading token ids"), -1; }
            ids = more;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    if (bracket) {
        if (*p != ']') { free(ids); return cli_error("the JSON array of ids has no closing ']'"), -1; }
        for (p++; *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'; p++) {}
        if (*p) { free(ids); return cli_error("unexpected text after the JSON array: '%.20s'", p), -1; }
    }
    *out = ids;
    return n;
}

static void detokenize_help(void) {
    printf("usage: heavykv detokenize [-m MODEL.gguf | --tokenizer tokenizer.json] [-p IDS | -f FILE]\n\n"
           "Decodes token ids (a JSON array like [9906, 11] or whitespace/comma separated numbers, from -p, -f or\n"
           "stdin) and writes the text to stdout exactly, without adding a newline.\n");
}

int cmd_detokenize(int argc, char **argv) {
    tok_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int r = tok_flag(argc, argv, &i, &o);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { detokenize_help(); return 0; }
        return cli_error("unknown option '%s' for 'detokenize' (see heavykv detokenize --help)", argv[i]);
    }
    hkv_tokenizer *t = open_tokenizer(&o);
    if (!t) return 1;
    char *text = read_input(&o);
    int32_t *ids = NULL;
    int n = text ? parse_ids(text, hkv_tokenizer_n_vocab(t), &ids) : -1, rc = n < 0;
    if (n >= 0) {
        int cap = 256, k = -1;
        char *buf = malloc((size_t)cap);
        if (buf && (k = hkv_tokenizer_decode(t, ids, n, buf, cap)) < 0) { /* -k: the size it needs */
            char *more = realloc(buf, (size_t)-k);
            if (more) { buf = more; k = hkv_tokenizer_decode(t, ids, n, buf, -k); }
        }
        if (k < 0) rc = cli_error("out of memory decoding %d tokens", n);
        else fwrite(buf, 1, (size_t)k, stdout);
        free(buf);
    }
    free(ids);
    free(text);
    hkv_tokenizer_free(t);
    return rc;
}

/* ---------------------------------------------------------------- quantize */

/* A type name as the library spells it ("q4_k_m" -> "Q4_K_M"). */
static const char *upper(const char *s, char *buf, size_t n) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) buf[i] = (char)toupper((unsigned char)s[i]);
    buf[i] = 0;
    return buf;
}

static void print_type_counts(const hkv_quantize_stats *s) {
    fprintf(stdout, "tensors by type:");
    for (int t = 0; t < 64; t++)
        if (s->n_of_type[t]) fprintf(stdout, " %s %d", hkv_tensor_type_name(t), s->n_of_type[t]);
    fputc('\n', stdout);
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0, n_threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: heavykv quantize IN.gguf OUT.gguf TYPE [-t THREADS]\n\n"
                   "Converts every 2-D weight matrix to TYPE (%s) like llama.cpp's quantize; norms, biases and\n"
                   "other 1-D tensors are copied unchanged, metadata is copied with general.file_type updated.\n"
                   "The output matrix (or the tied embedding) gets Q6_K (Q8_0 if its rows are not a multiple of\n"
                   "256); Q4_K_M also gives Q6_K to attn_v / ffn_down of the first and last eighth of the layers and\n"
                   "every third layer between. K-quant rows that are not a multiple of 256 fall back to Q5_0 / Q8_0.\n",
                   hkv_quant_type_list());
            return 0;
        } else if (!strcmp(argv[i], "-t") || !strcmp(argv[i], "--threads")) {
            const char *v = cli_value(argc, argv, &i);
            if (!v || !cli_int(argv[i - 1], v, 1, 1024, &n_threads)) return 1;
        } else if (argv[i][0] == '-' && argv[i][1]) return cli_error("unknown option '%s' for 'quantize'", argv[i]);
        else if (n_pos == 3) return cli_error("quantize takes IN.gguf OUT.gguf TYPE; unexpected '%s'", argv[i]);
        else pos[n_pos++] = argv[i];
    }
    if (n_pos < 3) return cli_error("usage: heavykv quantize IN.gguf OUT.gguf TYPE (TYPE: %s)", hkv_quant_type_list());
    hkv_quantize_stats s;
    char err[512];
    double t0 = hkv_time_sec();
    if (hkv_model_quantize(pos[0], pos[1], pos[2], n_threads, &s, err, sizeof err)) return cli_error("%s", err);
    char up[16];
    printf("%s -> %s (%s): %d tensors, %d converted, %.2fM parameters\n", pos[0], pos[1], upper(pos[2], up, sizeof up),
           s.n_tensors, s.n_converted, s.n_params / 1e6);
    printf("tensor data: %.2f MiB -> %.2f MiB (%.2f -> %.2f bits per weight) in %.1f s\n", s.bytes_in / 1048576.0,
           s.bytes_out / 1048576.0, s.n_params ? 8.0 * s.bytes_in / s.n_params : 0.0,
           s.n_params ? 8.0 * s.bytes_out / s.n_params : 0.0, hkv_time_sec() - t0);
    print_type_counts(&s);
    return 0;
}

/* ---------------------------------------------------------------- synth */

static void synth_help(void) {
    int n;
    const hkv_synth_preset *ps = hkv_synth_presets(&n);
    printf("usage: heavykv synth --preset NAME [--arch llama|qwen2|qwen3] [--tokenizer PATH] [options] -o OUT.gguf\n\n"
           "Writes a model with a real architecture's shapes, llama.cpp metadata keys and tensor names, a real\n"
           "tokenizer and random, well-scaled weights (for tests and benchmarks; the output is noise).\n\n"
           "  --preset NAME         one of the presets below\n"
           "  --arch A              architecture (default: the preset's)\n"
           "  --tokenizer PATH      tokenizer.json, or a .gguf whose tokenizer is copied; the vocabulary size is\n"
           "                        the tokenizer's. Default for 'tiny': the stories260K tokenizer (512 tokens)\n"
           "                        from $HEAVYKV_SHARED or ../shared; the other presets need one\n"
           "  --type T              %s (default F32)\n"
           "  --layers N            override the layer count (small models of a real width)\n"
           "  --head-dim N          override the head dimension\n"
           "  --rope-scaling-keys   write Llama 3 RoPE scaling as rope.scaling.* keys, not a rope_freqs tensor\n"
           "  --seed S              weight seed (default 0)\n"
           "  -t, --threads N       threads (default: all cores)\n"
           "  -o, --output PATH     output file\n\npresets:\n",
           hkv_quant_type_list());
    for (int i = 0; i < n; i++)
        printf("  %-15s %-5s embd %4d, %2d layers, %2d heads (%d KV) x %3d, ff %4d, theta %g%s%s; tokenizer %s\n",
               ps[i].name, ps[i].arch, ps[i].n_embd, ps[i].n_layer, ps[i].n_head, ps[i].n_head_kv, ps[i].head_dim,
               ps[i].n_ff, ps[i].rope_theta, ps[i].tied ? ", tied" : "", ps[i].llama3_factor > 0 ? ", llama3 rope" : "",
               ps[i].tokenizer);
}

/* stories260K.gguf in the shared fixtures (its tokenizer is the default for the tiny preset). */
static const char *shared_tokenizer(char *buf, size_t len) {
    const char *root = getenv("HEAVYKV_SHARED");
    snprintf(buf, len, "%s/models/stories260K.gguf", root && *root ? root : "../shared");
    return buf;
}

int cmd_synth(int argc, char **argv) {
    hkv_synth_params p = hkv_synth_default_params();
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { synth_help(); return 0; }
        else if (!strcmp(a, "--preset")) { VAL(); p.preset = v; }
        else if (!strcmp(a, "--arch")) { VAL(); p.arch = v; }
        else if (!strcmp(a, "--tokenizer")) { VAL(); p.tokenizer = v; }
        else if (!strcmp(a, "--type")) { VAL(); p.type = v; }
        else if (!strcmp(a, "--layers")) { VAL(); if (!cli_int(a, v, 1, 1024, &p.n_layer)) return 1; }
        else if (!strcmp(a, "--head-dim")) { VAL(); if (!cli_int(a, v, 2, 512, &p.head_dim)) return 1; }
        else if (!strcmp(a, "--rope-scaling-keys")) p.rope_scaling = HKV_SYNTH_ROPE_KEYS;
        else if (!strcmp(a, "--seed")) { VAL(); if (!cli_u64(a, v, &p.seed)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &p.n_threads)) return 1; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { VAL(); out = v; }
        else return cli_error("unknown option '%s' for 'synth' (see heavykv synth --help)", a);
#undef VAL
    }
    if (!p.preset) return cli_error("synth needs --preset NAME (see heavykv synth --help for the list)");
    if (!out) return cli_error("synth needs -o OUT.gguf");
    char tokbuf[4096];
    if (!p.tokenizer && !strcasecmp(p.preset, "tiny")) p.tokenizer = shared_tokenizer(tokbuf, sizeof tokbuf);
    hkv_synth_info in;
    char err[512], up[16];
    double t0 = hkv_time_sec();
    if (hkv_synth_write(&p, out, &in, err, sizeof err)) return cli_error("%s", err);
    printf("wrote %s: %s preset %s, %s, %d layers, head dim %d, vocabulary %d, %.2fM parameters, %.2f MiB of tensors "
           "(%.1f s)\n", out, in.arch, p.preset, upper(p.type ? p.type : "F32", up, sizeof up), in.n_layer, in.head_dim, in.n_vocab,
           in.n_params / 1e6, in.tensor_bytes / 1048576.0, hkv_time_sec() - t0);
    return 0;
}
