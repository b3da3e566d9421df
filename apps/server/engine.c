/* heavykv serve: slots, admission under the K/V memory limit, and the decode loop (see server.h).
 *
 * One engine step: (1) the oldest slot still prefilling decodes one chunk of its prompt (prefill_chunk
 * tokens); (2) every generating slot decodes its pending token and samples the next. So a running stream waits
 * at most one prompt chunk plus one token of every other slot between two of its tokens, however long a new
 * prompt is. Jobs whose client went away are dropped at the start of a step, which frees their slot.
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

/* ---------------------------------------------------------------- slots */

static int kv_equal(const hkv_kv_config *a, const hkv_kv_config *b) {
#define AMT_EQ(x, y) ((x).set == (y).set && (!(x).set || ((x).value == (y).value && (x).is_ratio == (y).is_ratio)))
    return !strcmp(a->policy, b->policy) && AMT_EQ(a->budget, b->budget) && AMT_EQ(a->heavy, b->heavy) &&
           AMT_EQ(a->recent, b->recent) && AMT_EQ(a->sink, b->sink) && !strcmp(a->options, b->options) &&
           !strcmp(a->budget_layers, b->budget_layers) && a->custom == b->custom && a->custom_user == b->custom_user &&
           a->gqa_mean == b->gqa_mean && a->replace_order == b->replace_order && a->simulate == b->simulate &&
           a->prefill_chunk == b->prefill_chunk && a->type == b->type;
#undef AMT_EQ
}

/* Frees a slot's context (its memory goes back to the pool). Lock held. */
static void slot_drop_ctx(hkv_server *s, slot *sl) {
    if (!sl->ctx) return;
    hkv_kv_stats st;
    hkv_get_kv_stats(sl->ctx, &st);
    s->mt.evictions_done += st.evictions;
    hkv_context_free(sl->ctx);
    sl->ctx = NULL;
    s->reserved -= sl->reserved;
    sl->reserved = 0;
    sl->n_cached = 0;
    sl->conv[0] = 0;
    memset(&sl->view, 0, sizeof sl->view);
}

static void slot_refresh_view(slot *sl) {
    slot_view *v = &sl->view;
    v->busy = sl->j != NULL;
    v->n_cached = sl->n_cached;
    v->reserved = sl->reserved;
    if (!sl->ctx) return;
    hkv_kv_stats st;
    hkv_get_kv_stats(sl->ctx, &st);
    v->n_past = hkv_n_past(sl->ctx, 0);
    v->occupancy_min = st.occupancy_min;
    v->occupancy_max = st.occupancy_max;
    v->kv_bytes = st.kv_bytes;
    v->evictions = st.evictions;
    v->budget = st.budget;
    snprintf(v->policy, sizeof v->policy, "%s", sl->kv.policy);
}

/* Which slot should run job j: one whose cache continues its prompt, else an idle one with no cache, else the
 * least recently used idle one. Lock held. */
static slot *pick_slot(hkv_server *s, job *j, int *reuse) {
    const request *r = &j->req;
    slot *best = NULL, *empty = NULL, *lru = NULL;
    *reuse = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->j) continue;
        if (!sl->ctx || !sl->n_cached) { if (!empty) empty = sl; }
        else if (!lru || sl->last_used < lru->last_used) lru = sl;
        if (r->cache_prompt && sl->ctx && sl->n_cached > 0 && sl->n_cached < r->n_prompt &&
            kv_equal(&sl->kv, &r->kv) && !memcmp(sl->cached, r->prompt, sizeof(int32_t) * (size_t)sl->n_cached)) {
            int conv = r->conv[0] && !strcmp(sl->conv, r->conv);
            if (!best || conv || sl->n_cached > *reuse) { best = sl; *reuse = sl->n_cached; }
        }
    }
    if (best) return best;
    return empty ? empty : lru;
}

/* Makes room for `need` more reserved bytes by dropping idle cached contexts, least recently used first.
 * Returns 1 when it fits. Lock held. */
static int make_room(hkv_server *s, uint64_t need, const slot *keep) {
    if (!s->p.kv_memory) return 1;
    while (s->reserved + need > s->p.kv_memory) {
        slot *lru = NULL;
        for (int i = 0; i < s->n_slots; i++) {
            slot *sl = &s->slots[i];
            if (!sl->j && sl->ctx && sl != keep && (!lru || sl->last_used < lru->last_used)) lru = sl;
        }
        if (!lru) return 0;
        slot_drop_ctx(s, lru);
    }
    return 1;
}

static void slot_release(hkv_server *s, slot *sl) {
    hkv_sampler_free(sl->smp);
    sl->smp = NULL;
    if (sl->j) { sl->j->slot = -1; job_unref_locked(sl->j); }
    sl->j = NULL;
    sl->last_used = now_s();
    slot_refresh_view(sl);
    (void)s;
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
        if (!sl) return;
        uint64_t need = j->req.kv_bytes;
        int keep_ctx = sl->ctx && kv_equal(&sl->kv, &j->req.kv);
        if (keep_ctx) need = 0; /* the slot's own context is reused as is */
        else if (sl->ctx) slot_drop_ctx(s, sl);
        if (!make_room(s, need, sl)) return; /* wait for a running sequence to finish */
        memmove(s->queue, s->queue + 1, sizeof(job *) * (size_t)--s->q_len);
        j->queued = 0;
        j->slot = (int)(sl - s->slots);
        sl->j = j; /* the engine's reference moves to the slot */
        if (!sl->ctx) { sl->kv = j->req.kv; sl->reserved = need; s->reserved += need; }
        j->n_prompt_reused = reuse;
        sl->pos = reuse;
        if (!reuse) sl->n_cached = 0;
        sl->prefilled = 0;
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
    if (sl->ctx) hkv_seq_reset(sl->ctx, 0);
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
    const float *lg = hkv_get_logits(sl->ctx, 0, -1);
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

/* Sets up a newly admitted slot: context (made now if needed), sampler. 0 on failure (job answered). */
static int slot_start(hkv_server *s, slot *sl) {
    job *j = sl->j;
    request *r = &j->req;
    char err[256];
    if (!sl->ctx) {
        hkv_context_params cp = hkv_context_default_params();
        cp.n_ctx = s->n_ctx;
        cp.n_seq = 1;
        cp.n_threads = s->p.n_threads;
        cp.ref_len = s->n_ctx;
        cp.kv = r->kv;
        if (hkv_context_new(s->m, &cp, &sl->ctx, err, sizeof err)) {
            pthread_mutex_lock(&s->mu);
            s->reserved -= sl->reserved;
            sl->reserved = 0;
            pthread_mutex_unlock(&s->mu);
            slot_fail(s, sl, err);
            return 0;
        }
        if (!sl->cached && !(sl->cached = malloc(sizeof(int32_t) * (size_t)s->n_ctx))) {
            slot_fail(s, sl, "out of memory");
            return 0;
        }
    }
    if (!sl->pos) { hkv_seq_reset(sl->ctx, 0); sl->n_cached = 0; }
    if (hkv_sampler_new(&r->sp, s->mi.n_vocab, &sl->smp, err, sizeof err)) { slot_fail(s, sl, err); return 0; }
    for (int i = 0; i < r->n_prompt; i++) hkv_sampler_accept(sl->smp, r->prompt[i]);
    int room = s->n_ctx - r->n_prompt;
    sl->n_max = r->n_max < 0 || r->n_max > room ? room : r->n_max;
    sl->t0 = now_s();
    sl->t1 = 0;
    return 1;
}

static int decode_tokens(hkv_server *s, slot *sl, const int32_t *t, int n) {
    (void)s;
    hkv_status st = hkv_decode(sl->ctx, 0, t, n);
    if (st) { slot_fail(s, sl, hkv_last_error(sl->ctx)); return 0; }
    memcpy(sl->cached + sl->n_cached, t, sizeof(int32_t) * (size_t)n);
    sl->n_cached += n;
    return 1;
}

/* One prompt chunk of the oldest prefilling slot. */
static void prefill_step(hkv_server *s) {
    slot *sl = NULL;
    for (int i = 0; i < s->n_slots; i++) {
        slot *x = &s->slots[i];
        if (x->j && !x->prefilled && (!sl || x->order < sl->order)) sl = x;
    }
    if (!sl) return;
    if (!sl->smp && !slot_start(s, sl)) return;
    request *r = &sl->j->req;
    int n = r->n_prompt - sl->pos;
    if (n > s->p.prefill_chunk) n = s->p.prefill_chunk;
    if (!decode_tokens(s, sl, r->prompt + sl->pos, n)) return;
    sl->pos += n;
    if (sl->pos == r->n_prompt) {
        sl->prefilled = 1;
        slot_advance(s, sl);
    }
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

/* Queued streams get an SSE comment now and then: writing is how a client that went away is noticed. */
static void ping_queued(hkv_server *s, double *last) {
    double t = now_s();
    if (t - *last < 1.0) return;
    *last = t;
    job *list[64];
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->q_len && n < 64; i++)
        if (s->queue[i]->req.stream) { list[n++] = s->queue[i]; s->queue[i]->refs++; }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) job_emit(s, list[i], ": waiting for a free slot\n\n", 27, 0, 0);
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
        for (int i = 0; i < s->n_slots; i++) slot_refresh_view(&s->slots[i]);
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
        prefill_step(s);
        for (int i = 0; i < s->n_slots; i++) {
            slot *sl = &s->slots[i];
            if (!sl->j || !sl->prefilled || sl->j->cancelled) continue;
            if (decode_tokens(s, sl, &sl->next, 1)) slot_advance(s, sl);
        }
        if (s->q_len) ping_queued(s, &last_ping);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    abort_all(s);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_slots; i++) slot_refresh_view(&s->slots[i]);
    s->engine_exited = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

uint64_t engine_evictions_locked(hkv_server *s) {
    uint64_t e = s->mt.evictions_done;
    for (int i = 0; i < s->n_slots; i++) e += s->slots[i].view.evictions;
    return e;
}
