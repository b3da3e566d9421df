/* Persistent thread pool and the matmul built on it.
 *
 * hkv_pool_run hands one job (fn, arg, n) to all workers; the caller works too (as thread 0). Indices are
 * taken from a shared atomic counter, so every index runs exactly once, on some thread; fn must not combine
 * results across indices, which keeps results independent of the thread count. Workers spin briefly on
 * the job generation before sleeping on a condition variable, because a decode step issues many small
 * jobs back to back. One hkv_pool_run at a time per pool. */
#include "alloc.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "heavykv.h"
#include "tensor.h"
#include "kernels.h"

/* How long an idle thread polls before sleeping: longer than the gap between two matmuls of a decode step
 * (norms, rope, attention of one token), so the workers of a running decode never go through the kernel,
 * whose wake-up costs tens of microseconds; short enough that an idle pool sleeps almost at once. */
#define SPIN_SEC 300e-6

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Polls until *v != old (returns 1) or SPIN_SEC have passed (returns 0); the clock is read every 256 polls. */
static int spin_while_u64(const atomic_uint_fast64_t *v, uint_fast64_t old, const atomic_int *stop) {
    double t_end = 0;
    for (unsigned s = 1;; s++) {
        if (atomic_load_explicit(v, memory_order_acquire) != old || atomic_load_explicit(stop, memory_order_relaxed)) return 1;
        if ((s & 255) == 0) {
            double now = hkv_time_sec();
            if (t_end == 0) t_end = now + SPIN_SEC;
            else if (now > t_end) return 0;
        }
        cpu_relax();
    }
}

/* Polls until *v <= 0 (returns 1) or SPIN_SEC have passed (returns 0). */
static int spin_while_pos(const atomic_int *v) {
    double t_end = 0;
    for (unsigned s = 1;; s++) {
        if (atomic_load_explicit(v, memory_order_acquire) <= 0) return 1;
        if ((s & 255) == 0) {
            double now = hkv_time_sec();
            if (t_end == 0) t_end = now + SPIN_SEC;
            else if (now > t_end) return 0;
        }
        cpu_relax();
    }
}

struct hkv_pool {
    int n_threads;                 /* total, including the calling thread */
    pthread_t *workers;            /* [n_threads - 1] */
    pthread_mutex_t mu;
    pthread_cond_t start_cv;       /* signals a new generation (or stop) to workers */
    pthread_cond_t done_cv;        /* signals pending reaching 0 to the caller */
    atomic_uint_fast64_t generation; /* bumped once per job */
    atomic_int pending;            /* workers still busy with the current job */
    atomic_int next;               /* next index to hand out */
    atomic_int stop;
    void (*fn)(void *arg, int i, int thread);
    void *arg;
    int n;
    size_t block_bytes;            /* matmul row-block budget from the detected L2 (l2_block_bytes) */
    void *scratch;                 /* hkv_pool_scratch: the matmul's quantized activations, kept between calls */
    size_t scratch_cap;            /* its bytes */
};

typedef struct { hkv_pool *p; int thread; } worker_arg;

static void run_share(hkv_pool *p, int thread) {
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n) break;
        p->fn(p->arg, i, thread);
    }
}

static void *worker_main(void *v) {
    worker_arg wa = *(worker_arg *)v;
    hkv_free(v);
    hkv_pool *p = wa.p;
    uint_fast64_t seen = 0;
    for (;;) {
        spin_while_u64(&p->generation, seen, &p->stop);
        uint_fast64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->start_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_share(p, wa.thread);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Bytes of weight rows one block may hold when several token groups revisit it: a quarter of the per-core
 * L2 (sysconf; 256 KiB when unknown), so the block stays in L2 while the token groups' activations stream
 * through it (half of L2 measured no better and worse with many tokens). */
static size_t l2_block_bytes(void) {
    long l2 = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    if (l2 < ((long)64 << 10) || l2 > ((long)64 << 20)) return (size_t)256 << 10;
    return (size_t)l2 / 4;
}

hkv_pool *hkv_pool_new(int n_threads) {
    hkv_pool *p = hkv_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    p->block_bytes = l2_block_bytes(); /* once: sysconf may run CPUID, which traps in a VM */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (p->n_threads == 1) return p;
    p->workers = hkv_calloc((size_t)p->n_threads - 1, sizeof(pthread_t));
    if (!p->workers) { hkv_pool_free(p); return NULL; }
    for (int t = 1; t < p->n_threads; t++) {
        worker_arg *wa = hkv_malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){p, t};
        if (!wa || pthread_create(&p->workers[t - 1], NULL, worker_main, wa) != 0) {
            hkv_free(wa);
            p->n_threads = t; /* threads 1..t-1 exist; hkv_free() joins exactly those */
            hkv_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void hkv_pool_free(hkv_pool *p) {
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, 1);
        pthread_cond_broadcast(&p->start_cv);
        pthread_mutex_unlock(&p->mu);
        for (int t = 1; t < p->n_threads; t++) pthread_join(p->workers[t - 1], NULL);
        hkv_free(p->workers);
    }
    hkv_free(p->scratch);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    hkv_free(p);
}

int hkv_pool_size(const hkv_pool *p) { return p ? p->n_threads : 1; }

void *hkv_pool_scratch(hkv_pool *p, size_t bytes) {
    if (!p) return NULL;
    if (bytes > p->scratch_cap) {
        /* grow by at least half: prefill chunks of varying length do not reallocate every time */
        size_t cap = bytes + bytes / 2;
        void *b = hkv_malloc(cap);
        if (!b) return NULL;
        hkv_free(p->scratch);
        p->scratch = b;
        p->scratch_cap = cap;
    }
    return p->scratch;
}

void hkv_pool_run(hkv_pool *p, void (*fn)(void *arg, int i, int thread), void *arg, int n) {
    if (n <= 0) return;
    if (!p || p->n_threads <= 1 || n == 1) {
        for (int i = 0; i < n; i++) fn(arg, i, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, p->n_threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    run_share(p, 0);
    if (!spin_while_pos(&p->pending)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---------------------------------------------------------------- matmul
 *
 * Quantized weights take the integer path: each token's activations are quantized once (hkv_qx: int8
 * blocks of 32 for Q8_0 / Q4_0 / Q5_0, int8 super-blocks of 256 for the K-quants, both when the matrices
 * of one job need both) and every weight row is read once per group of 4 or 8 tokens (tok_group). Float
 * weights (F32/F16/BF16) keep the float path. Either way a (row, token) result is computed by the same
 * operations whatever the thread count, the row blocking, the row pairing or n_tok (see kernels.h).
 *
 * hkv_matmul_multi runs several matrices that read the same activations (q/k/v, gate/up) as one pool job:
 * the activations are quantized once and the threads meet once instead of once per matrix, which is
 * most of the per-matmul overhead when a decode step does ~7 small matmuls per layer. */

/* Below this many multiply-adds the pool's hand-off costs more than the work: run on the caller. */
#define MATMUL_INLINE_MACS (1 << 17)
#define MATMUL_MAX_MULTI 4

typedef struct {
    float *out;           /* [n_tok][rows] */
    int type;
    const uint8_t *W;     /* rows x row_bytes */
    size_t row_bytes;
    int rows, block_rows;
    int first_block;      /* index of this matrix's first block in the job */
    hkv_qdot_fn qdot;     /* integer path kernel, NULL: float path */
    hkv_qdot2_fn qdot2;   /* the same for two rows at once (register blocking); NULL: qdot twice */
    hkv_qdotr_fn qdotr;   /* one token, a whole block of rows per call; NULL: qdot per row */
} matmul_mat;

typedef struct {
    matmul_mat m[MATMUL_MAX_MULTI];
    int n_mat, n_blocks;
    const float *x;       /* [n_tok][cols] */
    int cols, n_tok;
    float *scratch;       /* float path: [n_threads][cols] dequantized row, used when n_tok >= 4 */
    hkv_qx *qx;           /* integer path: [n_tok] quantized activations */
    uint8_t *u;           /* [n_tok][cols] their levels + 128 */
    float *qd, *qs;       /* [n_tok][cols / 32] their scales and scaled sums */
    float *ql;            /* [n_tok][cols / 4] their per-lane scales */
    int need32, needk;    /* which activation formats the job's matrices read (kernels.h) */
    int8_t *qk;           /* K-quant format: [n_tok][cols] levels */
    float *dk;            /* [n_tok][cols / 256] super-block scales */
    int16_t *bk;          /* [n_tok][cols / 16] sums of 16 levels */
    void *own_acts;       /* the activations' buffer when the pool's scratch was not used (freed at the end) */
} matmul_job;

/* Float path: one block of rows, all tokens. With several tokens each row is dequantized once into the
 * thread's scratch and reused; hkv_dot gives the same bits as dot_f32 over the dequantized row. */
static void matmul_block_f(const matmul_job *j, const matmul_mat *m, int r0, int r1, int thread) {
    float *tmp = j->scratch ? j->scratch + (size_t)thread * (size_t)j->cols : NULL;
    for (int r = r0; r < r1; r++) {
        const void *row = m->W + (size_t)r * m->row_bytes;
        if (tmp) {
            hkv_dequant_row(m->type, row, tmp, j->cols);
            for (int t = 0; t < j->n_tok; t++)
                m->out[(size_t)t * m->rows + r] = hkv_dot_f32(tmp, j->x + (size_t)t * j->cols, j->cols);
        } else {
            for (int t = 0; t < j->n_tok; t++)
                m->out[(size_t)t * m->rows + r] = hkv_dot(m->type, row, j->x + (size_t)t * j->cols, j->cols);
        }
    }
}

/* Tokens per integer-path kernel call in a prefill. The kernels take up to HKV_QX_MAX_TOK (8). For the
 * 32-element types (Q8_0 / Q4_0 / Q5_0) 8 tokens x 2 rows leave the AVX-512 kernels short of registers (the
 * 16 accumulators spill every chunk) and the group's activations (8 x (n + n) bytes of levels and lane
 * scales) overflow L1 for wide rows: groups of 4 measured 1.1-1.5x faster (one thread, CPU time, 128-512
 * tokens: Q8_0 2048x2048 132 -> 150 GFLOP/s, 8192x2048 132 -> 158, 2048x8192 93 -> 143, Qwen2.5-0.5B shapes
 * +10-17%; 2, 3, 5, 6 were slower). The K-quant kernels decode a whole super-block of weights per call and
 * keep their accumulators in int32 over it, so they amortise that decode over 8 tokens: 2048x2048 Q4_K /
 * Q6_K 187 GFLOP/s with 8, 160 with 4 (equal at 8192 columns). */
#define MATMUL_TOK_GROUP_32 4

static int tok_group(int type) { return hkv_qdot_uses_qk(type) ? HKV_QX_MAX_TOK : MATMUL_TOK_GROUP_32; }

/* Integer path: token groups outside, rows inside (two at a time), so a group's activations stay in L1
 * while the block's rows stay in L2 across groups. */
static void matmul_block_q(const matmul_job *j, const matmul_mat *m, int r0, int r1) {
    if (j->n_tok == 1 && m->qdotr) { /* decode: out is [rows] */
        m->qdotr(m->W + (size_t)r0 * m->row_bytes, m->row_bytes, r1 - r0, j->qx, m->out + r0, j->cols);
        return;
    }
    int gt = tok_group(m->type);
    for (int t0 = 0; t0 < j->n_tok; t0 += gt) {
        int nx = j->n_tok - t0 < gt ? j->n_tok - t0 : gt;
        float o[2 * HKV_QX_MAX_TOK];
        int r = r0;
        /* one token (decode) streams each row once anyway: the pair kernel only pays off when a loaded
         * weight chunk serves several tokens, and measured 2.3x slower per decode step at nx = 1 */
        if (m->qdot2 && nx > 1)
            for (; r + 1 < r1; r += 2) {
                m->qdot2(m->W + (size_t)r * m->row_bytes, m->row_bytes, j->qx + t0, nx, o, j->cols);
                for (int k = 0; k < nx; k++) {
                    m->out[(size_t)(t0 + k) * m->rows + r] = o[k];
                    m->out[(size_t)(t0 + k) * m->rows + r + 1] = o[nx + k];
                }
            }
        for (; r < r1; r++) {
            m->qdot(m->W + (size_t)r * m->row_bytes, j->qx + t0, nx, o, j->cols);
            for (int k = 0; k < nx; k++) m->out[(size_t)(t0 + k) * m->rows + r] = o[k];
        }
    }
}

static void matmul_block(void *v, int blk, int thread) {
    const matmul_job *j = v;
    int i = 0;
    while (i + 1 < j->n_mat && blk >= j->m[i + 1].first_block) i++;
    const matmul_mat *m = &j->m[i];
    int r0 = (blk - m->first_block) * m->block_rows, r1 = r0 + m->block_rows < m->rows ? r0 + m->block_rows : m->rows;
    if (m->qdot) matmul_block_q(j, m, r0, r1);
    else matmul_block_f(j, m, r0, r1, thread);
}

static void quantize_token(void *v, int t, int thread) {
    matmul_job *j = v;
    size_t nb = (size_t)j->cols / HKV_QX_BLOCK, nk = (size_t)j->cols / QK_K, c = (size_t)j->cols;
    (void)thread;
    hkv_qx q;
    memset(&q, 0, sizeof q);
    if (j->need32) {
        float *dl = j->ql + (size_t)t * (c / 4);
        hkv_quantize_qx(j->x + (size_t)t * c, j->u + (size_t)t * c, j->qd + t * nb, j->qs + t * nb, dl, j->cols);
        q.u = j->u + (size_t)t * c, q.d = j->qd + t * nb, q.s = j->qs + t * nb, q.dl = dl;
    }
    if (j->needk) {
        hkv_quantize_qk(j->x + (size_t)t * c, j->qk + (size_t)t * c, j->dk + t * nk, j->bk + t * (c / 16), j->cols);
        q.qk = j->qk + (size_t)t * c, q.dk = j->dk + t * nk, q.bk = j->bk + t * (c / 16);
    }
    j->qx[t] = q;
}

#define ROUND64(b) (((b) + 63) / 64 * 64)

/* Byte offsets of the activation arrays in one buffer: both formats always have room (a context reserves
 * hkv_matmul_acts_bytes once), a job fills the ones it needs. */
typedef struct { size_t qx, u, qk, dk, bk, total; } acts_layout;

static acts_layout acts_layout_of(int n_tok, int cols) {
    size_t n = (size_t)n_tok * (size_t)cols, nb = n / HKV_QX_BLOCK;
    acts_layout l;
    l.qx = 10 * nb * sizeof(float); /* d, s: nb each; per-lane scales: 8 nb */
    l.u = l.qx + ROUND64((size_t)n_tok * sizeof(hkv_qx));
    l.qk = l.u + ROUND64(n);
    l.dk = l.qk + ROUND64(n);
    l.bk = l.dk + ROUND64(n / QK_K * sizeof(float));
    l.total = l.bk + ROUND64(n / 16 * sizeof(int16_t));
    return l;
}

/* Fills the quantized activations, in the pool's scratch (allocated once, so a step does not allocate and
 * fault in fresh pages per matmul; j->own_acts when there is no pool); 0 on allocation failure. */
size_t hkv_matmul_acts_bytes(int n_tok, int cols) { return acts_layout_of(n_tok, cols).total; }

static int quantize_acts(hkv_pool *p, matmul_job *j, int parallel) {
    size_t nb = (size_t)j->n_tok * (size_t)j->cols / HKV_QX_BLOCK;
    acts_layout l = acts_layout_of(j->n_tok, j->cols);
    uint8_t *buf = p ? hkv_pool_scratch(p, l.total) : NULL;
    if (!buf) buf = j->own_acts = hkv_malloc(l.total);
    if (!buf) return 0;
    j->qd = (float *)buf;
    j->qs = j->qd + nb;
    j->ql = j->qd + 2 * nb;
    j->qx = (hkv_qx *)(buf + l.qx);
    j->u = buf + l.u;
    j->qk = (int8_t *)(buf + l.qk);
    j->dk = (float *)(buf + l.dk);
    j->bk = (int16_t *)(buf + l.bk);
    hkv_pool_run(parallel ? p : NULL, quantize_token, j, j->n_tok);
    return 1;
}

/* Rows per block of one matrix: about 8 blocks per thread for load balance (at least 4 rows each), no
 * more than the L2 share when token groups revisit the block, and a block count that is a multiple of the
 * thread count so that equal threads finish together; one block for a tiny matmul. */
static int block_rows_for(int rows, size_t row_bytes, int n_tok, int nt, int split, int integer, int group,
                          size_t block_bytes) {
    if (!split) return rows;
    int br = rows / (nt * 8);
    if (integer && n_tok > group && (size_t)br * row_bytes > block_bytes) br = (int)(block_bytes / row_bytes);
    if (br < 4) br = 4;
    int nb = (rows + br - 1) / br;
    nb = (nb + nt - 1) / nt * nt;
    br = (rows + nb - 1) / nb;
    br = (br + 1) & ~1; /* even: rows go to the two-row kernel in pairs */
    return br < 4 ? 4 : br;
}

void hkv_matmul_multi(hkv_pool *p, const hkv_mm *mm, int n_mm, const float *x, int cols, int n_tok) {
    if (n_mm > MATMUL_MAX_MULTI) { /* never needed by the forward pass; still correct */
        hkv_matmul_multi(p, mm, MATMUL_MAX_MULTI, x, cols, n_tok);
        hkv_matmul_multi(p, mm + MATMUL_MAX_MULTI, n_mm - MATMUL_MAX_MULTI, x, cols, n_tok);
        return;
    }
    if (n_tok <= 0 || cols <= 0) return;
    matmul_job j;
    memset(&j, 0, sizeof j);
    j.x = x;
    j.cols = cols;
    j.n_tok = n_tok;
    int nt = hkv_pool_size(p), any_q = 0, any_f = 0;
    double macs = 0;
    for (int i = 0; i < n_mm; i++) {
        size_t row_bytes = hkv_row_size(mm[i].type, cols);
        if (mm[i].rows <= 0 || row_bytes == 0 || !hkv_type_supported(mm[i].type)) continue;
        matmul_mat *m = &j.m[j.n_mat++];
        *m = (matmul_mat){mm[i].out, mm[i].type, mm[i].W, row_bytes, mm[i].rows, 0, 0,
                          hkv_qdot_fn_get(mm[i].type), hkv_qdot2_fn_get(mm[i].type), hkv_qdotr_fn_get(mm[i].type)};
        if (m->qdot) {
            any_q = 1;
            if (hkv_qdot_uses_qk(m->type)) j.needk = 1;
            else j.need32 = 1;
        } else {
            any_f = 1;
        }
        macs += (double)mm[i].rows * cols * n_tok;
    }
    if (j.n_mat == 0) return;
    int parallel = macs >= MATMUL_INLINE_MACS && nt > 1;
    /* On allocation failure the float path runs instead: still correct, slightly different bits. */
    if (any_q && !quantize_acts(p, &j, parallel && n_tok > 1)) {
        for (int i = 0; i < j.n_mat; i++) j.m[i].qdot = NULL, j.m[i].qdot2 = NULL, j.m[i].qdotr = NULL;
        any_f = 1;
    }
    if (any_f && n_tok >= 4)
        j.scratch = hkv_malloc((size_t)nt * (size_t)cols * sizeof(float)); /* on failure: per-token dots */
    for (int i = 0; i < j.n_mat; i++) {
        matmul_mat *m = &j.m[i];
        int split = macs >= MATMUL_INLINE_MACS;
        m->block_rows = block_rows_for(m->rows, m->row_bytes, n_tok, parallel ? nt : 1, split, m->qdot != NULL,
                                       tok_group(m->type), p ? p->block_bytes : (size_t)256 << 10);
        m->first_block = j.n_blocks;
        j.n_blocks += (m->rows + m->block_rows - 1) / m->block_rows;
    }
    hkv_pool_run(parallel ? p : NULL, matmul_block, &j, j.n_blocks);
    hkv_free(j.scratch);
    hkv_free(j.own_acts);
}

void hkv_matmul(hkv_pool *p, float *out, int type, const void *W, const float *x, int rows, int cols, int n_tok) {
    hkv_mm m = {out, type, W, rows};
    hkv_matmul_multi(p, &m, 1, x, cols, n_tok);
}

double hkv_time_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- read bandwidth (the decode roofline)
 *
 * Every thread streams 1 MiB pieces of one large buffer through hkv_dot_f32(a, a): one read of each cache
 * line, two FMA lanes per 32 bytes, far below what a core can compute, so the time is the memory's. */

#define BW_PIECE ((size_t)1 << 20)

typedef struct { const float *buf; double sink[256]; } bw_job;

static void bw_piece(void *v, int i, int thread) {
    bw_job *j = v;
    size_t n = BW_PIECE / sizeof(float);
    j->sink[thread] += hkv_dot_f32(j->buf + (size_t)i * n, j->buf + (size_t)i * n, (int64_t)n);
}

static void bw_touch(void *v, int i, int thread) {
    bw_job *j = v;
    float *p = (float *)j->buf + (size_t)i * (BW_PIECE / sizeof(float));
    (void)thread;
    for (size_t k = 0; k < BW_PIECE / sizeof(float); k++) p[k] = (float)(k & 7) * 0.125f;
}

/* Threads of a machine probe: n_threads, or one per online CPU when <= 0; at most 256 (the probes' per-thread
 * arrays). */
static int probe_threads(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    return n_threads > 256 ? 256 : n_threads;
}

double hkv_read_bandwidth(int n_threads, size_t bytes, int reps) {
    n_threads = probe_threads(n_threads);
    int pieces = (int)(bytes / BW_PIECE);
    if (pieces < 1) pieces = 1;
    bw_job j;
    memset(&j, 0, sizeof j);
    float *buf = hkv_malloc((size_t)pieces * BW_PIECE);
    hkv_pool *p = hkv_pool_new(n_threads);
    if (!buf || !p) { hkv_free(buf); hkv_pool_free(p); return 0; }
    j.buf = buf;
    hkv_pool_run(p, bw_touch, &j, pieces); /* first touch by the pool: pages spread as the readers will use them */
    double best = 0;
    for (int r = 0; r < (reps > 0 ? reps : 1); r++) {
        double t0 = hkv_time_sec();
        hkv_pool_run(p, bw_piece, &j, pieces);
        double dt = hkv_time_sec() - t0;
        if (dt > 0 && (double)pieces * BW_PIECE / dt > best) best = (double)pieces * BW_PIECE / dt;
    }
    hkv_pool_free(p);
    hkv_free(buf);
    return best;
}

/* ---------------------------------------------------------------- int8 compute peak (prefill's roofline)
 *
 * Every thread of a pool runs the kernel set's register-only dot loop at once; the sum of their rates is
 * the machine's measured int8 peak, which prefill's GOP/s (2 x multiply-adds) is compared with. */

typedef struct { long n; double macs[256], sec[256]; } peak_job;

static void peak_run(void *v, int i, int thread) {
    peak_job *j = v;
    (void)i;
    double t0 = hkv_time_sec(), m = hkv_int8_peak_macs(j->n);
    j->sec[thread] += hkv_time_sec() - t0;
    j->macs[thread] += m;
}

double hkv_int8_peak(int n_threads) {
    n_threads = probe_threads(n_threads);
    if (hkv_int8_peak_macs(1) <= 0) return 0;
    hkv_pool *p = hkv_pool_new(n_threads);
    if (!p) return 0;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        peak_job j;
        memset(&j, 0, sizeof j);
        j.n = 200000; /* 154 M multiply-adds per thread: ~0.4 ms at a Zen 5 core's ~4e11/s; each thread times
                       * its own loop, so the hand-off does not count */
        hkv_pool_run(p, peak_run, &j, n_threads);
        double rate = 0;
        for (int t = 0; t < n_threads; t++)
            if (j.sec[t] > 0) rate += j.macs[t] / j.sec[t];
        if (2 * rate > best) best = 2 * rate;
    }
    hkv_pool_free(p);
    return best;
}
