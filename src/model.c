/* Model loading: architecture table, hyper-parameters from GGUF metadata, weight views with shape checks. */
#include "alloc.h"
#include "model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *hkv_arch_name(hkv_arch a) {
    switch (a) {
    case ARCH_LLAMA: return "llama";
    case ARCH_QWEN2: return "qwen2";
    case ARCH_QWEN3: return "qwen3";
    }
    return "?";
}

hkv_model_params hkv_model_default_params(void) {
    hkv_model_params p = {0, 1};
    return p;
}

/* ---- metadata helpers: "{arch}.{suffix}" keys */

static int get_arch_i(const gguf_file *g, const char *arch, const char *suffix, int64_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_i64(g, key, out);
}

static int get_arch_f(const gguf_file *g, const char *arch, const char *suffix, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_f32(g, key, out);
}

static hkv_status need_i(const gguf_file *g, const char *arch, const char *suffix, int lo, int hi, int *out,
                         char *err, size_t errlen) {
    int64_t v;
    if (!get_arch_i(g, arch, suffix, &v)) {
        snprintf(err, errlen, "model metadata lacks the required key %s.%s", arch, suffix);
        return HKV_ERR_FORMAT;
    }
    if (v < lo || v > hi) {
        snprintf(err, errlen, "model metadata %s.%s = %lld is out of range [%d, %d]", arch, suffix, (long long)v, lo, hi);
        return HKV_ERR_FORMAT;
    }
    *out = (int)v;
    return HKV_OK;
}

/* An optional key: def when absent, else range-checked like need_i (a 64-bit value is never truncated). */
static hkv_status opt_i(const gguf_file *g, const char *arch, const char *suffix, int def, int lo, int hi, int *out,
                        char *err, size_t errlen) {
    int64_t v;
    if (!get_arch_i(g, arch, suffix, &v)) { *out = def; return HKV_OK; }
    return need_i(g, arch, suffix, lo, hi, out, err, errlen);
}

static hkv_status read_hparams(hkv_model *m, char *err, size_t errlen) {
    const gguf_file *g = m->g;
    hkv_hparams *hp = &m->hp;
    gguf_str s;
    if (!gguf_get_str(g, "general.architecture", &s)) {
        snprintf(err, errlen, "model has no general.architecture key (not a model GGUF?)");
        return HKV_ERR_FORMAT;
    }
    gguf_str_copy(s, m->arch_name, sizeof m->arch_name);
    if (!strcmp(m->arch_name, "llama")) hp->arch = ARCH_LLAMA;
    else if (!strcmp(m->arch_name, "qwen2")) hp->arch = ARCH_QWEN2;
    else if (!strcmp(m->arch_name, "qwen3")) hp->arch = ARCH_QWEN3;
    else {
        snprintf(err, errlen, "unsupported model architecture '%s' (supported: llama, qwen2, qwen3)", m->arch_name);
        return HKV_ERR_UNSUPPORTED;
    }
    const char *a = m->arch_name;
    hkv_status st;
    if ((st = need_i(g, a, "embedding_length", 1, 1 << 16, &hp->n_embd, err, errlen)) ||
        (st = need_i(g, a, "block_count", 1, 1024, &hp->n_layer, err, errlen)) ||
        (st = need_i(g, a, "attention.head_count", 1, 1024, &hp->n_head, err, errlen)) ||
        (st = need_i(g, a, "feed_forward_length", 1, 1 << 20, &hp->n_ff, err, errlen)))
        return st;
    int64_t v;
    if ((st = opt_i(g, a, "attention.head_count_kv", hp->n_head, 1, 1024, &hp->n_head_kv, err, errlen)) ||
        (st = opt_i(g, a, "attention.key_length", hp->n_embd / hp->n_head, 0, 1 << 16, &hp->head_dim, err, errlen)))
        return st;
    if (hp->n_head_kv > hp->n_head || hp->n_head % hp->n_head_kv) {
        snprintf(err, errlen, "attention.head_count_kv = %d must divide head_count = %d", hp->n_head_kv, hp->n_head);
        return HKV_ERR_FORMAT;
    }
    if (hp->head_dim < 2 || hp->head_dim > 512 || hp->head_dim % 2) {
        snprintf(err, errlen, "head dimension %d is not supported (must be even, 2..512)", hp->head_dim);
        return HKV_ERR_UNSUPPORTED;
    }
    if ((st = opt_i(g, a, "rope.dimension_count", hp->head_dim, 0, 1 << 16, &hp->n_rot, err, errlen))) return st;
    if (hp->n_rot < 2 || hp->n_rot > hp->head_dim || hp->n_rot % 2) {
        snprintf(err, errlen, "rope.dimension_count = %d is invalid for head dimension %d", hp->n_rot, hp->head_dim);
        return HKV_ERR_FORMAT;
    }
    hp->n_ctx_train = get_arch_i(g, a, "context_length", &v) && v > 0 && v < (1 << 24) ? (int)v : 2048;
    if (!get_arch_f(g, a, "rope.freq_base", &hp->rope_theta)) hp->rope_theta = hp->arch == ARCH_LLAMA ? 10000.0f : 1000000.0f;
    if (!get_arch_f(g, a, "attention.layer_norm_rms_epsilon", &hp->rms_eps)) hp->rms_eps = 1e-6f;
    if (!(hp->rope_theta > 0) || !(hp->rms_eps > 0) || isinf(hp->rope_theta) || isinf(hp->rms_eps)) {
        snprintf(err, errlen, "model metadata has a non-positive or infinite rope.freq_base or layer_norm_rms_epsilon");
        return HKV_ERR_FORMAT;
    }
    hp->rope_neox = hp->arch != ARCH_LLAMA;
    hp->rope_freq_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (gguf_get_str(g, key, &s)) {
        char t[32];
        gguf_str_copy(s, t, sizeof t);
        float f;
        if (!strcmp(t, "linear") && get_arch_f(g, a, "rope.scaling.factor", &f) && f > 0) hp->rope_freq_scale = 1.0f / f;
    }
    gguf_str name;
    if (gguf_get_str(g, "general.name", &name)) gguf_str_copy(name, m->name, sizeof m->name);
    return HKV_OK;
}

/* ---- tensors */

static hkv_status get_weight(hkv_model *m, const char *name, int64_t cols, int64_t rows, int optional,
                             hkv_weight *w, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    const gguf_tensor *t = gguf_find_tensor(m->g, name);
    if (!t) {
        if (optional) return HKV_OK;
        snprintf(err, errlen, "model lacks the tensor '%s'", name);
        return HKV_ERR_FORMAT;
    }
    if (t->ne[0] != cols || (rows > 0 && t->ne[1] != rows) || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errlen, "tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name, (long long)t->ne[0],
                 (long long)t->ne[1], (long long)cols, (long long)rows);
        return HKV_ERR_FORMAT;
    }
    if (!hkv_type_supported(t->type)) {
        const char *tn = hkv_type_get(t->type)->name;
        snprintf(err, errlen, "tensor '%s' has type %s (%d), which is not supported", name, tn ? tn : "unknown", t->type);
        return HKV_ERR_UNSUPPORTED;
    }
    w->type = t->type;
    w->data = t->data;
    w->rows = t->ne[1];
    w->cols = t->ne[0];
    m->n_params += (uint64_t)(w->rows * w->cols);
    m->weight_bytes += t->nbytes;
    return HKV_OK;
}

/* n floats that the model owns (freed with it); NULL when out of memory. */
static float *owned_floats(hkv_model *m, int64_t n) {
    float **own = hkv_realloc(m->owned, sizeof(float *) * (size_t)(m->n_owned + 1));
    if (!own) return NULL;
    m->owned = own;
    float *v = hkv_malloc(sizeof(float) * (size_t)n);
    if (v) m->owned[m->n_owned++] = v;
    return v;
}

/* A small vector weight (norm, bias), dequantized to F32 and owned by the model. */
static hkv_status get_vec(hkv_model *m, const char *name, int64_t n, int optional, float **out, char *err, size_t errlen) {
    *out = NULL;
    hkv_weight w;
    hkv_status st = get_weight(m, name, n, 1, optional, &w, err, errlen);
    if (st || !w.data) return st;
    float *v = owned_floats(m, n);
    if (!v) {
        snprintf(err, errlen, "out of memory loading '%s'", name);
        return HKV_ERR_NOMEM;
    }
    hkv_dequant_row(w.type, w.data, v, n);
    *out = v;
    return HKV_OK;
}

static hkv_status load_layer(hkv_model *m, int il, char *err, size_t errlen) {
    const hkv_hparams *hp = &m->hp;
    hkv_layer_w *L = &m->layers[il];
    int64_t e = hp->n_embd, q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    char nm[96];
#define W(field, suffix, cols, rows) \
    snprintf(nm, sizeof nm, "blk.%d." suffix, il); \
    if ((st = get_weight(m, nm, cols, rows, 0, &L->field, err, errlen))) return st;
#define V(field, suffix, n, opt) \
    snprintf(nm, sizeof nm, "blk.%d." suffix, il); \
    if ((st = get_vec(m, nm, n, opt, &L->field, err, errlen))) return st;
    hkv_status st;
    V(attn_norm, "attn_norm.weight", e, 0);
    W(wq, "attn_q.weight", e, q);
    W(wk, "attn_k.weight", e, kv);
    W(wv, "attn_v.weight", e, kv);
    W(wo, "attn_output.weight", q, e);
    V(ffn_norm, "ffn_norm.weight", e, 0);
    W(w_gate, "ffn_gate.weight", e, hp->n_ff);
    W(w_up, "ffn_up.weight", e, hp->n_ff);
    W(w_down, "ffn_down.weight", hp->n_ff, e);
    int bias = hp->arch == ARCH_QWEN2;
    V(bq, "attn_q.bias", q, !bias);
    V(bk, "attn_k.bias", kv, !bias);
    V(bv, "attn_v.bias", kv, !bias);
    int qk_norm = hp->arch == ARCH_QWEN3;
    V(q_norm, "attn_q_norm.weight", hp->head_dim, !qk_norm);
    V(k_norm, "attn_k_norm.weight", hp->head_dim, !qk_norm);
#undef W
#undef V
    return HKV_OK;
}

/* Llama 3 style frequency scaling written as keys (when the rope_freqs tensor is absent): per-dimension
 * divisors computed from rope.scaling.{factor,low_freq_factor,high_freq_factor,original_context_length}. */
static hkv_status llama3_freqs_from_keys(hkv_model *m, char *err, size_t errlen) {
    const char *a = m->arch_name;
    float factor, lo = 1.0f, hi = 4.0f;
    int64_t orig = 8192;
    char key[128];
    gguf_str s;
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (!gguf_get_str(m->g, key, &s)) return HKV_OK;
    char t[32];
    gguf_str_copy(s, t, sizeof t);
    if (strcmp(t, "llama3") || !get_arch_f(m->g, a, "rope.scaling.factor", &factor) || !(factor > 0)) return HKV_OK;
    get_arch_f(m->g, a, "rope.scaling.low_freq_factor", &lo);
    get_arch_f(m->g, a, "rope.scaling.high_freq_factor", &hi);
    get_arch_i(m->g, a, "rope.scaling.original_context_length", &orig);
    if (!(lo > 0) || !(hi > lo) || isinf(hi) || isinf(factor) || orig < 1) { /* the smoothing divides by hi - lo */
        snprintf(err, errlen, "llama3 rope scaling keys are invalid (need 0 < low_freq_factor < high_freq_factor, "
                 "a finite factor and original_context_length >= 1)");
        return HKV_ERR_FORMAT;
    }
    int n = m->hp.n_rot / 2;
    float *f = owned_floats(m, n);
    if (!f) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    double lo_wl = (double)orig / lo, hi_wl = (double)orig / hi;
    for (int i = 0; i < n; i++) {
        double freq = pow(m->hp.rope_theta, -2.0 * i / m->hp.n_rot);
        double wl = 2 * M_PI / freq;
        if (wl < hi_wl) f[i] = 1.0f;
        else if (wl > lo_wl) f[i] = factor;
        else {
            double smooth = ((double)orig / wl - lo) / (hi - lo);
            /* scaled frequency = (1-smooth)*freq/factor + smooth*freq  =>  divisor = freq / that */
            f[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
    m->rope_freqs = f;
    return HKV_OK;
}

static hkv_status load_weights(hkv_model *m, char *err, size_t errlen) {
    const hkv_hparams *hp = &m->hp;
    hkv_status st;
    const gguf_tensor *te = gguf_find_tensor(m->g, "token_embd.weight");
    if (!te) { snprintf(err, errlen, "model lacks the tensor 'token_embd.weight'"); return HKV_ERR_FORMAT; }
    m->hp.n_vocab = (int)te->ne[1];
    if (te->ne[1] < 1 || te->ne[1] > (1 << 22)) { snprintf(err, errlen, "token_embd.weight has an absurd vocabulary size"); return HKV_ERR_FORMAT; }
    if ((st = get_weight(m, "token_embd.weight", hp->n_embd, hp->n_vocab, 0, &m->tok_embd, err, errlen))) return st;
    if ((st = get_vec(m, "output_norm.weight", hp->n_embd, 0, &m->out_norm, err, errlen))) return st;
    if ((st = get_weight(m, "output.weight", hp->n_embd, hp->n_vocab, 1, &m->output, err, errlen))) return st;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    if ((st = get_vec(m, "rope_freqs.weight", hp->n_rot / 2, 1, &m->rope_freqs, err, errlen))) return st;
    if (!m->rope_freqs && (st = llama3_freqs_from_keys(m, err, errlen))) return st;
    m->layers = hkv_calloc((size_t)hp->n_layer, sizeof(hkv_layer_w));
    if (!m->layers) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    for (int il = 0; il < hp->n_layer; il++)
        if ((st = load_layer(m, il, err, errlen))) return st;
    return HKV_OK;
}

hkv_status hkv_model_load(const char *path, const hkv_model_params *p, hkv_model **out, char *err, size_t errlen) {
    *out = NULL;
    hkv_model_params dp = hkv_model_default_params();
    if (!p) p = &dp;
    hkv_model *m = hkv_calloc(1, sizeof *m);
    if (!m) { snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    m->n_threads = p->n_threads;
    hkv_status st = gguf_open(path, &m->g, err, errlen);
    if (!st) st = read_hparams(m, err, errlen);
    if (!st) st = load_weights(m, err, errlen);
    if (!st) st = tok_load_gguf(m->g, &m->tok, err, errlen);
    if (!st && tok_n_vocab(m->tok) > m->hp.n_vocab) {
        snprintf(err, errlen, "tokenizer has %d tokens but the embedding only %d rows", tok_n_vocab(m->tok), m->hp.n_vocab);
        st = HKV_ERR_FORMAT;
    }
    if (st) { hkv_model_free(m); return st; }
    *out = m;
    return HKV_OK;
}

void hkv_model_free(hkv_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) hkv_free(m->owned[i]);
    hkv_free(m->owned);
    hkv_free(m->layers);
    if (m->tok) tok_free(m->tok);
    if (m->g) gguf_close(m->g);
    hkv_free(m);
}

void hkv_model_get_info(const hkv_model *m, hkv_model_info *in) {
    const hkv_hparams *hp = &m->hp;
    memset(in, 0, sizeof *in);
    in->arch = m->arch_name;
    in->name = m->name;
    in->n_vocab = hp->n_vocab; in->n_ctx_train = hp->n_ctx_train; in->n_embd = hp->n_embd;
    in->n_ctx_default = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096; /* bounds a default full cache */
    in->n_layer = hp->n_layer; in->n_head = hp->n_head; in->n_head_kv = hp->n_head_kv;
    in->head_dim = hp->head_dim; in->n_ff = hp->n_ff;
    in->rope_theta = hp->rope_theta; in->rms_eps = hp->rms_eps;
    in->bos = tok_bos(m->tok); in->eos = tok_eos(m->tok);
    in->add_bos = tok_add_bos(m->tok);
    in->spm = tok_get_kind(m->tok) == TOK_SPM;
    in->n_params = m->n_params;
    in->weight_bytes = m->weight_bytes;
}

/* ---- small math used by the forward pass */

void hkv_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

void hkv_rope(const hkv_hparams *hp, const float *freqs, float *x, int32_t pos) {
    int half = hp->n_rot / 2;
    float p = (float)pos * hp->rope_freq_scale;
    for (int i = 0; i < half; i++) {
        float theta = p * powf(hp->rope_theta, -2.0f * (float)i / (float)hp->n_rot);
        if (freqs) theta /= freqs[i];
        float c = cosf(theta), s = sinf(theta);
        int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
        float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}
