/* Machine probes for bench: CPU name, read bandwidth, peak resident memory, size parsing. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "bench.h"

void bench_machine_probe(bench_machine *mach, int n_threads, size_t bw_bytes) {
    memset(mach, 0, sizeof *mach);
    snprintf(mach->cpu, sizeof mach->cpu, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *v = strchr(line, ':');
        if (!v) continue;
        for (v++; *v == ' '; v++) {}
        v[strcspn(v, "\n")] = 0;
        snprintf(mach->cpu, sizeof mach->cpu, "%s", v);
        break;
    }
    if (f) fclose(f);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    mach->n_cpus = n > 0 ? (int)n : 1;
    mach->kernels = hkv_cpu_features();
    /* the default 512 MiB is many times any last-level cache, so the caches cannot serve it */
    if (bw_bytes) {
        mach->read_bw = hkv_read_bandwidth(n_threads, bw_bytes, 5);
        mach->int8_peak = hkv_int8_peak(n_threads); /* what prefill's GOP/s is compared with */
    }
}

/* Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS. */
void bench_rss_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return;
    fputs("5", f);
    fclose(f);
}

uint64_t bench_rss_peak(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) { kb = strtoull(line + 6, NULL, 10); break; }
    if (f) fclose(f);
    if (kb == 0) {
        struct rusage ru;
        if (!getrusage(RUSAGE_SELF, &ru)) kb = (uint64_t)ru.ru_maxrss;
    }
    return kb * 1024;
}

int bench_parse_size(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || v > 1e18) return 0;
    while (*end == ' ') end++;
    char unit[8] = {0};
    for (int i = 0; end[i] && i < 7; i++) unit[i] = (char)tolower((unsigned char)end[i]);
    if (strlen(end) > 7) return 0;
    double mul;
    if (!unit[0] || !strcmp(unit, "b")) mul = 1;
    else if (!strcmp(unit, "k") || !strcmp(unit, "kib") || !strcmp(unit, "kb")) mul = 1024.0;
    else if (!strcmp(unit, "m") || !strcmp(unit, "mib") || !strcmp(unit, "mb")) mul = 1048576.0;
    else if (!strcmp(unit, "g") || !strcmp(unit, "gib") || !strcmp(unit, "gb")) mul = 1073741824.0;
    else return 0;
    if (v * mul > 1e18) return 0;
    *out = (uint64_t)(v * mul);
    return *out > 0;
}
