/* Fuzz target: HTTP request-head handling of the server, black-box over loopback (it survives a rewrite of the
 * HTTP layer). Each input is sent as raw bytes on a fresh connection, which is then half-closed; the reply is
 * read for up to 100 ms. Invariants: the server neither crashes (the harness runs it in-process under ASan)
 * nor stops answering /health (checked every 32 inputs). */
#include <stdio.h>
#include <stdlib.h>
#include "fuzz.h"

static int port;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    port = fuzz_server_port();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int st = fuzz_exchange(port, data, size, 100);
    if (getenv("HKV_FUZZ_VERBOSE")) fprintf(stderr, "status %d\n", st);
    fuzz_check_health(port, 32);
    return 0;
}
