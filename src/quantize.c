/* Quantization targets, llama.cpp's per-tensor type choice, parallel row conversion and GGUF requantization. */
#include "alloc.h"
#include "quantize.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include "gguf.h"

typedef struct ftype_info {
    const char *name;
    int base;            /* hkv_type most weights get */
    uint32_t gguf;       /* LLAMA_FTYPE_* written as general.file_type */
} ftype_info;

/* Plain Q4_K / Q5_K are written as llama.cpp's *_S file types, the closest of its named mixes. */
static const ftype_info FTYPES[QFT_COUNT] = {
    [QFT_F32] = {"F32", HKV_TYPE_F32, 0},
    [QFT_F16] = {"F16", HKV_TYPE_F16, 1},
    [QFT_Q8_0] = {"Q8_0", HKV_TYPE_Q8_0, 7},
    [QFT_Q4_0] = {"Q4_0", HKV_TYPE_Q4_0, 2},
    [QFT_Q5_0] = {"Q5_0", HKV_TYPE_Q5_0, 8},
    [QFT_Q4_K] = {"Q4_K", HKV_TYPE_Q4_K, 14},
    [QFT_Q5_K] = {"Q5_K", HKV_TYPE_Q5_K, 16},
    [QFT_Q6_K] = {"Q6_K", HKV_TYPE_Q6_K, 18},
    [QFT_Q4_K_M] = {"Q4_K_M", HKV_TYPE_Q4_K, 15},
};

int quant_ftype_parse(const char *name, quant_ftype *out) {
    for (int f = 0; f < QFT_COUNT && name; f++)
        if (!strcasecmp(name, FTYPES[f].name)) { *out = (quant_ftype)f; return 1; }
    return 0;
}

const char *quant_ftype_name(quant_ftype f) { return f >= 0 && f < QFT_COUNT ? FTYPES[f].name : "?"; }
const char *quant_ftype_list(void) { return "F32, F16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K, Q4_K_M"; }
uint32_t quant_ftype_gguf(quant_ftype f) { return f >= 0 && f < QFT_COUNT ? FTYPES[f].gguf : 0; }

/* ---------------------------------------------------------------- type choice */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Layer index of "blk.N.*", or -1. */
static int layer_of(const char *name) {
    if (strncmp(name, "blk.", 4)) return -1;
    int v = 0, digits = 0;
    for (const char *p = name + 4; *p >= '0' && *p <= '9' && digits < 6; p++, digits++) v = v * 10 + (*p - '0');
    return digits ? v : -1;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between. */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* Row length does not fit the type's block: llama.cpp's fallbacks for K-quants, then F16. */
static int fit_row(int type, int64_t ne0) {
    if (ne0 % hkv_type_get(type)->block_size == 0) return type;
    switch (type) {
    case HKV_TYPE_Q4_K: case HKV_TYPE_Q5_K: type = HKV_TYPE_Q5_0; break; /* llama.cpp: Q5_K -> Q5_1 (not provided) */
    case HKV_TYPE_Q6_K: type = HKV_TYPE_Q8_0; break;
    default: break;
    }
    return ne0 % hkv_type_get(type)->block_size == 0 ? type : HKV_TYPE_F16;
}

int quant_tensor_type(quant_ftype f, const quant_layout *lay, const char *name, int n_dims, const int64_t *ne) {
    if (n_dims < 2 || !ends_with(name, "weight")) return -1;
    int base = FTYPES[f].base;
    if (base == HKV_TYPE_F32 || base == HKV_TYPE_F16) return base;
    int is_output = !strcmp(name, "output.weight") || (!lay->has_output && !strcmp(name, "token_embd.weight"));
    int t = base, il = layer_of(name);
    if (is_output) {
        /* the output matrix gets more bits (llama.cpp: Q6_K unless the target is Q8_0; Q8_0 if rows don't fit) */
        t = ne[0] % QK_K ? HKV_TYPE_Q8_0 : base == HKV_TYPE_Q8_0 ? HKV_TYPE_Q8_0 : HKV_TYPE_Q6_K;
    } else if (f == QFT_Q4_K_M && il >= 0 && lay->n_layer > 0 &&
               (ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight"))) {
        if (use_more_bits(il, lay->n_layer)) t = HKV_TYPE_Q6_K;
    }
    return fit_row(t, ne[0]);
}

/* ---------------------------------------------------------------- parallel row conversion */

#define ROWS_PER_ITEM 16

typedef struct conv_job {
    int type;
    int64_t rows, cols;
    size_t row_bytes;
    quant_row_src src;
    void *arg;
    float *scratch;           /* [n_threads][ROWS_PER_ITEM][cols] */
    uint8_t *out;
} conv_job;

static void conv_item(void *arg, int i, int thread) {
    conv_job *j = arg;
    int64_t r0 = (int64_t)i * ROWS_PER_ITEM, n = j->rows - r0 < ROWS_PER_ITEM ? j->rows - r0 : ROWS_PER_ITEM;
    float *buf = j->scratch + (size_t)thread * ROWS_PER_ITEM * (size_t)j->cols;
    j->src(j->arg, r0, n, buf);
    for (int64_t r = 0; r < n; r++)
        hkv_quantize_row(j->type, buf + (size_t)r * j->cols, j->out + (size_t)(r0 + r) * j->row_bytes, j->cols);
}

hkv_status quant_convert(hkv_pool *pool, int type, int64_t rows, int64_t cols, quant_row_src src, void *arg,
                         void **out, size_t *nbytes, char *err, size_t errlen) {
    *out = NULL;
    *nbytes = 0;
    size_t rb = hkv_row_size(type, cols);
    const char *tn = hkv_type_get(type)->name;
    if (!hkv_type_supported(type) || rb == 0 || rows <= 0 || rows > INT32_MAX) {
        snprintf(err, errlen, "cannot convert a %lld x %lld tensor to %s", (long long)rows, (long long)cols, tn ? tn : "?");
        return HKV_ERR_UNSUPPORTED;
    }
    if ((uint64_t)rows > SIZE_MAX / rb) { snprintf(err, errlen, "tensor of %lld rows is too large", (long long)rows); return HKV_ERR_ARG; }
    int nt = pool ? hkv_pool_size(pool) : 1;
    conv_job j = {type, rows, cols, rb, src, arg, NULL, NULL};
    j.scratch = hkv_malloc(sizeof(float) * (size_t)nt * ROWS_PER_ITEM * (size_t)cols);
    j.out = hkv_malloc((size_t)rows * rb);
    if (!j.scratch || !j.out) {
        hkv_free(j.scratch);
        hkv_free(j.out);
        snprintf(err, errlen, "out of memory converting a %lld x %lld tensor", (long long)rows, (long long)cols);
        return HKV_ERR_NOMEM;
    }
    int items = (int)((rows + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM);
    if (pool) hkv_pool_run(pool, conv_item, &j, items);
    else for (int i = 0; i < items; i++) conv_item(&j, i, 0);
    hkv_free(j.scratch);
    *out = j.out;
    *nbytes = (size_t)rows * rb;
    return HKV_OK;
}

/* ---------------------------------------------------------------- GGUF -> GGUF */

typedef struct deq_src { const uint8_t *data; int type; size_t row_bytes; int64_t cols; } deq_src;

static void deq_rows(void *arg, int64_t r0, int64_t n, float *dst) {
    const deq_src *s = arg;
    for (int64_t r = 0; r < n; r++)
        hkv_dequant_row(s->type, s->data + (size_t)(r0 + r) * s->row_bytes, dst + (size_t)r * s->cols, s->cols);
}

static int skip_file_type(const char *key) {
    return !strcmp(key, "general.file_type") || !strcmp(key, "general.quantization_version");
}

static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static quant_layout layout_of(const gguf_file *g) {
    quant_layout lay = {0, 0};
    char name[256];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_str_copy(g->tensors[i].name, name, sizeof name);
        int il = layer_of(name);
        if (il + 1 > lay.n_layer) lay.n_layer = il + 1;
        if (!strcmp(name, "output.weight")) lay.has_output = 1;
    }
    return lay;
}

/* Adds tensor t of g to w, converted to `type` (-1: unchanged). */
static hkv_status add_tensor(gguf_writer *w, hkv_pool *pool, const gguf_tensor *t, const char *name, int type,
                             quant_stats *s, char *err, size_t errlen) {
    if (type < 0 || type == t->type) {
        hkv_status st = gguf_w_tensor(w, name, t->type, t->n_dims, t->ne, t->data, (size_t)t->nbytes);
        if (st) snprintf(err, errlen, "cannot add tensor '%s' to the output", name);
        return st;
    }
    if (!hkv_type_supported(t->type)) {
        const char *tn = hkv_type_get(t->type)->name;
        snprintf(err, errlen, "tensor '%s' has type %s, which cannot be dequantized for requantization", name, tn ? tn : "unknown");
        return HKV_ERR_UNSUPPORTED;
    }
    int64_t rows = 1;
    for (int d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    deq_src src = {t->data, t->type, hkv_row_size(t->type, t->ne[0]), t->ne[0]};
    void *buf;
    size_t nb;
    hkv_status st = quant_convert(pool, type, rows, t->ne[0], deq_rows, &src, &buf, &nb, err, errlen);
    if (st) return st;
    st = gguf_w_tensor(w, name, type, t->n_dims, t->ne, buf, nb);
    hkv_free(buf);
    if (st) { snprintf(err, errlen, "cannot add tensor '%s' to the output", name); return st; }
    s->n_converted++;
    return HKV_OK;
}

static hkv_status requantize(const gguf_file *g, gguf_writer *w, hkv_pool *pool, quant_ftype f, quant_stats *s,
                             char *err, size_t errlen) {
    gguf_w_copy_kv(w, g, skip_file_type);
    gguf_w_u32(w, "general.file_type", quant_ftype_gguf(f));
    if (f != QFT_F32 && f != QFT_F16) gguf_w_u32(w, "general.quantization_version", 2);
    quant_layout lay = layout_of(g);
    char name[256];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (t->name.len >= sizeof name) { snprintf(err, errlen, "tensor name of %llu bytes is too long", (unsigned long long)t->name.len); return HKV_ERR_FORMAT; }
        gguf_str_copy(t->name, name, sizeof name);
        int type = quant_tensor_type(f, &lay, name, t->n_dims, t->ne);
        hkv_status st = add_tensor(w, pool, t, name, type, s, err, errlen);
        if (st) return st;
        int out_type = type < 0 ? t->type : type;
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= t->ne[d];
        s->n_tensors++;
        s->n_params += (uint64_t)n;
        s->bytes_in += t->nbytes;
        s->bytes_out += hkv_row_size(out_type, t->ne[0]) * (uint64_t)(n / t->ne[0]);
        if (out_type >= 0 && out_type < HKV_TYPE_COUNT) s->n_of_type[out_type]++;
    }
    return HKV_OK;
}

hkv_status quant_file(const char *in_path, const char *out_path, quant_ftype f, int n_threads, quant_stats *stats,
                      char *err, size_t errlen) {
    quant_stats local;
    quant_stats *s = stats ? stats : &local;
    memset(s, 0, sizeof *s);
    if (f < 0 || f >= QFT_COUNT) { snprintf(err, errlen, "unknown quantization type %d", (int)f); return HKV_ERR_ARG; }
    if (same_file(in_path, out_path)) {
        snprintf(err, errlen, "the output '%s' is the input file; write to a different path", out_path);
        return HKV_ERR_ARG;
    }
    gguf_file *g;
    hkv_status st = gguf_open(in_path, &g, err, errlen);
    if (st) return st;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    hkv_pool *pool = hkv_pool_new(n_threads);
    gguf_writer *w = gguf_writer_new();
    if (!pool || !w) { snprintf(err, errlen, "out of memory"); st = HKV_ERR_NOMEM; }
    if (!st) st = requantize(g, w, pool, f, s, err, errlen);
    if (!st) st = gguf_writer_write(w, out_path, err, errlen);
    gguf_writer_free(w);
    hkv_pool_free(pool);
    gguf_close(g);
    return st;
}

/* ---------------------------------------------------------------- public API (heavykv.h) */

const char *hkv_quant_type_list(void) { return quant_ftype_list(); }

const char *hkv_tensor_type_name(int type) {
    return type >= 0 && type < HKV_TYPE_COUNT ? hkv_type_get(type)->name : NULL;
}

hkv_status hkv_model_quantize(const char *in_path, const char *out_path, const char *type_name, int n_threads,
                              hkv_quantize_stats *stats, char *err, size_t errlen) {
    quant_ftype f;
    if (!type_name || !quant_ftype_parse(type_name, &f)) {
        snprintf(err, errlen, "unknown quantization type '%s' (choose %s)", type_name ? type_name : "(null)", quant_ftype_list());
        return HKV_ERR_ARG;
    }
    quant_stats s;
    hkv_status st = quant_file(in_path, out_path, f, n_threads, &s, err, errlen);
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->n_tensors = s.n_tensors; stats->n_converted = s.n_converted;
        stats->bytes_in = s.bytes_in; stats->bytes_out = s.bytes_out; stats->n_params = s.n_params;
        for (int t = 0; t < HKV_TYPE_COUNT && t < 64; t++) stats->n_of_type[t] = s.n_of_type[t];
    }
    return st;
}
