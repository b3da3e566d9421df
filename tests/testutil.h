/* Minimal test harness: CHECK macros that count failures, fixture paths, running the CLI. */
#ifndef HKV_TESTUTIL_H
#define HKV_TESTUTIL_H
#include <stdio.h>
#include <math.h>

extern int tu_failures, tu_checks;
#define CHECK(cond) do { tu_checks++; if (!(cond)) { tu_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECKF(cond, ...) do { tu_checks++; if (!(cond)) { tu_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); } } while (0)
#define CHECK_NEAR(a, b, tol) CHECKF(fabs((double)(a) - (double)(b)) <= (tol), "%g vs %g (tol %g)", \
    (double)(a), (double)(b), (double)(tol))

/* Path under the shared fixtures dir ($HEAVYKV_SHARED or ../shared next to the source tree). Static buffer. */
const char *tu_shared(const char *rel);
/* The stories260K model path. */
const char *tu_model(void);
/* Temp file path unique to this test process (static buffer rotated among 8). */
const char *tu_tmp(const char *name);
/* Runs the heavykv CLI with args (shell-quoted by caller); captures stdout+stderr into out (NUL-terminated,
 * truncated to outlen). Returns the exit status (or -1). */
int tu_cli(const char *args, char *out, size_t outlen);
/* Reads a whole file (malloc'ed, NUL-terminated); NULL on error. */
char *tu_read_file(const char *path, size_t *len);
/* Prints "N passed, M failed" and returns the exit code for main(). */
int tu_done(const char *name);
#endif
