/* Allocation shim of heavykv serve. The server's own allocations on the request path (request.c, http.c) and
 * all of cJSON's (srv_alloc_install_cjson) go through these thin wrappers of malloc/free, so that
 *   - a test can make the N-th allocation of one thread fail (srv_alloc_fail_at, the same SQLite-style hook as
 *     the library's hkv_alloc_fail_at) and prove that every failure becomes a clean 500 with a JSON error;
 *   - the request parser can tell "cJSON ran out of memory" (a 500) from "the body is not JSON" (a 400):
 *     srv_alloc_failures counts the NULLs handed out on the calling thread, real or injected.
 * Memory from these may be released with free() and vice versa (the engine does), since they are malloc.
 * The hook is thread-local and inert unless a test arms it; it is compiled into every build. */
#ifndef HKV_SERVER_SALLOC_H
#define HKV_SERVER_SALLOC_H
#include <stddef.h>

void *srv_malloc(size_t n);
void *srv_calloc(size_t n, size_t size);
void *srv_realloc(void *p, size_t n);
char *srv_strdup(const char *s);
char *srv_strndup(const char *s, size_t n);
void srv_free(void *p);

/* Points cJSON's hooks at srv_malloc/srv_free (once per process; cJSON's hooks are process-wide, and the
 * wrappers behave as malloc/free unless a test armed the hook, so other users of cJSON see no difference). */
void srv_alloc_install_cjson(void);
/* Allocations that returned NULL on this thread since it started (real or injected). */
long srv_alloc_failures(void);

/* Test hook: n > 0 makes the n-th allocation from now on this thread fail (that one only); 0 disarms. */
void srv_alloc_fail_at(long n);
long srv_alloc_count(void);   /* allocations on this thread since the last srv_alloc_fail_at */
int srv_alloc_fired(void);    /* 1 once the armed failure has happened */
#endif
