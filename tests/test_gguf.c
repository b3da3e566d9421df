/* GGUF reader/writer: writer round trip of every value type and several tensor types, key copying, typed
 * getters, hand-built malformed files that must fail cleanly with the right status, every truncation and
 * single-byte corruption of a small file, and the real stories260K model (reader + dump). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "tensor.h"
#include "testutil.h"

/* ------------------------------------------------------------------ raw little-endian file builder */

typedef struct bb { uint8_t p[4096]; size_t n; } bb;

static void put(bb *b, const void *src, size_t n) {
    if (b->n + n > sizeof b->p) { fprintf(stderr, "test builder overflow\n"); exit(2); }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u8(bb *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(bb *b, uint16_t v) { put_u8(b, (uint8_t)v); put_u8(b, (uint8_t)(v >> 8)); }
static void put_u32(bb *b, uint32_t v) { put_u16(b, (uint16_t)v); put_u16(b, (uint16_t)(v >> 16)); }
static void put_u64(bb *b, uint64_t v) { put_u32(b, (uint32_t)v); put_u32(b, (uint32_t)(v >> 32)); }
static void put_str(bb *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }
static void pad_to(bb *b, size_t a) { while (b->n % a) put_u8(b, 0); }

/* A small file: 3 keys (general.architecture = "llama", test.val, optional general.alignment) and two F32
 * tensors t0 [8] (shape/type/offset controlled here) and t1 [8]. Every field can be corrupted. */
typedef struct fspec {
    uint32_t magic, version;
    int override_counts;         /* 1: write hdr_n_tensors / hdr_n_kv instead of the real counts */
    uint64_t hdr_n_tensors, hdr_n_kv;
    uint64_t arch_len;           /* length field of the "llama" string (5 = correct) */
    uint32_t val_type;           /* value type of test.val */
    uint8_t bool_byte;           /* its value when val_type is GGUF_BOOL */
    uint32_t arr_type;           /* element type when val_type is GGUF_ARRAY */
    uint64_t arr_n;              /* element count written (4 elements are actually present) */
    int align_kind;              /* 0: no general.alignment, 1: u32 align_val, 2: i32 align_val */
    uint32_t align_val;
    const char *t1_name;         /* name of the second tensor */
    uint32_t n_dims, ttype;      /* t0 */
    uint64_t ne[5], offset;
} fspec;

static fspec spec_ok(void) {
    return (fspec){.magic = 0x46554747u, .version = 3, .arch_len = 5, .val_type = GGUF_U32, .arr_type = GGUF_U16,
                   .arr_n = 4, .t1_name = "t1", .n_dims = 1, .ttype = HKV_TYPE_F32, .ne = {8, 1, 1, 1, 1}};
}

static void build(const fspec *s, bb *b) {
    memset(b, 0, sizeof *b);
    uint32_t align = s->align_kind == 1 && s->align_val && !(s->align_val & (s->align_val - 1)) ? s->align_val : 32;
    uint64_t n_kv = s->align_kind ? 3 : 2;
    put_u32(b, s->magic);
    put_u32(b, s->version);
    put_u64(b, s->override_counts ? s->hdr_n_tensors : 2);
    put_u64(b, s->override_counts ? s->hdr_n_kv : n_kv);
    put_str(b, "general.architecture");
    put_u32(b, GGUF_STRING);
    put_u64(b, s->arch_len);
    put(b, "llama", 5);
    put_str(b, "test.val");
    put_u32(b, s->val_type);
    if (s->val_type == GGUF_STRING) put_str(b, "abc");
    else if (s->val_type == GGUF_BOOL) put_u8(b, s->bool_byte);
    else if (s->val_type == GGUF_ARRAY) {
        put_u32(b, s->arr_type);
        put_u64(b, s->arr_n);
        for (int i = 0; i < 4; i++) put_u16(b, (uint16_t)(100 + i));
    } else if (s->val_type == GGUF_U32) put_u32(b, 7);
    else put_u64(b, 7); /* only reached for invalid types, where parsing stops at the type */
    if (s->align_kind) {
        put_str(b, "general.alignment");
        put_u32(b, s->align_kind == 1 ? GGUF_U32 : GGUF_I32);
        put_u32(b, s->align_val);
    }
    put_str(b, "t0");
    put_u32(b, s->n_dims);
    for (uint32_t d = 0; d < s->n_dims && d < 5; d++) put_u64(b, s->ne[d]);
    put_u32(b, s->ttype);
    put_u64(b, s->offset);
    uint64_t t1_off = align > 32 ? align : 32;
    put_str(b, s->t1_name);
    put_u32(b, 1);
    put_u64(b, 8);
    put_u32(b, HKV_TYPE_F32);
    put_u64(b, t1_off);
    pad_to(b, align);
    for (uint64_t i = 0; i < t1_off + 32; i++) put_u8(b, (uint8_t)i);
}

/* Opens the built file from memory; checks status and that a failure comes with a message naming what. */
static void expect(const fspec *s, hkv_status want, const char *what, const char *msg_part) {
    bb b;
    build(s, &b);
    char err[512] = "";
    gguf_file *g = (gguf_file *)1;
    hkv_status st = gguf_open_memory(b.p, b.n, &g, err, sizeof err);
    CHECKF(st == want, "%s: got status %d want %d (%s)", what, st, want, err);
    if (st == HKV_OK) {
        CHECK(g != NULL);
        gguf_close(g);
    } else {
        CHECKF(g == NULL, "%s: out not cleared", what);
        CHECKF(err[0] != 0, "%s: empty message", what);
        CHECKF(!msg_part || strstr(err, msg_part), "%s: message \"%s\" lacks \"%s\"", what, err, msg_part);
    }
}

static int ok_status(hkv_status st) {
    return st == HKV_OK || st == HKV_ERR_FORMAT || st == HKV_ERR_UNSUPPORTED;
}

static void test_small_valid(void) {
    fspec s = spec_ok();
    bb b;
    build(&s, &b);
    gguf_file *g;
    char err[512] = "";
    hkv_status st = gguf_open_memory(b.p, b.n, &g, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st != HKV_OK) return;
    CHECK(g->version == 3 && g->n_kv == 2 && g->n_tensors == 2 && g->alignment == 32 && g->mapped == 0);
    CHECK(g->data_offset % 32 == 0 && g->data_offset + 64 == g->size);
    gguf_str a;
    char buf[16];
    CHECK(gguf_get_str(g, "general.architecture", &a) && a.len == 5);
    gguf_str_copy(a, buf, sizeof buf);
    CHECK(strcmp(buf, "llama") == 0);
    gguf_str_copy(a, buf, 3); /* truncates */
    CHECK(strcmp(buf, "ll") == 0);
    const gguf_tensor *t1 = gguf_find_tensor(g, "t1");
    CHECK(t1 && t1->offset == 32 && t1->nbytes == 32 && t1->data == g->base + g->data_offset + 32);
    CHECK(t1 && ((const uint8_t *)t1->data)[0] == 32);
    CHECK(gguf_find_tensor(g, "t2") == NULL && gguf_find(g, "nope") == NULL);
    gguf_close(g);

    /* every prefix must fail cleanly (the last tensor ends at end of file), the whole file must open */
    for (size_t n = 0; n < b.n; n++) {
        err[0] = 0;
        st = gguf_open_memory(b.p, n, &g, err, sizeof err);
        CHECKF(st == HKV_ERR_FORMAT && err[0], "prefix %zu: status %d (%s)", n, st, err);
        if (st == HKV_OK) gguf_close(g);
    }
    /* every single-byte corruption: any outcome but a crash; failures carry a message */
    static const uint8_t vals[] = {0x00, 0x01, 0x05, 0x7F, 0x80, 0xFF};
    for (size_t i = 0; i < b.n; i++)
        for (size_t v = 0; v < sizeof vals; v++) {
            bb c = b;
            c.p[i] = vals[v];
            err[0] = 0;
            st = gguf_open_memory(c.p, c.n, &g, err, sizeof err);
            CHECKF(ok_status(st) && (st == HKV_OK || err[0]), "byte %zu = %u: status %d", i, vals[v], st);
            if (st == HKV_OK) gguf_close(g);
        }
}

static void test_malformed(void) {
    fspec s;
    s = spec_ok(); s.magic = 0x46554746u; expect(&s, HKV_ERR_FORMAT, "bad magic", "magic");
    s = spec_ok(); s.version = 1; expect(&s, HKV_ERR_UNSUPPORTED, "version 1", "version 1");
    s = spec_ok(); s.version = 99; expect(&s, HKV_ERR_UNSUPPORTED, "version 99", "99");
    s = spec_ok(); s.version = 0; expect(&s, HKV_ERR_FORMAT, "version 0", "version");
    s = spec_ok(); s.version = 0x03000000u; expect(&s, HKV_ERR_UNSUPPORTED, "big endian", "big-endian");
    s = spec_ok(); s.version = 2; expect(&s, HKV_OK, "version 2", NULL);
    s = spec_ok(); s.override_counts = 1; s.hdr_n_tensors = 2; s.hdr_n_kv = 1ull << 62;
    expect(&s, HKV_ERR_FORMAT, "n_kv 2^62", "metadata entries");
    s = spec_ok(); s.override_counts = 1; s.hdr_n_tensors = 1ull << 62; s.hdr_n_kv = 2;
    expect(&s, HKV_ERR_FORMAT, "n_tensors 2^62", "tensors");
    s = spec_ok(); s.override_counts = 1; s.hdr_n_tensors = UINT64_MAX; s.hdr_n_kv = UINT64_MAX;
    expect(&s, HKV_ERR_FORMAT, "counts 2^64-1", NULL);
    s = spec_ok(); s.override_counts = 1; s.hdr_n_tensors = 3; s.hdr_n_kv = 2;
    expect(&s, HKV_ERR_FORMAT, "one tensor too many", NULL);
    s = spec_ok(); s.arch_len = 1ull << 63; expect(&s, HKV_ERR_FORMAT, "huge string", "length");
    s = spec_ok(); s.arch_len = UINT64_MAX; expect(&s, HKV_ERR_FORMAT, "string length 2^64-1", "length");
    s = spec_ok(); s.val_type = 13; expect(&s, HKV_ERR_FORMAT, "value type 13", "13");
    s = spec_ok(); s.val_type = 0xFFFFFFFFu; expect(&s, HKV_ERR_FORMAT, "value type 2^32-1", "4294967295");
    s = spec_ok(); s.val_type = GGUF_BOOL; s.bool_byte = 2; expect(&s, HKV_ERR_FORMAT, "bool 2", "bool");
    s = spec_ok(); s.val_type = GGUF_BOOL; s.bool_byte = 1; expect(&s, HKV_OK, "bool 1", NULL);
    s = spec_ok(); s.val_type = GGUF_ARRAY; expect(&s, HKV_OK, "u16 array", NULL);
    s = spec_ok(); s.val_type = GGUF_ARRAY; s.arr_n = 1ull << 61; expect(&s, HKV_ERR_FORMAT, "array 2^61", "elements");
    s = spec_ok(); s.val_type = GGUF_ARRAY; s.arr_type = GGUF_STRING; s.arr_n = 1ull << 60;
    expect(&s, HKV_ERR_FORMAT, "string array 2^60", "strings");
    s = spec_ok(); s.val_type = GGUF_ARRAY; s.arr_type = GGUF_ARRAY; expect(&s, HKV_ERR_UNSUPPORTED, "nested array", "array");
    s = spec_ok(); s.val_type = GGUF_ARRAY; s.arr_type = 77; expect(&s, HKV_ERR_FORMAT, "array type 77", "77");
    s = spec_ok(); s.ttype = 99; expect(&s, HKV_ERR_UNSUPPORTED, "tensor type 99", "99");
    s = spec_ok(); s.ttype = 4; expect(&s, HKV_ERR_UNSUPPORTED, "removed tensor type 4", "type 4");
    s = spec_ok(); s.ttype = 0x80000000u; expect(&s, HKV_ERR_UNSUPPORTED, "tensor type 2^31", "2147483648");
    s = spec_ok(); s.offset = 1 << 20; expect(&s, HKV_ERR_FORMAT, "offset past end", "past the end");
    s = spec_ok(); s.offset = 64; expect(&s, HKV_ERR_FORMAT, "data runs past end", "past the end");
    s = spec_ok(); s.offset = UINT64_MAX - 31; expect(&s, HKV_ERR_FORMAT, "offset overflow", NULL);
    s = spec_ok(); s.offset = 4; expect(&s, HKV_ERR_FORMAT, "misaligned offset", "alignment");
    s = spec_ok(); s.align_kind = 1; s.align_val = 0; expect(&s, HKV_ERR_FORMAT, "alignment 0", "alignment");
    s = spec_ok(); s.align_kind = 1; s.align_val = 3; expect(&s, HKV_ERR_FORMAT, "alignment 3", "alignment");
    s = spec_ok(); s.align_kind = 2; s.align_val = 32; expect(&s, HKV_ERR_FORMAT, "alignment as i32", "alignment");
    s = spec_ok(); s.align_kind = 1; s.align_val = 64; expect(&s, HKV_OK, "alignment 64", NULL);
    s = spec_ok(); s.align_kind = 1; s.align_val = 64; s.offset = 32;
    expect(&s, HKV_ERR_FORMAT, "offset aligned to 32 but not 64", "alignment 64");
    s = spec_ok(); s.n_dims = 5; expect(&s, HKV_ERR_FORMAT, "n_dims 5", "dimensions");
    s = spec_ok(); s.n_dims = 0; expect(&s, HKV_ERR_FORMAT, "n_dims 0", "dimensions");
    s = spec_ok(); s.ne[0] = 0; expect(&s, HKV_ERR_FORMAT, "zero dim", "dimension 0");
    s = spec_ok(); s.n_dims = 2; s.ne[1] = (uint64_t)-1; expect(&s, HKV_ERR_FORMAT, "negative dim", "-1");
    s = spec_ok(); s.n_dims = 3; s.ne[0] = s.ne[1] = s.ne[2] = 1ull << 32;
    expect(&s, HKV_ERR_FORMAT, "element count overflow", "overflow");
    s = spec_ok(); s.n_dims = 1; s.ne[0] = 1ull << 62; expect(&s, HKV_ERR_FORMAT, "byte size overflow", "overflow");
    s = spec_ok(); s.n_dims = 2; s.ne[0] = 1ull << 40; s.ne[1] = 1ull << 20;
    expect(&s, HKV_ERR_FORMAT, "huge tensor", "past the end");
    s = spec_ok(); s.ttype = HKV_TYPE_Q8_0; expect(&s, HKV_ERR_FORMAT, "Q8_0 row of 8", "block size");
    s = spec_ok(); s.t1_name = "t0"; expect(&s, HKV_ERR_FORMAT, "duplicate tensor", "t0");
    s = spec_ok(); s.t1_name = ""; expect(&s, HKV_ERR_FORMAT, "empty tensor name", "empty");
}

/* Duplicate keys and an empty key, which the spec builder cannot express. */
static void test_bad_keys(void) {
    for (int dup = 0; dup < 2; dup++) {
        bb b = {.n = 0};
        put_u32(&b, 0x46554747u);
        put_u32(&b, 3);
        put_u64(&b, 0);
        put_u64(&b, 2);
        put_str(&b, "a.b");
        put_u32(&b, GGUF_U8);
        put_u8(&b, 1);
        put_str(&b, dup ? "a.b" : "");
        put_u32(&b, GGUF_U8);
        put_u8(&b, 2);
        gguf_file *g = NULL;
        char err[256] = "";
        hkv_status st = gguf_open_memory(b.p, b.n, &g, err, sizeof err);
        CHECKF(st == HKV_ERR_FORMAT && strstr(err, dup ? "a.b" : "empty"), "dup=%d: %d %s", dup, st, err);
        if (st == HKV_OK) gguf_close(g);
    }
}

static void test_io_errors(void) {
    gguf_file *g = NULL;
    char err[512] = "";
    hkv_status st = gguf_open("/nonexistent/dir/x.gguf", &g, err, sizeof err);
    CHECK(st == HKV_ERR_IO && g == NULL && strstr(err, "/nonexistent/dir/x.gguf") && strstr(err, "No such file"));
    st = gguf_open("/tmp", &g, err, sizeof err);
    CHECKF(st == HKV_ERR_IO && strstr(err, "/tmp"), "directory: %d %s", st, err);
    const char *empty = tu_tmp("empty.gguf");
    FILE *f = fopen(empty, "wb");
    if (f) fclose(f);
    st = gguf_open(empty, &g, err, sizeof err);
    CHECKF(st == HKV_ERR_FORMAT && strstr(err, "empty"), "empty file: %d %s", st, err);
    remove(empty);
    st = gguf_open_memory("", 0, &g, err, sizeof err);
    CHECK(st == HKV_ERR_FORMAT && err[0]);
    /* a bad file on disk names the path in the message (mmap path) */
    fspec s = spec_ok();
    s.version = 1;
    bb b;
    build(&s, &b);
    const char *p = tu_tmp("v1.gguf");
    f = fopen(p, "wb");
    CHECK(f && fwrite(b.p, 1, b.n, f) == b.n);
    if (f) fclose(f);
    st = gguf_open(p, &g, err, sizeof err);
    CHECKF(st == HKV_ERR_UNSUPPORTED && strstr(err, p) && strstr(err, "version 1"), "%s", err);
    remove(p);
    st = gguf_open(p, &g, NULL, 0); /* no error buffer is fine */
    CHECK(st == HKV_ERR_IO);
}

/* ------------------------------------------------------------------ writer round trip */

static const char *STRS[] = {"hello", "", "tab\there \"q\" \xE2\x96\x81unicode", "line\nbreak"};
static const uint8_t A_U8[] = {0, 1, 255};
static const int8_t A_I8[] = {-128, 0, 127};
static const uint16_t A_U16[] = {0, 0x1234, 65535};
static const int16_t A_I16[] = {-32768, -1, 32767};
static const uint32_t A_U32[] = {0, 0xDEADBEEFu, 4294967295u};
static const int32_t A_I32[] = {INT32_MIN, -7, INT32_MAX};
static const float A_F32[] = {-1.5f, 0.0f, 3.25e10f};
static const uint8_t A_BOOL[] = {1, 0, 1};
static const uint64_t A_U64[] = {0, 1ull << 40, UINT64_MAX};
static const int64_t A_I64[] = {INT64_MIN, -3, INT64_MAX};
static const double A_F64[] = {-0.1, 1e300, 2.0};

static void fill_writer_kv(gguf_writer *w) {
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_u32(w, "k.u32", 4000000000u);
    gguf_w_i32(w, "k.i32", -123456);
    gguf_w_u64(w, "k.u64", 1ull << 50);
    gguf_w_f32(w, "k.f32", 0.15625f);
    gguf_w_bool(w, "k.true", 5);
    gguf_w_bool(w, "k.false", 0);
    gguf_w_str(w, "k.str", "once upon a time");
    gguf_w_str(w, "k.empty", "");
    gguf_w_u32(w, "k.replaced", 1);
    gguf_w_arr(w, "a.str", GGUF_STRING, STRS, 4);
    gguf_w_arr(w, "a.u8", GGUF_U8, A_U8, 3);
    gguf_w_arr(w, "a.i8", GGUF_I8, A_I8, 3);
    gguf_w_arr(w, "a.u16", GGUF_U16, A_U16, 3);
    gguf_w_arr(w, "a.i16", GGUF_I16, A_I16, 3);
    gguf_w_arr(w, "a.u32", GGUF_U32, A_U32, 3);
    gguf_w_arr(w, "a.i32", GGUF_I32, A_I32, 3);
    gguf_w_arr(w, "a.f32", GGUF_F32, A_F32, 3);
    gguf_w_arr(w, "a.bool", GGUF_BOOL, A_BOOL, 3);
    gguf_w_arr(w, "a.u64", GGUF_U64, A_U64, 3);
    gguf_w_arr(w, "a.i64", GGUF_I64, A_I64, 3);
    gguf_w_arr(w, "a.f64", GGUF_F64, A_F64, 3);
    gguf_w_arr(w, "a.none", GGUF_I32, NULL, 0);
    gguf_w_str(w, "k.replaced", "second value wins");
}

#define N_WRITER_KV 23

static void check_kv(const gguf_file *g) {
    CHECK(g->n_kv == N_WRITER_KV);
    uint64_t u;
    int64_t i;
    float f;
    int b;
    gguf_str s;
    char buf[64];
    CHECK(gguf_get_u64(g, "k.u32", &u) && u == 4000000000u);
    CHECK(gguf_get_i64(g, "k.u32", &i) && i == 4000000000ll);
    CHECK(gguf_get_i64(g, "k.i32", &i) && i == -123456);
    CHECK(!gguf_get_u64(g, "k.i32", &u)); /* negative does not fit */
    CHECK(gguf_get_u64(g, "k.u64", &u) && u == 1ull << 50);
    CHECK(gguf_get_f32(g, "k.f32", &f) && f == 0.15625f);
    CHECK(!gguf_get_f32(g, "k.u32", &f) && !gguf_get_u64(g, "k.f32", &u) && !gguf_get_str(g, "k.u32", &s));
    CHECK(gguf_get_bool(g, "k.true", &b) && b == 1);
    CHECK(gguf_get_bool(g, "k.false", &b) && b == 0);
    CHECK(!gguf_get_bool(g, "k.u32", &b) && !gguf_get_u64(g, "missing", &u));
    CHECK(gguf_get_str(g, "k.str", &s) && s.len == 16 && memcmp(s.s, "once upon a time", 16) == 0);
    CHECK(gguf_get_str(g, "k.empty", &s) && s.len == 0);
    CHECK(gguf_get_str(g, "k.replaced", &s));
    gguf_str_copy(s, buf, sizeof buf);
    CHECK(strcmp(buf, "second value wins") == 0);

    const gguf_kv *kv = gguf_find(g, "a.str");
    CHECK(kv && kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING && kv->arr_n == 4 && kv->arr_str);
    for (int k = 0; kv && k < 4; k++)
        CHECKF(kv->arr_str[k].len == strlen(STRS[k]) && memcmp(kv->arr_str[k].s, STRS[k], strlen(STRS[k])) == 0,
               "string %d", k);
    struct { const char *key; gguf_vtype t; const void *v; } arrs[] = {
        {"a.u8", GGUF_U8, A_U8}, {"a.i8", GGUF_I8, A_I8}, {"a.u16", GGUF_U16, A_U16}, {"a.i16", GGUF_I16, A_I16},
        {"a.u32", GGUF_U32, A_U32}, {"a.i32", GGUF_I32, A_I32}, {"a.u64", GGUF_U64, A_U64},
        {"a.i64", GGUF_I64, A_I64}};
    for (size_t a = 0; a < sizeof arrs / sizeof arrs[0]; a++) {
        kv = gguf_find(g, arrs[a].key);
        CHECKF(kv && kv->type == GGUF_ARRAY && kv->arr_type == arrs[a].t && kv->arr_n == 3 && !kv->arr_str, "%s",
               arrs[a].key);
        for (uint64_t k = 0; kv && k < 3; k++) {
            int64_t want_i = 0;
            double d;
            int fits = 1;
            switch (arrs[a].t) {
            case GGUF_U8: want_i = A_U8[k]; break;
            case GGUF_I8: want_i = A_I8[k]; break;
            case GGUF_U16: want_i = A_U16[k]; break;
            case GGUF_I16: want_i = A_I16[k]; break;
            case GGUF_U32: want_i = A_U32[k]; break;
            case GGUF_I32: want_i = A_I32[k]; break;
            case GGUF_U64: fits = A_U64[k] <= INT64_MAX; want_i = (int64_t)(fits ? A_U64[k] : 0); break;
            default: want_i = A_I64[k]; break;
            }
            int got = gguf_arr_i64(kv, k, &i);
            CHECKF(got == fits && (!fits || i == want_i), "%s[%d]", arrs[a].key, (int)k);
            CHECK(gguf_arr_f64(kv, k, &d) && (arrs[a].t == GGUF_U64 ? d == (double)A_U64[k] : d == (double)want_i));
        }
        CHECK(kv && !gguf_arr_i64(kv, 3, &i)); /* out of range */
    }
    double d;
    kv = gguf_find(g, "a.f32");
    CHECK(kv && kv->arr_type == GGUF_F32 && kv->arr_n == 3);
    for (uint64_t k = 0; kv && k < 3; k++) CHECK(gguf_arr_f64(kv, k, &d) && d == (double)A_F32[k]);
    CHECK(kv && !gguf_arr_i64(kv, 0, &i)); /* floats are not integers */
    kv = gguf_find(g, "a.f64");
    for (uint64_t k = 0; kv && k < 3; k++) CHECK(gguf_arr_f64(kv, k, &d) && d == A_F64[k]);
    kv = gguf_find(g, "a.bool");
    CHECK(kv && kv->arr_type == GGUF_BOOL && kv->arr_n == 3 && memcmp(kv->data, A_BOOL, 3) == 0);
    kv = gguf_find(g, "a.none");
    CHECK(kv && kv->arr_type == GGUF_I32 && kv->arr_n == 0 && !gguf_arr_i64(kv, 0, &i));
    CHECK(!gguf_arr_f64(gguf_find(g, "k.u32"), 0, &d)); /* not an array */
}

/* Tensors with known bytes: F32 [4,3], F16 [32,2], Q8_0 [64,2,2]. */
typedef struct tdata {
    float f32[12];
    uint16_t f16[64];
    uint8_t q8[4 * 2 * 34];
} tdata;

static void make_tdata(tdata *t) {
    for (int i = 0; i < 12; i++) t->f32[i] = (float)i * 0.5f - 2.0f;
    for (int i = 0; i < 64; i++) t->f16[i] = (uint16_t)(0x3C00 + i); /* 1.0 and slightly above */
    for (size_t i = 0; i < sizeof t->q8; i++) t->q8[i] = (uint8_t)(i * 37 + 11);
}

static void add_tensors(gguf_writer *w, const tdata *t) {
    int64_t ne_a[2] = {4, 3}, ne_b[2] = {32, 2}, ne_c[3] = {64, 2, 2};
    CHECK(gguf_w_tensor(w, "a.f32", HKV_TYPE_F32, 2, ne_a, t->f32, sizeof t->f32) == HKV_OK);
    CHECK(gguf_w_tensor(w, "b.f16", HKV_TYPE_F16, 2, ne_b, t->f16, sizeof t->f16) == HKV_OK);
    CHECK(gguf_w_tensor(w, "c.q8_0", HKV_TYPE_Q8_0, 3, ne_c, t->q8, sizeof t->q8) == HKV_OK);
}

static void check_tensors(const gguf_file *g, const tdata *t, uint32_t align) {
    CHECK(g->n_tensors == 3 && g->alignment == align && g->data_offset % align == 0);
    struct { const char *name; int type, n_dims; int64_t ne[4]; const void *data; size_t n; } want[] = {
        {"a.f32", HKV_TYPE_F32, 2, {4, 3, 1, 1}, t->f32, sizeof t->f32},
        {"b.f16", HKV_TYPE_F16, 2, {32, 2, 1, 1}, t->f16, sizeof t->f16},
        {"c.q8_0", HKV_TYPE_Q8_0, 3, {64, 2, 2, 1}, t->q8, sizeof t->q8}};
    for (int k = 0; k < 3; k++) {
        const gguf_tensor *x = gguf_find_tensor(g, want[k].name);
        CHECKF(x && x->type == want[k].type && x->n_dims == want[k].n_dims && x->nbytes == want[k].n &&
               memcmp(x->ne, want[k].ne, sizeof x->ne) == 0, "tensor %s", want[k].name);
        if (!x) continue;
        CHECK(x->offset % align == 0 && (uint64_t)((const uint8_t *)x->data - g->base) == g->data_offset + x->offset);
        CHECKF(memcmp(x->data, want[k].data, want[k].n) == 0, "bytes of %s", want[k].name);
    }
}

static int skip_str_keys(const char *key) { return strncmp(key, "k.str", 5) == 0; }

/* The value bytes of kv as stored (the reader's data pointer to the end of the value). */
static uint64_t value_len(const gguf_kv *kv) {
    static const int sz[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (kv->type == GGUF_STRING) { uint64_t n; memcpy(&n, kv->data, 8); return 8 + n; }
    if (kv->type != GGUF_ARRAY) return (uint64_t)sz[kv->type];
    if (kv->arr_type != GGUF_STRING) return kv->arr_n * (uint64_t)sz[kv->arr_type];
    if (!kv->arr_n) return 0;
    const gguf_str *l = &kv->arr_str[kv->arr_n - 1];
    return (uint64_t)((const uint8_t *)l->s + l->len - kv->data);
}

/* Every key of a (minus skipped ones) is in b with the same type and identical bytes; b has extra more. */
static void check_copied(const gguf_file *a, const gguf_file *b, int (*skip)(const char *), uint64_t extra) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < a->n_kv; i++) {
        char key[128];
        gguf_str_copy(a->kv[i].key, key, sizeof key);
        const gguf_kv *x = &a->kv[i], *y = gguf_find(b, key);
        if (skip && skip(key)) { CHECKF(!y, "%s copied though skipped", key); continue; }
        n++;
        CHECKF(y && y->type == x->type && (x->type != GGUF_ARRAY || (y->arr_type == x->arr_type && y->arr_n == x->arr_n)) &&
               value_len(x) == value_len(y) && memcmp(x->data, y->data, (size_t)value_len(x)) == 0, "key %s", key);
    }
    CHECK(b->n_kv == n + extra);
}

static void test_writer(void) {
    tdata td;
    make_tdata(&td);
    gguf_writer *w = gguf_writer_new();
    CHECK(w != NULL);
    fill_writer_kv(w);
    add_tensors(w, &td);
    const char *path = tu_tmp("rt.gguf");
    char err[512] = "";
    CHECKF(gguf_writer_write(w, path, err, sizeof err) == HKV_OK, "%s", err);
    gguf_writer_free(w);

    gguf_file *g = NULL;
    hkv_status st = gguf_open(path, &g, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st != HKV_OK) return;
    CHECK(g->version == 3 && g->mapped == 1);
    check_kv(g);
    check_tensors(g, &td, 32);
    /* the last tensor ends the file: every prefix must fail; the whole must open from memory too */
    for (uint64_t n = 0; n <= g->size; n += (n < 1024 || n + 64 > g->size) ? 1 : 61) {
        gguf_file *h = NULL;
        st = gguf_open_memory(g->base, (size_t)n, &h, err, sizeof err);
        CHECKF(n == g->size ? st == HKV_OK : (st == HKV_ERR_FORMAT && err[0]), "prefix %llu: %d", (unsigned long long)n, st);
        gguf_close(h);
    }

    /* copy every key except k.str* into a new file with a 64-byte alignment */
    w = gguf_writer_new();
    gguf_w_copy_kv(w, g, skip_str_keys);
    gguf_w_u32(w, "general.alignment", 64);
    add_tensors(w, &td);
    const char *path2 = tu_tmp("rt2.gguf");
    CHECKF(gguf_writer_write(w, path2, err, sizeof err) == HKV_OK, "%s", err);
    gguf_writer_free(w);
    gguf_file *g2 = NULL;
    st = gguf_open(path2, &g2, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st == HKV_OK) {
        uint64_t a = 0;
        CHECK(gguf_get_u64(g2, "general.alignment", &a) && a == 64);
        CHECK(gguf_find(g2, "k.str") == NULL && gguf_find(g2, "k.u32") != NULL);
        check_tensors(g2, &td, 64);
        /* copying back with no skip gives the original keys plus general.alignment */
        gguf_writer *w3 = gguf_writer_new();
        gguf_w_copy_kv(w3, g2, NULL);
        const char *path3 = tu_tmp("rt3.gguf");
        CHECKF(gguf_writer_write(w3, path3, err, sizeof err) == HKV_OK, "%s", err);
        gguf_writer_free(w3);
        gguf_file *g3 = NULL;
        if (gguf_open(path3, &g3, err, sizeof err) == HKV_OK) {
            check_copied(g2, g3, NULL, 0);
            CHECK(g3->n_tensors == 0 && g3->alignment == 64);
            gguf_close(g3);
        } else CHECKF(0, "%s", err);
        remove(path3);
        check_copied(g, g2, skip_str_keys, 1); /* + general.alignment */
        gguf_close(g2);
    }
    gguf_close(g);
    remove(path);
    remove(path2);
}

/* Every scalar type, read back through copy_kv (the public writer has setters for only some of them). */
static void test_all_scalars(void) {
    bb b = {.n = 0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 11);
    const char *names[] = {"s.u8", "s.i8", "s.u16", "s.i16", "s.u32", "s.i32", "s.f32", "s.bool", "s.u64", "s.i64", "s.f64"};
    const gguf_vtype types[] = {GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL,
                                GGUF_U64, GGUF_I64, GGUF_F64};
    double f64 = -2.5;
    uint64_t f64b;
    memcpy(&f64b, &f64, 8);
    float f32 = 1e-5f;
    uint32_t f32b;
    memcpy(&f32b, &f32, 4);
    for (int k = 0; k < 11; k++) {
        put_str(&b, names[k]);
        put_u32(&b, types[k]);
        switch (types[k]) {
        case GGUF_U8: put_u8(&b, 200); break;
        case GGUF_I8: put_u8(&b, 0x9C); break;          /* -100 */
        case GGUF_U16: put_u16(&b, 60000); break;
        case GGUF_I16: put_u16(&b, 0x8AD0); break;      /* -30000 */
        case GGUF_U32: put_u32(&b, 3000000000u); break;
        case GGUF_I32: put_u32(&b, 0xFFFFFFFFu); break; /* -1 */
        case GGUF_F32: put_u32(&b, f32b); break;
        case GGUF_BOOL: put_u8(&b, 1); break;
        case GGUF_U64: put_u64(&b, UINT64_MAX); break;
        case GGUF_I64: put_u64(&b, (uint64_t)INT64_MIN); break;
        default: put_u64(&b, f64b); break;
        }
    }
    gguf_file *g = NULL;
    char err[256];
    hkv_status st = gguf_open_memory(b.p, b.n, &g, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st != HKV_OK) return;
    uint64_t u;
    int64_t i;
    float f;
    int bo;
    CHECK(gguf_get_u64(g, "s.u8", &u) && u == 200);
    CHECK(gguf_get_i64(g, "s.i8", &i) && i == -100 && !gguf_get_u64(g, "s.i8", &u));
    CHECK(gguf_get_u64(g, "s.u16", &u) && u == 60000);
    CHECK(gguf_get_i64(g, "s.i16", &i) && i == -30000);
    CHECK(gguf_get_u64(g, "s.u32", &u) && u == 3000000000u);
    CHECK(gguf_get_i64(g, "s.i32", &i) && i == -1);
    CHECK(gguf_get_f32(g, "s.f32", &f) && f == 1e-5f);
    CHECK(gguf_get_bool(g, "s.bool", &bo) && bo == 1 && !gguf_get_u64(g, "s.bool", &u));
    CHECK(gguf_get_u64(g, "s.u64", &u) && u == UINT64_MAX && !gguf_get_i64(g, "s.u64", &i));
    CHECK(gguf_get_i64(g, "s.i64", &i) && i == INT64_MIN);
    CHECK(gguf_get_f32(g, "s.f64", &f) && f == -2.5f);
    for (int k = 0; k < 11; k++) CHECK(gguf_find(g, names[k]) && gguf_find(g, names[k])->type == types[k]);
    CHECK(strcmp(gguf_vtype_name(GGUF_F64), "f64") == 0 && strcmp(gguf_vtype_name(GGUF_ARRAY), "array") == 0);

    gguf_writer *w = gguf_writer_new();
    gguf_w_copy_kv(w, g, NULL);
    const char *path = tu_tmp("scalars.gguf");
    CHECKF(gguf_writer_write(w, path, err, sizeof err) == HKV_OK, "%s", err);
    gguf_writer_free(w);
    gguf_file *g2 = NULL;
    st = gguf_open(path, &g2, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st == HKV_OK) {
        check_copied(g, g2, NULL, 0);
        gguf_close(g2);
    }
    remove(path);
    gguf_close(g);
}

static void test_writer_errors(void) {
    float x[8] = {0};
    int64_t ne[5] = {8, 1, 1, 1, 1};
    char err[256] = "";
    gguf_writer *w = gguf_writer_new();
    CHECK(gguf_w_tensor(w, "x", HKV_TYPE_F32, 1, ne, x, 31) == HKV_ERR_ARG);       /* wrong byte count */
    CHECK(gguf_w_tensor(w, "x", HKV_TYPE_F32, 5, ne, x, 32) == HKV_ERR_ARG);       /* 5 dims */
    CHECK(gguf_w_tensor(w, "x", 99, 1, ne, x, 32) == HKV_ERR_ARG);                 /* unknown type */
    CHECK(gguf_w_tensor(w, "x", HKV_TYPE_Q8_0, 1, ne, x, 32) == HKV_ERR_ARG);      /* 8 not a block multiple */
    CHECK(gguf_w_tensor(w, "x", HKV_TYPE_F32, 1, ne, x, 32) == HKV_OK);
    CHECK(gguf_w_tensor(w, "x", HKV_TYPE_F32, 1, ne, x, 32) == HKV_ERR_ARG);       /* duplicate */
    /* a rejected tensor makes the write fail rather than silently leave it out */
    const char *path = tu_tmp("bad.gguf");
    CHECK(gguf_writer_write(w, path, err, sizeof err) == HKV_ERR_ARG && err[0]);
    gguf_writer_free(w);
    FILE *f = fopen(path, "rb");
    CHECK(f == NULL);
    if (f) fclose(f);

    w = gguf_writer_new();
    gguf_w_u32(w, "general.alignment", 3);
    CHECK(gguf_writer_write(w, path, err, sizeof err) == HKV_ERR_ARG && strstr(err, "alignment"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_w_arr(w, "nested", GGUF_ARRAY, x, 1);
    CHECK(gguf_writer_write(w, path, err, sizeof err) == HKV_ERR_ARG && strstr(err, "nested"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_w_str(w, "", "v");
    CHECK(gguf_writer_write(w, path, err, sizeof err) == HKV_ERR_ARG && err[0]);
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_w_u32(w, "ok", 1);
    CHECK(gguf_writer_write(w, "/nonexistent/dir/out.gguf", err, sizeof err) == HKV_ERR_IO &&
          strstr(err, "/nonexistent/dir/out.gguf"));
    gguf_writer_free(w);
    gguf_writer_free(NULL);
    gguf_close(NULL);
}

/* ------------------------------------------------------------------ the real model */

static void test_model(void) {
    gguf_file *g = NULL;
    char err[512] = "";
    hkv_status st = gguf_open(tu_model(), &g, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    if (st != HKV_OK) return;
    gguf_str s;
    char buf[32];
    CHECK(gguf_get_str(g, "general.architecture", &s));
    gguf_str_copy(s, buf, sizeof buf);
    CHECK(strcmp(buf, "llama") == 0);
    uint64_t u = 0;
    CHECK(gguf_get_u64(g, "llama.block_count", &u) && u == 5);
    float eps = 0;
    CHECK(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps) && fabs(eps - 1e-5) < 1e-9);
    const gguf_kv *tok = gguf_find(g, "tokenizer.ggml.tokens");
    CHECK(tok && tok->arr_type == GGUF_STRING && tok->arr_n == 512 && tok->arr_str[1].len == 3 &&
          memcmp(tok->arr_str[1].s, "<s>", 3) == 0);
    const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->type == HKV_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512 &&
          t->nbytes == 64 * 512 * 4);
    CHECK(g->n_tensors == 48 && g->alignment == 32 && g->version == 3);
    gguf_close(g);

    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (!f) return;
    st = hkv_gguf_dump(tu_model(), f, 3, err, sizeof err);
    CHECKF(st == HKV_OK, "%s", err);
    long n = ftell(f);
    rewind(f);
    char *out = calloc(1, (size_t)n + 1);
    CHECK(out && fread(out, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    if (out) {
        CHECK(strstr(out, "GGUF v3") && strstr(out, "48 tensors") && strstr(out, "general.architecture"));
        CHECK(strstr(out, "\"llama\"") && strstr(out, "llama.block_count (u32) = 5"));
        CHECK(strstr(out, "[\"<unk>\", \"<s>\", \"</s>\", ...]")); /* 3 items then ... */
        CHECK(strstr(out, "token_embd.weight") && strstr(out, "[64, 512]") && strstr(out, "F32"));
        CHECK(strstr(out, "total: 48 tensors"));
    }
    free(out);
    st = hkv_gguf_dump("/nonexistent.gguf", stdout, 3, err, sizeof err);
    CHECK(st == HKV_ERR_IO && strstr(err, "/nonexistent.gguf"));
}

/* Dump escapes control characters and truncates long strings. */
static void test_dump_escaping(void) {
    char long_str[600];
    memset(long_str, 'x', sizeof long_str - 1);
    long_str[sizeof long_str - 1] = 0;
    const char *arr[] = {"a\x01" "b", "c"};
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "ctl", "line\nnext\ttab\x7f\"q\"");
    gguf_w_str(w, "long", long_str);
    gguf_w_arr(w, "arr", GGUF_STRING, arr, 2);
    const char *path = tu_tmp("dump.gguf");
    char err[256];
    CHECKF(gguf_writer_write(w, path, err, sizeof err) == HKV_OK, "%s", err);
    gguf_writer_free(w);
    FILE *f = tmpfile();
    if (!f) { CHECK(0); return; }
    CHECKF(hkv_gguf_dump(path, f, -1, err, sizeof err) == HKV_OK, "%s", err);
    long n = ftell(f);
    rewind(f);
    char *out = calloc(1, (size_t)n + 1);
    CHECK(out && fread(out, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    if (out) {
        CHECK(strstr(out, "\"line\\nnext\\ttab\\x7F\\\"q\\\"\""));
        CHECK(strstr(out, "xxx...\"") && !strstr(out, long_str));
        CHECK(strstr(out, "[\"a\\x01b\", \"c\"]"));
        CHECK(strstr(out, "total: 0 tensors"));
    }
    free(out);
    remove(path);
}

int main(void) {
    test_small_valid();
    test_malformed();
    test_bad_keys();
    test_io_errors();
    test_writer();
    test_all_scalars();
    test_writer_errors();
    test_model();
    test_dump_escaping();
    return tu_done("test_gguf");
}
