/* heavykv serve: flags -> hkv_server (apps/server/server.h); logging to stderr; SIGINT/SIGTERM/SIGHUP/SIGQUIT
 * stop the server in order (live streams get a final event) and the exit status is 0. */
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
    printf("usage: heavykv serve [-m MODEL.gguf] [--host H] [--port P] [--parallel N | --kv-memory SIZE] [options]\n\n"
           "HTTP server with OpenAI-style chat and completions and llama.cpp-style /completion. Each sequence has its\n"
           "own KV cache; with a bounded policy (h2o, window, sink, tova) it needs only `budget` rows per head, so\n"
           "--kv-memory holds many more conversations than with the full cache.\n\n"
           "  -m, --model PATH      GGUF model (default $HEAVYKV_MODEL or ../shared/models/stories260K.gguf)\n"
           "      --host H          address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces: use --api-key)\n"
           "      --port P          TCP port (default 8080; 0 = any free port, printed at start)\n"
           "  -np, --parallel N     sequences at once (default 4; ignored with --kv-memory)\n"
           "      --kv-memory SIZE  K/V memory for all sequences together, e.g. 1GiB, 512MiB, 300M; the number of\n"
           "                        sequences follows from the policy and budget (printed at start)\n"
           "      --queue N         requests that may wait for a sequence before 503 + Retry-After (default 16)\n"
           "  -c, --ctx-size N      positions per sequence (default: the model's, at most 4096)\n"
           "  -t, --threads N       worker threads per sequence (default: all cores)\n"
           "      --alias NAME      model name in responses and /v1/models (default: the GGUF general.name)\n"
           "      --chat-template T chat template family (chatml, llama3, llama2, mistral, gemma, phi3, zephyr);\n"
           "                        default: recognised from the model's own template\n"
           "Security and limits:\n"
           "      --api-key KEY     require \"Authorization: Bearer KEY\" (default $HEAVYKV_API_KEY); /health is open\n"
           "      --cors ORIGIN     send Access-Control-Allow-Origin: ORIGIN (\"*\" for any) and answer preflights\n"
           "      --allow-origin L  comma-separated Origins also accepted; any other Origin gets 403\n"
           "      --allow-host L    comma-separated Host names accepted (default on loopback: localhost, 127.0.0.1,\n"
           "                        [::1] only, against DNS rebinding; \"*\" for any)\n"
           "      --max-conns N     open connections (default 128); at the limit the longest-idle one is closed\n"
           "      --max-conns-per-ip N  connections one client address may hold (default: no limit)\n"
           "      --timeout S       close connections idle (or sending their request slowly) for S seconds (default 10)\n"
           "      --max-body BYTES  largest request body (default 1 MiB; 413 above)\n\n"
           "Endpoints: POST /v1/chat/completions, /v1/completions, /completion, /tokenize, /detokenize;\n"
           "           GET /health, /v1/models, /v1/models/{id}, /props, /kv (per-sequence KV stats), /metrics.\n"
           "Per request: \"kv\": {\"policy\": \"h2o\", \"budget\": \"20%%\"}, \"cache_prompt\": true, \"conversation_id\",\n"
           "\"parse_special\": false. A percentage budget is a share of the context size (-c).\n"
           "--prefill-chunk N (default 64) is also the number of prompt tokens decoded between two decode steps.\n\n%s",
           cli_kv_help());
}

/* "1GiB", "512MiB", "300M", "1048576": bytes. */
static int parse_size(const char *flag, const char *v, uint64_t *out) {
    char *e;
    double x = strtod(v, &e);
    while (*e == ' ') e++;
    double mul = 1;
    if (!*e || !strcasecmp(e, "b")) mul = 1;
    else if (!strcasecmp(e, "k") || !strcasecmp(e, "kb") || !strcasecmp(e, "kib")) mul = 1024.0;
    else if (!strcasecmp(e, "m") || !strcasecmp(e, "mb") || !strcasecmp(e, "mib")) mul = 1048576.0;
    else if (!strcasecmp(e, "g") || !strcasecmp(e, "gb") || !strcasecmp(e, "gib")) mul = 1073741824.0;
    else if (!strcasecmp(e, "t") || !strcasecmp(e, "tb") || !strcasecmp(e, "tib")) mul = 1099511627776.0;
    else mul = -1;
    if (e == v || mul < 0 || !(x > 0) || x * mul > 1e18) {
        cli_error("%s expects a size such as 1GiB, 512MiB or a number of bytes, not '%s'", flag, v);
        return 0;
    }
    *out = (uint64_t)(x * mul);
    return 1;
}

/* Returns 0 ok, 1 error, 2 help shown. */
static int parse_serve(int argc, char **argv, hkv_server_params *p, const char **model) {
    *model = cli_default_model();
    int timeout = 0;
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
        else if (!strcmp(a, "--kv-memory")) { VAL(); if (!parse_size(a, v, &p->kv_memory)) return 1; }
        else if (!strcmp(a, "--queue")) { VAL(); if (!cli_int(a, v, 0, 65536, &p->n_queue)) return 1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { VAL(); if (!cli_int(a, v, 0, 1 << 24, &p->n_ctx)) return 1; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(a, v, 1, 1024, &p->n_threads)) return 1; }
        else if (!strcmp(a, "--alias")) { VAL(); p->model_name = v; }
        else if (!strcmp(a, "--chat-template")) { VAL(); p->chat_template = v; }
        else if (!strcmp(a, "--api-key")) { VAL(); p->api_key = v; }
        else if (!strcmp(a, "--cors")) { VAL(); p->cors_origin = v; }
        else if (!strcmp(a, "--allow-origin")) { VAL(); p->allow_origins = v; }
        else if (!strcmp(a, "--allow-host")) { VAL(); p->allow_hosts = v; }
        else if (!strcmp(a, "--max-conns")) { VAL(); if (!cli_int(a, v, 1, 65536, &p->max_conns)) return 1; }
        else if (!strcmp(a, "--max-conns-per-ip")) { VAL(); if (!cli_int(a, v, 0, 65536, &p->max_conns_per_ip)) return 1; }
        else if (!strcmp(a, "--timeout")) { VAL(); if (!cli_int(a, v, 1, 3600, &timeout)) return 1; p->idle_timeout_s = timeout; }
        else if (!strcmp(a, "--max-body")) {
            uint64_t b;
            VAL();
            if (!parse_size(a, v, &b)) return 1;
            p->max_body = (size_t)b;
        }
        else return cli_error("unknown option '%s' for 'serve' (see heavykv serve --help)", a);
#undef VAL
    }
    if (p->kv.prefill_chunk > 0) p->prefill_chunk = p->kv.prefill_chunk;
    if (!p->api_key) {
        const char *k = getenv("HEAVYKV_API_KEY");
        if (k && *k) p->api_key = k;
    }
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
    g_server = s; /* handlers first: a signal right after the "listening" line must stop the server */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    hkv_server_info in;
    hkv_server_get_info(s, &in);
    fprintf(stderr, "heavykv serve: listening on http://%s:%d\n", p.host, in.port);
    if (in.kv_memory)
        fprintf(stderr, "heavykv serve: KV policy %s, budget %d tokens per head: %.2f MiB per sequence; --kv-memory %.2f MiB "
                "holds %d concurrent sequences (more queue, up to %d)\n", p.kv.policy, in.budget.total,
                in.seq_bytes / 1048576.0, in.kv_memory / 1048576.0, in.max_seqs, p.n_queue);
    else
        fprintf(stderr, "heavykv serve: KV policy %s, budget %d tokens per head: %.2f MiB per sequence; %d parallel "
                "sequences (%.2f MiB K/V at most)\n", p.kv.policy, in.budget.total, in.seq_bytes / 1048576.0,
                in.max_seqs, in.max_seqs * (in.seq_bytes / 1048576.0));
    if (!in.loopback && !p.api_key)
        fprintf(stderr, "heavykv serve: WARNING: bound to %s, which is reachable from other machines, without --api-key: "
                "anyone who can reach it can use it\n", p.host);
    hkv_status st_run = hkv_server_run(s);
    g_server = NULL;
    int rc = st_run ? cli_error("%s", hkv_server_last_error(s)) : 0;
    hkv_server_free(s);
    if (!rc) fprintf(stderr, "heavykv serve: stopped\n");
    hkv_model_free(m);
    return rc;
}
