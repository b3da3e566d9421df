/* heavykv serve: slots, admission under the K/V memory limit, and the decode loop (see server.h).
 *
 * Batching: slots whose requests share a KV config (policy, budget and split, K/V type, ...) are the sequences
 * of one multi-sequence context (a group, made with lazy_seqs so a sequence holds K/V only while a slot uses
 * it). One engine step is one hkv_decode_tokens call per group holding the pending token of every generating
 * slot of the group plus the prompt pieces chosen for the step: prefilling slots oldest first, each piece the
 * next prefill_chunk tokens of its prompt, at most prefill_chunk prompt tokens per step. So a running stream
 * waits at most one prompt chunk plus one batched token step between two of its tokens, however long a new
 * prompt is, and the weights are read once per step for all sequences. A request with an odd config gets its
 * own group. Jobs whose client went away are dropped at the start of a step, which frees their slot; a
 * step already running is stopped by the abort callback when it is mostly the cancelled job's prompt piece.
 *
 * Prompt reuse (cache_prompt / conversation_id): a slot remembers the tokens it decoded (prompt plus generated
 * tokens fed back). A new job whose prompt starts with exactly those tokens, and that asks for the same KV
 * config, continues that sequence: only the rest of the prompt is decoded. Under an evicting policy the reused
 * state is the cache as the policy left it (the kept rows, with their accumulated scores), not a fresh
 * prefill of the whole text, so the continuation equals what a single uninterrupted session (`heavykv chat`)
 * would compute, which can differ from re-prefilling the full prompt. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include "server_int.h"

static const char PING_PREFILL[] = ": prefilling\n\n"; /* SSE comment: clients ignore it */

static const double HIST_BOUNDS[N_HIST] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

static void hist_add(double *h, double *sum, uint64_t *n, double v) {
    int i = 0;
    while (i < N_HIST && v > HIST_BOUNDS[i]) i++;
    h[i] += 1;
    *sum += v;
    (*n)++;
}

double hist_bound(int i);
double hist_bound(int i) { return HIST_BOUNDS[i]; }

/* ---------------------------------------------------------------- jobs */

void job_link_locked(hkv_server *s, job *j) {
    j->s = s;
    j->next = s->jobs;
    if (s->jobs) s->jobs->prev = j;
    s->jobs = j;
}

void job_unref_locked(job *j) {
    if (--j->refs > 0) return;
    if (j->s) {
        if (j->prev) j->prev->next = j->next; else j->s->jobs = j->next;
        if (j->next) j->next->prev = j->prev;
    }
    request_free(&j->req);
    buf_free(&j->out);
    free(j);
}

void job_emit(hkv_server *s, job *j, const char *data, size_t n, int done, int status) {
    int resume = 0;
    pthread_mutex_lock(&s->mu);
    if (n && !j->cancelled && !buf_add(&j->out, data, n)) j->cancelled = 1; /* out of memory: give up */
    if (done) { j->done = 1; j->status = status; }
    if (j->suspended) { j->suspended = 0; resume = 1; }
    pthread_mutex_unlock(&s->mu);
    /* the connection stays suspended (so alive) until this call: nothing else resumes it */
    if (resume) MHD_resume_connection(j->conn);
}

static void emit_json(hkv_server *s, job *j, cJSON *o, int done, int status) {
    char *t = json_print(o);
    if (!t) { job_emit(s, j, NULL, 0, 1, 500); return; }
    if (j->req.stream) {
        buf b = {0};
        int ok = buf_add(&b, "data: ", 6) && buf_add(&b, t, strlen(t)) && buf_add(&b, "\n\n", 2);
        if (ok && done && j->req.api != API_LLAMA) ok = buf_add(&b, "data: [DONE]\n\n", 14);
        job_emit(s, j, ok ? b.p : NULL, ok ? b.n : 0, done, status);
        buf_free(&b);
    } else job_emit(s, j, t, strlen(t), done, status);
    free(t);
}

int engine_submit(hkv_server *s, job *j, char *msg, size_t ml) {
    pthread_mutex_lock(&s->mu);
    int st = 0;
    if (s->stopping) { snprintf(msg, ml, "the server is shutting down"); st = 503; }
    else {
        /* room: max_seqs running (or about to be admitted) plus n_queue waiting */
        int busy = 0;
        for (int i = 0; i < s->n_slots; i++) busy += s->slots[i].j != NULL;
        if (s->q_len + busy >= s->max_seqs + s->p.n_queue) {
            snprintf(msg, ml, "the server is busy: %d requests are running and %d waiting; retry later", busy, s->q_len);
            st = 503;
        }
    }
    if (!st) {
        j->queued = 1;
        j->slot = -1;
        j->refs++;
        j->t_submit = now_s();
        s->queue[s->q_len++] = j;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---------------------------------------------------------------- slots and groups */

static int kv_equal(const hkv_kv_config *a, const hkv_kv_config *b) {
#define AMT_EQ(x, y) ((x).set == (y).set && (!(x).set || ((x).value == (y).value && (x).is_ratio == (y).is_ratio)))
    return !strcmp(a->policy, b->policy) && AMT_EQ(a->budget, b->budget) && AMT_EQ(a->heavy, b->heavy) &&
           AMT_EQ(a->recent, b->recent) && AMT_EQ(a->sink, b->sink) && !strcmp(a->options, b->options) &&
           !strcmp(a->budget_layers, b->budget_layers) && a->custom == b->custom && a->custom_user == b->custom_user &&
           a->gqa_mean == b->gqa_mean && a->replace_order == b->replace_order && a->simulate == b->simulate &&
           a->prefill_chunk == b->prefill_chunk && a->type == b->type && a->positions_cache == b->positions_cache &&
           a->allow_long_ctx == b->allow_long_ctx;
#undef AMT_EQ
}

static hkv_context *slot_ctx(hkv_server *s, const slot *sl) { return sl->g >= 0 ? s->groups[sl->g].ctx : NULL; }

/* Every token a sequence decoded went into every (layer, head) once and leaves only by eviction, so its
 * evictions are the positions it decoded minus the rows it keeps, summed over layers and heads. */
static void seq_stats(hkv_context *c, int seq, int n_layer, int n_head_kv, int *occ_min, int *occ_max, uint64_t *evicted) {
    int n_past = hkv_n_past(c, seq);
    *occ_min = -1;
    *occ_max = 0;
    *evicted = 0;
    for (int l = 0; l < n_layer; l++)
        for (int h = 0; h < n_head_kv; h++) {
            int n = -hkv_kv_positions(c, seq, l, h, NULL, 0); /* minus the count, or 0 when empty */
            if (*occ_min < 0 || n < *occ_min) *occ_min = n;
            if (n > *occ_max) *occ_max = n;
            if (n_past > n) *evicted += (uint64_t)(n_past - n);
        }
    if (*occ_min < 0) *occ_min = 0;
}

/* Before a sequence is emptied: its evictions move to the server's total. Lock held. */
static void count_evictions(hkv_server *s, slot *sl) {
    hkv_context *c = slot_ctx(s, sl);
    if (!c) return;
    int a, b;
    uint64_t e;
    seq_stats(c, sl->seq, s->mi.n_layer, s->mi.n_head_kv, &a, &b, &e);
    s->mt.evictions_done += e;
    sl->view.evictions = 0;
}

/* Gives a slot's sequence back (its K/V memory is freed, the bytes return to the pool); a group left without
 * sequences frees its context unless it has the server's default config (kept warm). Lock held. */
static void slot_drop_seq(hkv_server *s, slot *sl) {
    if (sl->g < 0) return;
    group *g = &s->groups[sl->g];
    count_evictions(s, sl);
    if (g->ctx) hkv_seq_rm(g->ctx, sl->seq);
    if (--g->n_used == 0 && g->ctx && !kv_equal(&g->kv, &s->p.kv)) {
        hkv_context_free(g->ctx);
        g->ctx = NULL;
    }
    sl->g = -1;
    s->reserved -= sl->reserved;
    sl->reserved = 0;
    sl->n_cached = 0;
    sl->conv[0] = 0;
    int served = sl->view.n_served;
    memset(&sl->view, 0, sizeof sl->view);
    sl->view.n_served = served;
}

static void slot_refresh_view(hkv_server *s, slot *sl) {
    slot_view *v = &sl->view;
    v->busy = sl->j != NULL;
    v->n_cached = sl->n_cached;
    v->reserved = sl->reserved;
    hkv_context *c = slot_ctx(s, sl);
    if (!c) return;
    v->n_past = hkv_n_past(c, sl->seq);
    seq_stats(c, sl->seq, s->mi.n_layer, s->mi.n_head_kv, &v->occupancy_min, &v->occupancy_max, &v->evictions);
    /* lazy_seqs: a sequence holds budget + prefill chunk rows from its first decode until it is dropped,
     * which is what was reserved for it (kv_bytes of F16 rows; other types are smaller) */
    v->kv_bytes = v->n_past ? sl->reserved : 0;
    v->budget = hkv_context_budget(c);
    snprintf(v->policy, sizeof v->policy, "%s", sl->kv.policy);
}

static slot *pick_slot(hkv_server *s, job *j, int *reuse) {
    const request *r = &j->req;
    slot *best = NULL, *empty = NULL, *lru = NULL;
    *reuse = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->j) continue;
        if (sl->g < 0 || !sl->n_cached) { if (!empty) empty = sl; }
        else if (!lru || sl->last_used < lru->last_used) lru = sl;
        if (r->cache_prompt && sl->g >= 0 && sl->n_cached > 0 && sl->n_cached < r->n_prompt &&
            kv_equal(&sl->kv, &r->kv) && !memcmp(sl->cached, r->prompt, sizeof(int32_t) * (size_t)sl->n_cached)) {
            int conv = r->conv[0] && !strcmp(sl->conv, r->conv);
            if (!best || conv || sl->n_cached > *reuse) { best = sl; *reuse = sl->n_cached; }
        }
    }
    if (best) return best;
    return empty ? empty : lru;
}

/* Makes room for `need` more reserved bytes by dropping idle cached sequences, least recently used first
 * (in group gi only when gi >= 0). Returns 1 when it fits. Lock held. */
static int drop_lru(hkv_server *s, const slot *keep, int gi) {
    slot *lru = NULL;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->j && sl->g >= 0 && sl != keep && (gi < 0 || sl->g == gi) && (!lru || sl->last_used < lru->last_used)) lru = sl;
    }
    if (!lru) return 0;
    slot_drop_seq(s, lru);
    return 1;
}

static int make_room(hkv_server *s, uint64_t need, const slot *keep) {
    if (!s->p.kv_memory) return 1;
    while (s->reserved + need > s->p.kv_memory)
        if (!drop_lru(s, keep, -1)) return 0;
    return 1;
}

/* The group of config kv (made if none: its context is created by the engine at the first step that needs
 * it), or -1. A group has as many sequences as sequences of its config fit in kv_memory. Lock held. */
static int group_of(hkv_server *s, const request *r) {
    int free_gi = -1, idle_gi = -1;
    for (int i = 0; i < MAX_SLOTS; i++) {
        group *g = &s->groups[i];
        if ((g->n_used || g->ctx) && kv_equal(&g->kv, &r->kv)) return i;
        if (!g->n_used && !g->ctx && free_gi < 0) free_gi = i;
        if (!g->n_used && g->ctx && idle_gi < 0) idle_gi = i;
    }
    if (free_gi < 0 && idle_gi >= 0) { /* the kept default context makes way */
        hkv_context_free(s->groups[idle_gi].ctx);
        s->groups[idle_gi].ctx = NULL;
        free_gi = idle_gi;
    }
    if (free_gi < 0) return -1;
    group *g = &s->groups[free_gi];
    g->kv = r->kv;
    uint64_t fit = s->p.kv_memory ? s->p.kv_memory / r->kv_bytes : (uint64_t)s->p.n_parallel;
    g->n_seq = fit < 1 ? 1 : fit > (uint64_t)s->n_slots ? s->n_slots : (int)fit;
    return free_gi;
}

/* A sequence of group gi no slot holds, or -1. Lock held. */
static int free_seq(hkv_server *s, int gi) {
    uint8_t used[MAX_SLOTS] = {0};
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i].g == gi) used[s->slots[i].seq] = 1;
    for (int q = 0; q < s->groups[gi].n_seq; q++)
        if (!used[q]) return q;
    return -1;
}

static void slot_release(hkv_server *s, slot *sl) {
    hkv_sampler_free(sl->smp);
    sl->smp = NULL;
    if (sl->j) { sl->j->slot = -1; job_unref_locked(sl->j); }
    sl->j = NULL;
    sl->piece = 0;
    sl->last_used = now_s();
    slot_refresh_view(s, sl);
}

/* Gives the slot a sequence for job j's config: the one it has when the config matches, else a free one of
 * the config's group (after dropping idle cached sequences for memory or a sequence). 0: wait. Lock held. */
static int slot_bind(hkv_server *s, slot *sl, const job *j) {
    if (sl->g >= 0 && kv_equal(&sl->kv, &j->req.kv)) return 1; /* the slot's own sequence is reused as is */
    slot_drop_seq(s, sl);
    uint64_t need = j->req.kv_bytes;
    if (!make_room(s, need, sl)) return 0; /* wait for a running sequence to finish */
    int gi = group_of(s, &j->req);
    if (gi < 0) return 0;
    int q = free_seq(s, gi);
    while (q < 0 && drop_lru(s, sl, gi)) q = free_seq(s, gi);
    if (q < 0) return 0;
    sl->g = gi;
    sl->seq = q;
    s->groups[gi].n_used++;
    sl->kv = j->req.kv;
    sl->reserved = need;
    s->reserved += need;
    return 1;
}

/* Moves queued jobs into slots while a slot and memory are free, oldest first. Lock held. */
static void admit(hkv_server *s) {
    while (s->q_len > 0 && !s->stopping) {
        job *j = s->queue[0];
        int busy = 0;
        for (int i = 0; i < s->n_slots; i++) busy += s->slots[i].j != NULL;
        if (!s->p.kv_memory && busy >= s->p.n_parallel) return;
        int reuse;
        slot *sl = pick_slot(s, j, &reuse);
        if (!sl || !slot_bind(s, sl, j)) return;
        memmove(s->queue, s->queue + 1, sizeof(job *) * (size_t)--s->q_len);
        j->queued = 0;
        j->slot = (int)(sl - s->slots);
        sl->j = j; /* the engine's reference moves to the slot */
        j->n_prompt_reused = reuse;
        sl->pos = reuse;
        if (!reuse) sl->n_cached = 0;
        sl->prefilled = 0;
        sl->piece = 0;
        sl->n_gen = 0;
        sl->text.n = 0;
        if (sl->text.p) sl->text.p[0] = 0;
        sl->streamed = 0;
        memset(&sl->us, 0, sizeof sl->us);
        sl->us.strip_space = s->mi.spm && j->req.prompt_empty;
        sl->order = ++s->admit_order;
        snprintf(sl->conv, sizeof sl->conv, "%s", j->req.conv);
        sl->view.n_served++;
        sl->view.busy = 1;
        s->mt.prompt_reused += (uint64_t)reuse;
    }
}

/* ---------------------------------------------------------------- generation */

/* Longest tail of the text that could still grow into a stop string: held back from the stream. */
static size_t held_back(const slot *sl) {
    const request *r = &sl->j->req;
    size_t best = 0;
    for (int i = 0; i < r->n_stop; i++) {
        size_t len = strlen(r->stop[i]);
        for (size_t k = len - 1 < sl->text.n ? len - 1 : sl->text.n; k > best; k--)
            if (!memcmp(sl->text.p + sl->text.n - k, r->stop[i], k)) { best = k; break; }
    }
    return best;
}

static void stream_delta(hkv_server *s, slot *sl, int final) {
    job *j = sl->j;
    if (!j->req.stream) return;
    size_t end = sl->text.n - (final ? 0 : held_back(sl));
    while (end > sl->streamed && end < sl->text.n && (sl->text.p[end] & 0xC0) == 0x80) end--; /* whole chars */
    if (end <= sl->streamed) return;
    char *delta = strndup(sl->text.p + sl->streamed, end - sl->streamed);
    if (!delta) return;
    emit_json(s, j, result_json(s, j, sl, delta, -1, NULL, 1, sl->streamed == 0), 0, 200);
    free(delta);
    sl->streamed = end;
}

/* The job is done: the slot is freed first (under the lock, so that a client who sends its next request the
 * moment it has this answer finds the slot free), then the last output goes out. The context and its cached
 * tokens stay with the slot. */
static void slot_finish(hkv_server *s, slot *sl, finish_kind fin, const char *word) {
    job *j = sl->j;
    request *r = &j->req;
    double t2 = now_s(), tp = sl->t1 - sl->t0, tg = t2 - sl->t1;
    if (!j->t_last) j->t_last = t2;
    snprintf(j->note, sizeof j->note, " slot %d: prompt %d tok (%d reused, %.1f tok/s), %d generated (%.1f tok/s), %s",
             j->slot, r->n_prompt, j->n_prompt_reused, tp > 0 ? (r->n_prompt - j->n_prompt_reused) / tp : 0.0, sl->n_gen,
             tg > 0 ? sl->n_gen / tg : 0.0, fin == FIN_EOS ? "eos" : fin == FIN_LENGTH ? "length" : fin == FIN_ABORT ? "abort" : "stop string");
    if (r->stream) stream_delta(s, sl, 1);
    cJSON *last;
    int status = 200;
    if (r->stream) last = result_json(s, j, sl, "", fin, word, 1, sl->streamed == 0);
    else if (fin == FIN_ABORT) { last = error_json(503, "the server is shutting down", NULL); status = 503; }
    else last = result_json(s, j, sl, sl->text.p ? sl->text.p : "", fin, word, 0, 0);
    pthread_mutex_lock(&s->mu);
    if (fin != FIN_ABORT || sl->prefilled) s->mt.prompt_tokens += (uint64_t)(sl->pos - j->n_prompt_reused);
    j->refs++; /* kept until the output is out */
    slot_release(s, sl);
    pthread_mutex_unlock(&s->mu);
    emit_json(s, j, last, 1, status);
    pthread_mutex_lock(&s->mu);
    job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
}

static void slot_fail(hkv_server *s, slot *sl, const char *msg) {
    job *j = sl->j;
    snprintf(j->note, sizeof j->note, " slot %d: %s", j->slot, msg);
    cJSON *e = error_json(500, msg, NULL);
    pthread_mutex_lock(&s->mu);
    /* the sequence may be half-written: forget it */
    if (slot_ctx(s, sl)) { count_evictions(s, sl); hkv_seq_reset(slot_ctx(s, sl), sl->seq); }
    sl->n_cached = 0;
    j->refs++;
    slot_release(s, sl);
    pthread_mutex_unlock(&s->mu);
    emit_json(s, j, e, 1, j->req.stream ? 200 : 500);
    pthread_mutex_lock(&s->mu);
    job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
}

/* Earliest stop string in the text, looking only where the last piece could have completed one. */
static int find_stop(slot *sl, size_t old_len, const char **word) {
    const request *r = &sl->j->req;
    size_t best = SIZE_MAX;
    for (int i = 0; i < r->n_stop; i++) {
        size_t len = strlen(r->stop[i]), from = old_len >= len ? old_len - len + 1 : 0;
        if (from >= sl->text.n) continue;
        const char *hit = memmem(sl->text.p + from, sl->text.n - from, r->stop[i], len);
        if (hit && (size_t)(hit - sl->text.p) < best) { best = (size_t)(hit - sl->text.p); *word = r->stop[i]; }
    }
    if (best == SIZE_MAX) return 0;
    sl->text.n = best;
    sl->text.p[best] = 0;
    return 1;
}

static void note_token(hkv_server *s, job *j) {
    double t = now_s();
    pthread_mutex_lock(&s->mu);
    metrics *mt = &s->mt;
    if (!j->t_first) { j->t_first = t; hist_add(mt->ttft, &mt->ttft_sum, &mt->ttft_n, t - j->t_submit); }
    else hist_add(mt->itl, &mt->itl_sum, &mt->itl_n, t - j->t_last);
    j->t_last = t;
    mt->gen_tokens++;
    mt->tps_tokens++;
    if (t - mt->tps_t >= 1.0) {
        double rate = mt->tps_tokens / (t - mt->tps_t);
        mt->tps = mt->tps_t > 0 && t - mt->tps_t < 10 ? 0.5 * mt->tps + 0.5 * rate : rate;
        mt->tps_t = t;
        mt->tps_tokens = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Samples the next token from the slot's logits; handles the end conditions. Like `heavykv run`, the last
 * token is never decoded. */
static void slot_advance(hkv_server *s, slot *sl) {
    if (sl->n_gen >= sl->n_max) { slot_finish(s, sl, FIN_LENGTH, NULL); return; }
    const float *lg = hkv_get_logits(slot_ctx(s, sl), sl->seq, -1);
    if (!lg) { slot_fail(s, sl, "no logits after decoding"); return; }
    int32_t tok = hkv_sampler_sample(sl->smp, lg);
    if (tok < 0 || tok >= s->mi.n_vocab) { slot_fail(s, sl, "the sampler returned no valid token"); return; }
    if (!sl->t1) sl->t1 = now_s();
    if (hkv_token_is_eog(s->m, tok)) { slot_finish(s, sl, FIN_EOS, NULL); return; }
    sl->n_gen++;
    note_token(s, sl->j);
    char piece[1024];
    int k = hkv_utf8_stream_push(&sl->us, s->m, tok, piece, sizeof piece);
    size_t old = sl->text.n;
    if (k > 0 && !buf_add(&sl->text, piece, (size_t)k)) { slot_fail(s, sl, "out of memory"); return; }
    const char *word = NULL;
    if (find_stop(sl, old, &word)) { slot_finish(s, sl, FIN_WORD, word); return; }
    stream_delta(s, sl, 0);
    if (sl->n_gen >= sl->n_max) { slot_finish(s, sl, FIN_LENGTH, NULL); return; }
    sl->next = tok;
}

/* Abort callback of every group context, called before each layer of a decode call (engine thread). A call
 * is stopped when the server stops, or when a job with a prompt piece in the call was cancelled and the call
 * holds nothing else or is in its first half of layers (past that, finishing is cheaper than redoing the
 * others' tokens). Stopping is always safe: the library puts every sequence of the call back exactly, so the
 * others decode the same tokens again at the next step. It also pings prefilling streams about once a second:
 * writing is how a client that went away during a long prompt piece is noticed. */
static int abort_cb(void *user) {
    hkv_server *s = user;
    int layer, stop, cancelled = 0, np = 0;
    double t = now_s();
    job *ping[MAX_SLOTS];
    pthread_mutex_lock(&s->mu);
    layer = s->cb_layer++;
    stop = s->stopping;
    for (int i = 0; i < s->b_nslot && s->b_in_call; i++) {
        slot *sl = s->b_slot[i];
        if (!sl->piece || !sl->j) continue;
        if (sl->j->cancelled) cancelled = 1;
        else if (sl->j->req.stream && t - sl->t0 >= 1.0 && t - s->cb_ping >= 1.0) { ping[np++] = sl->j; sl->j->refs++; }
    }
    pthread_mutex_unlock(&s->mu);
    if (np) {
        s->cb_ping = t;
        for (int i = 0; i < np; i++) job_emit(s, ping[i], PING_PREFILL, strlen(PING_PREFILL), 0, 0);
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < np; i++) job_unref_locked(ping[i]);
        pthread_mutex_unlock(&s->mu);
    }
    return stop || (cancelled && (!s->b_decode || 2 * layer < s->mi.n_layer));
}

/* A group's context, made at its first use. lazy_seqs: its n_seq sequences hold K/V only while in use, so
 * the group costs what its running and cached sequences reserve (plus scratch and one logits row each). */
static hkv_context *group_ctx(hkv_server *s, group *g, char *err, size_t errlen) {
    if (g->ctx) return g->ctx;
    hkv_context_params cp = hkv_context_default_params();
    cp.n_ctx = s->n_ctx;
    cp.n_seq = g->n_seq;
    cp.n_threads = s->p.n_threads;
    cp.ref_len = s->n_ctx;
    cp.kv = g->kv;
    cp.lazy_seqs = 1;
    if (hkv_context_new(s->m, &cp, &g->ctx, err, errlen)) return NULL;
    hkv_set_abort_callback(g->ctx, abort_cb, s);
    return g->ctx;
}

/* Sets up a newly admitted slot: its group's context (made now if needed), sampler. 0 on failure (job
 * answered). */
static int slot_start(hkv_server *s, slot *sl) {
    job *j = sl->j;
    request *r = &j->req;
    char err[256];
    hkv_context *c = group_ctx(s, &s->groups[sl->g], err, sizeof err);
    if (!c) { slot_fail(s, sl, err); return 0; }
    if (!sl->cached && !(sl->cached = malloc(sizeof(int32_t) * (size_t)s->n_ctx))) {
        slot_fail(s, sl, "out of memory");
        return 0;
    }
    if (!sl->pos) {
        pthread_mutex_lock(&s->mu);
        count_evictions(s, sl);
        pthread_mutex_unlock(&s->mu);
        hkv_seq_reset(c, sl->seq);
        sl->n_cached = 0;
    }
    if (hkv_sampler_new(&r->sp, s->mi.n_vocab, &sl->smp, err, sizeof err)) { slot_fail(s, sl, err); return 0; }
    for (int i = 0; i < r->n_prompt; i++) hkv_sampler_accept(sl->smp, r->prompt[i]);
    int room = s->n_ctx - r->n_prompt;
    sl->n_max = r->n_max < 0 || r->n_max > room ? room : r->n_max;
    sl->t0 = now_s();
    sl->t1 = 0;
    return 1;
}

/* After the slot's k tokens at t were decoded: remember them, advance the prompt or sample the next token. */
static void slot_after(hkv_server *s, slot *sl, const int32_t *t, int k) {
    memcpy(sl->cached + sl->n_cached, t, sizeof(int32_t) * (size_t)k);
    sl->n_cached += k;
    if (sl->prefilled) { slot_advance(s, sl); return; }
    sl->pos += k;
    sl->piece = 0;
    if (sl->pos == sl->j->req.n_prompt) {
        sl->prefilled = 1;
        slot_advance(s, sl);
    }
}

static void note_batch(hkv_server *s, int n_seqs, int n_tokens) {
    pthread_mutex_lock(&s->mu);
    metrics *mt = &s->mt;
    mt->batch_calls++;
    mt->batch_seqs += (uint64_t)n_seqs;
    mt->batch_tokens += (uint64_t)n_tokens;
    if (n_seqs > mt->batch_seqs_max) mt->batch_seqs_max = n_seqs;
    int b = 0;
    while (b < N_BATCH_HIST && n_seqs > (1 << b)) b++;
    mt->batch_hist[b] += 1;
    pthread_mutex_unlock(&s->mu);
}

/* One call for group gi: the pending token of each generating slot and the pieces chosen for this step. */
static void group_step(hkv_server *s, int gi) {
    group *g = &s->groups[gi];
    int n = 0, nd = 0;
    s->b_nslot = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->g != gi || !sl->j) continue;
        if (sl->prefilled) {
            sl->at = n;
            s->b_tok[n] = sl->next;
            s->b_seq[n] = sl->seq;
            s->b_want[n++] = 1;
            nd++;
        } else if (sl->piece) {
            const request *r = &sl->j->req;
            sl->at = n;
            for (int k = 0; k < sl->piece; k++) {
                s->b_tok[n] = r->prompt[sl->pos + k];
                s->b_seq[n] = sl->seq;
                s->b_want[n++] = 0;
            }
            s->b_want[n - 1] = sl->pos + sl->piece == r->n_prompt; /* logits of a prompt's last token only */
        } else continue;
        s->b_slot[s->b_nslot++] = sl;
    }
    int ns = s->b_nslot;
    if (!n) { s->b_nslot = 0; return; }
    pthread_mutex_lock(&s->mu); /* published for the abort callback (which runs with the lock) */
    s->b_decode = nd > 0;
    s->cb_layer = 0;
    s->b_in_call = 1;
    pthread_mutex_unlock(&s->mu);
    hkv_batch b = {n, s->b_tok, s->b_seq, s->b_want};
    hkv_status st = hkv_decode_tokens(g->ctx, &b);
    pthread_mutex_lock(&s->mu);
    s->b_in_call = 0; /* the abort callback looks at the call in flight only */
    pthread_mutex_unlock(&s->mu);
    if (st == HKV_ERR_ABORTED) { /* nothing changed; cancelled jobs are dropped before the next step */
        pthread_mutex_lock(&s->mu);
        s->mt.aborted_steps++;
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < ns; i++) s->b_slot[i]->piece = 0;
        return;
    }
    if (!st) note_batch(s, ns, n);
    for (int i = 0; i < ns; i++) {
        slot *sl = s->b_slot[i];
        int k = sl->prefilled ? 1 : sl->piece;
        if (st) { /* the call failed and changed nothing: each sequence alone, so a failure stays its own */
            hkv_batch one = {k, s->b_tok + sl->at, s->b_seq + sl->at, s->b_want + sl->at};
            if (hkv_decode_tokens(g->ctx, &one)) { sl->piece = 0; slot_fail(s, sl, hkv_last_error(g->ctx)); continue; }
        }
        slot_after(s, sl, s->b_tok + sl->at, k);
    }
}

/* One engine step. Prompt pieces first: prefilling slots oldest first, each piece the next prefill_chunk
 * tokens of its prompt (the boundaries `heavykv run --prefill-chunk` uses, which decide evictions), at most
 * prefill_chunk prompt tokens per step in all; then one hkv_decode_tokens call per group with those pieces and
 * the pending token of every generating slot of the group. */
static void engine_step(hkv_server *s) {
    slot *pf[MAX_SLOTS];
    int npf = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->j || sl->prefilled) continue;
        int k = npf++;
        while (k > 0 && pf[k - 1]->order > sl->order) { pf[k] = pf[k - 1]; k--; }
        pf[k] = sl;
    }
    int left = s->p.prefill_chunk;
    for (int i = 0; i < npf && left > 0; i++) {
        slot *sl = pf[i];
        int n = sl->j->req.n_prompt - sl->pos;
        if (n > s->p.prefill_chunk) n = s->p.prefill_chunk;
        if (n > left) continue;
        if (!sl->smp && !slot_start(s, sl)) continue;
        sl->piece = n;
        left -= n;
    }
    for (int gi = 0; gi < MAX_SLOTS; gi++)
        if (s->groups[gi].ctx && s->groups[gi].n_used) group_step(s, gi);
}

/* Drops jobs whose client went away, and with stopping, ends every job. Lock held. */
static void reap(hkv_server *s, int *n_active) {
    *n_active = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->j) continue;
        if (sl->j->cancelled) {
            snprintf(sl->j->note, sizeof sl->j->note, " slot %d: cancelled after %d tokens (client went away)", i, sl->n_gen);
            sl->j->done = 1;
            slot_release(s, sl);
            continue;
        }
        (*n_active)++;
    }
    for (int i = 0; i < s->q_len; i++)
        if (s->queue[i]->cancelled) {
            job *j = s->queue[i];
            memmove(s->queue + i, s->queue + i + 1, sizeof(job *) * (size_t)(s->q_len - i - 1));
            s->q_len--;
            i--;
            j->queued = 0;
            j->done = 1;
            job_unref_locked(j);
        }
}

/* Stop: queued jobs get 503 / a final "abort" event, running ones finish with "abort". */
static void abort_all(hkv_server *s) {
    pthread_mutex_lock(&s->mu);
    while (s->q_len > 0) {
        job *j = s->queue[--s->q_len];
        j->queued = 0;
        snprintf(j->note, sizeof j->note, ": the server stopped before a slot was free");
        pthread_mutex_unlock(&s->mu);
        if (j->req.stream) {
            slot none;
            memset(&none, 0, sizeof none);
            emit_json(s, j, result_json(s, j, &none, "", FIN_ABORT, NULL, 1, 1), 1, 200);
        } else emit_json(s, j, error_json(503, "the server is shutting down", NULL), 1, 503);
        pthread_mutex_lock(&s->mu);
        job_unref_locked(j);
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i].j) {
            slot *sl = &s->slots[i];
            if (!sl->smp) sl->t0 = sl->t1 = now_s(); /* admitted, never started */
            slot_finish(s, sl, FIN_ABORT, NULL);
        }
}

/* Queued and prefilling streams get an SSE comment now and then: writing is how a client that went away is
 * noticed (a suspended connection is not watched otherwise). */
static void ping_queued(hkv_server *s, double *last) {
    double t = now_s();
    if (t - *last < 1.0) return;
    *last = t;
    job *list[64 + MAX_SLOTS];
    int n = 0, nq;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->q_len && n < 64; i++)
        if (s->queue[i]->req.stream) { list[n++] = s->queue[i]; s->queue[i]->refs++; }
    nq = n;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->j && !sl->prefilled && sl->smp && sl->j->req.stream && t - sl->t0 >= 1.0) { list[n++] = sl->j; sl->j->refs++; }
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++)
        if (i < nq) job_emit(s, list[i], ": waiting for a free slot\n\n", 27, 0, 0);
        else job_emit(s, list[i], PING_PREFILL, strlen(PING_PREFILL), 0, 0);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++) job_unref_locked(list[i]);
    pthread_mutex_unlock(&s->mu);
}

void *engine_main(void *arg) {
    hkv_server *s = arg;
    double last_ping = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int active;
        reap(s, &active);
        if (s->stopping) break;
        admit(s);
        reap(s, &active);
        for (int i = 0; i < s->n_slots; i++) slot_refresh_view(s, &s->slots[i]);
        if (!active || s->paused) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            if (!s->q_len || s->paused) pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            else {
                pthread_mutex_unlock(&s->mu);
                ping_queued(s, &last_ping);
                pthread_mutex_lock(&s->mu);
                if (!s->stopping) pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            }
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        engine_step(s);
        ping_queued(s, &last_ping);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    abort_all(s);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_slots; i++) slot_refresh_view(s, &s->slots[i]);
    s->engine_exited = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

uint64_t engine_evictions_locked(hkv_server *s) {
    uint64_t e = s->mt.evictions_done;
    for (int i = 0; i < s->n_slots; i++) e += s->slots[i].view.evictions;
    return e;
}
