/* GGUF: the only code that knows the file format. Reader (mmap + full validation) and writer. */
#ifndef HKV_GGUF_H
#define HKV_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include "heavykv.h"

/* GGUF metadata value types (spec numbering). */
typedef enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
    GGUF_VTYPE_COUNT
} gguf_vtype;

typedef struct gguf_str { uint64_t len; const char *s; } gguf_str; /* points into the mapping, not NUL-terminated */

typedef struct gguf_kv {
    gguf_str key;
    gguf_vtype type;
    gguf_vtype arr_type;   /* element type when type == GGUF_ARRAY */
    uint64_t arr_n;        /* element count when type == GGUF_ARRAY */
    const uint8_t *data;   /* scalar value, or first array element (strings: u64 len + bytes each) */
    gguf_str *arr_str;     /* [arr_n] pre-parsed string elements when arr_type == GGUF_STRING, else NULL */
} gguf_kv;

#define GGUF_MAX_DIMS 4
typedef struct gguf_tensor {
    gguf_str name;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] = row length (contiguous), unused dims = 1 */
    int type;                  /* ggml type id (tensor.h hkv_type) */
    uint64_t offset;           /* relative to the data section */
    uint64_t nbytes;
    const void *data;          /* into the mapping */
} gguf_tensor;

typedef struct gguf_file {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;               /* [n_kv] */
    gguf_tensor *tensors;      /* [n_tensors] */
    uint32_t alignment;
    const uint8_t *base;       /* start of the mapping */
    uint64_t size;             /* file size */
    uint64_t data_offset;      /* start of the tensor data section */
    int fd;
    int mapped;                /* 1: base is an mmap, 0: malloc'ed copy (gguf_open_memory) */
} gguf_file;

/* Opens and validates a file; on failure returns a status and a one-sentence message in err. */
hkv_status gguf_open(const char *path, gguf_file **out, char *err, size_t errlen);
/* Same, over a buffer that is copied (used by tests and tools). */
hkv_status gguf_open_memory(const void *buf, size_t len, gguf_file **out, char *err, size_t errlen);
void gguf_close(gguf_file *g);

const gguf_kv *gguf_find(const gguf_file *g, const char *key);           /* NULL if absent */
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);
/* Typed getters: return 1 and set *out if present with a compatible type (any int type for ints, f32/f64 for
 * floats), 0 otherwise. */
int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out);
int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *g, const char *key, float *out);
int gguf_get_bool(const gguf_file *g, const char *key, int *out);
int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);
/* Array access. Element i of a numeric array converted to double / int64. */
int gguf_arr_f64(const gguf_kv *kv, uint64_t i, double *out);
int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out);
/* Copy a gguf_str into a NUL-terminated buffer (truncated). */
void gguf_str_copy(gguf_str s, char *buf, size_t buflen);
const char *gguf_vtype_name(gguf_vtype t);

/* ---- writer: build in memory, then write. Strings/arrays are copied. */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_w_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_w_f32(gguf_writer *w, const char *key, float v);
void gguf_w_bool(gguf_writer *w, const char *key, int v);
void gguf_w_str(gguf_writer *w, const char *key, const char *v);
/* Array of strings / numbers. vtype is the element type; data holds n elements of it (GGUF_STRING: const char **). */
void gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype vtype, const void *data, uint64_t n);
/* Copy every key of a file except those for which skip(key) returns 1 (skip may be NULL). */
void gguf_w_copy_kv(gguf_writer *w, const gguf_file *g, int (*skip)(const char *key));
/* Tensor: ne[0] row length; data of nbytes (must equal the size the type implies) is copied. */
hkv_status gguf_w_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne, const void *data, size_t nbytes);
hkv_status gguf_writer_write(gguf_writer *w, const char *path, char *err, size_t errlen);
#endif
