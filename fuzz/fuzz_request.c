/* Fuzz target: the completion / chat request-body parser, through the server (black-box, like fuzz_http.c, so it
 * covers whichever parser the server has). The first input byte picks the endpoint (/completion,
 * /v1/completions, /v1/chat/completions) and whether to stream; the rest is the body, sent with a correct
 * Content-Length. Invariants: no crash, a status line for every request, /health keeps answering. A valid
 * request generates at most the server's 48-position context, so every input is bounded work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"

static int port;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    port = fuzz_server_port();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    static const char *const paths[] = { "/completion", "/v1/completions", "/v1/chat/completions" };
    const char *path = paths[data[0] % 3];
    char head[256];
    int hn = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Connection: close\r\nContent-Length: %zu\r\n\r\n", path, size - 1);
    char *req = malloc((size_t)hn + size);
    if (!req) return 0;
    memcpy(req, head, (size_t)hn);
    memcpy(req + hn, data + 1, size - 1);
    int st = fuzz_exchange(port, req, (size_t)hn + size - 1, 2000);
    free(req);
    if (getenv("HKV_FUZZ_VERBOSE")) fprintf(stderr, "status %d\n", st);
    if (st >= 500 && st != 503) fuzz_fail("server error %d for a request body", st);
    fuzz_check_health(port, 32);
    return 0;
}
