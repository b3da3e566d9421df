/* heavykv serve: flags -> hkv_server (src/server.h); logging to stderr and SIGINT/SIGTERM handling. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "cli.h"
#include "server.h"

/* The running server, for the signal handler (the only place a handler can find it). */
static hkv_server *volatile g_server;

static void on_signal(int sig) {
    (void)sig;
    if (g_server) hkv_server_stop(g_server);
}

/* One line per request on stderr, with a local timestamp. */
static void log_line(void *user, const char *line) {
    (void)user;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
    fprintf(stderr, "%s %s\n", ts, line);
}

static void serve_help(void) {
    printf("usage: heavykv serve [-m MODEL.gguf] [--host H] [--port P] [--parallel N] [options]\n\n"
           "HTTP server with OpenAI-style and llama.cpp-style completions. Up to N sequences decode together\n"
           "(continuous batching); with a bounded KV policy each needs only `budget` slots per head.\n\n"
           "  -m, --model PATH      GGUF model (default $HEAVYKV_MODEL or ../shared/models/stories260K.gguf)\n"
           "      --host H          address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)\n"
           "      --port P          TCP port (default 8080; 0 = any free port, printed at start)\n"
           "  -np, --parallel N     sequences decoding together (default 4)\n"
           "      --queue N         requests that may wait for a free sequence before 503 (default 16)\n"
           "  -c, --ctx-size N      positions per sequence (default: the model's, at most 4096)\n"
           "  -t, --threads N       worker threads (default: all cores)\n"
           "      --alias NAME      model name in responses and /v1/models (default: the GGUF general.name)\n\n"
           "Endpoints: GET /health, GET /v1/models, GET /kv (per-sequence KV stats),\n"
           "           POST /v1/completions (OpenAI), POST /completion (llama.cpp).\n"
           "A percentage --kv-budget is a share of the context size (-c), e.g. -c 2048 --kv-budget 25%% = 512 tokens.\n\n%s",
           cli_kv_help);
}

/* Returns 0 ok, 1 error, 2 help shown. */
static int parse_serve(int argc, char **argv, hkv_server_params *p, const char **model) {
    *model = cli_default_model();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r = cli_kv_flag(argc, argv, &i, &p->kv);
        if (r < 0) return 1;
        if (r > 0) continue;
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { serve_help(); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); *model = v; }
        else if (!strcmp(a, "--host")) { VAL(); p->host = v; }
        else if (!strcmp(a, "--port")) { VAL(); if (!cli_int(a, v, 0, 65535, &p->port)) return 1; }
        else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) { VAL(); if (!cli_int(a, v, 1, 256, &p->n_parallel)) return 1; }
        else if (!strcmp(a, "--queue")) { VAL(); if (!cli_int(a, v, 0, 4096, &p->n_queue)) return 1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VAL(); if (!cli_int(a, v, 0, 1 << 24, &p->n_ctx)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &p->n_threads)) return 1; }
        else if (!strcmp(a, "--alias")) { VAL(); p->model_name = v; }
        else return cli_error("unknown option '%s' for 'serve' (see heavykv serve --help)", a);
#undef VAL
    }
    if (p->max_conns < p->n_parallel + p->n_queue + 8) p->max_conns = p->n_parallel + p->n_queue + 8;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    hkv_server_params p = hkv_server_default_params();
    const char *model;
    int r = parse_serve(argc, argv, &p, &model);
    if (r) return r == 2 ? 0 : 1;
    p.log = log_line;
    hkv_model *m = cli_load_model(model, p.n_threads);
    if (!m) return 1;
    cli_warn_long_ctx(m, p.n_ctx, &p.kv);
    hkv_server *s;
    char err[512];
    if (hkv_server_new(m, &p, &s, err, sizeof err)) { hkv_model_free(m); return cli_error("%s", err); }
    hkv_kv_stats st;
    hkv_get_kv_stats(hkv_server_context(s), &st);
    fprintf(stderr, "heavykv serve: listening on http://%s:%d  (%d parallel sequences, KV policy %s, budget %d tokens "
            "per head, %.2f MiB K/V in all)\n", p.host, hkv_server_port(s), p.n_parallel, p.kv.policy, st.budget.total,
            st.kv_bytes / 1048576.0);
    g_server = s;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* sends use MSG_NOSIGNAL already; this covers anything else */
    hkv_status st_run = hkv_server_run(s);
    g_server = NULL;
    int rc = st_run ? cli_error("%s", hkv_server_last_error(s)) : 0;
    if (!rc) fprintf(stderr, "heavykv serve: stopped\n");
    hkv_server_free(s);
    hkv_model_free(m);
    return rc;
}
