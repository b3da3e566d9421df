/* Oracle test of the eviction policies: a hand-driven decode loop feeds attention probabilities through
 * observe() and evicts while over budget; every victim is compared with a plain reference written here that
 * keeps its scores per POSITION (not per slot), so slot bookkeeping bugs in a policy show up as mismatches. */
#include <stdint.h>
#include <string.h>
#include "policy.h"
#include "testutil.h"

#define CAP 12          /* slots per head in the simulation */
#define MAXPOS 256      /* positions simulated */

enum kind { K_WINDOW, K_SINK, K_H2O, K_TOVA };

static uint64_t rng_next(uint64_t *s) { /* splitmix64: deterministic test data */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The reference: per-position scores and a straightforward argmin. */
typedef struct ref_t {
    float score[MAXPOS], count[MAXPOS], last[MAXPOS];
    int alive[MAXPOS];
    int ties;                  /* victim choices where more than one candidate had the minimum */
} ref_t;

static int ref_victim(enum kind k, const hkv_policy_cfg *c, ref_t *r, int newest) {
    int best = -1, nmin = 0;
    float best_v = 0;
    for (int p = 0; p <= newest; p++) {
        if (!r->alive[p]) continue;
        int sink = p < c->b.sink, recent = p > newest - c->b.recent;
        if (k == K_WINDOW) return p;
        if (sink) continue;
        if (k == K_SINK) return p;
        if (k == K_H2O && recent) continue;
        float v = k == K_TOVA ? r->last[p]
                : c->opt[0] ? (r->count[p] > 0 ? r->score[p] / r->count[p] : 0.0f) : r->score[p];
        if (best < 0 || v < best_v) { best = p; best_v = v; nmin = 1; }
        else if (v == best_v) nmin++;
    }
    if (nmin > 1) r->ties++;
    return best;
}

/* The cache side of the simulation: slots handed out in shuffled order, live list kept in position order. */
typedef struct sim_t {
    int32_t slots[CAP], pos[CAP];
    float state[CAP * 4];
    int used[CAP];
    hkv_head_view h;
} sim_t;

static int32_t sim_insert(sim_t *s, const hkv_policy_ops *ops, const hkv_policy_cfg *c, int32_t p, uint64_t *rng) {
    int nfree = CAP - s->h.n, pick = (int)(rng_next(rng) % (uint64_t)nfree);
    int32_t slot = -1;
    for (int i = 0; i < CAP; i++)
        if (!s->used[i] && pick-- == 0) { slot = i; break; }
    s->used[slot] = 1;
    s->pos[slot] = p;
    s->slots[s->h.n++] = slot;
    s->h.newest = p;
    for (int f = 0; f < ops->state_floats; f++) s->state[slot * ops->state_floats + f] = 12345.0f; /* stale */
    if (ops->on_insert) ops->on_insert(c, &s->h, slot);
    else for (int f = 0; f < ops->state_floats; f++) s->state[slot * ops->state_floats + f] = 0.0f; /* as the cache */
    return slot;
}

static void sim_remove(sim_t *s, int j) {
    s->used[s->slots[j]] = 0;
    memmove(s->slots + j, s->slots + j + 1, (size_t)(s->h.n - j - 1) * sizeof s->slots[0]);
    s->h.n--;
}

/* Probabilities over the n_visible first live tokens, from small integer weights so that exact ties occur.
 * Entries past n_visible get garbage: a policy must not read them. tie_mode: every query attends only itself. */
static void make_probs(float *probs, int n, int n_visible, uint64_t *rng, int tie_mode) {
    float sum = 0;
    for (int j = 0; j < n_visible; j++) {
        probs[j] = tie_mode ? (j == n_visible - 1) : (float)(rng_next(rng) % 4);
        sum += probs[j];
    }
    if (sum == 0) { probs[n_visible - 1] = 1; sum = 1; }
    for (int j = 0; j < n_visible; j++) probs[j] /= sum;
    for (int j = n_visible; j < n; j++) probs[j] = 7.0f;
}

/* Runs `steps` decode steps (some of them 3-token chunks) and checks every eviction. Returns #evictions. */
static int run_sim(enum kind k, const hkv_policy_ops *ops, hkv_policy_cfg c, uint64_t seed, int tie_mode,
                   ref_t *r) {
    sim_t s;
    memset(&s, 0, sizeof s);
    memset(r, 0, sizeof *r);
    s.h.slots = s.slots; s.h.pos = s.pos; s.h.state = s.state; s.h.newest = -1;
    uint64_t rng = seed;
    int p = 0, evictions = 0, mismatches = 0;
    while (p < 120) {
        int chunk = (rng_next(&rng) % 5 == 0) ? 3 : 1;
        int first_j = s.h.n;
        for (int i = 0; i < chunk; i++) { sim_insert(&s, ops, &c, p + i, &rng); r->alive[p + i] = 1; }
        for (int i = 0; i < chunk; i++) {          /* query p+i sees the tokens up to itself */
            int nv = first_j + i + 1;
            float probs[CAP];
            make_probs(probs, s.h.n, nv, &rng, tie_mode);
            if (ops->needs_probs) ops->observe(&c, &s.h, probs, nv, p + i);
            for (int j = 0; j < nv; j++) {
                int q = s.pos[s.slots[j]];
                r->score[q] += probs[j]; r->count[q] += 1; r->last[q] = probs[j];
            }
            /* mid-chunk: the ranking must already ignore the tokens this query did not see */
            if (s.h.n > c.b.total && i + 1 < chunk) {
                int j = ops->victim(&c, &s.h), want = ref_victim(k, &c, r, s.h.newest);
                if ((j < 0 || s.pos[s.slots[j]] != want) && mismatches++ < 5)
                    CHECKF(0, "%s mid-chunk at %d: victim index %d, reference position %d", ops->name, p + i, j, want);
            }
        }
        p += chunk;
        while (s.h.n > c.b.total) {
            int j = ops->victim(&c, &s.h);
            int want = ref_victim(k, &c, r, s.h.newest);
            CHECKF(j >= 0 && j < s.h.n, "%s: victim index %d of %d", ops->name, j, s.h.n);
            if (j < 0 || j >= s.h.n) return evictions;
            int got = s.pos[s.slots[j]];
            if (got != want && mismatches++ < 5)
                CHECKF(got == want, "%s step %d: evicted position %d, reference %d", ops->name, p, got, want);
            r->alive[got] = 0;
            sim_remove(&s, j);
            evictions++;
        }
    }
    CHECKF(mismatches == 0, "%s: %d evictions differ from the reference", ops->name, mismatches);
    return evictions;
}

static hkv_policy_cfg cfg_of(int heavy, int recent, int sink, int normalized) {
    hkv_policy_cfg c = { .b = { heavy + recent + sink, heavy, recent, sink } };
    c.opt[0] = normalized;        /* h2o's option 0: score=sum|normalized */
    return c;
}

static void test_oracle(void) {
    ref_t r;
    int ties_total = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        CHECK(run_sim(K_WINDOW, &hkv_policy_window, cfg_of(0, 8, 0, 0), seed, 0, &r) > 100);
        CHECK(run_sim(K_SINK, &hkv_policy_sink, cfg_of(0, 5, 3, 0), seed, 0, &r) > 100);
        CHECK(run_sim(K_SINK, &hkv_policy_sink, cfg_of(0, 8, 0, 0), seed, 0, &r) > 100);
        for (int norm = 0; norm <= 1; norm++) {
            CHECK(run_sim(K_H2O, &hkv_policy_h2o, cfg_of(4, 4, 0, norm), seed, 0, &r) > 100);
            ties_total += r.ties;
            CHECK(run_sim(K_H2O, &hkv_policy_h2o, cfg_of(3, 3, 2, norm), seed, 0, &r) > 100);
            ties_total += r.ties;
            CHECK(run_sim(K_H2O, &hkv_policy_h2o, cfg_of(8, 0, 0, norm), seed, 0, &r) > 100);
            ties_total += r.ties;
        }
        CHECK(run_sim(K_TOVA, &hkv_policy_tova, cfg_of(8, 0, 0, 0), seed, 0, &r) > 100);
        ties_total += r.ties;
        CHECK(run_sim(K_TOVA, &hkv_policy_tova, cfg_of(6, 0, 2, 0), seed, 0, &r) > 100);
        ties_total += r.ties;
    }
    CHECKF(ties_total > 100, "the random runs exercised only %d exact ties", ties_total);
}

/* Every query attends only to itself: all scores tie, so each victim must be the oldest candidate — with
 * shuffled slots, a policy that broke ties by slot number would pick a different token. */
static void test_ties_pick_older(void) {
    ref_t r;
    for (uint64_t seed = 1; seed <= 5; seed++) {
        CHECK(run_sim(K_H2O, &hkv_policy_h2o, cfg_of(4, 3, 0, 0), seed, 1, &r) > 100);
        CHECK(r.ties > 100);
        CHECK(run_sim(K_H2O, &hkv_policy_h2o, cfg_of(4, 3, 1, 1), seed, 1, &r) > 100);
        CHECK(run_sim(K_TOVA, &hkv_policy_tova, cfg_of(8, 0, 0, 0), seed, 1, &r) > 100);
        CHECK(r.ties > 100);
    }
    /* a direct case: slots listed by position are 5, 2, 9; scores 0.5, 0.5, 0.9; recent 0 -> index 0 */
    int32_t slots[3] = { 5, 2, 9 }, pos[CAP] = { 0 };
    float st[CAP * 2] = { 0 };
    pos[5] = 10; pos[2] = 11; pos[9] = 12;
    st[5 * 2] = 0.5f; st[2 * 2] = 0.5f; st[9 * 2] = 0.9f;
    st[5 * 2 + 1] = st[2 * 2 + 1] = st[9 * 2 + 1] = 1;
    hkv_head_view h = { slots, pos, 3, 12, st };
    hkv_policy_cfg c = cfg_of(2, 0, 0, 0);
    CHECK(hkv_policy_h2o.victim(&c, &h) == 0);
    c.opt[0] = 1;
    st[5 * 2 + 1] = 2;     /* normalized: 0.25 beats 0.5 */
    CHECK(hkv_policy_h2o.victim(&c, &h) == 0);
    st[5 * 2] = 2.0f;      /* now 1.0 vs 0.5 vs 0.9 -> index 1 */
    CHECK(hkv_policy_h2o.victim(&c, &h) == 1);
    c.opt[0] = 0;
    CHECK(hkv_policy_h2o.victim(&c, &h) == 1);
    c.b.recent = 2;        /* positions 11 and 12 are recent: only index 0 is a candidate */
    CHECK(hkv_policy_h2o.victim(&c, &h) == 0);
}

/* -1 only when every live token is protected; full never evicts; the registry finds all five. */
static void test_protection_and_registry(void) {
    int32_t slots[3] = { 3, 1, 0 }, pos[CAP] = { 0 };
    float st[CAP * 2] = { 0 };
    pos[3] = 0; pos[1] = 1; pos[0] = 2;
    hkv_head_view h = { slots, pos, 3, 2, st };
    hkv_policy_cfg c = cfg_of(0, 3, 0, 0);
    CHECK(hkv_policy_h2o.victim(&c, &h) == -1);       /* all three are recent */
    c = cfg_of(0, 1, 3, 0);
    CHECK(hkv_policy_sink.victim(&c, &h) == -1);      /* all three are sinks */
    CHECK(hkv_policy_tova.victim(&c, &h) == -1);
    c = cfg_of(0, 1, 2, 0);
    CHECK(hkv_policy_sink.victim(&c, &h) == 2);
    CHECK(hkv_policy_tova.victim(&c, &h) == 2);
    CHECK(hkv_policy_h2o.victim(&c, &h) == -1);       /* pos 2 is recent, 0 and 1 sinks */
    CHECK(hkv_policy_full.victim == NULL && hkv_policy_full.never_evicts);
    CHECK(hkv_policy_window.victim(&c, &h) == 0);
    h.n = 0;
    CHECK(hkv_policy_window.victim(&c, &h) == -1);

    const char *names[] = { "full", "window", "sink", "h2o", "tova" };
    const hkv_policy_ops *ops[] = { &hkv_policy_full, &hkv_policy_window, &hkv_policy_sink, &hkv_policy_h2o,
                                    &hkv_policy_tova };
    for (int i = 0; i < 5; i++) {
        CHECK(hkv_policy_find(names[i]) == ops[i]);
        CHECK(strcmp(ops[i]->name, names[i]) == 0);
        CHECK(ops[i]->state_floats >= 0 && ops[i]->state_floats <= 4);
        CHECK(ops[i]->victim || ops[i]->never_evicts);
        CHECK(!ops[i]->needs_probs || ops[i]->observe);
    }
    CHECK(hkv_policy_h2o.needs_probs && hkv_policy_tova.needs_probs);
    CHECK(!hkv_policy_full.needs_probs && !hkv_policy_window.needs_probs && !hkv_policy_sink.needs_probs);
    CHECK(hkv_policy_find("H2O") == NULL);
    CHECK(hkv_policy_find("") == NULL);
    CHECK(hkv_policy_find(NULL) == NULL);
}

int main(void) {
    test_oracle();
    test_ties_pick_older();
    test_protection_and_registry();
    return tu_done("policy");
}
