/* Long context under a bounded cache, end to end through the public API: a 1-layer synthetic model (the tiny
 * preset's shapes, Q8_0 weights) reads a 4,096-token prompt in chunks of 256 with H2O at 20% and then decodes
 * at that depth. The cache's peak is budget + chunk rows (hkv_kv_stats.capacity_peak: a chunk is appended, then
 * evicted down to the budget) and it shrinks back to budget + 1 after each call; it holds
 * at most the budget after every chunk and exactly the budget while decoding (so each decode step attends over
 * the budget, not the depth), and evicts one row per (layer, KV head) per decode step. The kept positions
 * always include the newest token (H2O's recent window) and reach back to the first chunk only through heavy
 * hitters. Bounded to a few seconds in Release. */
#include <stdlib.h>
#include <string.h>
#include "heavykv.h"
#include "synth.h"
#include "testutil.h"

#define DEPTH 4096
#define CHUNK 256
#define N_GEN 24

int main(void) {
    synth_params sp = synth_default_params();
    sp.preset = "tiny";
    sp.tokenizer = tu_model();
    sp.n_layer = 1;
    sp.seed = 5;
    sp.n_threads = 2;
    sp.ftype = QFT_Q8_0;
    char err[512];
    const char *path = tu_tmp("longctx.gguf");
    CHECKF(synth_write(&sp, path, NULL, err, sizeof err) == HKV_OK, "%s", err);
    hkv_model *m;
    hkv_model_params mp = hkv_model_default_params();
    if (hkv_model_load(path, &mp, &m, err, sizeof err)) {
        CHECKF(0, "%s", err);
        return tu_done("test_longctx");
    }
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);

    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = DEPTH + N_GEN;
    cp.n_threads = 2;
    cp.kv.prefill_chunk = CHUNK;
    cp.kv.allow_long_ctx = 1; /* the tiny preset was "trained" on 512 tokens */
    snprintf(cp.kv.policy, sizeof cp.kv.policy, "h2o");
    CHECK(hkv_amount_parse("20%", &cp.kv.budget, err, sizeof err) == HKV_OK);
    hkv_context *c = NULL;
    if (hkv_context_new(m, &cp, &c, err, sizeof err)) {
        CHECKF(0, "%s", err);
        hkv_model_free(m);
        return tu_done("test_longctx");
    }
    hkv_kv_stats st;
    hkv_get_kv_stats(c, &st);
    const int budget = st.budget.total;
    const uint64_t row_set = (uint64_t)st.n_layer * st.n_head_kv * 2 * (uint64_t)st.row_bytes; /* K+V of one slot */
    CHECKF(budget == (cp.n_ctx * 20 + 99) / 100 || budget == cp.n_ctx * 20 / 100, "budget %d for 20%% of %d", budget,
           cp.n_ctx);
    CHECKF(st.capacity <= budget + 1, "capacity %d before the prompt, budget %d", st.capacity, budget);
    CHECK(st.kv_bytes == (uint64_t)st.capacity * row_set);

    /* the prompt, one chunk per call so the cache can be inspected between chunks */
    int32_t *prompt = malloc(sizeof(int32_t) * DEPTH);
    for (int i = 0; i < DEPTH; i++) prompt[i] = (int32_t)((i * 7919 + 13) % mi.n_vocab);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)st.capacity);
    for (int done = 0; done < DEPTH; done += CHUNK) {
        if (hkv_decode(c, 0, prompt + done, CHUNK)) {
            CHECKF(0, "prefill at %d: %s", done, hkv_last_error(c));
            break;
        }
        hkv_get_kv_stats(c, &st);
        int held = done + CHUNK < budget ? done + CHUNK : budget;
        /* the peak: budget + chunk slots while a chunk is appended before eviction; then back to the budget
         * (+ 1 slot for the next decode step's append-then-evict) */
        CHECKF(st.capacity_peak == budget + CHUNK && st.kv_bytes_peak == (uint64_t)(budget + CHUNK) * row_set,
               "after %d tokens: peak %d slots (%llu bytes), expected %d", done + CHUNK, st.capacity_peak,
               (unsigned long long)st.kv_bytes_peak, budget + CHUNK);
        CHECKF(st.capacity <= budget + 1 && st.kv_bytes == (uint64_t)st.capacity * row_set,
               "after %d tokens: %d slots allocated", done + CHUNK, st.capacity);
        CHECKF(st.occupancy_max == held && st.occupancy_min == held, "after %d tokens: %d..%d rows held, expected %d",
               done + CHUNK, st.occupancy_min, st.occupancy_max, held);
    }
    /* decoding at depth DEPTH: every step attends over exactly the budget and evicts one row per head */
    hkv_get_kv_stats(c, &st);
    uint64_t ev0 = st.evictions;
    int32_t tok = hkv_argmax(hkv_get_logits(c, 0, -1), mi.n_vocab);
    for (int step = 0; step < N_GEN; step++) {
        if (hkv_decode(c, 0, &tok, 1)) {
            CHECKF(0, "decode step %d: %s", step, hkv_last_error(c));
            break;
        }
        const float *lg = hkv_get_logits(c, 0, -1);
        CHECK(lg != NULL);
        if (!lg) break;
        tok = hkv_argmax(lg, mi.n_vocab);
        hkv_get_kv_stats(c, &st);
        CHECKF(st.occupancy_min == budget && st.occupancy_max == budget, "step %d: %d..%d rows held, budget %d", step,
               st.occupancy_min, st.occupancy_max, budget);
        CHECKF(st.evictions == ev0 + (uint64_t)(step + 1) * st.n_layer * st.n_head_kv,
               "step %d: %llu evictions since the prompt", step, (unsigned long long)(st.evictions - ev0));
        CHECK(st.capacity <= budget + 1 && st.capacity_peak == budget + CHUNK);
        CHECK(st.kv_bytes_used == (uint64_t)budget * row_set);
    }
    int last = DEPTH + N_GEN - 1;
    for (int h = 0; h < st.n_head_kv; h++) {
        int n = hkv_kv_positions(c, 0, 0, h, pos, st.capacity);
        CHECKF(n == budget, "head %d keeps %d positions", h, n);
        if (n < 2) continue;
        CHECKF(pos[n - 1] == last, "head %d: newest kept position %d, expected %d", h, pos[n - 1], last);
        int old = 0;
        for (int i = 0; i < n; i++) old += pos[i] < CHUNK;
        CHECKF(old < budget / 2, "head %d keeps %d positions of the first chunk", h, old);
    }
    free(prompt);
    free(pos);
    hkv_context_free(c);
    hkv_model_free(m);
    remove(path);
    return tu_done("test_longctx");
}
