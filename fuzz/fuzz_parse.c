/* Fuzz target: parse_request (apps/server/request.c), the server's completion / chat request-body parser,
 * called directly (fuzz_request.c reaches it through the socket, ~100x slower). The first byte picks the API
 * (OpenAI completions, chat, llama.cpp /completion); the rest is the body. Invariants: 0 with a tokenized
 * prompt whose ids are in range, or an error status 4xx/5xx with a message; nothing leaks (request_free). */
#include <stdio.h>
#include <string.h>
#include "fuzz.h"
#include "heavykv.h"
#include "server.h"
#include "server_int.h"

static hkv_server *srv;
static int n_vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    char err[512];
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 1;
    hkv_model *m = NULL;
    if (hkv_model_load(fuzz_shared("models/stories260K.gguf"), &mp, &m, err, sizeof err) != HKV_OK)
        fuzz_fail("model: %s", err);
    hkv_model_info mi;
    hkv_model_get_info(m, &mi);
    n_vocab = mi.n_vocab;
    hkv_server_params p = hkv_server_default_params();
    p.host = "127.0.0.1";
    p.port = 0;              /* listens, but nothing connects: only the parser is used */
    p.n_parallel = 1;
    p.n_ctx = 64;
    p.n_threads = 1;
    p.chat_template = "chatml";
    if (hkv_server_new(m, &p, &srv, err, sizeof err) != HKV_OK) fuzz_fail("server: %s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    static const api_kind apis[] = { API_OAI, API_CHAT, API_LLAMA };
    request r;
    char msg[512] = "";
    int st = parse_request(srv, apis[data[0] % 3], (const char *)data + 1, size - 1, &r, msg, sizeof msg);
    if (st == 0) {
        for (int i = 0; i < r.n_prompt; i++)
            if (r.prompt[i] < 0 || r.prompt[i] >= n_vocab) fuzz_fail("prompt token %d outside [0, %d)", (int)r.prompt[i], n_vocab);
        request_free(&r);
    } else if (st < 400 || st > 599 || !msg[0]) {
        fuzz_fail("status %d with message '%s'", st, msg);
    }
    return 0;
}
