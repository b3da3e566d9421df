/* The tests' independent F32 reference forward pass (see refmodel.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "refmodel.h"
#include "tensor.h"

static int64_t key_i(const gguf_file *g, const char *arch, const char *suffix, int64_t dflt) {
    char k[128];
    int64_t v;
    snprintf(k, sizeof k, "%s.%s", arch, suffix);
    return gguf_get_i64(g, k, &v) ? v : dflt;
}

static float key_f(const gguf_file *g, const char *arch, const char *suffix, float dflt) {
    char k[128];
    float v;
    snprintf(k, sizeof k, "%s.%s", arch, suffix);
    return gguf_get_f32(g, k, &v) ? v : dflt;
}

/* Whole tensor dequantized with the scalar reference; NULL if absent. */
static float *deq(const gguf_file *g, const char *name) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) return NULL;
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3], cols = t->ne[0];
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    size_t rb = hkv_row_size(t->type, cols);
    for (int64_t r = 0; r < rows; r++) hkv_dequant_row_ref(t->type, (const uint8_t *)t->data + r * rb, f + r * cols, cols);
    return f;
}

/* Remembers the activation block the engine's integer path uses with this weight matrix: 256 for the
 * K-quants (one scale per super-block), 32 for the other quantized types, 0 for float weights. */
static void note_block(const gguf_file *g, ref_model *m, const char *name, const float *w) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t || !w || m->n_wblock >= (int)(sizeof m->wblock / sizeof m->wblock[0])) return;
    int ty = t->type, k = ty == HKV_TYPE_Q4_K || ty == HKV_TYPE_Q5_K || ty == HKV_TYPE_Q6_K;
    m->wblock[m->n_wblock].w = w;
    m->wblock[m->n_wblock++].block = k ? 256 : hkv_type_get(ty)->block_size > 1 ? 32 : 0;
}

/* Llama 3 divisors from the rope.scaling.* keys, computed here independently of model.c. */
static void llama3_from_keys(const gguf_file *g, ref_model *m) {
    float factor = key_f(g, "llama", "rope.scaling.factor", 0), lo = key_f(g, "llama", "rope.scaling.low_freq_factor", 1),
          hi = key_f(g, "llama", "rope.scaling.high_freq_factor", 4);
    double orig = (double)key_i(g, "llama", "rope.scaling.original_context_length", 8192);
    for (int i = 0; i < m->hd / 2; i++) {
        double wavelen = 2 * M_PI * pow(m->theta, 2.0 * i / m->hd);
        if (wavelen < orig / hi) m->freq_div[i] = 1;
        else if (wavelen > orig / lo) m->freq_div[i] = factor;
        else {
            double smooth = (orig / wavelen - lo) / (hi - lo);
            m->freq_div[i] = (float)(1.0 / ((1 - smooth) / factor + smooth)); /* blend of freq/factor and freq */
        }
    }
}

int ref_load(const gguf_file *g, ref_model *m) {
    memset(m, 0, sizeof *m);
    gguf_str s;
    char arch[16];
    if (!gguf_get_str(g, "general.architecture", &s)) return 0;
    gguf_str_copy(s, arch, sizeof arch);
    m->neox = strcmp(arch, "llama") != 0;
    m->e = (int)key_i(g, arch, "embedding_length", 0);
    m->n_layer = (int)key_i(g, arch, "block_count", 0);
    m->n_head = (int)key_i(g, arch, "attention.head_count", 0);
    m->n_kv = (int)key_i(g, arch, "attention.head_count_kv", m->n_head);
    m->hd = (int)key_i(g, arch, "attention.key_length", m->n_head ? m->e / m->n_head : 0);
    m->ff = (int)key_i(g, arch, "feed_forward_length", 0);
    m->theta = key_f(g, arch, "rope.freq_base", 10000);
    m->eps = key_f(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f);
    if (m->n_layer < 1 || m->n_layer > 8 || m->hd > 512) return 0;
    m->n_vocab = (int)gguf_find_tensor(g, "token_embd.weight")->ne[1];
    m->emb = deq(g, "token_embd.weight");
    m->out_norm = deq(g, "output_norm.weight");
    m->out = deq(g, "output.weight");
    note_block(g, m, "token_embd.weight", m->emb);
    note_block(g, m, "output.weight", m->out);
    for (int i = 0; i < 256; i++) m->freq_div[i] = 1;
    float *rf = deq(g, "rope_freqs.weight");
    if (rf) { memcpy(m->freq_div, rf, sizeof(float) * (size_t)m->hd / 2); free(rf); }
    else if (gguf_get_str(g, "llama.rope.scaling.type", &s)) llama3_from_keys(g, m);
    for (int l = 0; l < m->n_layer; l++) {
        ref_layer *L = &m->L[l];
        char nm[96];
#define D(field, suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, l), L->field = deq(g, nm))
        D(attn_norm, "attn_norm.weight"); D(wq, "attn_q.weight"); D(wk, "attn_k.weight"); D(wv, "attn_v.weight");
        D(wo, "attn_output.weight"); D(bq, "attn_q.bias"); D(bk, "attn_k.bias"); D(bv, "attn_v.bias");
        D(q_norm, "attn_q_norm.weight"); D(k_norm, "attn_k_norm.weight"); D(ffn_norm, "ffn_norm.weight");
        D(wg, "ffn_gate.weight"); D(wu, "ffn_up.weight"); D(wd, "ffn_down.weight");
#undef D
#define B(field, suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, l), note_block(g, m, nm, L->field))
        B(wq, "attn_q.weight"); B(wk, "attn_k.weight"); B(wv, "attn_v.weight"); B(wo, "attn_output.weight");
        B(wg, "ffn_gate.weight"); B(wu, "ffn_up.weight"); B(wd, "ffn_down.weight");
#undef B
    }
    return 1;
}

void ref_free(ref_model *m) {
    if (m->out != m->emb) free(m->out);
    free(m->emb);
    free(m->out_norm);
    for (int l = 0; l < m->n_layer; l++) {
        ref_layer *L = &m->L[l];
        float *all[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->q_norm, L->k_norm,
                        L->ffn_norm, L->wg, L->wu, L->wd};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    }
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = (float)(x[i] * r * w[i]);
}

/* out[rows] = W[rows][cols] x (+ b) */
/* x rounded like the integer path's activations: per block of bs (32, or 256 for K-quant weights), scale
 * d = absmax / 127, levels round(x / d). */
static void q8_round(const float *x, float *xq, int n, int bs) {
    for (int b = 0; b < n; b += bs) {
        float amax = 0;
        for (int i = b; i < b + bs; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        float d = amax / 127.0f, id = amax > 0 ? 1.0f / d : 0;
        for (int i = b; i < b + bs; i++) xq[i] = d * (float)lrintf(x[i] * id);
    }
}

static void matvec(const ref_model *m, float *out, const float *W, const float *xin, const float *b, int rows, int cols) {
    float *xq = NULL;
    const float *x = xin;
    int bs = 0;
    for (int i = 0; i < m->n_wblock; i++)
        if (m->wblock[i].w == W) bs = m->wblock[i].block;
    if (m->q8_acts && bs) {
        xq = malloc(sizeof(float) * (size_t)cols);
        q8_round(xin, xq, cols, bs);
        x = xq;
    }
    for (int r = 0; r < rows; r++) {
        double s = b ? b[r] : 0;
        for (int c = 0; c < cols; c++) s += (double)W[(size_t)r * cols + c] * x[c];
        out[r] = (float)s;
    }
    free(xq);
}

static void rope(const ref_model *m, float *x, int pos) {
    int half = m->hd / 2;
    for (int i = 0; i < half; i++) {
        double ang = pos * pow(m->theta, -2.0 * i / m->hd) / m->freq_div[i];
        int a = m->neox ? i : 2 * i, b = m->neox ? i + half : 2 * i + 1;
        double x0 = x[a], x1 = x[b];
        x[a] = (float)(x0 * cos(ang) - x1 * sin(ang));
        x[b] = (float)(x0 * sin(ang) + x1 * cos(ang));
    }
}

/* Logits [n][n_vocab] of tokens at positions 0..n-1 with full causal attention. */
void ref_forward(const ref_model *m, const int32_t *tok, int n, float *logits) {
    int e = m->e, hd = m->hd, qd = m->n_head * hd, kd = m->n_kv * hd, group = m->n_head / m->n_kv;
    float *x = malloc(sizeof(float) * e), *xb = malloc(sizeof(float) * e), *q = malloc(sizeof(float) * qd);
    float *att = malloc(sizeof(float) * qd), *h1 = malloc(sizeof(float) * m->ff), *h2 = malloc(sizeof(float) * m->ff);
    float *kc = malloc(sizeof(float) * (size_t)m->n_layer * n * kd), *vc = malloc(sizeof(float) * (size_t)m->n_layer * n * kd);
    double *p = malloc(sizeof(double) * n);
    for (int t = 0; t < n; t++) {
        memcpy(x, m->emb + (size_t)tok[t] * e, sizeof(float) * e);
        for (int l = 0; l < m->n_layer; l++) {
            const ref_layer *L = &m->L[l];
            float *k = kc + ((size_t)l * n + t) * kd, *v = vc + ((size_t)l * n + t) * kd;
            rmsnorm(xb, x, L->attn_norm, e, m->eps);
            matvec(m, q, L->wq, xb, L->bq, qd, e);
            matvec(m, k, L->wk, xb, L->bk, kd, e);
            matvec(m, v, L->wv, xb, L->bv, kd, e);
            for (int h = 0; h < m->n_head; h++) {
                if (L->q_norm) rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, m->eps);
                rope(m, q + h * hd, t);
            }
            for (int h = 0; h < m->n_kv; h++) {
                if (L->k_norm) rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, m->eps);
                rope(m, k + h * hd, t);
            }
            for (int h = 0; h < m->n_head; h++) {
                int kh = h / group;
                double mx = -1e300, sum = 0;
                for (int s = 0; s <= t; s++) {
                    const float *ks = kc + ((size_t)l * n + s) * kd + kh * hd;
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * ks[i];
                    p[s] = d / sqrt((double)hd);
                    if (p[s] > mx) mx = p[s];
                }
                for (int s = 0; s <= t; s++) sum += (p[s] = exp(p[s] - mx));
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int s = 0; s <= t; s++) o += p[s] / sum * vc[((size_t)l * n + s) * kd + kh * hd + i];
                    att[h * hd + i] = (float)o;
                }
            }
            matvec(m, xb, L->wo, att, NULL, e, qd);
            for (int i = 0; i < e; i++) x[i] += xb[i];
            rmsnorm(xb, x, L->ffn_norm, e, m->eps);
            matvec(m, h1, L->wg, xb, NULL, m->ff, e);
            matvec(m, h2, L->wu, xb, NULL, m->ff, e);
            for (int i = 0; i < m->ff; i++) h1[i] = (float)(h1[i] / (1 + exp(-(double)h1[i])) * h2[i]);
            matvec(m, xb, L->wd, h1, NULL, e, m->ff);
            for (int i = 0; i < e; i++) x[i] += xb[i];
        }
        rmsnorm(xb, x, m->out_norm, e, m->eps);
        matvec(m, logits + (size_t)t * m->n_vocab, m->out ? m->out : m->emb, xb, NULL, m->n_vocab, e);
    }
    free(x); free(xb); free(q); free(att); free(h1); free(h2); free(kc); free(vc); free(p);
}

