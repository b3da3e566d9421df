/* Every heap allocation of the library goes through these wrappers (plain malloc/calloc/realloc/free), so a
 * test can make the Nth one fail and prove that each failure path returns an error and leaks nothing.
 *
 * Test hook (the library's only mutable global state, and it is thread-local): hkv_alloc_fail_at(n) arms a
 * counter on the calling thread; the n-th allocation made by that thread from then on returns NULL (that one
 * only), later ones succeed again. Allocations made by other threads are not counted (the worker pool's
 * threads allocate only scratch whose failure has a fallback: the policies' batch hook; the matmuls'
 * quantized activations are reserved with the context, and their float-path row buffer falls back to
 * per-token dots with the same bits).
 * hkv_alloc_fail_at(0) disarms and resets the count. Never used outside tests. */
#ifndef HKV_ALLOC_H
#define HKV_ALLOC_H
#include <stddef.h>

void *hkv_malloc(size_t n);
void *hkv_calloc(size_t n, size_t size);
void *hkv_realloc(void *p, size_t n);
void hkv_free(void *p);

void hkv_alloc_fail_at(long n);   /* n > 0: fail the n-th allocation from now on this thread; 0: off */
long hkv_alloc_count(void);       /* allocations counted on this thread since the last hkv_alloc_fail_at */
int hkv_alloc_fired(void);        /* 1 once the armed failure has happened */
#endif
