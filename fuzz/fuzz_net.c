/* Loopback helpers of fuzz.h for the server harnesses. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "fuzz.h"
#include "heavykv.h"
#include "server.h"

static hkv_server *srv;
static int srv_port;

static void *serve_thread(void *arg) {
    (void)hkv_server_run(arg);
    return NULL;
}

int fuzz_server_port(void) {
    if (srv) return srv_port;
    signal(SIGPIPE, SIG_IGN);
    char err[512];
    hkv_model_params mp = hkv_model_default_params();
    mp.n_threads = 1;
    hkv_model *m = NULL;
    if (hkv_model_load(fuzz_shared("models/stories260K.gguf"), &mp, &m, err, sizeof err) != HKV_OK)
        fuzz_fail("model: %s", err);
    hkv_server_params p = hkv_server_default_params();
    p.host = "127.0.0.1";
    p.port = 0;
    p.n_parallel = 2;
    p.n_queue = 4;
    p.n_ctx = 48;              /* a request runs at most this many positions: bounded work per input */
    p.n_threads = 1;
    if (hkv_server_new(m, &p, &srv, err, sizeof err) != HKV_OK) fuzz_fail("server: %s", err);
    srv_port = hkv_server_port(srv);
    pthread_t th;
    if (pthread_create(&th, NULL, serve_thread, srv)) fuzz_fail("cannot start the server thread");
    pthread_detach(th);
    return srv_port;   /* the model and server live until the process exits */
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int fuzz_exchange(int port, const void *data, size_t n, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { close(fd); return 0; }
    double t0 = now_ms();
    const char *p = data;
    size_t sent = 0;
    while (sent < n && now_ms() - t0 < timeout_ms) {   /* the server may stop reading (413, 400): give up */
        struct pollfd pw = { fd, POLLOUT, 0 };
        if (poll(&pw, 1, 50) <= 0) continue;
        ssize_t k = send(fd, p + sent, n - sent, MSG_NOSIGNAL);
        if (k <= 0) break;
        sent += (size_t)k;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096], head[16] = "";
    size_t got = 0;
    for (;;) {
        int left = timeout_ms - (int)(now_ms() - t0);
        if (left <= 0) break;
        struct pollfd pr = { fd, POLLIN, 0 };
        if (poll(&pr, 1, left) <= 0) break;
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k <= 0) break;
        for (ssize_t i = 0; i < k && got < sizeof head - 1; i++) head[got++] = buf[i];
    }
    close(fd);
    head[got] = 0;
    int status = 0;
    if (!strncmp(head, "HTTP/1.", 7)) status = atoi(head + 9);
    return status;
}

void fuzz_check_health(int port, int every) {
    static int calls;
    if (++calls % every) return;
    static const char req[] = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    double t0 = now_ms();
    for (;;) {
        int st = fuzz_exchange(port, req, sizeof req - 1, 5000);
        if (st == 200) return;
        if (now_ms() - t0 > 5000) fuzz_fail("/health answered %d, not 200 within 5 s", st);
        usleep(50 * 1000);   /* 503 while every slot is busy is allowed by old servers: retry */
    }
}
