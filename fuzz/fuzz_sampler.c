/* Fuzz target: the sampler over arbitrary logits (any float bits: NaN, +-inf, subnormals, huge) and arbitrary
 * parameters. Invariants: hkv_sampler_new accepts or refuses with a message; an accepted sampler always
 * returns an id in [0, n_vocab) and never reads outside its arrays (issue 12 defect 1).
 *
 * Input: [mode][temp f32][top_k i32][top_p f32][min_p f32][repeat_penalty f32][repeat_last_n u16][seed u64]
 * [n_hist u8][n_hist history ids u16] then the logits as f32. mode bit 0 maps the parameters into their
 * documented ranges (so most inputs reach sampling); otherwise they are used raw. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "heavykv.h"

typedef struct reader { const uint8_t *p; size_t n; } reader;

static void take(reader *r, void *out, size_t k) {
    memset(out, 0, k);
    size_t m = r->n < k ? r->n : k;
    memcpy(out, r->p, m);
    r->p += m; r->n -= m;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader r = { data, size };
    uint8_t mode, n_hist;
    uint16_t last_n, hist[255];
    hkv_sampler_params p;
    memset(&p, 0, sizeof p);
    take(&r, &mode, 1);
    take(&r, &p.temp, 4);
    take(&r, &p.top_k, 4);
    take(&r, &p.top_p, 4);
    take(&r, &p.min_p, 4);
    take(&r, &p.repeat_penalty, 4);
    take(&r, &last_n, 2);
    take(&r, &p.seed, 8);
    take(&r, &n_hist, 1);
    for (int i = 0; i < n_hist; i++) take(&r, &hist[i], 2);
    p.repeat_last_n = last_n;
    if (mode & 1) {   /* into range: finite temp, top_p > 0, min_p in [0,1], penalty > 0 finite */
        if (!isfinite(p.temp)) p.temp = 0.8f;
        if (!(p.top_p > 0)) p.top_p = 1e-45f;
        if (!(p.min_p >= 0 && p.min_p <= 1)) p.min_p = mode & 2 ? 1.0f : 0.0f;
        if (!(p.repeat_penalty > 0) || isinf(p.repeat_penalty)) p.repeat_penalty = mode & 4 ? 1e-45f : 3.4e38f;
    }
    int n = (int)(r.n / 4);
    if (n > 1 << 16) n = 1 << 16;
    float one = 0.0f;
    float *logits = n > 0 ? malloc(sizeof(float) * (size_t)n) : &one;
    if (!logits) return 0;
    if (n > 0) memcpy(logits, r.p, sizeof(float) * (size_t)n);
    else n = 1;
    hkv_sampler *s = NULL;
    char err[256] = "";
    hkv_status st = hkv_sampler_new(&p, n, &s, err, sizeof err);
    if (st != HKV_OK) {
        if (s || !err[0]) fuzz_fail("refused parameters without a message or with a sampler");
    } else {
        for (int i = 0; i < n_hist; i++) hkv_sampler_accept(s, hist[i]);
        for (int k = 0; k < 4; k++) {
            int32_t t = hkv_sampler_sample(s, logits);
            if (t < 0 || t >= n) fuzz_fail("token %d outside [0, %d)", (int)t, n);
        }
        int32_t g = hkv_argmax(logits, n);
        if (g < 0 || g >= n) fuzz_fail("argmax %d outside [0, %d)", (int)g, n);
        hkv_sampler_free(s);
    }
    if (logits != &one) free(logits);
    return 0;
}
