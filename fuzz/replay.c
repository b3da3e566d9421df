/* Replay driver: runs a harness's LLVMFuzzerTestOneInput over every file of the folders (or files) given on
 * the command line, in name order, so each CI build exercises the harnesses and their regression inputs
 * without libFuzzer. Exit status 0 when every input ran (a broken invariant aborts). */
#include "fuzz.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "replay: cannot open %s\n", path); return 0; }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) { fprintf(stderr, "replay: out of memory reading %s\n", path); return 0; }
    /* an exact-size copy so ASan sees reads past the input as overflows, as under libFuzzer */
    uint8_t *exact = malloc(n ? n : 1);
    if (exact) memcpy(exact, buf, n);
    free(buf);
    if (!exact) return 0;
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    int ran = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) { fprintf(stderr, "replay: %s does not exist\n", argv[i]); failed++; continue; }
        if (!S_ISDIR(st.st_mode)) { if (run_file(argv[i])) ran++; else failed++; continue; }
        DIR *d = opendir(argv[i]);
        if (!d) { failed++; continue; }
        char **names = NULL;
        size_t nn = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char **nm = realloc(names, sizeof *names * (nn + 1));
            if (!nm) break;
            names = nm;
            size_t len = strlen(argv[i]) + strlen(e->d_name) + 2;
            if (!(names[nn] = malloc(len))) break;
            snprintf(names[nn++], len, "%s/%s", argv[i], e->d_name);
        }
        closedir(d);
        qsort(names, nn, sizeof *names, cmp_str);
        for (size_t k = 0; k < nn; k++) {
            if (run_file(names[k])) ran++; else failed++;
            free(names[k]);
        }
        free(names);
    }
    printf("replay: %d inputs ran, %d could not be read\n", ran, failed);
    return failed || ran == 0;
}
