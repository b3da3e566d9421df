/* heavykv bench: measurement (bench_run.c), machine probes (bench_sys.c) and the output formats
 * (bench_report.c). Public API only (include/heavykv.h). */
#ifndef HKV_BENCH_H
#define HKV_BENCH_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "heavykv.h"

typedef enum bench_format { BENCH_TABLE, BENCH_JSON, BENCH_CSV, BENCH_MD } bench_format;

typedef struct bench_opts {
    const char *model;
    int n_prompt, n_gen, reps, n_threads, n_ctx; /* n_ctx 0: depth + n_prompt + n_gen (like llama-bench) */
    int warmup;                   /* 1: one untimed repetition before the timed ones */
    int shared_prompt;            /* 1: sequence 0 is prefilled, the others are copies of it (hkv_seq_cp) */
    int roofline;                 /* 1: measure the read bandwidth and report decode's fraction of it */
    uint64_t kv_memory;           /* > 0: --kv-memory mode, the batch is the largest whose caches fit */
    char policies[256], budgets[256], batches[128], depths[128];
    hkv_kv_config kv;
    bench_format format;
    const char *json_path;        /* non-NULL: the records also go there as JSON */
} bench_opts;

/* One (policy, budget, batch, depth) measurement over the repetitions. */
typedef struct bench_record {
    char policy[16], budget[32];  /* budget as given ("20%", "64"; "-" for full) */
    int budget_tokens;            /* resolved tokens per KV head (n_ctx for full) */
    int batch, depth, n_prompt, n_gen, reps, n_ctx, n_threads;
    int shared_prompt;            /* pp_tps counts one sequence's prompt (the others were copied) */
    double pp_tps, pp_sd, pp_best;   /* prompt tokens/s summed over the batch: mean, sd, best */
    double tg_tps, tg_sd, tg_best;   /* generated tokens/s summed over the batch */
    double tg_p50_ms, tg_p99_ms;     /* latency of one decode step (one token for each sequence) */
    uint64_t kv_bytes;            /* K/V storage allocated at the end of generation (all sequences) */
    uint64_t kv_bytes_used;       /* K/V bytes of the tokens held at the end of generation */
    uint64_t kv_meta_bytes;       /* positions, order lists, policy state */
    uint64_t kv_memory;           /* --kv-memory limit the batch was chosen for (0: not in that mode) */
    uint64_t kv_seq_peak;         /* --kv-memory: peak cache bytes of one sequence used to choose the batch */
    int capacity;                 /* slots per (layer, KV head) at the end */
    uint64_t peak_rss;            /* bytes; high-water mark of the process during this measurement */
    double tg_bytes_per_s;        /* weights + kept K/V read per second while decoding */
    double roofline;              /* tg_bytes_per_s / measured read bandwidth (0: not measured) */
} bench_record;

typedef struct bench_machine {
    char cpu[128];
    int n_cpus;
    double read_bw;               /* bytes/s, 0 when not measured */
    double int8_peak;             /* int8 operations/s of all threads, registers only (0: not measured) */
    const char *kernels;
} bench_machine;

int bench_main(int argc, char **argv);
/* Measures one configuration; 0 ok, else an error was printed. */
int bench_measure(hkv_model *m, const bench_opts *o, const hkv_kv_config *kv, const char *budget_str, int batch,
                  int depth, const bench_machine *mach, bench_record *r);

/* bench_sys.c */
/* CPU name and count; the read bandwidth over a buffer of bw_bytes (0: not measured). */
void bench_machine_probe(bench_machine *mach, int n_threads, size_t bw_bytes);
void bench_rss_reset(void);       /* start a new high-water mark (Linux clear_refs); no-op elsewhere */
uint64_t bench_rss_peak(void);    /* bytes since the last reset (or process peak) */
int bench_parse_size(const char *s, uint64_t *out); /* "512MiB", "2GiB", "1.5G", "1000000" -> bytes */

/* bench_report.c */
void bench_report_begin(FILE *f, bench_format fmt, const hkv_model_info *mi, const char *model_path,
                        const bench_machine *mach);
void bench_report_record(FILE *f, bench_format fmt, const bench_record *r, const hkv_model_info *mi,
                         const bench_machine *mach, int first);
void bench_report_end(FILE *f, bench_format fmt);
#endif
