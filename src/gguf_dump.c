/* Human-readable dump of a GGUF file's metadata and tensor table (`heavykv info`). */
#include "gguf.h"
#include "gguf_util.h"
#include "tensor.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ dump */

#define DUMP_STR_MAX 120   /* bytes of a string value shown before "..." */

static void dump_scalar(FILE *f, gguf_vtype t, const uint8_t *p) {
    int64_t s;
    uint64_t u;
    double d;
    char buf[4 * DUMP_STR_MAX + 16];
    if (t == GGUF_STRING) {
        gguf_str str = {le64(p), (const char *)p + 8};
        fprintf(f, "\"%s\"", gguf_str_escape(str, DUMP_STR_MAX, buf, sizeof buf));
    } else if (t == GGUF_BOOL) {
        fputs(p[0] ? "true" : "false", f);
    } else if (t == GGUF_F32 || t == GGUF_F64) {
        gguf_load_f64(t, p, &d);
        fprintf(f, t == GGUF_F32 ? "%.9g" : "%.17g", d);
    } else if (gguf_load_int(t, p, &s, &u) == 1) {
        fprintf(f, "%lld", (long long)s);
    } else if (gguf_load_int(t, p, &s, &u) == 2) {
        fprintf(f, "%llu", (ull)u);
    }
}

static void dump_kv(FILE *f, const gguf_kv *kv, int max_items) {
    char key[4 * 128 + 16];
    fprintf(f, "  %s", gguf_str_escape(kv->key, 128, key, sizeof key));
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
            fprintf(f, "\"%s\"", gguf_str_escape(kv->arr_str[i], DUMP_STR_MAX, buf, sizeof buf));
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
    fprintf(f, "  %-32s %-6s %-24s %12llu %10.3f %12llu\n", gguf_str_escape(t->name, 64, name, sizeof name),
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
        gguf_set_err(err, errlen, "cannot write the dump of %s: %s", path, strerror(errno));
        return HKV_ERR_IO;
    }
    return HKV_OK;
}

