#include "testutil.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

int tu_failures, tu_checks;

const char *tu_shared(const char *rel) {
    static char buf[4096];
    const char *root = getenv("HEAVYKV_SHARED");
    if (!root || !*root) root = HKV_SHARED_DEFAULT;
    snprintf(buf, sizeof buf, "%s/%s", root, rel);
    return buf;
}

const char *tu_model(void) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s", tu_shared("models/stories260K.gguf"));
    return buf;
}

const char *tu_tmp(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    const char *d = getenv("TMPDIR");
    snprintf(b, 512, "%s/hkv_%d_%s", d && *d ? d : "/tmp", (int)getpid(), name);
    return b;
}

int tu_cli(const char *args, char *out, size_t outlen) {
    size_t cap = strlen(args) + 4096;
    char *cmd = malloc(cap);
    snprintf(cmd, cap, "'%s' %s 2>&1", HKV_CLI_PATH, args);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p) return -1;
    size_t n = fread(out, 1, outlen ? outlen - 1 : 0, p);
    if (outlen) out[n] = 0;
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {}
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(b); return NULL; }
    fclose(f);
    b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

int tu_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, tu_checks - tu_failures, tu_failures);
    return tu_failures ? 1 : 0;
}
