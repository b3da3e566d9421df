/* Tools: the synthetic writer's output read back (metadata, tensor table, exact values), determinism,
 * requantization (identity copy, Q4_K_M type mix, logits close to F32), `heavykv info`, `heavykv tokenize
 * --ids` / `detokenize` against the reference token ids, and the error paths of the four commands. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "heavykv.h"
#include "quantize.h"
#include "synth.h"
#include "tensor.h"
#include "testutil.h"

static char out[1 << 16];

static int64_t get_i(const gguf_file *g, const char *key) {
    int64_t v;
    return gguf_get_i64(g, key, &v) ? v : -1;
}

static int str_is(const gguf_file *g, const char *key, const char *want) {
    gguf_str s;
    return gguf_get_str(g, key, &s) && s.len == strlen(want) && !memcmp(s.s, want, s.len);
}

static synth_params tiny(const char *arch, quant_ftype f, uint64_t seed) {
    synth_params p = synth_default_params();
    p.preset = "tiny";
    p.arch = arch;
    p.tokenizer = tu_model();
    p.ftype = f;
    p.seed = seed;
    p.n_threads = 2;
    return p;
}

/* ---------------------------------------------------------------- writer output read back */

static void check_tensor_values(const gguf_file *g, const char *name, synth_init kind, uint64_t seed) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    CHECKF(t && t->type == HKV_TYPE_F32, "%s missing or not F32", name);
    if (!t) return;
    int64_t rows = t->ne[1], cols = t->ne[0];
    float *want = malloc(sizeof(float) * (size_t)(rows * cols));
    synth_fill(seed, name, kind, cols, 0, rows, want);
    CHECKF(!memcmp(want, t->data, sizeof(float) * (size_t)(rows * cols)), "%s differs from synth_fill", name);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < rows * cols; i++) sum += want[i], sq += (double)want[i] * want[i];
    double mean = sum / (rows * cols), sd = sqrt(sq / (rows * cols) - mean * mean);
    if (kind == SYNTH_MATRIX) CHECKF(fabs(sd * sqrt((double)cols) - 1) < 0.05 && fabs(mean) < 0.01, "%s: mean %g sd %g", name, mean, sd);
    if (kind == SYNTH_NORM) CHECKF(fabs(mean - 1) < 0.02 && sd > 0.02 && sd < 0.08, "%s: mean %g sd %g", name, mean, sd);
    free(want);
}

static void test_readback(void) {
    synth_params p = tiny("qwen2", QFT_F32, 3);
    const char *path = tu_tmp("synth_qwen2.gguf");
    char err[512];
    synth_info info;
    CHECKF(synth_write(&p, path, &info, err, sizeof err) == HKV_OK, "%s", err);
    CHECK(info.n_vocab == 512 && info.n_layer == 2 && info.head_dim == 64 && !strcmp(info.arch, "qwen2"));
    gguf_file *g, *ref;
    if (gguf_open(path, &g, err, sizeof err)) { CHECKF(0, "%s", err); return; }
    CHECK(str_is(g, "general.architecture", "qwen2"));
    CHECK(str_is(g, "general.name", "tiny"));
    CHECK(get_i(g, "general.file_type") == 0);
    CHECK(get_i(g, "qwen2.embedding_length") == 256);
    CHECK(get_i(g, "qwen2.block_count") == 2);
    CHECK(get_i(g, "qwen2.feed_forward_length") == 512);
    CHECK(get_i(g, "qwen2.attention.head_count") == 4);
    CHECK(get_i(g, "qwen2.attention.head_count_kv") == 2);
    CHECK(get_i(g, "qwen2.context_length") == 512);
    CHECK(get_i(g, "qwen2.attention.key_length") == -1); /* head_dim == n_embd / n_head: not written */
    float f;
    CHECK(gguf_get_f32(g, "qwen2.rope.freq_base", &f) && f == 10000.0f);
    CHECK(gguf_get_f32(g, "qwen2.attention.layer_norm_rms_epsilon", &f) && f == 1e-5f);
    /* the tokenizer keys are the source model's, verbatim */
    if (gguf_open(tu_model(), &ref, err, sizeof err) == HKV_OK) {
        const gguf_kv *a = gguf_find(g, "tokenizer.ggml.tokens"), *b = gguf_find(ref, "tokenizer.ggml.tokens");
        CHECK(a && b && a->arr_n == b->arr_n && a->arr_n == 512);
        int same = a && b;
        for (uint64_t i = 0; same && i < a->arr_n; i++)
            same = a->arr_str[i].len == b->arr_str[i].len && !memcmp(a->arr_str[i].s, b->arr_str[i].s, a->arr_str[i].len);
        CHECK(same);
        CHECK(str_is(g, "tokenizer.ggml.model", "llama"));
        gguf_close(ref);
    }
    /* tensor table: llama.cpp names and shapes */
    CHECKF(g->n_tensors == 3 + 2 * 12, "%llu tensors", (unsigned long long)g->n_tensors);
    static const struct { const char *name; int64_t ne0, ne1; } want[] = {
        {"token_embd.weight", 256, 512}, {"output.weight", 256, 512}, {"output_norm.weight", 256, 1},
        {"blk.1.attn_q.weight", 256, 256}, {"blk.1.attn_k.weight", 256, 128}, {"blk.1.attn_v.weight", 256, 128},
        {"blk.1.attn_q.bias", 256, 1}, {"blk.1.attn_k.bias", 128, 1}, {"blk.1.attn_v.bias", 128, 1},
        {"blk.1.attn_output.weight", 256, 256}, {"blk.1.ffn_gate.weight", 256, 512},
        {"blk.1.ffn_up.weight", 256, 512}, {"blk.1.ffn_down.weight", 512, 256}, {"blk.1.attn_norm.weight", 256, 1},
        {"blk.1.ffn_norm.weight", 256, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, want[i].name);
        CHECKF(t && t->ne[0] == want[i].ne0 && t->ne[1] == want[i].ne1 && t->type == HKV_TYPE_F32, "%s", want[i].name);
    }
    CHECK(!gguf_find_tensor(g, "blk.0.attn_q_norm.weight") && !gguf_find_tensor(g, "rope_freqs.weight"));
    check_tensor_values(g, "token_embd.weight", SYNTH_MATRIX, 3);
    check_tensor_values(g, "blk.1.ffn_down.weight", SYNTH_MATRIX, 3);
    check_tensor_values(g, "blk.0.attn_norm.weight", SYNTH_NORM, 3);
    check_tensor_values(g, "blk.1.attn_k.bias", SYNTH_BIAS, 3);
    gguf_close(g);

    /* heavykv info shows it */
    char args[1024];
    snprintf(args, sizeof args, "info '%s'", path);
    CHECK(tu_cli(args, out, sizeof out) == 0);
    CHECK(strstr(out, "qwen2.attention.head_count_kv") && strstr(out, "blk.0.attn_q.bias") &&
          strstr(out, "token_embd.weight") && strstr(out, "synthetic random weights"));
}

/* Qwen3 and Llama 3 specifics of the metadata. */
static void test_arch_keys(void) {
    char err[512];
    synth_params p = tiny("qwen3", QFT_F32, 1);
    p.head_dim = 96;
    const char *path = tu_tmp("synth_qwen3.gguf");
    CHECKF(synth_write(&p, path, NULL, err, sizeof err) == HKV_OK, "%s", err);
    gguf_file *g;
    if (gguf_open(path, &g, err, sizeof err) == HKV_OK) {
        CHECK(get_i(g, "qwen3.attention.key_length") == 96 && get_i(g, "qwen3.attention.value_length") == 96);
        const gguf_tensor *t = gguf_find_tensor(g, "blk.0.attn_q_norm.weight");
        CHECK(t && t->ne[0] == 96 && t->n_dims == 1);
        t = gguf_find_tensor(g, "blk.0.attn_output.weight");
        CHECK(t && t->ne[0] == 4 * 96 && t->ne[1] == 256);
        CHECK(!gguf_find_tensor(g, "blk.0.attn_q.bias"));
        gguf_close(g);
    }
    p = tiny("llama", QFT_F32, 1);
    p.rope_scaling = SYNTH_ROPE_KEYS;
    CHECKF(synth_write(&p, path, NULL, err, sizeof err) == HKV_OK, "%s", err);
    if (gguf_open(path, &g, err, sizeof err) == HKV_OK) {
        CHECK(str_is(g, "llama.rope.scaling.type", "llama3"));
        CHECK(get_i(g, "llama.rope.scaling.original_context_length") == 8192);
        CHECK(get_i(g, "llama.rope.dimension_count") == 64);
        CHECK(!gguf_find_tensor(g, "rope_freqs.weight"));
        gguf_close(g);
    }
    remove(path);
}

static void test_determinism(void) {
    char err[512];
    const char *a = tu_tmp("det_a.gguf"), *b = tu_tmp("det_b.gguf");
    synth_params p = tiny("llama", QFT_Q4_K_M, 11);
    CHECK(synth_write(&p, a, NULL, err, sizeof err) == HKV_OK);
    p.n_threads = 1; /* thread count must not matter */
    CHECK(synth_write(&p, b, NULL, err, sizeof err) == HKV_OK);
    size_t na, nb;
    char *da = tu_read_file(a, &na), *db = tu_read_file(b, &nb);
    CHECK(da && db && na == nb && !memcmp(da, db, na));
    free(db);
    p.seed = 12;
    CHECK(synth_write(&p, b, NULL, err, sizeof err) == HKV_OK);
    db = tu_read_file(b, &nb);
    CHECK(da && db && na == nb && memcmp(da, db, na) != 0);
    free(da);
    free(db);
    remove(a);
    remove(b);
}

/* ---------------------------------------------------------------- quantize */

static void test_type_choice(void) {
    quant_layout lay = {24, 0}; /* Qwen2.5-0.5B: 24 layers, tied */
    int64_t e896[2] = {896, 896}, ff[2] = {4864, 896}, e2048[2] = {2048, 128256}, one[1] = {896};
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "blk.0.attn_q.weight", 2, e896) == HKV_TYPE_Q5_0);   /* 896 % 256 */
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "blk.0.attn_v.weight", 2, e896) == HKV_TYPE_Q8_0);   /* Q6_K -> Q8_0 */
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "token_embd.weight", 2, e896) == HKV_TYPE_Q8_0);     /* tied output */
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "blk.0.ffn_down.weight", 2, ff) == HKV_TYPE_Q6_K);   /* i < n/8 */
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "blk.3.ffn_down.weight", 2, ff) == HKV_TYPE_Q4_K);
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "blk.5.ffn_down.weight", 2, ff) == HKV_TYPE_Q6_K);   /* (5-3)%3 == 2 */
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "blk.21.ffn_down.weight", 2, ff) == HKV_TYPE_Q6_K);  /* >= 7n/8 */
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "blk.0.attn_norm.weight", 1, one) == -1);
    CHECK(quant_tensor_type(QFT_Q4_K, &lay, "blk.5.ffn_down.weight", 2, ff) == HKV_TYPE_Q4_K);
    lay.has_output = 1;
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "token_embd.weight", 2, e2048) == HKV_TYPE_Q4_K);
    CHECK(quant_tensor_type(QFT_Q4_K_M, &lay, "output.weight", 2, e2048) == HKV_TYPE_Q6_K);
    CHECK(quant_tensor_type(QFT_Q4_0, &lay, "output.weight", 2, e2048) == HKV_TYPE_Q6_K);
    CHECK(quant_tensor_type(QFT_Q8_0, &lay, "output.weight", 2, e2048) == HKV_TYPE_Q8_0);
    CHECK(quant_tensor_type(QFT_F16, &lay, "output.weight", 2, e2048) == HKV_TYPE_F16);
    quant_ftype f;
    CHECK(quant_ftype_parse("q4_k_m", &f) && f == QFT_Q4_K_M && !quant_ftype_parse("Q3_K", &f));
}

/* Bytes of one scalar of type t (0 for strings/arrays). */
static size_t scalar_size(gguf_vtype t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

/* Every metadata value and tensor of a equals b's (general.file_type aside). */
static void check_same_file(const gguf_file *a, const gguf_file *b) {
    int bad = 0;
    for (uint64_t i = 0; i < a->n_kv; i++) {
        const gguf_kv *x = &a->kv[i];
        char key[256];
        gguf_str_copy(x->key, key, sizeof key);
        if (!strcmp(key, "general.file_type")) continue;
        const gguf_kv *y = gguf_find(b, key);
        int same = y && y->type == x->type;
        if (same && x->type == GGUF_STRING) {
            gguf_str s, t;
            same = gguf_get_str(a, key, &s) && gguf_get_str(b, key, &t) && s.len == t.len && !memcmp(s.s, t.s, s.len);
        } else if (same && x->type == GGUF_ARRAY) {
            same = x->arr_type == y->arr_type && x->arr_n == y->arr_n;
            for (uint64_t k = 0; same && k < x->arr_n && x->arr_type == GGUF_STRING; k++)
                same = x->arr_str[k].len == y->arr_str[k].len && !memcmp(x->arr_str[k].s, y->arr_str[k].s, x->arr_str[k].len);
            if (same && x->arr_type != GGUF_STRING) same = !memcmp(x->data, y->data, x->arr_n * scalar_size(x->arr_type));
        } else if (same) {
            same = !memcmp(x->data, y->data, scalar_size(x->type));
        }
        if (!same && bad++ < 5) fprintf(stderr, "metadata key %s differs\n", key);
    }
    CHECKF(bad == 0, "%d metadata keys differ", bad);
    CHECK(a->n_tensors == b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors && i < b->n_tensors; i++) {
        const gguf_tensor *s = &a->tensors[i], *t = &b->tensors[i];
        int same = s->name.len == t->name.len && !memcmp(s->name.s, t->name.s, s->name.len) && s->type == t->type &&
                   s->n_dims == t->n_dims && !memcmp(s->ne, t->ne, sizeof s->ne) && s->nbytes == t->nbytes &&
                   !memcmp(s->data, t->data, s->nbytes);
        CHECKF(same, "tensor %llu differs", (unsigned long long)i);
    }
}

/* Logits of 16 tokens, [16][n_vocab]; NULL on failure. */
static float *logits_of(const char *path, int *n_vocab) {
    char err[512];
    hkv_model *m;
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 2;
    if (hkv_model_load(path, &mp, &m, err, sizeof err)) { CHECKF(0, "load %s: %s", path, err); return NULL; }
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    hkv_context_params cp = hkv_context_default_params();
    cp.logits_all = 1;
    cp.n_ctx = 32;
    hkv_context *c;
    float *l = NULL;
    if (!hkv_context_new(m, &cp, &c, err, sizeof err)) {
        int32_t tok[16];
        for (int i = 0; i < 16; i++) tok[i] = (int32_t)((i * 53 + 3) % mi.n_vocab);
        if (!hkv_decode(c, 0, tok, 16)) {
            l = malloc(sizeof(float) * 16 * (size_t)mi.n_vocab);
            for (int i = 0; i < 16; i++) memcpy(l + (size_t)i * mi.n_vocab, hkv_get_logits(c, 0, i), sizeof(float) * mi.n_vocab);
        }
        hkv_context_free(c);
    }
    *n_vocab = mi.n_vocab;
    hkv_model_free(m);
    CHECKF(l != NULL, "no logits from %s", path);
    return l;
}

/* Worst per-position cosine similarity and top-1 agreement count of two [16][nv] logit sets. */
static void similarity(const float *a, const float *b, int nv, double *min_cos, int *agree) {
    *min_cos = 1;
    *agree = 0;
    for (int t = 0; t < 16; t++) {
        const float *x = a + (size_t)t * nv, *y = b + (size_t)t * nv;
        double xy = 0, xx = 0, yy = 0;
        int ax = 0, ay = 0;
        for (int v = 0; v < nv; v++) {
            xy += (double)x[v] * y[v], xx += (double)x[v] * x[v], yy += (double)y[v] * y[v];
            if (x[v] > x[ax]) ax = v;
            if (y[v] > y[ay]) ay = v;
        }
        double c = xy / sqrt(xx * yy);
        if (c < *min_cos) *min_cos = c;
        *agree += ax == ay;
    }
}

static void test_quantize(void) {
    char err[512], args[2048];
    const char *f32 = tu_tmp("q_f32.gguf"), *copy = tu_tmp("q_copy.gguf"), *q8 = tu_tmp("q_q8.gguf"), *q4 = tu_tmp("q_q4km.gguf");
    synth_params p = tiny("llama", QFT_F32, 5);
    if (synth_write(&p, f32, NULL, err, sizeof err)) { CHECKF(0, "%s", err); return; }

    /* F32 -> F32 is a copy: metadata and tensors read back identically */
    quant_stats st;
    CHECKF(quant_file(f32, copy, QFT_F32, 2, &st, err, sizeof err) == HKV_OK, "%s", err);
    CHECK(st.n_converted == 0 && st.bytes_in == st.bytes_out && st.n_tensors == 3 + 2 * 9);
    gguf_file *a, *b;
    if (!gguf_open(f32, &a, err, sizeof err)) {
        if (!gguf_open(copy, &b, err, sizeof err)) { check_same_file(a, b); check_same_file(b, a); gguf_close(b); }
        gguf_close(a);
    }
    CHECK(quant_file(f32, f32, QFT_Q8_0, 2, &st, err, sizeof err) == HKV_ERR_ARG); /* in place: refused */

    snprintf(args, sizeof args, "quantize '%s' '%s' Q8_0", f32, q8);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);
    CHECKF(strstr(out, "MiB ->") && strstr(out, "Q8_0"), "%s", out);
    snprintf(args, sizeof args, "quantize '%s' '%s' q4_k_m -t 2", f32, q4);
    CHECKF(tu_cli(args, out, sizeof out) == 0, "%s", out);

    if (!gguf_open(q4, &a, err, sizeof err)) {
        static const struct { const char *name; int type; } mix[] = {
            {"token_embd.weight", HKV_TYPE_Q4_K}, {"output.weight", HKV_TYPE_Q6_K}, {"blk.0.attn_v.weight", HKV_TYPE_Q4_K},
            {"blk.1.attn_v.weight", HKV_TYPE_Q6_K}, {"blk.1.ffn_down.weight", HKV_TYPE_Q6_K},
            {"blk.0.ffn_gate.weight", HKV_TYPE_Q4_K}, {"blk.0.attn_norm.weight", HKV_TYPE_F32}, {"output_norm.weight", HKV_TYPE_F32},
        };
        for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++) {
            const gguf_tensor *t = gguf_find_tensor(a, mix[i].name);
            CHECKF(t && t->type == mix[i].type, "%s has type %d, want %d", mix[i].name, t ? t->type : -1, mix[i].type);
        }
        CHECK(get_i(a, "general.file_type") == 15 && get_i(a, "general.quantization_version") == 2);
        CHECK(get_i(a, "llama.block_count") == 2 && gguf_find(a, "tokenizer.ggml.tokens"));
        gguf_close(a);
    }

    int nv = 0, nv8 = 0, nv4 = 0;
    float *l32 = logits_of(f32, &nv), *l8 = logits_of(q8, &nv8), *l4 = logits_of(q4, &nv4);
    if (l32 && l8 && l4 && nv == nv8 && nv == nv4) {
        double c8, c4;
        int a8, a4;
        similarity(l32, l8, nv, &c8, &a8);
        similarity(l32, l4, nv, &c4, &a4);
        printf("quantized vs F32 logits: Q8_0 min cosine %.6f, top-1 %d/16; Q4_K_M min cosine %.6f, top-1 %d/16\n", c8, a8, c4, a4);
        CHECKF(c8 > 0.999 && a8 >= 15, "Q8_0: cosine %g, top-1 agreement %d/16", c8, a8);
        /* Q4_K has ~7% relative RMS error per weight on Gaussian weights; through 2 random layers that is
         * ~20% on the logits, so the bound is looser than for a trained model's peaked distributions */
        CHECKF(c4 > 0.95 && c4 < c8 && a4 >= 12, "Q4_K_M: cosine %g, top-1 agreement %d/16", c4, a4);
    }
    free(l32); free(l8); free(l4);
    remove(f32); remove(copy); remove(q8); remove(q4);
}

/* ---------------------------------------------------------------- tokenize / detokenize */

/* Parses "[1,2,3]" printed by tokenize --ids. */
static int parse_json_ids(const char *s, int32_t *ids, int max) {
    cJSON *j = cJSON_Parse(s);
    int n = -1;
    if (j && cJSON_IsArray(j)) {
        n = 0;
        for (cJSON *e = j->child; e && n < max; e = e->next) ids[n++] = (int32_t)e->valuedouble;
    }
    cJSON_Delete(j);
    return n;
}

static void test_tokenize_reference(const char *family, int n_lines) {
    char rel[128], tokpath[4096], args[8192];
    snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", family);
    snprintf(tokpath, sizeof tokpath, "%s", tu_shared(rel));
    snprintf(rel, sizeof rel, "tokenizers/%s/reference.jsonl", family);
    char *ref = tu_read_file(tu_shared(rel), NULL);
    CHECKF(ref != NULL, "cannot read %s", rel);
    if (!ref) return;
    const char *txt = tu_tmp("tok_text.txt");
    char *line = ref;
    for (int k = 0; k < n_lines && line && *line; k++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *j = cJSON_Parse(line);
        const cJSON *text = cJSON_GetObjectItem(j, "text"), *ids = cJSON_GetObjectItem(j, "ids");
        if (cJSON_IsString(text) && cJSON_IsArray(ids)) {
            FILE *f = fopen(txt, "wb");
            fputs(text->valuestring, f);
            fclose(f);
            snprintf(args, sizeof args, "tokenize --tokenizer '%s' -f '%s' --ids", tokpath, txt);
            int rc = tu_cli(args, out, sizeof out);
            int32_t got[1024];
            int n = rc == 0 ? parse_json_ids(out, got, 1024) : -1, same = n == cJSON_GetArraySize(ids);
            for (int i = 0; same && i < n; i++) same = got[i] == (int32_t)cJSON_GetArrayItem(ids, i)->valuedouble;
            CHECKF(same, "%s line %d: tokenize --ids printed %s", family, k + 1, out);
            if (k == 0) { /* and back */
                char *idtxt = cJSON_PrintUnformatted(ids);
                snprintf(args, sizeof args, "detokenize --tokenizer '%s' -p '%s'", tokpath, idtxt);
                CHECK(tu_cli(args, out, sizeof out) == 0);
                CHECKF(!strcmp(out, text->valuestring), "%s: detokenize gave '%s'", family, out);
                free(idtxt);
            }
        }
        cJSON_Delete(j);
        line = nl ? nl + 1 : NULL;
    }
    remove(txt);
    free(ref);
}

static void test_tokenize_model(void) {
    char args[4096];
    /* -m: the model's own tokenizer, same ids as hkv_tokenize; BOS only with --add-bos */
    snprintf(args, sizeof args, "tokenize -m '%s' -p 'Once upon a time' --ids", tu_model());
    CHECK(tu_cli(args, out, sizeof out) == 0);
    int32_t got[64], want[64];
    int n = parse_json_ids(out, got, 64);
    hkv_model *m;
    char err[512];
    if (!hkv_model_load(tu_model(), NULL, &m, err, sizeof err)) {
        int k = hkv_tokenize(m, "Once upon a time", 0, 1, want, 64);
        CHECK(n == k && k > 0 && !memcmp(got, want, sizeof(int32_t) * (size_t)k));
        hkv_model_free(m);
    }
    snprintf(args, sizeof args, "tokenize -m '%s' -p 'Once' --add-bos", tu_model());
    CHECK(tu_cli(args, out, sizeof out) == 0);
    CHECKF(strstr(out, "     1 '<s>'\n") == out, "%s", out);  /* one `id 'piece'` line per token */
    /* special-token text: matched by default, plain text with --no-special */
    snprintf(args, sizeof args, "tokenize --tokenizer '%s' -p '<|begin_of_text|>Hi' --ids", tu_shared("tokenizers/llama3/tokenizer.json"));
    CHECK(tu_cli(args, out, sizeof out) == 0 && parse_json_ids(out, got, 64) == 2 && got[0] == 128000);
    snprintf(args, sizeof args, "tokenize --tokenizer '%s' -p '<|begin_of_text|>Hi' --ids --no-special", tu_shared("tokenizers/llama3/tokenizer.json"));
    CHECK(tu_cli(args, out, sizeof out) == 0 && parse_json_ids(out, got, 64) > 2 && got[0] != 128000);
}

/* ---------------------------------------------------------------- errors */

static void expect_fail(const char *args, const char *msg) {
    int rc = tu_cli(args, out, sizeof out);
    CHECKF(rc != 0 && rc != -1 && strstr(out, msg) && strstr(out, "error"), "'%s' -> rc %d, output: %s", args, rc, out);
}

static void test_errors(void) {
    char args[4096];
    const char *o = tu_tmp("err.gguf");
    snprintf(args, sizeof args, "synth --preset nope -o '%s'", o);
    expect_fail(args, "unknown preset 'nope'");
    snprintf(args, sizeof args, "synth --preset tiny --type Q3_K -o '%s'", o);
    expect_fail(args, "unknown weight type 'Q3_K'");
    snprintf(args, sizeof args, "synth --preset tiny --arch mamba --tokenizer '%s' -o '%s'", tu_model(), o);
    expect_fail(args, "unknown architecture 'mamba'");
    snprintf(args, sizeof args, "synth --preset Qwen2.5-0.5B -o '%s'", o);
    expect_fail(args, "needs a tokenizer");
    snprintf(args, sizeof args, "synth --preset tiny --tokenizer /nonexistent/tokenizer.json -o '%s'", o);
    expect_fail(args, "/nonexistent/tokenizer.json");
    expect_fail("synth --preset tiny", "needs -o");
    snprintf(args, sizeof args, "quantize /nonexistent/in.gguf '%s' Q8_0", o);
    expect_fail(args, "/nonexistent/in.gguf");
    snprintf(args, sizeof args, "quantize '%s' '%s' Q7_X", tu_model(), o);
    expect_fail(args, "unknown quantization type 'Q7_X'");
    expect_fail("quantize only-one.gguf", "usage");
    expect_fail("tokenize --tokenizer /nonexistent/tokenizer.json -p hi", "/nonexistent/tokenizer.json");
    snprintf(args, sizeof args, "detokenize -m '%s' -p '[1, 99999]'", tu_model());
    expect_fail(args, "out of range");
    snprintf(args, sizeof args, "detokenize -m '%s' -p '1 x'", tu_model());
    expect_fail(args, "expected a token id");
    remove(o);
}

int main(void) {
    test_readback();
    test_arch_keys();
    test_determinism();
    test_type_choice();
    test_quantize();
    test_tokenize_reference("llama2", 3);
    test_tokenize_reference("llama3", 3);
    test_tokenize_reference("qwen3", 3);
    test_tokenize_model();
    test_errors();
    return tu_done("test_synth");
}
