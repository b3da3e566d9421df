/* Allocation shim of heavykv serve (see salloc.h). */
#include "salloc.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

static _Thread_local long fail_at;    /* 0: off; else the allocation number that fails */
static _Thread_local long n_allocs;   /* counted since the last srv_alloc_fail_at */
static _Thread_local int fired;
static _Thread_local long n_failed;   /* NULLs returned on this thread, ever */

/* 1 when this allocation is the one to fail. */
static int inject(void) {
    if (!fail_at || ++n_allocs != fail_at) return 0;
    fired = 1;
    return 1;
}

static void *counted(void *p) {
    if (!p) n_failed++;
    return p;
}

void *srv_malloc(size_t n) { return counted(inject() ? NULL : malloc(n ? n : 1)); }
void *srv_calloc(size_t n, size_t size) { return counted(inject() ? NULL : calloc(n ? n : 1, size ? size : 1)); }
void *srv_realloc(void *p, size_t n) { return counted(inject() ? NULL : realloc(p, n ? n : 1)); }
void srv_free(void *p) { free(p); }

char *srv_strndup(const char *s, size_t n) {
    size_t len = strnlen(s, n);
    char *d = srv_malloc(len + 1);
    if (d) { memcpy(d, s, len); d[len] = 0; }
    return d;
}
char *srv_strdup(const char *s) { return srv_strndup(s, strlen(s)); }

static void install(void) {
    cJSON_Hooks h = {srv_malloc, srv_free};
    cJSON_InitHooks(&h);
}
void srv_alloc_install_cjson(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install);
}

long srv_alloc_failures(void) { return n_failed; }
void srv_alloc_fail_at(long n) {
    fail_at = n > 0 ? n : 0;
    n_allocs = 0;
    fired = 0;
}
long srv_alloc_count(void) { return n_allocs; }
int srv_alloc_fired(void) { return fired; }
