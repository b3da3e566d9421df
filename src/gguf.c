/* GGUF reader and writer: the only code that knows the file format.
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
#include "gguf.h"
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

#define GGUF_MAGIC 0x46554747u     /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_KEY_ALIGNMENT "general.alignment"
#define MIN_KV_BYTES 14            /* smallest entry: u64 key length + 1 key byte + u32 type + 1-byte value */
#define MIN_TENSOR_BYTES 32        /* u64 name length + u32 n_dims + u64 ne + u32 type + u64 offset */

typedef unsigned long long ull;    /* for printf of u64 values */

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Little-endian loads, independent of the host byte order and of alignment. */
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}
static int add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a) return 0;
    *out = a + b;
    return 1;
}
/* Round x up to a multiple of the power of two a; 0 on overflow. */
static int align_ok(uint64_t x, uint64_t a, uint64_t *out) {
    if (!add_ok(x, a - 1, out)) return 0;
    *out &= ~(a - 1);
    return 1;
}

/* Bytes of one scalar of type t; 0 for strings, arrays and unknown types. */
static size_t vtype_size(uint32_t t) {
    static const uint8_t sz[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_VTYPE_COUNT ? sz[t] : 0;
}

const char *gguf_vtype_name(gguf_vtype t) {
    static const char *names[GGUF_VTYPE_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                                  "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

/* Writes s into out as printable text: control bytes, quote and backslash escaped, at most max_in input
 * bytes (cut on a UTF-8 character boundary, "..." appended). Returns out. */
static char *str_escape(gguf_str s, size_t max_in, char *out, size_t outlen) {
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
    set_err(r->err, r->errlen, "truncated file: %s needs %llu bytes at offset %llu but the file has %llu bytes",
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
        set_err(r->err, r->errlen, "%s has a string of length %llu at offset %llu but only %llu bytes remain",
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
            set_err(r->err, r->errlen, "%s has bool value %u (must be 0 or 1)", r->what, p[i]);
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
        set_err(r->err, r->errlen, "%s is an array of arrays, which is not supported", r->what);
        return HKV_ERR_UNSUPPORTED;
    }
    if (at >= GGUF_VTYPE_COUNT) {
        set_err(r->err, r->errlen, "%s is an array with unknown element type %u", r->what, at);
        return HKV_ERR_FORMAT;
    }
    kv->arr_type = (gguf_vtype)at;
    kv->arr_n = n;
    kv->data = r->base + r->pos;
    if (at == GGUF_STRING) {
        /* each string takes at least its 8-byte length, which bounds n before we allocate */
        if (n > remaining(r) / 8) {
            set_err(r->err, r->errlen, "%s claims %llu strings but only %llu bytes remain", r->what, (ull)n,
                    (ull)remaining(r));
            return HKV_ERR_FORMAT;
        }
        kv->arr_str = malloc((size_t)(n ? n : 1) * sizeof(gguf_str));
        if (!kv->arr_str) {
            set_err(r->err, r->errlen, "out of memory for the %llu strings of %s", (ull)n, r->what);
            return HKV_ERR_NOMEM;
        }
        for (uint64_t i = 0; i < n; i++) TRY(rd_str(r, &kv->arr_str[i]));
        return HKV_OK;
    }
    size_t es = vtype_size(at);
    if (n > remaining(r) / es) {
        set_err(r->err, r->errlen, "%s claims %llu elements of type %s but only %llu bytes remain", r->what,
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
    snprintf(r->what, sizeof r->what, "metadata key \"%s\"", str_escape(kv->key, 64, name, sizeof name));
    if (kv->key.len == 0) {
        set_err(r->err, r->errlen, "metadata entry %llu has an empty key", (ull)i);
        return HKV_ERR_FORMAT;
    }
    uint32_t t;
    TRY(rd_u32(r, &t));
    if (t >= GGUF_VTYPE_COUNT) {
        set_err(r->err, r->errlen, "%s has unknown value type %u", r->what, t);
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
    snprintf(r->what, sizeof r->what, "tensor \"%s\"", str_escape(t->name, 64, name, sizeof name));
    if (t->name.len == 0) {
        set_err(r->err, r->errlen, "tensor %llu has an empty name", (ull)i);
        return HKV_ERR_FORMAT;
    }
    uint32_t nd;
    TRY(rd_u32(r, &nd));
    if (nd < 1 || nd > GGUF_MAX_DIMS) {
        set_err(r->err, r->errlen, "%s has %u dimensions (must be 1 to %d)", r->what, nd, GGUF_MAX_DIMS);
        return HKV_ERR_FORMAT;
    }
    t->n_dims = (int)nd;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        TRY(rd_u64(r, &ne));
        if (ne == 0 || ne > (uint64_t)INT64_MAX) {
            set_err(r->err, r->errlen, "%s has invalid size %lld in dimension %u (must be positive)", r->what,
                    (long long)ne, d);
            return HKV_ERR_FORMAT;
        }
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    TRY(rd_u32(r, &type));
    if (type > INT32_MAX || !hkv_type_get((int)type)->name) {
        set_err(r->err, r->errlen, "%s has unknown ggml tensor type %u", r->what, type);
        return HKV_ERR_UNSUPPORTED;
    }
    t->type = (int)type;
    return rd_u64(r, &t->offset);
}

/* Computes t->nbytes with overflow checks and places the tensor inside the data section. */
static hkv_status place_tensor(reader *r, const gguf_file *g, gguf_tensor *t) {
    char name[80];
    str_escape(t->name, 64, name, sizeof name);
    const hkv_type_traits *tr = hkv_type_get(t->type);
    uint64_t nel = 1, rows = 1, row_bytes, nbytes, start, end;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        if (!mul_ok(nel, (uint64_t)t->ne[d], &nel) || nel > (uint64_t)INT64_MAX) {
            set_err(r->err, r->errlen, "tensor \"%s\" has a shape whose element count overflows", name);
            return HKV_ERR_FORMAT;
        }
    if (tr->block_size <= 0 || t->ne[0] % tr->block_size != 0) {
        set_err(r->err, r->errlen, "tensor \"%s\" has row length %lld, not a multiple of the %s block size %d",
                name, (long long)t->ne[0], tr->name, tr->block_size);
        return HKV_ERR_FORMAT;
    }
    /* check the row size in 64 bits before asking hkv_row_size, which need not check overflow */
    if (!mul_ok((uint64_t)(t->ne[0] / tr->block_size), tr->type_size, &row_bytes) || row_bytes > SIZE_MAX ||
        row_bytes != hkv_row_size(t->type, t->ne[0]) || !mul_ok(rows, (uint64_t)t->ne[1], &rows) ||
        !mul_ok(rows, (uint64_t)t->ne[2], &rows) || !mul_ok(rows, (uint64_t)t->ne[3], &rows) ||
        !mul_ok(row_bytes, rows, &nbytes)) {
        set_err(r->err, r->errlen, "tensor \"%s\" has a byte size that overflows", name);
        return HKV_ERR_FORMAT;
    }
    if (t->offset % g->alignment != 0) {
        set_err(r->err, r->errlen, "tensor \"%s\" has offset %llu, not a multiple of the alignment %u", name,
                (ull)t->offset, g->alignment);
        return HKV_ERR_FORMAT;
    }
    if (!add_ok(g->data_offset, t->offset, &start) || !add_ok(start, nbytes, &end) || end > g->size) {
        set_err(r->err, r->errlen,
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
    gguf_str *v = malloc((size_t)n * sizeof *v);
    if (!v) {
        set_err(r->err, r->errlen, "out of memory checking %llu %ss for duplicates", (ull)n, kind);
        return HKV_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < n; i++) v[i] = *(const gguf_str *)((const char *)first + i * stride);
    qsort(v, (size_t)n, sizeof *v, str_cmp);
    hkv_status st = HKV_OK;
    for (uint64_t i = 1; i < n && st == HKV_OK; i++)
        if (str_cmp(&v[i - 1], &v[i]) == 0) {
            char name[80];
            set_err(r->err, r->errlen, "the file has two %ss named \"%s\"", kind,
                    str_escape(v[i], 64, name, sizeof name));
            st = HKV_ERR_FORMAT;
        }
    free(v);
    return st;
}

static hkv_status parse_header(reader *r, gguf_file *g) {
    snprintf(r->what, sizeof r->what, "the GGUF header");
    uint32_t magic;
    TRY(rd_u32(r, &magic));
    if (magic != GGUF_MAGIC) {
        set_err(r->err, r->errlen, "not a GGUF file (bad magic 0x%08X)", magic);
        return HKV_ERR_FORMAT;
    }
    TRY(rd_u32(r, &g->version));
    if (g->version == 1) {
        set_err(r->err, r->errlen, "GGUF version 1 is not supported (re-convert the file with a current converter)");
        return HKV_ERR_UNSUPPORTED;
    }
    if ((g->version == 0x02000000u || g->version == 0x03000000u)) {
        set_err(r->err, r->errlen, "big-endian GGUF files are not supported");
        return HKV_ERR_UNSUPPORTED;
    }
    if (g->version == 0) {
        set_err(r->err, r->errlen, "invalid GGUF version 0");
        return HKV_ERR_FORMAT;
    }
    if (g->version > 3) {
        set_err(r->err, r->errlen, "GGUF version %u is not supported (only versions 2 and 3 are)", g->version);
        return HKV_ERR_UNSUPPORTED;
    }
    TRY(rd_u64(r, &g->n_tensors));
    TRY(rd_u64(r, &g->n_kv));
    if (g->n_kv > remaining(r) / MIN_KV_BYTES || g->n_tensors > remaining(r) / MIN_TENSOR_BYTES) {
        set_err(r->err, r->errlen, "the header claims %llu metadata entries and %llu tensors, too many for a "
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
        set_err(r->err, r->errlen, GGUF_KEY_ALIGNMENT " has type %s (must be u32)", gguf_vtype_name(kv->type));
        return HKV_ERR_FORMAT;
    }
    uint32_t a = le32(kv->data);
    if (a == 0 || (a & (a - 1)) != 0) {
        set_err(r->err, r->errlen, GGUF_KEY_ALIGNMENT " is %u (must be a nonzero power of two)", a);
        return HKV_ERR_FORMAT;
    }
    g->alignment = a;
    return HKV_OK;
}

/* Parses and validates g->base[0..g->size). */
static hkv_status parse(gguf_file *g, char *err, size_t errlen) {
    reader r = {.base = g->base, .size = g->size, .pos = 0, .err = err, .errlen = errlen};
    TRY(parse_header(&r, g));
    g->kv = calloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof *g->kv);
    if (!g->kv) {
        set_err(err, errlen, "out of memory for %llu metadata entries", (ull)g->n_kv);
        return HKV_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) TRY(parse_kv(&r, i, &g->kv[i]));
    TRY(check_unique(&r, &g->kv[0].key, sizeof(gguf_kv), g->n_kv, "metadata key"));
    TRY(parse_alignment(&r, g));
    if (g->n_tensors > remaining(&r) / MIN_TENSOR_BYTES) {
        set_err(err, errlen, "the header claims %llu tensors but only %llu bytes remain after the metadata",
                (ull)g->n_tensors, (ull)remaining(&r));
        return HKV_ERR_FORMAT;
    }
    g->tensors = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *g->tensors);
    if (!g->tensors) {
        set_err(err, errlen, "out of memory for %llu tensors", (ull)g->n_tensors);
        return HKV_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) TRY(parse_tensor_info(&r, i, &g->tensors[i]));
    TRY(check_unique(&r, &g->tensors[0].name, sizeof(gguf_tensor), g->n_tensors, "tensor"));
    if (!align_ok(r.pos, g->alignment, &g->data_offset)) {
        set_err(err, errlen, "the data section offset overflows");
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
        set_err(err, errlen, "%s: %s", src, msg);
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
        set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return HKV_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        set_err(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return HKV_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        set_err(err, errlen, "cannot read %s: not a regular file", path);
        close(fd);
        return HKV_ERR_IO;
    }
    if (sb.st_size == 0) {
        set_err(err, errlen, "%s: the file is empty, not a GGUF file", path);
        close(fd);
        return HKV_ERR_FORMAT;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        set_err(err, errlen, "%s: the file is too large to map", path);
        close(fd);
        return HKV_ERR_IO;
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        set_err(err, errlen, "cannot map %s: %s", path, strerror(errno));
        close(fd);
        return HKV_ERR_IO;
    }
    gguf_file *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(m, (size_t)sb.st_size);
        close(fd);
        set_err(err, errlen, "out of memory opening %s", path);
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
        set_err(err, errlen, "GGUF buffer: the buffer is empty, not a GGUF file");
        return HKV_ERR_FORMAT;
    }
    gguf_file *g = calloc(1, sizeof *g);
    uint8_t *copy = malloc(len);
    if (!g || !copy) {
        free(g);
        free(copy);
        set_err(err, errlen, "out of memory copying a GGUF buffer of %zu bytes", len);
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
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].arr_str);
    free(g->kv);
    free(g->tensors);
    if (g->mapped) munmap((void *)g->base, (size_t)g->size);
    else free((void *)g->base);
    if (g->fd >= 0) close(g->fd);
    free(g);
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
static int load_int(gguf_vtype t, const uint8_t *p, int64_t *s, uint64_t *u) {
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
    switch (load_int(t, p, &s, &u)) {
    case 1: if (s < 0) return 0; *out = (uint64_t)s; return 1;
    case 2: *out = u; return 1;
    default: return 0;
    }
}

static int load_i64(gguf_vtype t, const uint8_t *p, int64_t *out) {
    int64_t s;
    uint64_t u;
    switch (load_int(t, p, &s, &u)) {
    case 1: *out = s; return 1;
    case 2: if (u > (uint64_t)INT64_MAX) return 0; *out = (int64_t)u; return 1;
    default: return 0;
    }
}

static int load_f64(gguf_vtype t, const uint8_t *p, double *out) {
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
    switch (load_int(t, p, &s, &u)) {
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
    if (!kv || (kv->type != GGUF_F32 && kv->type != GGUF_F64) || !load_f64(kv->type, kv->data, &d)) return 0;
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
    return es && load_f64(kv->arr_type, kv->data + i * es, out);
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
static uint64_t kv_value_bytes(const gguf_kv *kv) {
    if (kv->type == GGUF_STRING) return 8 + le64(kv->data);
    if (kv->type != GGUF_ARRAY) return vtype_size(kv->type);
    if (kv->arr_type != GGUF_STRING) return kv->arr_n * vtype_size(kv->arr_type);
    if (kv->arr_n == 0) return 0;
    const gguf_str *last = &kv->arr_str[kv->arr_n - 1];
    return (uint64_t)((const uint8_t *)last->s + last->len - kv->data);
}

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
        uint8_t *p = realloc(b->p, cap);
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

gguf_writer *gguf_writer_new(void) { return calloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) { free(w->kv[i].key); free(w->kv[i].val.p); }
    for (size_t i = 0; i < w->n_t; i++) { free(w->t[i].name); free(w->t[i].data); }
    free(w->kv);
    free(w->t);
    free(w);
}

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
        free(val.p);
        w_fail(w, HKV_ERR_NOMEM, "out of memory storing a GGUF metadata value");
        return;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kv[i].key_len == key_len && memcmp(w->kv[i].key, key, key_len) == 0) {
            free(w->kv[i].val.p);
            w->kv[i].type = type;
            w->kv[i].val = val;
            return;
        }
    char *k = malloc(key_len + 1);
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *p = realloc(w->kv, cap * sizeof *p);
        if (p) { w->kv = p; w->cap_kv = cap; }
    }
    if (!k || w->n_kv == w->cap_kv) {
        free(k);
        free(val.p);
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
                free(b.p);
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
        char *key = malloc((size_t)kv->key.len + 1);
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
            wb_put(&b, kv->data, (size_t)kv_value_bytes(kv));
            w_set(w, kv->key.s, (size_t)kv->key.len, kv->type, b);
        }
        free(key);
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
    t.name = malloc(strlen(name) + 1);
    t.data = malloc(nbytes ? nbytes : 1);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *p = realloc(w->t, cap * sizeof *p);
        if (p) { w->t = p; w->cap_t = cap; }
    }
    if (!t.name || !t.data || w->n_t == w->cap_t) {
        free(t.name);
        free(t.data);
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
    uint64_t *offsets = malloc((w->n_t ? w->n_t : 1) * sizeof *offsets);
    if (!offsets) w_fail(w, HKV_ERR_NOMEM, "out of memory writing a GGUF file");
    if (w->st == HKV_OK && w_alignment(w, &align) == HKV_OK) w_header(w, align, &h, offsets);
    if (w->st != HKV_OK) {
        set_err(err, errlen, "cannot write %s: %s", path, w->msg);
        free(h.p);
        free(offsets);
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
    free(h.p);
    free(offsets);
    if (!ok) {
        set_err(err, errlen, "cannot write %s: %s", path, strerror(saved));
        if (f) remove(path);
        return HKV_ERR_IO;
    }
    return HKV_OK;
}

/* ------------------------------------------------------------------------------------------ dump */

#define DUMP_STR_MAX 120   /* bytes of a string value shown before "..." */

static void dump_scalar(FILE *f, gguf_vtype t, const uint8_t *p) {
    int64_t s;
    uint64_t u;
    double d;
    char buf[4 * DUMP_STR_MAX + 16];
    if (t == GGUF_STRING) {
        gguf_str str = {le64(p), (const char *)p + 8};
        fprintf(f, "\"%s\"", str_escape(str, DUMP_STR_MAX, buf, sizeof buf));
    } else if (t == GGUF_BOOL) {
        fputs(p[0] ? "true" : "false", f);
    } else if (t == GGUF_F32 || t == GGUF_F64) {
        load_f64(t, p, &d);
        fprintf(f, t == GGUF_F32 ? "%.9g" : "%.17g", d);
    } else if (load_int(t, p, &s, &u) == 1) {
        fprintf(f, "%lld", (long long)s);
    } else if (load_int(t, p, &s, &u) == 2) {
        fprintf(f, "%llu", (ull)u);
    }
}

static void dump_kv(FILE *f, const gguf_kv *kv, int max_items) {
    char key[4 * 128 + 16];
    fprintf(f, "  %s", str_escape(kv->key, 128, key, sizeof key));
    if (kv->type != GGUF_ARRAY) {
        fprintf(f, " (%s) = ", gguf_vtype_name(kv->type));
        dump_scalar(f, kv->type, kv->data);
        fputc('\n', f);
        return;
    }
    fprintf(f, " (array of %llu %s) = [", (ull)kv->arr_n, gguf_vtype_name(kv->arr_type));
    uint64_t show = max_items < 0 || (uint64_t)max_items > kv->arr_n ? kv->arr_n : (uint64_t)max_items;
    size_t es = vtype_size(kv->arr_type);
    for (uint64_t i = 0; i < show; i++) {
        if (i) fputs(", ", f);
        if (kv->arr_type == GGUF_STRING) {
            char buf[4 * DUMP_STR_MAX + 16];
            fprintf(f, "\"%s\"", str_escape(kv->arr_str[i], DUMP_STR_MAX, buf, sizeof buf));
        } else {
            dump_scalar(f, kv->arr_type, kv->data + i * es);
        }
    }
    fprintf(f, "%s]\n", show < kv->arr_n ? (show ? ", ..." : "...") : "");
}

static void dump_tensor(FILE *f, const gguf_tensor *t) {
    char name[4 * 64 + 16], shape[96];
    int o = snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->n_dims; d++)
        o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    snprintf(shape + o, sizeof shape - (size_t)o, "]");
    fprintf(f, "  %-32s %-6s %-24s %12llu %10.3f %12llu\n", str_escape(t->name, 64, name, sizeof name),
            hkv_type_get(t->type)->name, shape, (ull)t->nbytes, (double)t->nbytes / (1024.0 * 1024.0),
            (ull)t->offset);
}

/* max_array_items < 0 prints whole arrays. */
hkv_status hkv_gguf_dump(const char *path, FILE *f, int max_array_items, char *err, size_t errlen) {
    gguf_file *g;
    hkv_status st = gguf_open(path, &g, err, errlen);
    if (st != HKV_OK) return st;
    fprintf(f, "GGUF v%u: %llu metadata keys, %llu tensors, alignment %u, file size %llu bytes (%.2f MiB), "
            "data at offset %llu\n", g->version, (ull)g->n_kv, (ull)g->n_tensors, g->alignment, (ull)g->size,
            (double)g->size / (1024.0 * 1024.0), (ull)g->data_offset);
    fprintf(f, "metadata:\n");
    for (uint64_t i = 0; i < g->n_kv; i++) dump_kv(f, &g->kv[i], max_array_items);
    fprintf(f, "tensors:\n  %-32s %-6s %-24s %12s %10s %12s\n", "name", "type", "shape", "bytes", "MiB",
            "offset");
    uint64_t params = 0, bytes = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        dump_tensor(f, t);
        /* saturate: tensors may overlap, so the sums are not bounded by the file size */
        uint64_t nel = (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]); /* < 2^63, checked on open */
        if (!add_ok(params, nel, &params)) params = UINT64_MAX;
        if (!add_ok(bytes, t->nbytes, &bytes)) bytes = UINT64_MAX;
    }
    fprintf(f, "total: %llu tensors, %llu parameters, %llu bytes (%.2f MiB)\n", (ull)g->n_tensors, (ull)params,
            (ull)bytes, (double)bytes / (1024.0 * 1024.0));
    gguf_close(g);
    if (fflush(f) != 0 || ferror(f)) {
        set_err(err, errlen, "cannot write the dump of %s: %s", path, strerror(errno));
        return HKV_ERR_IO;
    }
    return HKV_OK;
}
