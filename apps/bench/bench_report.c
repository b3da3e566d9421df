/* bench output: an aligned table (default), JSON (an array of records), CSV or a Markdown table. Every
 * format carries the same fields; table/md print the machine and model in a header. */
#include <string.h>
#include "bench.h"

#define MiB(x) ((double)(x) / 1048576.0)

void bench_report_begin(FILE *f, bench_format fmt, const hkv_model_info *mi, const char *model_path,
                        const bench_machine *mach) {
    if (fmt == BENCH_JSON) { fputs("[\n", f); return; }
    if (fmt == BENCH_CSV) {
        fputs("model,arch,kernels,n_threads,policy,budget,budget_tokens,batch,depth,n_prompt,n_gen,reps,n_ctx,"
              "pp_tps,pp_tps_sd,pp_tps_best,tg_tps,tg_tps_sd,tg_tps_best,tg_ms_p50,tg_ms_p99,kv_bytes,kv_bytes_used,"
              "kv_meta_bytes,kv_capacity,kv_memory,kv_seq_peak,peak_rss,read_bw,tg_bytes_per_s,roofline,shared_prompt,"
              "pp_ops_per_s,int8_peak\n", f);
        return;
    }
    const char *pre = fmt == BENCH_MD ? "" : "# ";
    fprintf(f, "%smodel: %s (%s), %d layers, %d heads / %d KV heads, head_dim %d, %.1f M params, %.1f MiB of weights\n",
            pre, mi->name && mi->name[0] ? mi->name : model_path, mi->arch, mi->n_layer, mi->n_head, mi->n_head_kv,
            mi->head_dim, mi->n_params / 1e6, MiB(mi->weight_bytes));
    if (fmt == BENCH_MD) fputs("\n", f);
    fprintf(f, "%smachine: %s, %d CPUs, kernels %s, read bandwidth %s", pre, mach->cpu, mach->n_cpus, mach->kernels,
            mach->read_bw > 0 ? "" : "not measured\n");
    if (mach->read_bw > 0) fprintf(f, "%.1f GB/s", mach->read_bw / 1e9);
    if (mach->read_bw > 0 && mach->int8_peak > 0) fprintf(f, ", int8 peak %.0f GOP/s", mach->int8_peak / 1e9);
    if (mach->read_bw > 0) fputs("\n", f);
    if (fmt == BENCH_MD) {
        fputs("\n| policy | budget | batch | depth | pp | tg | pp tok/s | tg tok/s | tg best | lat p50 ms | lat p99 ms "
              "| KV used MiB | KV alloc MiB | peak RSS MiB | roofline |\n"
              "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n", f);
        return;
    }
    fprintf(f, "%-7s %-7s %5s %6s %5s %4s %16s %14s %8s %8s %8s %9s %9s %8s %5s\n", "policy", "budget", "batch",
            "depth", "pp", "tg", "pp tok/s", "tg tok/s", "tg best", "p50 ms", "p99 ms", "KV used", "KV alloc",
            "RSS MiB", "roof");
}

static void fmt_roof(char *buf, size_t n, double roof) {
    if (roof > 0) snprintf(buf, n, "%.0f%%", 100 * roof);
    else snprintf(buf, n, "-");
}

void bench_report_record(FILE *f, bench_format fmt, const bench_record *r, const hkv_model_info *mi,
                         const bench_machine *mach, int first) {
    char roof[16], pp[48], tg[48];
    /* prefill's arithmetic rate: 2 operations per weight per prompt token (attention not counted) */
    double pp_ops = 2.0 * (double)mi->n_params * r->pp_tps;
    fmt_roof(roof, sizeof roof, r->roofline);
    snprintf(pp, sizeof pp, "%.1f ± %.1f", r->pp_tps, r->pp_sd);
    snprintf(tg, sizeof tg, "%.2f ± %.2f", r->tg_tps, r->tg_sd);
    switch (fmt) {
    case BENCH_TABLE:
        /* "±" is 2 bytes in UTF-8 and one column: pad by one more */
        fprintf(f, "%-7s %-7s %5d %6d %5d %4d %17s %15s %8.2f %8.2f %8.2f %9.2f %9.2f %8.1f %5s\n", r->policy,
                r->budget, r->batch, r->depth, r->n_prompt, r->n_gen, pp, tg, r->tg_best, r->tg_p50_ms, r->tg_p99_ms,
                MiB(r->kv_bytes_used), MiB(r->kv_bytes), MiB(r->peak_rss), roof);
        break;
    case BENCH_MD:
        fprintf(f, "| %s | %s | %d | %d | %d | %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %s |\n",
                r->policy, r->budget, r->batch, r->depth, r->n_prompt, r->n_gen, pp, tg, r->tg_best, r->tg_p50_ms,
                r->tg_p99_ms, MiB(r->kv_bytes_used), MiB(r->kv_bytes), MiB(r->peak_rss), roof);
        break;
    case BENCH_CSV:
        fprintf(f, "\"%s\",%s,\"%s\",%d,%s,%s,%d,%d,%d,%d,%d,%d,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,"
                   "%llu,%llu,%llu,%d,%llu,%llu,%llu,%.0f,%.0f,%.4f,%d,%.0f,%.0f\n",
                mi->name ? mi->name : "", mi->arch, mach->kernels, r->n_threads, r->policy, r->budget, r->budget_tokens,
                r->batch, r->depth, r->n_prompt, r->n_gen, r->reps, r->n_ctx, r->pp_tps, r->pp_sd, r->pp_best,
                r->tg_tps, r->tg_sd, r->tg_best, r->tg_p50_ms, r->tg_p99_ms, (unsigned long long)r->kv_bytes,
                (unsigned long long)r->kv_bytes_used, (unsigned long long)r->kv_meta_bytes, r->capacity,
                (unsigned long long)r->kv_memory, (unsigned long long)r->kv_seq_peak,
                (unsigned long long)r->peak_rss, mach->read_bw, r->tg_bytes_per_s, r->roofline, r->shared_prompt,
                pp_ops, mach->int8_peak);
        break;
    case BENCH_JSON: {
        /* names and arch come from a GGUF: escape what JSON needs */
        char name[256];
        size_t k = 0;
        for (const char *s = mi->name ? mi->name : ""; *s && k + 7 < sizeof name; s++) {
            unsigned char ch = (unsigned char)*s;
            if (ch == '"' || ch == '\\') { name[k++] = '\\'; name[k++] = (char)ch; }
            else if (ch < 0x20) k += (size_t)snprintf(name + k, sizeof name - k, "\\u%04x", ch);
            else name[k++] = (char)ch;
        }
        name[k] = 0;
        fprintf(f, "%s  {\"model\": \"%s\", \"arch\": \"%s\", \"kernels\": \"%s\", \"n_threads\": %d, "
                   "\"policy\": \"%s\", \"budget\": \"%s\", \"budget_tokens\": %d, \"batch\": %d, \"depth\": %d, "
                   "\"n_prompt\": %d, \"n_gen\": %d, \"reps\": %d, \"n_ctx\": %d, "
                   "\"pp_tps\": %.3f, \"pp_tps_sd\": %.3f, \"pp_tps_best\": %.3f, "
                   "\"tg_tps\": %.3f, \"tg_tps_sd\": %.3f, \"tg_tps_best\": %.3f, \"tg_ms_p50\": %.3f, \"tg_ms_p99\": %.3f, "
                   "\"kv_bytes\": %llu, \"kv_bytes_used\": %llu, \"kv_meta_bytes\": %llu, \"kv_capacity\": %d, "
                   "\"kv_memory\": %llu, \"kv_seq_peak\": %llu, \"peak_rss\": %llu, "
                   "\"read_bw\": %.0f, \"tg_bytes_per_s\": %.0f, \"roofline\": %.4f, \"shared_prompt\": %s, "
                   "\"pp_ops_per_s\": %.0f, \"int8_peak\": %.0f}",
                first ? "" : ",\n", name, mi->arch, mach->kernels, r->n_threads, r->policy, r->budget,
                r->budget_tokens, r->batch, r->depth, r->n_prompt, r->n_gen, r->reps, r->n_ctx, r->pp_tps, r->pp_sd,
                r->pp_best, r->tg_tps, r->tg_sd, r->tg_best, r->tg_p50_ms, r->tg_p99_ms,
                (unsigned long long)r->kv_bytes, (unsigned long long)r->kv_bytes_used,
                (unsigned long long)r->kv_meta_bytes, r->capacity, (unsigned long long)r->kv_memory,
                (unsigned long long)r->kv_seq_peak, (unsigned long long)r->peak_rss, mach->read_bw,
                r->tg_bytes_per_s, r->roofline, r->shared_prompt ? "true" : "false", pp_ops, mach->int8_peak);
        break;
    }
    }
}

void bench_report_end(FILE *f, bench_format fmt) {
    if (fmt == BENCH_JSON) fputs("\n]\n", f);
}
