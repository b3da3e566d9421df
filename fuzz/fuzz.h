/* Shared by the fuzz harnesses (fuzz_*.c): the libFuzzer entry points each harness defines, and helpers for
 * fixtures and scratch files. A harness is built twice: with clang -fsanitize=fuzzer as a libFuzzer binary
 * (scripts/fuzz.sh), and with any compiler against replay.c, which runs it over its seed corpus as a CTest. */
#ifndef HKV_FUZZ_H
#define HKV_FUZZ_H
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Called once before the first input (libFuzzer calls it when defined; replay.c always does). */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Path of a fixture under the shared folder ($HEAVYKV_SHARED, else the build's HKV_SHARED_DEFAULT); static buffer. */
const char *fuzz_shared(const char *rel);
/* A private scratch folder for this process (created once, removed at exit), and a file name inside it. */
const char *fuzz_tmp(const char *name);
/* Writes n bytes to path; 0 on failure. */
int fuzz_write(const char *path, const void *data, size_t n);
/* Aborts with a message: the way a harness reports a broken invariant (libFuzzer and replay both catch it). */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ---- loopback server (fuzz_net.c): an in-process `heavykv serve` on an ephemeral port, driven only through
 * its socket, so the harnesses do not depend on how the HTTP layer is written. */
/* Loads stories260K and starts the server in a thread (once); returns its port. */
int fuzz_server_port(void);
/* Connects, sends n bytes, half-closes, and reads the reply until the server closes or timeout_ms pass.
 * Returns the HTTP status of the first response line (0: none). */
int fuzz_exchange(int port, const void *data, size_t n, int timeout_ms);
/* GET /health must answer 200 within 5 s (else the harness aborts: the server hangs). Every `every`-th call. */
void fuzz_check_health(int port, int every);
#endif
