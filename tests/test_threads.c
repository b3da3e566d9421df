/* Two contexts over one model, decoding in two threads at once: the model is read-only after loading and
 * everything mutable lives in a context, so both threads must produce exactly what each produces alone.
 * Built under ThreadSanitizer by `scripts/test.sh --tsan` (issue 12), where a data race fails the run. */
#include <pthread.h>
#include <string.h>
#include "heavykv.h"
#include "testutil.h"

#define N_GEN 24

typedef struct job {
    hkv_model *m;
    const char *prompt;
    const char *policy;
    int32_t out[N_GEN];
    int ok;
} job;

static void *generate(void *arg) {
    job *j = arg;
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = 128;
    cp.n_threads = 2;               /* each context also has its own worker pool */
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "%s", j->policy);
    if (strcmp(j->policy, "full")) { cp.kv.budget.value = 16; cp.kv.budget.set = 1; }
    hkv_context *c = NULL;
    hkv_sampler *s = NULL;
    char err[256];
    hkv_model_info mi;
    hkv_model_get_info(j->m, &mi);
    hkv_sampler_params sp = hkv_sampler_default_params();
    sp.seed = 7;                    /* sampled, not greedy: the sampler is per thread too */
    if (hkv_context_new(j->m, &cp, &c, err, sizeof err) || hkv_sampler_new(&sp, mi.n_vocab, &s, err, sizeof err)) {
        hkv_context_free(c);
        return NULL;
    }
    int32_t toks[64];
    int n = hkv_tokenize(j->m, j->prompt, 1, 1, toks, 64);
    j->ok = n > 0 && hkv_decode(c, 0, toks, n) == HKV_OK;
    for (int i = 0; i < N_GEN && j->ok; i++) {
        j->out[i] = hkv_sampler_sample(s, hkv_get_logits(c, 0, -1));
        j->ok = hkv_decode(c, 0, &j->out[i], 1) == HKV_OK;
    }
    hkv_sampler_free(s);
    hkv_context_free(c);
    return NULL;
}

int main(void) {
    hkv_model *m = NULL;
    char err[512];
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 2;
    CHECKF(hkv_model_load(tu_model(), &mp, &m, err, sizeof err) == HKV_OK, "%s", err);
    if (!m) return tu_done("threads");
    job alone[2] = { { m, "Once upon a time", "h2o", {0}, 0 }, { m, "The little dog", "full", {0}, 0 } };
    job both[2] = { alone[0], alone[1] };
    generate(&alone[0]);
    generate(&alone[1]);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, generate, &both[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECKF(alone[i].ok && both[i].ok, "context %d failed", i);
        CHECKF(!memcmp(alone[i].out, both[i].out, sizeof alone[i].out), "context %d: concurrent tokens differ", i);
    }
    hkv_model_free(m);
    return tu_done("threads");
}
