/* Policies against independent references written here, on random attention:
 *   - the batch hook (ops->select) of window/sink/h2o/tova keeps exactly the tokens a victim() loop keeps;
 *   - SnapKV's prompt selection and decode rule against a per-position reference (scores kept per POSITION,
 *     pooling and top-k done the plain way), through shuffled slots like the cache hands out.
 * The head is driven by hand the way kvcache.c drives it: a chunk's tokens are written first, then each query
 * attends causally, then the head is trimmed (select after a chunk, victim() after a single step). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "policy.h"
#include "testutil.h"

#define CAP 160
#define MAXPOS 400

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- a head driven by hand */

typedef struct head_t {
    int32_t slots[CAP], pos[CAP];
    float state[CAP * HKV_POLICY_MAX_STATE];
    int used[CAP];
    hkv_head_view h;
} head_t;

static void head_init(head_t *s) {
    memset(s, 0, sizeof *s);
    s->h.slots = s->slots; s->h.pos = s->pos; s->h.state = s->state; s->h.newest = -1;
}

static void head_insert(head_t *s, const hkv_policy_ops *ops, const hkv_policy_cfg *c, int32_t p, uint64_t *rng) {
    int nfree = CAP - s->h.n, pick = (int)(rng_next(rng) % (uint64_t)nfree);
    int32_t slot = -1;
    for (int i = 0; i < CAP; i++)
        if (!s->used[i] && pick-- == 0) { slot = i; break; }
    s->used[slot] = 1;
    s->pos[slot] = p;
    s->slots[s->h.n++] = slot;
    s->h.newest = p;
    for (int f = 0; f < ops->state_floats; f++) s->state[slot * ops->state_floats + f] = 0.0f;
    if (ops->on_insert) ops->on_insert(c, &s->h, slot);
}

static void head_remove(head_t *s, int j) {
    s->used[s->slots[j]] = 0;
    memmove(s->slots + j, s->slots + j + 1, (size_t)(s->h.n - j - 1) * sizeof s->slots[0]);
    s->h.n--;
}

/* keep[] from select applied the way kvcache.c's batch_trim does. */
static void head_apply_keep(head_t *s, const uint8_t *keep) {
    for (int j = s->h.n - 1; j >= 0; j--) if (!keep[j]) head_remove(s, j);
}

/* Random probabilities over n_visible tokens from small integer weights (exact ties happen). */
static void make_probs(float *probs, int n_visible, uint64_t *rng) {
    float sum = 0;
    for (int j = 0; j < n_visible; j++) { probs[j] = (float)(rng_next(rng) % 5); sum += probs[j]; }
    if (sum == 0) { probs[n_visible - 1] = 1; sum = 1; }
    for (int j = 0; j < n_visible; j++) probs[j] /= sum;
}

/* ---------------------------------------------------------------- batch hook == victim loop */

/* A head of n tokens at shuffled slots and random positions with random state; the set select() keeps must be
 * the set left by calling victim() until the target is reached (or -1). */
static void batch_case(const hkv_policy_ops *ops, hkv_policy_cfg c, int n, int target, uint64_t *rng) {
    head_t a, b;
    head_init(&a);
    int32_t p = (int32_t)(rng_next(rng) % 5);
    for (int i = 0; i < n; i++) {
        head_insert(&a, ops, &c, p, rng);
        p += 1 + (int32_t)(rng_next(rng) % 3);         /* gaps: earlier evictions */
    }
    for (int j = 0; j < CAP * ops->state_floats; j++) a.state[j] = (float)(rng_next(rng) % 6) + 1.0f * (j % 2);
    b = a;
    b.h.slots = b.slots; b.h.pos = b.pos; b.h.state = b.state;
    while (a.h.n > target) {
        int j = ops->victim(&c, &a.h);
        if (j < 0) break;
        head_remove(&a, j);
    }
    uint8_t keep[CAP];
    int kept = ops->select(&c, &b.h, target, keep);
    CHECKF(kept >= 0, "%s select declined", ops->name);
    if (kept < 0) return;
    head_apply_keep(&b, keep);
    CHECKF(kept == b.h.n, "%s: select says %d kept, marked %d", ops->name, kept, b.h.n);
    int same = a.h.n == b.h.n;
    for (int j = 0; same && j < a.h.n; j++) same = a.pos[a.slots[j]] == b.pos[b.slots[j]];
    CHECKF(same, "%s n %d target %d (heavy %d recent %d sink %d): kept sets differ (%d vs %d tokens)", ops->name,
           n, target, c.b.heavy, c.b.recent, c.b.sink, a.h.n, b.h.n);
}

static void test_batch_equals_loop(void) {
    uint64_t rng = 7;
    const hkv_policy_ops *ops[] = { &hkv_policy_window, &hkv_policy_sink, &hkv_policy_h2o, &hkv_policy_tova,
                                    &hkv_policy_scissorhands, &hkv_policy_keyformer };
    for (int it = 0; it < 400; it++) {
        for (int k = 0; k < 6; k++) {
            int n = 2 + (int)(rng_next(&rng) % 120), target = 1 + (int)(rng_next(&rng) % (uint64_t)n);
            hkv_policy_cfg c;
            memset(&c, 0, sizeof c);
            c.b.sink = ops[k] == &hkv_policy_window ? 0 : (int)(rng_next(&rng) % 4);
            c.b.recent = ops[k] == &hkv_policy_tova ? 0 : (int)(rng_next(&rng) % 6);
            c.b.heavy = target > c.b.recent + c.b.sink ? target - c.b.recent - c.b.sink : 0;
            c.b.total = target;
            c.opt[0] = (int)(rng_next(&rng) % 2);        /* h2o: score=sum|normalized */
            if (ops[k] == &hkv_policy_scissorhands) c.opt[0] = 16;
            batch_case(ops[k], c, n, target, &rng);
        }
    }
}

/* ---------------------------------------------------------------- SnapKV reference */

typedef struct snap_ref {
    float score[MAXPOS];       /* per position */
    int alive[MAXPOS];
} snap_ref;

/* The prompt selection as the paper describes it, over positions 0..P-1 all alive. */
static void snap_ref_prompt(snap_ref *r, int P, int W, int K, int sink, int total) {
    int nwin = W < P ? W : P, npre = P - nwin;
    float pooled[MAXPOS];
    for (int p = 0; p < npre; p++) {
        float m = -1;
        for (int q = p - K / 2; q <= p + K / 2; q++)
            if (q >= 0 && q < npre && r->score[q] > m) m = r->score[q];
        pooled[p] = m;
    }
    int drop = P - total;
    /* drop the lowest pooled non-sink prefix tokens, the older first on ties */
    while (drop > 0) {
        int best = -1;
        for (int p = 0; p < npre; p++) {
            if (!r->alive[p] || p < sink) continue;
            if (best < 0 || pooled[p] < pooled[best]) best = p;
        }
        if (best < 0) break;
        r->alive[best] = 0;
        drop--;
    }
}

/* Decode: lowest raw score outside the newest W and the sinks, older first on ties. */
static int snap_ref_victim(const snap_ref *r, int newest, int W, int sink) {
    int best = -1;
    for (int p = 0; p <= newest; p++) {
        if (!r->alive[p] || p < sink || p > newest - W) continue;
        if (best < 0 || r->score[p] < r->score[best]) best = p;
    }
    return best;
}

static int snap_run(uint64_t seed, int P, int W, int K, int sink, int heavy, int steps) {
    uint64_t rng = seed;
    hkv_policy_cfg c;
    memset(&c, 0, sizeof c);
    c.b.recent = W; c.b.sink = sink; c.b.heavy = heavy; c.b.total = W + sink + heavy;
    c.opt[0] = W; c.opt[1] = K;
    const hkv_policy_ops *ops = &hkv_policy_snapkv;
    head_t s;
    head_init(&s);
    snap_ref r;
    memset(&r, 0, sizeof r);
    float probs[CAP];
    int mism = 0;
    /* prompt: all P tokens written, then each query attends causally */
    for (int p = 0; p < P; p++) { head_insert(&s, ops, &c, p, &rng); r.alive[p] = 1; }
    for (int q = 0; q < P; q++) {
        make_probs(probs, q + 1, &rng);
        ops->observe(&c, &s.h, probs, q + 1, q);
        if (q > P - 1 - W) for (int p = 0; p <= q; p++) r.score[p] += probs[p];
    }
    if (s.h.n > c.b.total) {
        uint8_t keep[CAP];
        CHECK(ops->select(&c, &s.h, c.b.total, keep) >= 0);
        head_apply_keep(&s, keep);
        snap_ref_prompt(&r, P, W, K, sink, c.b.total);
    }
    /* decode steps: one token, it attends over the kept ones and itself, then at most one eviction */
    int newest = P - 1;
    for (int t = 0; t <= steps; t++) {
        int n_alive = 0;
        for (int p = 0; p <= newest; p++) n_alive += r.alive[p];
        int same = n_alive == s.h.n;
        for (int j = 0, p = 0; same && j < s.h.n; j++, p++) {
            while (p <= newest && !r.alive[p]) p++;
            same = s.pos[s.slots[j]] == p;
        }
        if (!same && mism++ < 3)
            CHECKF(0, "snapkv seed %llu P %d W %d K %d sink %d heavy %d: kept sets differ after step %d",
                   (unsigned long long)seed, P, W, K, sink, heavy, t);
        if (t == steps) break;
        newest++;
        head_insert(&s, ops, &c, newest, &rng);
        r.alive[newest] = 1;
        make_probs(probs, s.h.n, &rng);
        ops->observe(&c, &s.h, probs, s.h.n, newest);
        for (int j = 0; j < s.h.n; j++) r.score[s.pos[s.slots[j]]] += probs[j];
        if (s.h.n > c.b.total) {
            int j = ops->victim(&c, &s.h), want = snap_ref_victim(&r, newest, W, sink);
            CHECKF(j >= 0, "snapkv victim declined at %d", newest);
            if (j < 0) break;
            r.alive[want] = 0;
            head_remove(&s, j);
        }
    }
    return mism;
}

static void test_snapkv_reference(void) {
    int fails = 0;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        uint64_t r = seed * 31;
        int P = 10 + (int)(rng_next(&r) % 110), W = 1 + (int)(rng_next(&r) % 12);
        int K = 1 + 2 * (int)(rng_next(&r) % 4), sink = (int)(rng_next(&r) % 3);
        int heavy = (int)(rng_next(&r) % 20);
        fails += snap_run(seed, P, W, K, sink, heavy, 30);
    }
    CHECKF(fails == 0, "%d SnapKV mismatches against the reference", fails);
    /* the pooling matters: with K = 1 and K = 7 the same attention keeps different sets somewhere */
    int differ = 0;
    for (uint64_t seed = 1; seed <= 20 && !differ; seed++) {
        hkv_policy_cfg c;
        memset(&c, 0, sizeof c);
        c.b.recent = 4; c.b.heavy = 8; c.b.total = 12;
        head_t a, b;
        head_init(&a);
        uint64_t rng = seed;
        float probs[CAP];
        for (int p = 0; p < 60; p++) head_insert(&a, &hkv_policy_snapkv, &c, p, &rng);
        for (int q = 56; q < 60; q++) { make_probs(probs, q + 1, &rng); hkv_policy_snapkv.observe(&c, &a.h, probs, q + 1, q); }
        b = a;
        b.h.slots = b.slots; b.h.pos = b.pos; b.h.state = b.state;
        uint8_t ka[CAP], kb[CAP];
        c.opt[1] = 1;
        hkv_policy_snapkv.select(&c, &a.h, 12, ka);
        c.opt[1] = 7;
        hkv_policy_snapkv.select(&c, &b.h, 12, kb);
        differ = memcmp(ka, kb, 60) != 0;
    }
    CHECK(differ);
}

/* ---------------------------------------------------------------- Scissorhands reference */

#define MAXQ 400
typedef struct sc_ref {
    int alive[MAXPOS];
    int nmarks[MAXPOS];
    uint8_t marks[MAXPOS][MAXQ];   /* per position: 1 = this query gave it less than the query's average */
} sc_ref;

static int sc_count(const sc_ref *r, int p, int w) {
    int c = 0;
    for (int i = r->nmarks[p] - 1, k = 0; i >= 0 && k < w; i--, k++) c += r->marks[p][i];
    return c;
}

/* Most marks in the window among non-recent non-sinks; older on ties. */
static int sc_ref_victim(const sc_ref *r, int newest, const hkv_policy_cfg *c, int w) {
    int best = -1, best_c = -1;
    for (int p = 0; p <= newest; p++) {
        if (!r->alive[p] || p < c->b.sink || p > newest - c->b.recent) continue;
        int k = sc_count(r, p, w);
        if (k > best_c) { best = p; best_c = k; }
    }
    return best;
}

/* Prompt chunk, then steps of 1 to 4 tokens; the kept set is compared with the reference after every trim. */
static int sc_run(uint64_t seed, int heavy, int recent, int sink, int w) {
    static sc_ref r;
    memset(&r, 0, sizeof r);
    uint64_t rng = seed;
    hkv_policy_cfg c;
    memset(&c, 0, sizeof c);
    c.b.heavy = heavy; c.b.recent = recent; c.b.sink = sink; c.b.total = heavy + recent + sink;
    c.opt[0] = w;
    const hkv_policy_ops *ops = &hkv_policy_scissorhands;
    head_t s;
    head_init(&s);
    float probs[CAP];
    int p = 0, mism = 0;
    for (int step = 0; p < 220; step++) {
        int chunk = step == 0 ? 20 + (int)(rng_next(&rng) % 30) : 1 + (int)(rng_next(&rng) % 4) / 3 * 3;
        float group = (float)(1 + rng_next(&rng) % 2);       /* GQA sum over 1 or 2 query heads */
        int first_j = s.h.n;
        for (int i = 0; i < chunk; i++) { head_insert(&s, ops, &c, p + i, &rng); r.alive[p + i] = 1; }
        for (int i = 0; i < chunk; i++) {
            int nv = first_j + i + 1;
            make_probs(probs, nv, &rng);
            for (int j = 0; j < nv; j++) probs[j] *= group;
            ops->observe(&c, &s.h, probs, nv, p + i);
            float tot = 0;
            for (int j = 0; j < nv; j++) tot += probs[j];
            float th = tot / (float)nv;
            for (int j = 0; j < nv; j++) {
                int q = s.pos[s.slots[j]];
                r.marks[q][r.nmarks[q]++] = probs[j] < th;
            }
        }
        p += chunk;
        if (s.h.n > c.b.total) {
            if (chunk > 1) {
                uint8_t keep[CAP];
                CHECK(ops->select(&c, &s.h, c.b.total, keep) >= 0);
                head_apply_keep(&s, keep);
            } else {
                int j = ops->victim(&c, &s.h);
                if (j >= 0) head_remove(&s, j);
            }
            int n_alive = 0;
            for (int q = 0; q < p; q++) n_alive += r.alive[q];
            while (n_alive > c.b.total) {
                int v = sc_ref_victim(&r, p - 1, &c, w);
                if (v < 0) break;
                r.alive[v] = 0;
                n_alive--;
            }
        }
        int same = 1, j = 0;
        for (int q = 0; q < p && same; q++)
            if (r.alive[q]) same = j < s.h.n && s.pos[s.slots[j++]] == q;
        same &= j == s.h.n;
        if (!same && mism++ < 3)
            CHECKF(0, "scissorhands seed %llu (heavy %d recent %d sink %d w %d): kept sets differ at position %d",
                   (unsigned long long)seed, heavy, recent, sink, w, p);
    }
    return mism;
}

static void test_scissorhands_reference(void) {
    int fails = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        uint64_t q = seed * 77;
        int heavy = 1 + (int)(rng_next(&q) % 12), recent = (int)(rng_next(&q) % 8), sink = (int)(rng_next(&q) % 3);
        int w = 1 + (int)(rng_next(&q) % 24);
        fails += sc_run(seed, heavy, recent, sink, w);
    }
    CHECKF(fails == 0, "%d Scissorhands mismatches against the reference", fails);
}

/* ---------------------------------------------------------------- Keyformer reference */

/* The spec of policy_keyformer.c, written again: Gumbel noise from splitmix64 of (layer << 48 ^ pos << 24 ^
 * qpos), temperature linear from tau0 to tau1 (hundredths) over `span` positions. */
static float kf_gumbel(int layer, int pos, int qpos) {
    uint64_t z = ((uint64_t)layer << 48) ^ ((uint64_t)pos << 24) ^ (uint64_t)qpos;
    uint64_t u64 = rng_next(&z);           /* splitmix64 step: the same mixing */
    double u = ((double)(u64 >> 11) + 0.5) / 9007199254740992.0;
    return (float)-log(-log(u));
}

typedef struct kf_ref { int alive[MAXPOS]; float score[MAXPOS]; } kf_ref;

static int kf_run(uint64_t seed, int heavy, int recent, int sink, int tau0, int tau1, int span, int noise, int layer) {
    static kf_ref r;
    memset(&r, 0, sizeof r);
    uint64_t rng = seed;
    hkv_policy_cfg c;
    memset(&c, 0, sizeof c);
    c.b.heavy = heavy; c.b.recent = recent; c.b.sink = sink; c.b.total = heavy + recent + sink;
    c.opt[0] = tau0; c.opt[1] = tau1; c.opt[2] = span; c.opt[3] = noise; c.layer = layer;
    const hkv_policy_ops *ops = &hkv_policy_keyformer;
    head_t s;
    head_init(&s);
    float probs[CAP], z[CAP];
    int p = 0, mism = 0;
    for (int step = 0; p < 200; step++) {
        int chunk = step == 0 ? 20 + (int)(rng_next(&rng) % 30) : (rng_next(&rng) % 4 == 0 ? 3 : 1);
        int first_j = s.h.n;
        for (int i = 0; i < chunk; i++) { head_insert(&s, ops, &c, p + i, &rng); r.alive[p + i] = 1; }
        for (int i = 0; i < chunk; i++) {
            int nv = first_j + i + 1, q = p + i;
            make_probs(probs, nv, &rng);
            ops->observe(&c, &s.h, probs, nv, q);
            /* reference: per position */
            float tot = 0, m = -INFINITY;
            for (int j = 0; j < nv; j++) tot += probs[j];
            float tau = (float)((tau0 + (tau1 - tau0) * (q >= span ? 1.0 : (double)q / span)) / 100.0);
            for (int j = 0; j < nv; j++) {
                float a = probs[j] / tot, g = noise ? 0.0f : kf_gumbel(layer, s.pos[s.slots[j]], q);
                z[j] = a > 0.0f ? (logf(a) + g) / tau : -INFINITY;
                if (z[j] > m) m = z[j];
            }
            float sum = 0;
            for (int j = 0; j < nv; j++) { z[j] = z[j] == -INFINITY ? 0.0f : expf(z[j] - m); sum += z[j]; }
            for (int j = 0; j < nv; j++) r.score[s.pos[s.slots[j]]] += z[j] / sum;
        }
        p += chunk;
        if (s.h.n > c.b.total) {
            if (chunk > 1) {
                uint8_t keep[CAP];
                CHECK(ops->select(&c, &s.h, c.b.total, keep) >= 0);
                head_apply_keep(&s, keep);
            } else {
                int j = ops->victim(&c, &s.h);
                if (j >= 0) head_remove(&s, j);
            }
            int n_alive = 0;
            for (int q = 0; q < p; q++) n_alive += r.alive[q];
            while (n_alive > c.b.total) {       /* lowest score outside recent/sinks, older first */
                int best = -1;
                for (int q = 0; q < p; q++) {
                    if (!r.alive[q] || q < sink || q > p - 1 - recent) continue;
                    if (best < 0 || r.score[q] < r.score[best]) best = q;
                }
                if (best < 0) break;
                r.alive[best] = 0;
                n_alive--;
            }
        }
        int same = 1, j = 0;
        for (int q = 0; q < p && same; q++)
            if (r.alive[q]) same = j < s.h.n && s.pos[s.slots[j++]] == q;
        same &= j == s.h.n;
        if (!same && mism++ < 3)
            CHECKF(0, "keyformer seed %llu: kept sets differ at position %d", (unsigned long long)seed, p);
    }
    return mism;
}

static void test_keyformer_reference(void) {
    int fails = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        uint64_t q = seed * 91;
        int heavy = 1 + (int)(rng_next(&q) % 12), recent = (int)(rng_next(&q) % 8), sink = (int)(rng_next(&q) % 3);
        int tau0 = 50 + (int)(rng_next(&q) % 100), tau1 = tau0 + (int)(rng_next(&q) % 200);
        fails += kf_run(seed, heavy, recent, sink, tau0, tau1, 1 + (int)(rng_next(&q) % 300), (int)(seed % 4 == 0),
                        (int)(seed % 5));
    }
    CHECKF(fails == 0, "%d Keyformer mismatches against the reference", fails);
}

int main(void) {
    test_batch_equals_loop();
    test_snapkv_reference();
    test_scissorhands_reference();
    test_keyformer_reference();
    return tu_done("policy_ref");
}
