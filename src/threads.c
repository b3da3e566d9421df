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

#define SPIN_ITERS 20000

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
        uint_fast64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        for (int s = 0; g == seen && s < SPIN_ITERS && !atomic_load(&p->stop); s++)
            g = atomic_load_explicit(&p->generation, memory_order_acquire);
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

hkv_pool *hkv_pool_new(int n_threads) {
    hkv_pool *p = hkv_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
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
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    hkv_free(p);
}

int hkv_pool_size(const hkv_pool *p) { return p ? p->n_threads : 1; }

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
    for (int s = 0; s < SPIN_ITERS && atomic_load_explicit(&p->pending, memory_order_acquire) > 0; s++) {}
    if (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---------------------------------------------------------------- matmul
 *
 * Quantized weights take the integer path: each token's activations are quantized once (hkv_qx, int8
 * blocks of 32) and every weight row is read once per group of up to HKV_QX_MAX_TOK tokens. Float
 * weights (F32/F16/BF16) keep the float path. Either way a (row, token) result is computed by the same
 * operations whatever the thread count, the row blocking or n_tok (see kernels.h). */

/* Below this many multiply-adds the pool's hand-off costs more than the work: run on the caller. */
#define MATMUL_INLINE_MACS (1 << 17)

typedef struct {
    float *out;
    int type;
    const uint8_t *W;
    size_t row_bytes;
    const float *x;
    int rows, cols, n_tok, block_rows;
    float *scratch;       /* float path: [n_threads][cols] dequantized row, used when n_tok >= 4 */
    hkv_qdot_fn qdot;     /* integer path kernel, NULL: float path */
    hkv_qx *qx;           /* integer path: [n_tok] quantized activations */
    uint8_t *u;           /* [n_tok][cols] their levels + 128 */
    float *qd, *qs;       /* [n_tok][cols / 32] their scales and scaled sums */
    float *ql;            /* [n_tok][cols / 4] their per-lane scales */
} matmul_job;

/* Float path: one block of rows, all tokens. With several tokens each row is dequantized once into the
 * thread's scratch and reused; hkv_dot gives the same bits as dot_f32 over the dequantized row. */
static void matmul_block_f(const matmul_job *j, int r0, int r1, int thread) {
    float *tmp = j->scratch ? j->scratch + (size_t)thread * (size_t)j->cols : NULL;
    for (int r = r0; r < r1; r++) {
        const void *row = j->W + (size_t)r * j->row_bytes;
        if (tmp) {
            hkv_dequant_row(j->type, row, tmp, j->cols);
            for (int t = 0; t < j->n_tok; t++)
                j->out[(size_t)t * j->rows + r] = hkv_dot_f32(tmp, j->x + (size_t)t * j->cols, j->cols);
        } else {
            for (int t = 0; t < j->n_tok; t++)
                j->out[(size_t)t * j->rows + r] = hkv_dot(j->type, row, j->x + (size_t)t * j->cols, j->cols);
        }
    }
}

/* Integer path: token groups outside, rows inside, so a group's activations stay in L1 while the block's
 * rows (a few KiB each) stay in L2 across groups. */
static void matmul_block_q(const matmul_job *j, int r0, int r1) {
    for (int t0 = 0; t0 < j->n_tok; t0 += HKV_QX_MAX_TOK) {
        int nx = j->n_tok - t0 < HKV_QX_MAX_TOK ? j->n_tok - t0 : HKV_QX_MAX_TOK;
        float o[HKV_QX_MAX_TOK];
        for (int r = r0; r < r1; r++) {
            j->qdot(j->W + (size_t)r * j->row_bytes, j->qx + t0, nx, o, j->cols);
            for (int k = 0; k < nx; k++) j->out[(size_t)(t0 + k) * j->rows + r] = o[k];
        }
    }
}

static void matmul_block(void *v, int blk, int thread) {
    const matmul_job *j = v;
    int r0 = blk * j->block_rows, r1 = r0 + j->block_rows < j->rows ? r0 + j->block_rows : j->rows;
    if (j->qdot) matmul_block_q(j, r0, r1);
    else matmul_block_f(j, r0, r1, thread);
}

static void quantize_token(void *v, int t, int thread) {
    matmul_job *j = v;
    size_t nb = (size_t)j->cols / HKV_QX_BLOCK;
    (void)thread;
    float *dl = j->ql + (size_t)t * (j->cols / 4);
    hkv_quantize_qx(j->x + (size_t)t * j->cols, j->u + (size_t)t * j->cols, j->qd + t * nb, j->qs + t * nb, dl, j->cols);
    j->qx[t] = (hkv_qx){j->u + (size_t)t * j->cols, j->qd + t * nb, j->qs + t * nb, dl};
}

/* Fills the quantized activations in the workspace. */
static void quantize_acts(hkv_pool *p, const hkv_matmul_ws *ws, matmul_job *j, int parallel) {
    size_t n = (size_t)j->n_tok * (size_t)j->cols, nb = n / HKV_QX_BLOCK;
    j->qx = ws->qx;
    j->u = ws->u;
    j->qd = ws->qd; /* d, s: nb each; per-lane scales: 8 nb */
    j->qs = j->qd + nb;
    j->ql = j->qd + 2 * nb;
    hkv_pool_run(parallel ? p : NULL, quantize_token, j, j->n_tok);
}

static size_t ws_qd_floats(int max_tok, int max_cols) {
    return 10 * ((size_t)max_tok * (size_t)max_cols / HKV_QX_BLOCK + 1);
}

uint64_t hkv_matmul_ws_bytes(int n_threads, int max_tok, int max_cols) {
    uint64_t t = max_tok > 0 ? (uint64_t)max_tok : 1, c = max_cols > 0 ? (uint64_t)max_cols : 1;
    return t * sizeof(hkv_qx) + t * c + sizeof(float) * (ws_qd_floats((int)t, (int)c) + (uint64_t)n_threads * c);
}

int hkv_matmul_ws_init(hkv_matmul_ws *ws, int n_threads, int max_tok, int max_cols) {
    memset(ws, 0, sizeof *ws);
    if (n_threads < 1) n_threads = 1;
    if (max_tok < 1) max_tok = 1;
    if (max_cols < 1) max_cols = 1;
    ws->qx = hkv_malloc(sizeof(hkv_qx) * (size_t)max_tok);
    ws->u = hkv_malloc((size_t)max_tok * (size_t)max_cols);
    ws->qd = hkv_malloc(sizeof(float) * ws_qd_floats(max_tok, max_cols));
    ws->f = hkv_malloc(sizeof(float) * (size_t)n_threads * (size_t)max_cols);
    if (!ws->qx || !ws->u || !ws->qd || !ws->f) { hkv_matmul_ws_free(ws); return 0; }
    ws->max_tok = max_tok;
    ws->max_cols = max_cols;
    ws->n_threads = n_threads;
    return 1;
}

void hkv_matmul_ws_free(hkv_matmul_ws *ws) {
    hkv_free(ws->qx);
    hkv_free(ws->u);
    hkv_free(ws->qd);
    hkv_free(ws->f);
    memset(ws, 0, sizeof *ws);
}

int hkv_matmul(hkv_pool *p, hkv_matmul_ws *ws, float *out, int type, const void *W, const float *x, int rows, int cols,
               int n_tok) {
    size_t row_bytes = hkv_row_size(type, cols);
    if (rows <= 0 || n_tok <= 0 || row_bytes == 0 || !hkv_type_supported(type)) return 0;
    int nt = hkv_pool_size(p);
    if (!ws || n_tok > ws->max_tok || cols > ws->max_cols || nt > ws->n_threads) return -1;
    double macs = (double)rows * cols * n_tok;
    int parallel = macs >= MATMUL_INLINE_MACS && nt > 1;
    matmul_job j = {out, type, W, row_bytes, x, rows, cols, n_tok, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    j.qdot = hkv_qdot_fn_get(type);
    if (j.qdot) quantize_acts(p, ws, &j, parallel && n_tok > 1);
    if (!j.qdot && n_tok >= 4 && type != HKV_TYPE_F32) j.scratch = ws->f;
    /* ~8 blocks per thread for load balance, at least 4 rows each; one block for a tiny matmul. A block
     * that several token groups revisit is kept within ~256 KiB so that it stays in L2. */
    j.block_rows = macs >= MATMUL_INLINE_MACS ? rows / (nt * 8) : rows;
    if (j.qdot && n_tok > HKV_QX_MAX_TOK && (size_t)j.block_rows * row_bytes > ((size_t)256 << 10))
        j.block_rows = (int)(((size_t)256 << 10) / row_bytes);
    if (j.block_rows < 4) j.block_rows = 4;
    int n_blocks = (rows + j.block_rows - 1) / j.block_rows;
    hkv_pool_run(parallel ? p : NULL, matmul_block, &j, n_blocks);
    return 0;
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

double hkv_read_bandwidth(int n_threads, size_t bytes, int reps) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 256) n_threads = 256;
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
