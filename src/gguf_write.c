/* GGUF writer: metadata and tensors built in memory, then written in one pass (spec layout in gguf.c). */
#include "alloc.h"
#include "gguf.h"
#include "gguf_util.h"
#include "tensor.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ writer */

/* Growable byte buffer; oom is sticky so callers check once at the end. */
typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void wb_put(wbuf *b, const void *src, size_t n) {
    if (b->oom || n == 0) return;
    if (n > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2) { b->oom = 1; return; }
            cap *= 2;
        }
        uint8_t *p = hkv_realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void wb_u16(wbuf *b, uint16_t v) { uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; wb_put(b, x, 2); }
static void wb_u32(wbuf *b, uint32_t v) { wb_u16(b, (uint16_t)v); wb_u16(b, (uint16_t)(v >> 16)); }
static void wb_u64(wbuf *b, uint64_t v) { wb_u32(b, (uint32_t)v); wb_u32(b, (uint32_t)(v >> 32)); }
static void wb_str(wbuf *b, const char *s, size_t len) { wb_u64(b, len); wb_put(b, s, len); }
static void wb_zeros(wbuf *b, size_t n) {
    static const uint8_t z[64];
    for (; n > sizeof z; n -= sizeof z) wb_put(b, z, sizeof z);
    wb_put(b, z, n);
}

typedef struct wkv {
    char *key;          /* NUL-terminated copy */
    size_t key_len;
    gguf_vtype type;
    wbuf val;           /* the value exactly as written after the u32 type (arrays: elem type, count, elems) */
} wkv;

typedef struct wtensor {
    char *name;
    int type, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint8_t *data;      /* [nbytes] copy */
    size_t nbytes;
} wtensor;

struct gguf_writer {
    wkv *kv;            /* [n_kv], in insertion order */
    size_t n_kv, cap_kv;
    wtensor *t;         /* [n_t], in insertion order */
    size_t n_t, cap_t;
    hkv_status st;      /* first error of a void setter or a failed gguf_w_tensor, reported by the write */
    char msg[256];
};

gguf_writer *gguf_writer_new(void) { return hkv_calloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) { hkv_free(w->kv[i].key); hkv_free(w->kv[i].val.p); }
    for (size_t i = 0; i < w->n_t; i++) { hkv_free(w->t[i].name); hkv_free(w->t[i].data); }
    hkv_free(w->kv);
    hkv_free(w->t);
    hkv_free(w);
}

__attribute__((format(printf, 3, 4)))
static void w_fail(gguf_writer *w, hkv_status st, const char *fmt, ...) {
    if (w->st != HKV_OK) return; /* keep the first error */
    w->st = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->msg, sizeof w->msg, fmt, ap);
    va_end(ap);
}

/* Sets key (replacing an existing value) to the serialized value val, taking ownership of val.p. */
static void w_set(gguf_writer *w, const char *key, size_t key_len, gguf_vtype type, wbuf val) {
    if (val.oom) {
        hkv_free(val.p);
        w_fail(w, HKV_ERR_NOMEM, "out of memory storing a GGUF metadata value");
        return;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kv[i].key_len == key_len && memcmp(w->kv[i].key, key, key_len) == 0) {
            hkv_free(w->kv[i].val.p);
            w->kv[i].type = type;
            w->kv[i].val = val;
            return;
        }
    char *k = hkv_malloc(key_len + 1);
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *p = hkv_realloc(w->kv, cap * sizeof *p);
        if (p) { w->kv = p; w->cap_kv = cap; }
    }
    if (!k || w->n_kv == w->cap_kv) {
        hkv_free(k);
        hkv_free(val.p);
        w_fail(w, HKV_ERR_NOMEM, "out of memory storing a GGUF metadata key");
        return;
    }
    memcpy(k, key, key_len);
    k[key_len] = 0;
    w->kv[w->n_kv++] = (wkv){.key = k, .key_len = key_len, .type = type, .val = val};
}

static int w_key_ok(gguf_writer *w, const char *key) {
    if (key && *key) return 1;
    w_fail(w, HKV_ERR_ARG, "a GGUF metadata key must be a non-empty string");
    return 0;
}

static void w_scalar(gguf_writer *w, const char *key, gguf_vtype type, uint64_t bits) {
    if (!w_key_ok(w, key)) return;
    wbuf b = {0};
    switch (vtype_size(type)) {
    case 1: { uint8_t x = (uint8_t)bits; wb_put(&b, &x, 1); break; }
    case 2: wb_u16(&b, (uint16_t)bits); break;
    case 4: wb_u32(&b, (uint32_t)bits); break;
    default: wb_u64(&b, bits); break;
    }
    w_set(w, key, strlen(key), type, b);
}

void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v) { w_scalar(w, key, GGUF_U32, v); }
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v) { w_scalar(w, key, GGUF_I32, (uint32_t)v); }
void gguf_w_u64(gguf_writer *w, const char *key, uint64_t v) { w_scalar(w, key, GGUF_U64, v); }
void gguf_w_bool(gguf_writer *w, const char *key, int v) { w_scalar(w, key, GGUF_BOOL, v != 0); }
void gguf_w_f32(gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    w_scalar(w, key, GGUF_F32, bits);
}

void gguf_w_str(gguf_writer *w, const char *key, const char *v) {
    if (!w_key_ok(w, key)) return;
    if (!v) {
        w_fail(w, HKV_ERR_ARG, "GGUF metadata key \"%s\" was given a NULL string", key);
        return;
    }
    wbuf b = {0};
    wb_str(&b, v, strlen(v));
    w_set(w, key, strlen(key), GGUF_STRING, b);
}

/* data holds n elements of vtype in host layout (GGUF_BOOL: one byte each; GGUF_STRING: const char *). */
void gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype vtype, const void *data, uint64_t n) {
    if (!w_key_ok(w, key)) return;
    if ((unsigned)vtype >= GGUF_VTYPE_COUNT || vtype == GGUF_ARRAY) {
        w_fail(w, HKV_ERR_ARG, "GGUF array \"%s\" has element type %d (arrays of arrays are not supported)",
               key, (int)vtype);
        return;
    }
    size_t es = vtype == GGUF_STRING ? sizeof(const char *) : vtype_size(vtype);
    if (n > SIZE_MAX / es || (n && !data)) {
        w_fail(w, HKV_ERR_ARG, "GGUF array \"%s\" has an invalid element count %llu or no data", key, (ull)n);
        return;
    }
    wbuf b = {0};
    wb_u32(&b, (uint32_t)vtype);
    wb_u64(&b, n);
    const uint8_t *p = data;
    for (uint64_t i = 0; i < n && !b.oom; i++, p += es) {
        if (vtype == GGUF_STRING) {
            const char *s = ((const char *const *)data)[i];
            if (!s) {
                hkv_free(b.p);
                w_fail(w, HKV_ERR_ARG, "GGUF array \"%s\" has a NULL string at index %llu", key, (ull)i);
                return;
            }
            wb_str(&b, s, strlen(s));
        } else if (es == 1) {
            wb_put(&b, p, 1);
        } else if (es == 2) {
            uint16_t x; memcpy(&x, p, 2); wb_u16(&b, x);
        } else if (es == 4) {
            uint32_t x; memcpy(&x, p, 4); wb_u32(&b, x);
        } else {
            uint64_t x; memcpy(&x, p, 8); wb_u64(&b, x);
        }
    }
    w_set(w, key, strlen(key), GGUF_ARRAY, b);
}

void gguf_w_copy_kv(gguf_writer *w, const gguf_file *g, int (*skip)(const char *key)) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        char *key = hkv_malloc((size_t)kv->key.len + 1);
        if (!key) {
            w_fail(w, HKV_ERR_NOMEM, "out of memory copying GGUF metadata");
            return;
        }
        gguf_str_copy(kv->key, key, (size_t)kv->key.len + 1);
        if (!skip || !skip(key)) {
            /* the reader validated the file, so the value bytes can be copied verbatim (both sides are LE) */
            wbuf b = {0};
            if (kv->type == GGUF_ARRAY) {
                wb_u32(&b, (uint32_t)kv->arr_type);
                wb_u64(&b, kv->arr_n);
            }
            wb_put(&b, kv->data, (size_t)gguf_kv_value_bytes(kv));
            w_set(w, kv->key.s, (size_t)kv->key.len, kv->type, b);
        }
        hkv_free(key);
    }
}

hkv_status gguf_w_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                         const void *data, size_t nbytes) {
    if (!name || !*name) {
        w_fail(w, HKV_ERR_ARG, "a GGUF tensor name must be a non-empty string");
        return HKV_ERR_ARG;
    }
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) {
            w_fail(w, HKV_ERR_ARG, "GGUF tensor \"%s\" was added twice", name);
            return HKV_ERR_ARG;
        }
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne || !hkv_type_get(type)->name) {
        w_fail(w, HKV_ERR_ARG, "GGUF tensor \"%s\" has %d dimensions or unknown type %d", name, n_dims, type);
        return HKV_ERR_ARG;
    }
    wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .nbytes = nbytes};
    uint64_t rows = 1, expect = 0;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || (d > 0 && !mul_ok(rows, (uint64_t)ne[d], &rows))) {
            w_fail(w, HKV_ERR_ARG, "GGUF tensor \"%s\" has an invalid size in dimension %d", name, d);
            return HKV_ERR_ARG;
        }
        t.ne[d] = ne[d];
    }
    size_t row = hkv_row_size(type, ne[0]);
    if (row == 0 || !mul_ok(row, rows, &expect) || expect != nbytes || (nbytes && !data)) {
        w_fail(w, HKV_ERR_ARG, "GGUF tensor \"%s\" was given %zu bytes but its shape and type need %llu", name,
               nbytes, (ull)expect);
        return HKV_ERR_ARG;
    }
    t.name = hkv_malloc(strlen(name) + 1);
    t.data = hkv_malloc(nbytes ? nbytes : 1);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *p = hkv_realloc(w->t, cap * sizeof *p);
        if (p) { w->t = p; w->cap_t = cap; }
    }
    if (!t.name || !t.data || w->n_t == w->cap_t) {
        hkv_free(t.name);
        hkv_free(t.data);
        w_fail(w, HKV_ERR_NOMEM, "out of memory storing GGUF tensor \"%s\"", name);
        return HKV_ERR_NOMEM;
    }
    strcpy(t.name, name);
    memcpy(t.data, data, nbytes);
    w->t[w->n_t++] = t;
    return HKV_OK;
}

/* The alignment the file will declare: general.alignment if the caller set a u32 one, else the default. */
static hkv_status w_alignment(gguf_writer *w, uint32_t *align) {
    *align = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, GGUF_KEY_ALIGNMENT) != 0) continue;
        uint32_t a = w->kv[i].type == GGUF_U32 ? le32(w->kv[i].val.p) : 0;
        if (a == 0 || (a & (a - 1)) != 0) {
            w_fail(w, HKV_ERR_ARG, GGUF_KEY_ALIGNMENT " must be a u32 nonzero power of two");
            return HKV_ERR_ARG;
        }
        *align = a;
    }
    return HKV_OK;
}

/* Serializes everything before the data section (padded) and each tensor's data-section offset. */
static hkv_status w_header(gguf_writer *w, uint32_t align, wbuf *h, uint64_t *offsets) {
    wb_u32(h, GGUF_MAGIC);
    wb_u32(h, 3);
    wb_u64(h, w->n_t);
    wb_u64(h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        wb_str(h, w->kv[i].key, w->kv[i].key_len);
        wb_u32(h, (uint32_t)w->kv[i].type);
        wb_put(h, w->kv[i].val.p, w->kv[i].val.n);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        wb_str(h, t->name, strlen(t->name));
        wb_u32(h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) wb_u64(h, (uint64_t)t->ne[d]);
        wb_u32(h, (uint32_t)t->type);
        wb_u64(h, off);
        offsets[i] = off;
        if (!add_ok(off, t->nbytes, &off) || !align_ok(off, align, &off)) {
            w_fail(w, HKV_ERR_ARG, "the GGUF tensors are too large in total");
            return HKV_ERR_ARG;
        }
    }
    wb_zeros(h, (align - h->n % align) % align);
    if (h->oom) {
        w_fail(w, HKV_ERR_NOMEM, "out of memory building the GGUF header");
        return HKV_ERR_NOMEM;
    }
    return HKV_OK;
}

static int write_zeros(FILE *f, uint64_t n) {
    static const uint8_t z[256];
    for (; n > 0; n -= n < sizeof z ? n : sizeof z)
        if (fwrite(z, 1, (size_t)(n < sizeof z ? n : sizeof z), f) != (n < sizeof z ? n : sizeof z)) return 0;
    return 1;
}

hkv_status gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen) {
    uint32_t align;
    wbuf h = {0};
    uint64_t *offsets = hkv_malloc((w->n_t ? w->n_t : 1) * sizeof *offsets);
    if (!offsets) w_fail(w, HKV_ERR_NOMEM, "out of memory writing a GGUF file");
    if (w->st == HKV_OK && w_alignment(w, &align) == HKV_OK) w_header(w, align, &h, offsets);
    if (w->st != HKV_OK) {
        gguf_set_err(err, errlen, "cannot write %s: %s", path, w->msg);
        hkv_free(h.p);
        hkv_free(offsets);
        return w->st;
    }
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(h.p, 1, h.n, f) == h.n;
    uint64_t pos = 0; /* within the data section */
    for (size_t i = 0; ok && i < w->n_t; i++) {
        ok = write_zeros(f, offsets[i] - pos) && fwrite(w->t[i].data, 1, w->t[i].nbytes, f) == w->t[i].nbytes;
        pos = offsets[i] + w->t[i].nbytes;
    }
    int saved = errno;
    if (f && fclose(f) != 0 && ok) { ok = 0; saved = errno; }
    hkv_free(h.p);
    hkv_free(offsets);
    if (!ok) {
        gguf_set_err(err, errlen, "cannot write %s: %s", path, strerror(saved));
        if (f) remove(path);
        return HKV_ERR_IO;
    }
    return HKV_OK;
}

