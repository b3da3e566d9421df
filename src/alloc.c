/* Allocation wrappers with a test-only failure injection (see alloc.h for the contract). */
#include "alloc.h"
#include <stdlib.h>

static _Thread_local long fail_at;    /* 0: off; else the allocation number that fails */
static _Thread_local long n_allocs;   /* counted since the last hkv_alloc_fail_at */
static _Thread_local int fired;

/* 1 when this allocation is the one to fail. */
static int should_fail(void) {
    if (!fail_at) return 0;
    if (++n_allocs != fail_at) return 0;
    fired = 1;
    return 1;
}

void *hkv_malloc(size_t n) { return should_fail() ? NULL : malloc(n); }
void *hkv_calloc(size_t n, size_t size) { return should_fail() ? NULL : calloc(n, size); }
void *hkv_realloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n); }
void hkv_free(void *p) { free(p); }

void hkv_alloc_fail_at(long n) {
    fail_at = n > 0 ? n : 0;
    n_allocs = 0;
    fired = 0;
}
long hkv_alloc_count(void) { return n_allocs; }
int hkv_alloc_fired(void) { return fired; }
