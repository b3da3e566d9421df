/* Synthetic model writer: preset shapes -> llama.cpp metadata keys + tensor names, a real tokenizer's
 * tokenizer.* keys, random weights drawn per (seed, tensor, row) and converted with quantize.c's type choice. */
#include "alloc.h"
#include "synth.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "gguf.h"
#include "tokenizer.h"

/* Shapes from the models' config.json (hidden_size, num_hidden_layers, num_attention_heads,
 * num_key_value_heads, head_dim, intermediate_size, rope_theta, rms_norm_eps, tie_word_embeddings). */
static const synth_preset PRESETS[] = {
    /* name            arch     tokenizer  ctx     embd  lay head kv  hd   ff     theta     eps   tied llama3 */
    {"Llama-3.2-1B",   "llama", "llama3", 131072, 2048, 16, 32, 8,  64,  8192, 500000.0f, 1e-5f, 1, 32.0f},
    {"Qwen2.5-0.5B",   "qwen2", "qwen3",  32768,  896,  24, 14, 2,  64,  4864, 1000000.0f, 1e-6f, 1, 0},
    {"Qwen3-0.6B",     "qwen3", "qwen3",  40960,  1024, 28, 16, 8,  128, 3072, 1000000.0f, 1e-6f, 1, 0},
    {"SmolLM2-135M",   "llama", "any",    8192,   576,  30, 9,  3,  64,  1536, 100000.0f, 1e-5f, 1, 0},
    {"TinyLlama-1.1B", "llama", "llama2", 2048,   2048, 22, 32, 4,  64,  5632, 10000.0f,  1e-5f, 0, 0},
    /* for tests: small, untied (so output.weight exists), rows of 256 so K-quants apply */
    {"tiny",           "llama", "any",    512,    256,  2,  4,  2,  64,  512,  10000.0f,  1e-5f, 0, 0},
};
#define N_PRESETS (int)(sizeof PRESETS / sizeof PRESETS[0])

/* Llama 3 RoPE scaling constants (Llama 3.1/3.2 config.json rope_scaling). */
#define L3_LOW_FREQ 1.0f
#define L3_HIGH_FREQ 4.0f
#define L3_ORIG_CTX 8192

const synth_preset *synth_presets(int *n) {
    *n = N_PRESETS;
    return PRESETS;
}

const synth_preset *synth_find_preset(const char *name) {
    for (int i = 0; i < N_PRESETS && name; i++)
        if (!strcasecmp(PRESETS[i].name, name)) return &PRESETS[i];
    return NULL;
}

synth_params synth_default_params(void) {
    synth_params p;
    memset(&p, 0, sizeof p);
    p.ftype = QFT_F32;
    p.rope_scaling = SYNTH_ROPE_PRESET;
    return p;
}

/* ---------------------------------------------------------------- random values */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Standard normal approximated by a sum of four uniforms (Irwin-Hall, variance rescaled to 1): one 64-bit
 * draw per value, no libm, so the weights are identical on every platform. */
static float normal01(uint64_t *s) {
    uint64_t r = splitmix64(s);
    float sum = 0;
    for (int k = 0; k < 4; k++, r >>= 16) sum += ((float)(r & 0xffff) + 0.5f) / 65536.0f;
    return (sum - 2.0f) * 1.7320508f; /* var(sum) = 4/12 */
}

void synth_fill(uint64_t seed, const char *name, synth_init kind, int64_t cols, int64_t r0, int64_t n, float *dst) {
    uint64_t base = seed ^ fnv1a(name);
    float scale = kind == SYNTH_MATRIX ? 1.0f / sqrtf((float)cols) : kind == SYNTH_NORM ? 0.05f : 0.1f;
    float offset = kind == SYNTH_NORM ? 1.0f : 0.0f;
    for (int64_t r = 0; r < n; r++) {
        uint64_t s = base + (uint64_t)(r0 + r) * 0xD1B54A32D192ED03ull;
        splitmix64(&s); /* decorrelate neighbouring rows' starting states */
        for (int64_t c = 0; c < cols; c++) dst[(size_t)r * cols + c] = offset + scale * normal01(&s);
    }
}

/* ---------------------------------------------------------------- model description */

typedef struct synth_model {      /* resolved shapes of what is written */
    const synth_preset *pr;
    char arch[16];
    int n_vocab, n_layer, head_dim;
    int rope;                     /* SYNTH_ROPE_NONE / TENSOR / KEYS */
    quant_layout lay;
} synth_model;

static hkv_status resolve(const synth_params *p, synth_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->pr = synth_find_preset(p->preset);
    if (!m->pr) {
        char names[256] = "";
        for (int i = 0; i < N_PRESETS; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", PRESETS[i].name);
        snprintf(err, errlen, "unknown preset '%s' (choose %s)", p->preset ? p->preset : "", names);
        return HKV_ERR_ARG;
    }
    const char *arch = p->arch ? p->arch : m->pr->arch;
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2") && strcmp(arch, "qwen3")) {
        snprintf(err, errlen, "unknown architecture '%s' (choose llama, qwen2 or qwen3)", arch);
        return HKV_ERR_ARG;
    }
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    m->n_layer = p->n_layer > 0 ? p->n_layer : m->pr->n_layer;
    m->head_dim = p->head_dim > 0 ? p->head_dim : m->pr->head_dim;
    if (m->n_layer > 1024 || m->head_dim % 2 || m->head_dim > 512) {
        snprintf(err, errlen, "layer count %d or head dimension %d is out of range (layers <= 1024, even head dim <= 512)",
                 m->n_layer, m->head_dim);
        return HKV_ERR_ARG;
    }
    if (p->rope_scaling < SYNTH_ROPE_PRESET || p->rope_scaling > SYNTH_ROPE_KEYS) {
        snprintf(err, errlen, "invalid rope scaling mode %d", p->rope_scaling);
        return HKV_ERR_ARG;
    }
    /* Llama 3 scaling: only for the llama architecture; preset default = the tensor llama.cpp writes */
    int want = p->rope_scaling == SYNTH_ROPE_PRESET ? (m->pr->llama3_factor > 0 ? SYNTH_ROPE_TENSOR : SYNTH_ROPE_NONE)
                                                    : p->rope_scaling;
    m->rope = strcmp(m->arch, "llama") ? SYNTH_ROPE_NONE : want;
    m->lay.n_layer = m->n_layer;
    m->lay.has_output = !m->pr->tied;
    return HKV_OK;
}

/* Llama 3 per-dimension frequency divisors, as llama.cpp's converter computes rope_freqs.weight. */
static void llama3_divisors(const synth_model *m, float *out) {
    float factor = m->pr->llama3_factor > 0 ? m->pr->llama3_factor : 8.0f;
    double lo_wl = L3_ORIG_CTX / L3_LOW_FREQ, hi_wl = L3_ORIG_CTX / L3_HIGH_FREQ;
    for (int i = 0; i < m->head_dim / 2; i++) {
        double freq = pow(m->pr->rope_theta, -2.0 * i / m->head_dim), wl = 2 * M_PI / freq;
        if (wl < hi_wl) out[i] = 1.0f;
        else if (wl > lo_wl) out[i] = factor;
        else {
            double smooth = (L3_ORIG_CTX / wl - L3_LOW_FREQ) / (L3_HIGH_FREQ - L3_LOW_FREQ);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

static void write_hparams(gguf_writer *w, const synth_model *m, const synth_params *p) {
    const synth_preset *pr = m->pr;
    char key[128], desc[160];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, m->arch), key)
    gguf_w_str(w, "general.architecture", m->arch);
    gguf_w_str(w, "general.name", pr->name);
    snprintf(desc, sizeof desc, "synthetic random weights with real shapes (heavykv synth, seed %llu)",
             (unsigned long long)p->seed);
    gguf_w_str(w, "general.description", desc);
    gguf_w_u32(w, "general.file_type", quant_ftype_gguf(p->ftype));
    if (p->ftype != QFT_F32 && p->ftype != QFT_F16) gguf_w_u32(w, "general.quantization_version", 2);
    gguf_w_u32(w, K("vocab_size"), (uint32_t)m->n_vocab);
    gguf_w_u32(w, K("context_length"), (uint32_t)pr->n_ctx);
    gguf_w_u32(w, K("embedding_length"), (uint32_t)pr->n_embd);
    gguf_w_u32(w, K("block_count"), (uint32_t)m->n_layer);
    gguf_w_u32(w, K("feed_forward_length"), (uint32_t)pr->n_ff);
    gguf_w_u32(w, K("attention.head_count"), (uint32_t)pr->n_head);
    gguf_w_u32(w, K("attention.head_count_kv"), (uint32_t)pr->n_head_kv);
    if (m->head_dim * pr->n_head != pr->n_embd || !strcmp(m->arch, "qwen3")) {
        gguf_w_u32(w, K("attention.key_length"), (uint32_t)m->head_dim);
        gguf_w_u32(w, K("attention.value_length"), (uint32_t)m->head_dim);
    }
    gguf_w_f32(w, K("rope.freq_base"), pr->rope_theta);
    gguf_w_f32(w, K("attention.layer_norm_rms_epsilon"), pr->rms_eps);
    if (!strcmp(m->arch, "llama")) gguf_w_u32(w, K("rope.dimension_count"), (uint32_t)m->head_dim);
    if (m->rope == SYNTH_ROPE_KEYS) {
        gguf_w_str(w, K("rope.scaling.type"), "llama3");
        gguf_w_f32(w, K("rope.scaling.factor"), pr->llama3_factor > 0 ? pr->llama3_factor : 8.0f);
        gguf_w_f32(w, K("rope.scaling.low_freq_factor"), L3_LOW_FREQ);
        gguf_w_f32(w, K("rope.scaling.high_freq_factor"), L3_HIGH_FREQ);
        gguf_w_u32(w, K("rope.scaling.original_context_length"), L3_ORIG_CTX);
    }
#undef K
}

/* ---------------------------------------------------------------- tokenizer */

static int not_tokenizer_key(const char *key) { return strncmp(key, "tokenizer.", 10) != 0; }

static int has_suffix_ci(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcasecmp(s + n - k, suf);
}

/* Writes the tokenizer.* keys and returns its vocabulary size in *n_vocab. */
static hkv_status write_tokenizer(gguf_writer *w, const char *path, int *n_vocab, char *err, size_t errlen) {
    hkv_tokenizer *t = NULL;
    hkv_status st;
    if (has_suffix_ci(path, ".gguf")) {
        gguf_file *g;
        if ((st = gguf_open(path, &g, err, errlen))) return st;
        st = tok_load_gguf(g, &t, err, errlen); /* validates it before its keys are copied */
        if (!st) gguf_w_copy_kv(w, g, not_tokenizer_key);
        gguf_close(g);
    } else {
        st = tok_load_hf(path, &t, err, errlen);
        if (!st) tok_write_gguf(t, w);
    }
    if (st) return st;
    *n_vocab = tok_n_vocab(t);
    tok_free(t);
    return HKV_OK;
}

/* ---------------------------------------------------------------- tensors */

typedef struct fill_src { uint64_t seed; const char *name; synth_init kind; int64_t cols; } fill_src;

static void fill_rows(void *arg, int64_t r0, int64_t n, float *dst) {
    const fill_src *s = arg;
    synth_fill(s->seed, s->name, s->kind, s->cols, r0, n, dst);
}

typedef struct synth_out {
    gguf_writer *w;
    hkv_pool *pool;
    const synth_model *m;
    const synth_params *p;
    synth_info *info;
} synth_out;

/* One tensor of cols x rows (rows = 1: a 1-D vector, always F32). */
static hkv_status add(synth_out *o, const char *name, synth_init kind, int64_t cols, int64_t rows, char *err, size_t errlen) {
    int64_t ne[2] = {cols, rows};
    int n_dims = rows > 1 || kind == SYNTH_MATRIX ? 2 : 1;
    int type = quant_tensor_type(o->p->ftype, &o->m->lay, name, n_dims, ne);
    if (type < 0) type = HKV_TYPE_F32;
    fill_src src = {o->p->seed, name, kind, cols};
    void *buf;
    size_t nb;
    hkv_status st = quant_convert(o->pool, type, rows, cols, fill_rows, &src, &buf, &nb, err, errlen);
    if (st) return st;
    st = gguf_w_tensor(o->w, name, type, n_dims, ne, buf, nb);
    hkv_free(buf);
    if (st) { snprintf(err, errlen, "cannot add tensor '%s'", name); return st; }
    o->info->n_params += (uint64_t)(cols * rows);
    o->info->tensor_bytes += nb;
    return HKV_OK;
}

static hkv_status add_layer(synth_out *o, int il, char *err, size_t errlen) {
    const synth_preset *pr = o->m->pr;
    int64_t e = pr->n_embd, hd = o->m->head_dim, q = pr->n_head * hd, kv = pr->n_head_kv * hd, ff = pr->n_ff;
    int qwen2 = !strcmp(o->m->arch, "qwen2"), qwen3 = !strcmp(o->m->arch, "qwen3");
    char nm[96];
    hkv_status st = HKV_OK;
#define T(suffix, kind, cols, rows) \
    if (!st) { snprintf(nm, sizeof nm, "blk.%d." suffix, il); st = add(o, nm, kind, cols, rows, err, errlen); }
    T("attn_norm.weight", SYNTH_NORM, e, 1);
    T("attn_q.weight", SYNTH_MATRIX, e, q);
    T("attn_k.weight", SYNTH_MATRIX, e, kv);
    T("attn_v.weight", SYNTH_MATRIX, e, kv);
    if (qwen2) {
        T("attn_q.bias", SYNTH_BIAS, q, 1);
        T("attn_k.bias", SYNTH_BIAS, kv, 1);
        T("attn_v.bias", SYNTH_BIAS, kv, 1);
    }
    if (qwen3) {
        T("attn_q_norm.weight", SYNTH_NORM, hd, 1);
        T("attn_k_norm.weight", SYNTH_NORM, hd, 1);
    }
    T("attn_output.weight", SYNTH_MATRIX, q, e);
    T("ffn_norm.weight", SYNTH_NORM, e, 1);
    T("ffn_gate.weight", SYNTH_MATRIX, e, ff);
    T("ffn_up.weight", SYNTH_MATRIX, e, ff);
    T("ffn_down.weight", SYNTH_MATRIX, ff, e);
#undef T
    return st;
}

static hkv_status add_tensors(synth_out *o, char *err, size_t errlen) {
    const synth_model *m = o->m;
    int64_t e = m->pr->n_embd;
    hkv_status st = add(o, "token_embd.weight", SYNTH_MATRIX, e, m->n_vocab, err, errlen);
    if (!st && m->rope == SYNTH_ROPE_TENSOR) {
        float f[256];
        llama3_divisors(m, f);
        int64_t ne[1] = {m->head_dim / 2};
        st = gguf_w_tensor(o->w, "rope_freqs.weight", HKV_TYPE_F32, 1, ne, f, sizeof(float) * (size_t)ne[0]);
        if (st) snprintf(err, errlen, "cannot add tensor 'rope_freqs.weight'");
        o->info->n_params += (uint64_t)ne[0];
        o->info->tensor_bytes += sizeof(float) * (size_t)ne[0];
    }
    for (int il = 0; il < m->n_layer && !st; il++) st = add_layer(o, il, err, errlen);
    if (!st) st = add(o, "output_norm.weight", SYNTH_NORM, e, 1, err, errlen);
    if (!st && m->lay.has_output) st = add(o, "output.weight", SYNTH_MATRIX, e, m->n_vocab, err, errlen);
    return st;
}

hkv_status synth_write(const synth_params *p, const char *path, synth_info *info, char *err, size_t errlen) {
    synth_info local;
    synth_info *in = info ? info : &local;
    memset(in, 0, sizeof *in);
    synth_model m;
    hkv_status st = resolve(p, &m, err, errlen);
    if (st) return st;
    if (p->ftype < 0 || p->ftype >= QFT_COUNT) { snprintf(err, errlen, "unknown weight type %d", (int)p->ftype); return HKV_ERR_ARG; }
    if (!p->tokenizer || !*p->tokenizer) {
        snprintf(err, errlen, "preset '%s' needs a tokenizer (a tokenizer.json, or a .gguf that has one)", m.pr->name);
        return HKV_ERR_ARG;
    }
    gguf_writer *w = gguf_writer_new();
    int nt = p->n_threads;
    if (nt <= 0) { long c = sysconf(_SC_NPROCESSORS_ONLN); nt = c > 0 ? (int)c : 1; }
    hkv_pool *pool = hkv_pool_new(nt);
    if (!w || !pool) { gguf_writer_free(w); hkv_pool_free(pool); snprintf(err, errlen, "out of memory"); return HKV_ERR_NOMEM; }
    st = write_tokenizer(w, p->tokenizer, &m.n_vocab, err, errlen);
    if (!st) {
        write_hparams(w, &m, p);
        synth_out o = {w, pool, &m, p, in};
        st = add_tensors(&o, err, errlen);
    }
    if (!st) st = gguf_writer_write(w, path, err, errlen);
    gguf_writer_free(w);
    hkv_pool_free(pool);
    if (st) return st;
    in->n_vocab = m.n_vocab;
    in->n_layer = m.n_layer;
    in->head_dim = m.head_dim;
    snprintf(in->arch, sizeof in->arch, "%s", m.arch);
    return HKV_OK;
}

/* ---------------------------------------------------------------- public API (heavykv.h) */

const hkv_synth_preset *hkv_synth_presets(int *n) { return synth_presets(n); }

hkv_synth_params hkv_synth_default_params(void) {
    hkv_synth_params p;
    memset(&p, 0, sizeof p);
    p.rope_scaling = HKV_SYNTH_ROPE_PRESET;
    return p;
}

hkv_status hkv_synth_write(const hkv_synth_params *pp, const char *path, hkv_synth_info *info, char *err, size_t errlen) {
    synth_params p = synth_default_params();
    if (pp->type && !quant_ftype_parse(pp->type, &p.ftype)) {
        snprintf(err, errlen, "unknown weight type '%s' (choose %s)", pp->type, quant_ftype_list());
        return HKV_ERR_ARG;
    }
    p.preset = pp->preset; p.arch = pp->arch; p.tokenizer = pp->tokenizer;
    p.n_layer = pp->n_layer; p.head_dim = pp->head_dim; p.rope_scaling = pp->rope_scaling;
    p.seed = pp->seed; p.n_threads = pp->n_threads;
    return synth_write(&p, path, info, err, errlen);
}
