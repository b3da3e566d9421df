/* GGUF reader (the writer is gguf_write.c, the dump gguf_dump.c): the only code that knows the file format.
 *
 * File layout (GGUF v2/v3, little-endian; spec: ggml docs/gguf.md):
 *   u32 magic "GGUF", u32 version, u64 n_tensors, u64 n_kv
 *   n_kv      x { string key, u32 value type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset }
 *   padding up to `alignment` (general.alignment, default 32), then the data section;
 *   every tensor offset is relative to the data section and a multiple of the alignment.
 * A string is u64 length + bytes (no NUL); an array value is u32 element type + u64 count + elements.
 *
 * The reader trusts nothing: every count, length and offset is checked against the bytes that remain and
 * every multiplication/addition against overflow before it is used. Arrays of arrays are rejected with
 * HKV_ERR_UNSUPPORTED (no model format uses them). Tensor types must be known ggml ids with a block layout
 * (hkv_type_get); whether a kernel exists for them (hkv_type_supported) is for the model loader to decide. */
#include "alloc.h"
#include "gguf.h"
#include "gguf_util.h"
#include "tensor.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIN_KV_BYTES 14            /* smallest entry: u64 key length + 1 key byte + u32 type + 1-byte value */
#define MIN_TENSOR_BYTES 32        /* u64 name length + u32 n_dims + u64 ne + u32 type + u64 offset */


void gguf_set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


const char *gguf_vtype_name(gguf_vtype t) {
    static const char *names[GGUF_VTYPE_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                                  "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

/* Writes s into out as printable text: control bytes, quote and backslash escaped, at most max_in input
 * bytes (cut on a UTF-8 character boundary, "..." appended). Returns out. */
char *gguf_str_escape(gguf_str s, size_t max_in, char *out, size_t outlen) {
    size_t n = s.len < max_in ? (size_t)s.len : max_in, o = 0;
    if (n < s.len)
        while (n > 0 && ((unsigned char)s.s[n] & 0xC0) == 0x80) n--; /* don't split a character */
    for (size_t i = 0; i < n && o + 5 < outlen; i++) {
        unsigned char c = (unsigned char)s.s[i];
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c == '\t') { out[o++] = '\\'; out[o++] = 't'; }
        else if (c < 0x20 || c == 0x7F) o += (size_t)snprintf(out + o, outlen - o, "\\x%02X", c);
        else out[o++] = (char)c;
    }
    if (n < s.len && o + 4 <= outlen) { memcpy(out + o, "...", 3); o += 3; }
    if (outlen) out[o < outlen ? o : outlen - 1] = 0;
    return out;
}

/* ------------------------------------------------------------------------------------------ reader */

typedef struct reader {
    const uint8_t *base;  /* start of the file */
    uint64_t size, pos;   /* file size in bytes, cursor */
    char what[160];       /* what is being read, for messages ("metadata key 'x'") */
    char *err;
    size_t errlen;
} reader;

#define TRY(x) do { hkv_status st_ = (x); if (st_ != HKV_OK) return st_; } while (0)

static uint64_t remaining(const reader *r) { return r->size - r->pos; }

static hkv_status need(reader *r, uint64_t n) {
    if (n <= remaining(r)) return HKV_OK;
    gguf_set_err(r->err, r->errlen, "truncated file: %s needs %llu bytes at offset %llu but the file has %llu bytes",
            r->what, (ull)n, (ull)r->pos, (ull)r->size);
    return HKV_ERR_FORMAT;
}
static hkv_status rd_u32(reader *r, uint32_t *v) {
    TRY(need(r, 4));
    *v = le32(r->base + r->pos);
    r->pos += 4;
    return HKV_OK;
}
static hkv_status rd_u64(reader *r, uint64_t *v) {
    TRY(need(r, 8));
    *v = le64(r->base + r->pos);
    r->pos += 8;
    return HKV_OK;
}
static hkv_status rd_str(reader *r, gguf_str *s) {
    uint64_t len;
    TRY(rd_u64(r, &len));
    if (len > remaining(r)) {
        gguf_set_err(r->err, r->errlen, "%s has a string of length %llu at offset %llu but only %llu bytes remain",
                r->what, (ull)len, (ull)(r->pos - 8), (ull)remaining(r));
        return HKV_ERR_FORMAT;
    }
    s->len = len;
    s->s = (const char *)r->base + r->pos;
    r->pos += len;
    return HKV_OK;
}

/* Checks that n bool bytes at p are 0 or 1. */
static hkv_status check_bools(reader *r, const uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1) {
            gguf_set_err(r->err, r->errlen, "%s has bool value %u (must be 0 or 1)", r->what, p[i]);
            return HKV_ERR_FORMAT;
        }
    return HKV_OK;
}

static hkv_status parse_array(reader *r, gguf_kv *kv) {
    uint32_t at;
    uint64_t n;
    TRY(rd_u32(r, &at));
    TRY(rd_u64(r, &n));
    if (at == GGUF_ARRAY) {
        gguf_set_err(r->err, r->errlen, "%s is an array of arrays, which is not supported", r->what);
        return HKV_ERR_UNSUPPORTED;
    }
    if (at >= GGUF_VTYPE_COUNT) {
        gguf_set_err(r->err, r->errlen, "%s is an array with unknown element type %u", r->what, at);
        return HKV_ERR_FORMAT;
    }
    kv->arr_type = (gguf_vtype)at;
    kv->arr_n = n;
    kv->data = r->base + r->pos;
    if (at == GGUF_STRING) {
        /* each string takes at least its 8-byte length, which bounds n before we allocate */
        if (n > remaining(r) / 8) {
            gguf_set_err(r->err, r->errlen, "%s claims %llu strings but only %llu bytes remain", r->what, (ull)n,
                    (ull)remaining(r));
            return HKV_ERR_FORMAT;
        }
        kv->arr_str = hkv_malloc((size_t)(n ? n : 1) * sizeof(gguf_str));
        if (!kv->arr_str) {
            gguf_set_err(r->err, r->errlen, "out of memory for the %llu strings of %s", (ull)n, r->what);
            return HKV_ERR_NOMEM;
        }
        for (uint64_t i = 0; i < n; i++) TRY(rd_str(r, &kv->arr_str[i]));
        return HKV_OK;
    }
    size_t es = vtype_size(at);
    if (n > remaining(r) / es) {
        gguf_set_err(r->err, r->errlen, "%s claims %llu elements of type %s but only %llu bytes remain", r->what,
                (ull)n, gguf_vtype_name((gguf_vtype)at), (ull)remaining(r));
        return HKV_ERR_FORMAT;
    }
    if (at == GGUF_BOOL) TRY(check_bools(r, kv->data, n));
    r->pos += n * es;
    return HKV_OK;
}

static hkv_status parse_kv(reader *r, uint64_t i, gguf_kv *kv) {
    snprintf(r->what, sizeof r->what, "the key of metadata entry %llu", (ull)i);
    TRY(rd_str(r, &kv->key));
    char name[80];
    snprintf(r->what, sizeof r->what, "metadata key \"%s\"", gguf_str_escape(kv->key, 64, name, sizeof name));
    if (kv->key.len == 0) {
        gguf_set_err(r->err, r->errlen, "metadata entry %llu has an empty key", (ull)i);
        return HKV_ERR_FORMAT;
    }
    uint32_t t;
    TRY(rd_u32(r, &t));
    if (t >= GGUF_VTYPE_COUNT) {
        gguf_set_err(r->err, r->errlen, "%s has unknown value type %u", r->what, t);
        return HKV_ERR_FORMAT;
    }
    kv->type = (gguf_vtype)t;
    if (t == GGUF_ARRAY) return parse_array(r, kv);
    kv->data = r->base + r->pos;
    if (t == GGUF_STRING) {
        gguf_str s;
        return rd_str(r, &s);
    }
    TRY(need(r, vtype_size(t)));
    if (t == GGUF_BOOL) TRY(check_bools(r, kv->data, 1));
    r->pos += vtype_size(t);
    return HKV_OK;
}

/* Reads one tensor directory entry (shape and type checks; size/offset checks come later). */
static hkv_status parse_tensor_info(reader *r, uint64_t i, gguf_tensor *t) {
    snprintf(r->what, sizeof r->what, "the name of tensor %llu", (ull)i);
    TRY(rd_str(r, &t->name));
    char name[80];
    snprintf(r->what, sizeof r->what, "tensor \"%s\"", gguf_str_escape(t->name, 64, name, sizeof name));
    if (t->name.len == 0) {
        gguf_set_err(r->err, r->errlen, "tensor %llu has an empty name", (ull)i);
        return HKV_ERR_FORMAT;
    }
    uint32_t nd;
    TRY(rd_u32(r, &nd));
    if (nd < 1 || nd > GGUF_MAX_DIMS) {
        gguf_set_err(r->err, r->errlen, "%s has %u dimensions (must be 1 to %d)", r->what, nd, GGUF_MAX_DIMS);
        return HKV_ERR_FORMAT;
    }
    t->n_dims = (int)nd;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        TRY(rd_u64(r, &ne));
        if (ne == 0 || ne > (uint64_t)INT64_MAX) {
            gguf_set_err(r->err, r->errlen, "%s has invalid size %lld in dimension %u (must be positive)", r->what,
                    (long long)ne, d);
            return HKV_ERR_FORMAT;
        }
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    TRY(rd_u32(r, &type));
    if (type > INT32_MAX || !hkv_type_get((int)type)->name) {
        gguf_set_err(r->err, r->errlen, "%s has unknown ggml tensor type %u", r->what, type);
        return HKV_ERR_UNSUPPORTED;
    }
    t->type = (int)type;
    return rd_u64(r, &t->offset);
}

/* Computes t->nbytes with overflow checks and places the tensor inside the data section. */
static hkv_status place_tensor(reader *r, const gguf_file *g, gguf_tensor *t) {
    char name[80];
    gguf_str_escape(t->name, 64, name, sizeof name);
    const hkv_type_traits *tr = hkv_type_get(t->type);
    uint64_t nel = 1, rows = 1, row_bytes, nbytes, start, end;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        if (!mul_ok(nel, (uint64_t)t->ne[d], &nel) || nel > (uint64_t)INT64_MAX) {
            gguf_set_err(r->err, r->errlen, "tensor \"%s\" has a shape whose element count overflows", name);
            return HKV_ERR_FORMAT;
        }
    if (tr->block_size <= 0 || t->ne[0] % tr->block_size != 0) {
        gguf_set_err(r->err, r->errlen, "tensor \"%s\" has row length %lld, not a multiple of the %s block size %d",
                name, (long long)t->ne[0], tr->name, tr->block_size);
        return HKV_ERR_FORMAT;
    }
    /* check the row size in 64 bits before asking hkv_row_size, which need not check overflow */
    if (!mul_ok((uint64_t)(t->ne[0] / tr->block_size), tr->type_size, &row_bytes) || row_bytes > SIZE_MAX ||
        row_bytes != hkv_row_size(t->type, t->ne[0]) || !mul_ok(rows, (uint64_t)t->ne[1], &rows) ||
        !mul_ok(rows, (uint64_t)t->ne[2], &rows) || !mul_ok(rows, (uint64_t)t->ne[3], &rows) ||
        !mul_ok(row_bytes, rows, &nbytes)) {
        gguf_set_err(r->err, r->errlen, "tensor \"%s\" has a byte size that overflows", name);
        return HKV_ERR_FORMAT;
    }
    if (t->offset % g->alignment != 0) {
        gguf_set_err(r->err, r->errlen, "tensor \"%s\" has offset %llu, not a multiple of the alignment %u", name,
                (ull)t->offset, g->alignment);
        return HKV_ERR_FORMAT;
    }
    if (!add_ok(g->data_offset, t->offset, &start) || !add_ok(start, nbytes, &end) || end > g->size) {
        gguf_set_err(r->err, r->errlen,
                "tensor \"%s\" (%llu bytes at data offset %llu) extends past the end of the file (%llu bytes)",
                name, (ull)nbytes, (ull)t->offset, (ull)g->size);
        return HKV_ERR_FORMAT;
    }
    t->nbytes = nbytes;
    t->data = g->base + start;
    return HKV_OK;
}

static int str_cmp(const void *a, const void *b) {
    const gguf_str *x = a, *y = b;
    uint64_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->s, y->s, (size_t)n) : 0;
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Finds a duplicate among n strings (sorted copy, so O(n log n) even for hostile files). */
static hkv_status check_unique(reader *r, const gguf_str *first, size_t stride, uint64_t n, const char *kind) {
    if (n < 2) return HKV_OK;
    gguf_str *v = hkv_malloc((size_t)n * sizeof *v);
    if (!v) {
        gguf_set_err(r->err, r->errlen, "out of memory checking %llu %ss for duplicates", (ull)n, kind);
        return HKV_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < n; i++) v[i] = *(const gguf_str *)((const char *)first + i * stride);
    qsort(v, (size_t)n, sizeof *v, str_cmp);
    hkv_status st = HKV_OK;
    for (uint64_t i = 1; i < n && st == HKV_OK; i++)
        if (str_cmp(&v[i - 1], &v[i]) == 0) {
            char name[80];
            gguf_set_err(r->err, r->errlen, "the file has two %ss named \"%s\"", kind,
                    gguf_str_escape(v[i], 64, name, sizeof name));
            st = HKV_ERR_FORMAT;
        }
    hkv_free(v);
    return st;
}

static hkv_status parse_header(reader *r, gguf_file *g) {
    snprintf(r->what, sizeof r->what, "the GGUF header");
    uint32_t magic;
    TRY(rd_u32(r, &magic));
    if (magic != GGUF_MAGIC) {
        gguf_set_err(r->err, r->errlen, "not a GGUF file (bad magic 0x%08X)", magic);
        return HKV_ERR_FORMAT;
    }
    TRY(rd_u32(r, &g->version));
    if (g->version == 1) {
        gguf_set_err(r->err, r->errlen, "GGUF version 1 is not supported (re-convert the file with a current converter)");
        return HKV_ERR_UNSUPPORTED;
    }
    if ((g->version == 0x02000000u || g->version == 0x03000000u)) {
        gguf_set_err(r->err, r->errlen, "big-endian GGUF files are not supported");
        return HKV_ERR_UNSUPPORTED;
    }
    if (g->version == 0) {
        gguf_set_err(r->err, r->errlen, "invalid GGUF version 0");
        return HKV_ERR_FORMAT;
    }
    if (g->version > 3) {
        gguf_set_err(r->err, r->errlen, "GGUF version %u is not supported (only versions 2 and 3 are)", g->version);
        return HKV_ERR_UNSUPPORTED;
    }
    TRY(rd_u64(r, &g->n_tensors));
    TRY(rd_u64(r, &g->n_kv));
    if (g->n_kv > remaining(r) / MIN_KV_BYTES || g->n_tensors > remaining(r) / MIN_TENSOR_BYTES) {
        gguf_set_err(r->err, r->errlen, "the header claims %llu metadata entries and %llu tensors, too many for a "
                "file of %llu bytes", (ull)g->n_kv, (ull)g->n_tensors, (ull)r->size);
        return HKV_ERR_FORMAT;
    }
    return HKV_OK;
}

/* Reads general.alignment if present: a u32, nonzero power of two. */
static hkv_status parse_alignment(reader *r, gguf_file *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(g, GGUF_KEY_ALIGNMENT);
    if (!kv) return HKV_OK;
    if (kv->type != GGUF_U32) {
        gguf_set_err(r->err, r->errlen, GGUF_KEY_ALIGNMENT " has type %s (must be u32)", gguf_vtype_name(kv->type));
        return HKV_ERR_FORMAT;
    }
    uint32_t a = le32(kv->data);
    if (a == 0 || (a & (a - 1)) != 0) {
        gguf_set_err(r->err, r->errlen, GGUF_KEY_ALIGNMENT " is %u (must be a nonzero power of two)", a);
        return HKV_ERR_FORMAT;
    }
    g->alignment = a;
    return HKV_OK;
}

/* Parses and validates g->base[0..g->size). */
static hkv_status parse(gguf_file *g, char *err, size_t errlen) {
    reader r = {.base = g->base, .size = g->size, .pos = 0, .err = err, .errlen = errlen};
    TRY(parse_header(&r, g));
    g->kv = hkv_calloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof *g->kv);
    if (!g->kv) {
        gguf_set_err(err, errlen, "out of memory for %llu metadata entries", (ull)g->n_kv);
        return HKV_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) TRY(parse_kv(&r, i, &g->kv[i]));
    TRY(check_unique(&r, &g->kv[0].key, sizeof(gguf_kv), g->n_kv, "metadata key"));
    TRY(parse_alignment(&r, g));
    if (g->n_tensors > remaining(&r) / MIN_TENSOR_BYTES) {
        gguf_set_err(err, errlen, "the header claims %llu tensors but only %llu bytes remain after the metadata",
                (ull)g->n_tensors, (ull)remaining(&r));
        return HKV_ERR_FORMAT;
    }
    g->tensors = hkv_calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *g->tensors);
    if (!g->tensors) {
        gguf_set_err(err, errlen, "out of memory for %llu tensors", (ull)g->n_tensors);
        return HKV_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) TRY(parse_tensor_info(&r, i, &g->tensors[i]));
    TRY(check_unique(&r, &g->tensors[0].name, sizeof(gguf_tensor), g->n_tensors, "tensor"));
    if (!align_ok(r.pos, g->alignment, &g->data_offset)) {
        gguf_set_err(err, errlen, "the data section offset overflows");
        return HKV_ERR_FORMAT;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) TRY(place_tensor(&r, g, &g->tensors[i]));
    return HKV_OK;
}

/* Parses g (base/size set); on failure frees it and prefixes the message with the source name. */
static hkv_status open_common(gguf_file *g, const char *src, gguf_file **out, char *err, size_t errlen) {
    char msg[512] = "";
    hkv_status st = parse(g, msg, sizeof msg);
    if (st != HKV_OK) {
        gguf_set_err(err, errlen, "%s: %s", src, msg);
        gguf_close(g);
        return st;
    }
    *out = g;
    return HKV_OK;
}

hkv_status gguf_open(const char *path, gguf_file **out, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gguf_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return HKV_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        gguf_set_err(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return HKV_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        gguf_set_err(err, errlen, "cannot read %s: not a regular file", path);
        close(fd);
        return HKV_ERR_IO;
    }
    if (sb.st_size == 0) {
        gguf_set_err(err, errlen, "%s: the file is empty, not a GGUF file", path);
        close(fd);
        return HKV_ERR_FORMAT;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        gguf_set_err(err, errlen, "%s: the file is too large to map", path);
        close(fd);
        return HKV_ERR_IO;
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        gguf_set_err(err, errlen, "cannot map %s: %s", path, strerror(errno));
        close(fd);
        return HKV_ERR_IO;
    }
    gguf_file *g = hkv_calloc(1, sizeof *g);
    if (!g) {
        munmap(m, (size_t)sb.st_size);
        close(fd);
        gguf_set_err(err, errlen, "out of memory opening %s", path);
        return HKV_ERR_NOMEM;
    }
    g->base = m;
    g->size = (uint64_t)sb.st_size;
    g->fd = fd;
    g->mapped = 1;
    return open_common(g, path, out, err, errlen);
}

hkv_status gguf_open_memory(const void *buf, size_t len, gguf_file **out, char *err, size_t errlen) {
    *out = NULL;
    if (len == 0) {
        gguf_set_err(err, errlen, "GGUF buffer: the buffer is empty, not a GGUF file");
        return HKV_ERR_FORMAT;
    }
    gguf_file *g = hkv_calloc(1, sizeof *g);
    uint8_t *copy = hkv_malloc(len);
    if (!g || !copy) {
        hkv_free(g);
        hkv_free(copy);
        gguf_set_err(err, errlen, "out of memory copying a GGUF buffer of %zu bytes", len);
        return HKV_ERR_NOMEM;
    }
    memcpy(copy, buf, len);
    g->base = copy;
    g->size = len;
    g->fd = -1;
    g->mapped = 0;
    return open_common(g, "GGUF buffer", out, err, errlen);
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) hkv_free(g->kv[i].arr_str);
    hkv_free(g->kv);
    hkv_free(g->tensors);
    if (g->mapped) munmap((void *)g->base, (size_t)g->size);
    else hkv_free((void *)g->base);
    if (g->fd >= 0) close(g->fd);
    hkv_free(g);
}

/* ------------------------------------------------------------------------------------------ lookups */

static int str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.s, c, n) == 0;
}

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

/* Integer of type t at p: returns 1 with *s set (signed types), 2 with *u set (unsigned), 0 if t is not an
 * integer type. */
int gguf_load_int(gguf_vtype t, const uint8_t *p, int64_t *s, uint64_t *u) {
    switch (t) {
    case GGUF_U8: *u = p[0]; return 2;
    case GGUF_U16: *u = le16(p); return 2;
    case GGUF_U32: *u = le32(p); return 2;
    case GGUF_U64: *u = le64(p); return 2;
    case GGUF_I8: *s = (int8_t)p[0]; return 1;
    case GGUF_I16: *s = (int16_t)le16(p); return 1;
    case GGUF_I32: *s = (int32_t)le32(p); return 1;
    case GGUF_I64: *s = (int64_t)le64(p); return 1;
    default: return 0;
    }
}

static int load_u64(gguf_vtype t, const uint8_t *p, uint64_t *out) {
    int64_t s;
    uint64_t u;
    switch (gguf_load_int(t, p, &s, &u)) {
    case 1: if (s < 0) return 0; *out = (uint64_t)s; return 1;
    case 2: *out = u; return 1;
    default: return 0;
    }
}

static int load_i64(gguf_vtype t, const uint8_t *p, int64_t *out) {
    int64_t s;
    uint64_t u;
    switch (gguf_load_int(t, p, &s, &u)) {
    case 1: *out = s; return 1;
    case 2: if (u > (uint64_t)INT64_MAX) return 0; *out = (int64_t)u; return 1;
    default: return 0;
    }
}

int gguf_load_f64(gguf_vtype t, const uint8_t *p, double *out) {
    if (t == GGUF_F32) {
        uint32_t b = le32(p);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
        return 1;
    }
    if (t == GGUF_F64) {
        uint64_t b = le64(p);
        memcpy(out, &b, 8);
        return 1;
    }
    int64_t s;
    uint64_t u;
    switch (gguf_load_int(t, p, &s, &u)) {
    case 1: *out = (double)s; return 1;
    case 2: *out = (double)u; return 1;
    default: return 0;
    }
}

int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out) {
    const gguf_kv *kv = gguf_find(g, key);
    return kv && load_u64(kv->type, kv->data, out);
}

int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find(g, key);
    return kv && load_i64(kv->type, kv->data, out);
}

int gguf_get_f32(const gguf_file *g, const char *key, float *out) {
    const gguf_kv *kv = gguf_find(g, key);
    double d;
    if (!kv || (kv->type != GGUF_F32 && kv->type != GGUF_F64) || !gguf_load_f64(kv->type, kv->data, &d)) return 0;
    *out = (float)d;
    return 1;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *out) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv || kv->type != GGUF_BOOL) return 0;
    *out = kv->data[0] != 0;
    return 1;
}

int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv || kv->type != GGUF_STRING) return 0;
    out->len = le64(kv->data);
    out->s = (const char *)kv->data + 8;
    return 1;
}

int gguf_arr_f64(const gguf_kv *kv, uint64_t i, double *out) {
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n || kv->arr_type == GGUF_BOOL) return 0;
    size_t es = vtype_size(kv->arr_type);
    return es && gguf_load_f64(kv->arr_type, kv->data + i * es, out);
}

int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out) {
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n) return 0;
    size_t es = vtype_size(kv->arr_type);
    return es && load_i64(kv->arr_type, kv->data + i * es, out);
}

void gguf_str_copy(gguf_str s, char *buf, size_t buflen) {
    if (!buflen) return;
    size_t n = s.len < buflen - 1 ? (size_t)s.len : buflen - 1;
    if (n) memcpy(buf, s.s, n);
    buf[n] = 0;
}

/* Bytes of kv's value as stored in the file, excluding the u32 type (arrays: excluding type and count). */
uint64_t gguf_kv_value_bytes(const gguf_kv *kv) {
    if (kv->type == GGUF_STRING) return 8 + le64(kv->data);
    if (kv->type != GGUF_ARRAY) return vtype_size(kv->type);
    if (kv->arr_type != GGUF_STRING) return kv->arr_n * vtype_size(kv->arr_type);
    if (kv->arr_n == 0) return 0;
    const gguf_str *last = &kv->arr_str[kv->arr_n - 1];
    return (uint64_t)((const uint8_t *)last->s + last->len - kv->data);
}

