/* Internal helpers shared by the GGUF reader (gguf.c), writer (gguf_write.c) and dump (gguf_dump.c). */
#ifndef HKV_GGUF_UTIL_H
#define HKV_GGUF_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

#define GGUF_MAGIC 0x46554747u     /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_KEY_ALIGNMENT "general.alignment"

typedef unsigned long long ull;    /* for printf of u64 values */

/* Little-endian loads, independent of the host byte order and of alignment. */
static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static inline int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}
static inline int add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a) return 0;
    *out = a + b;
    return 1;
}
/* Round x up to a multiple of the power of two a; 0 on overflow. */
static inline int align_ok(uint64_t x, uint64_t a, uint64_t *out) {
    if (!add_ok(x, a - 1, out)) return 0;
    *out &= ~(a - 1);
    return 1;
}


/* Bytes of one scalar of type t; 0 for strings, arrays and unknown types. */
static inline size_t vtype_size(uint32_t t) {
    static const uint8_t sz[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_VTYPE_COUNT ? sz[t] : 0;
}

/* printf-style message into err (if non-NULL). */
void gguf_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Writes s into out as printable text: control bytes, quote and backslash escaped, at most max_in input
 * bytes (cut on a UTF-8 character boundary, "..." appended). Returns out. */
char *gguf_str_escape(gguf_str s, size_t max_in, char *out, size_t outlen);
/* Integer of type t at p: 1 with *s set (signed types), 2 with *u set (unsigned), 0 if not an integer type. */
int gguf_load_int(gguf_vtype t, const uint8_t *p, int64_t *s, uint64_t *u);
/* Any numeric type at p as a double; 0 if t is not numeric. */
int gguf_load_f64(gguf_vtype t, const uint8_t *p, double *out);
/* Bytes of kv's value as stored in the file, excluding the u32 type (arrays: excluding type and count). */
uint64_t gguf_kv_value_bytes(const gguf_kv *kv);
#endif
