/* K/V row formats (see kvrow.h): sizes, quantization on write, exact decoding, and the scalar reference
 * kernels attention falls back to (and tests compare the SIMD kernels with). */
#include "kvrow.h"
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include "tensor.h"

static const char *const NAMES[HKV_KV_TYPE_COUNT] = {"f16", "f32", "bf16", "q8_0", "q4_0"};

const char *kvrow_type_name(int type) { return type >= 0 && type < HKV_KV_TYPE_COUNT ? NAMES[type] : NULL; }
const char *hkv_kv_type_name(hkv_kv_type t) { return kvrow_type_name((int)t); }

int hkv_kv_type_parse(const char *name) {
    for (int t = 0; name && t < HKV_KV_TYPE_COUNT; t++)
        if (!strcmp(name, NAMES[t])) return t;
    return -1;
}

int kvrow_block(int type, int hd) {
    if (hd <= 0) return 0;
    switch (type) {
    case HKV_KV_F32: case HKV_KV_F16: case HKV_KV_BF16: return 1;
    case HKV_KV_Q8_0: case HKV_KV_Q4_0:
        return hd % 32 == 0 ? 32 : hd % 16 == 0 ? 16 : hd % 8 == 0 ? 8 : 0;
    default: return 0;
    }
}

size_t kvrow_bytes(int type, int hd) {
    int b = kvrow_block(type, hd);
    if (!b) return 0;
    switch (type) {
    case HKV_KV_F32: return (size_t)hd * 4;
    case HKV_KV_F16: case HKV_KV_BF16: return (size_t)hd * 2;
    case HKV_KV_Q8_0: return (size_t)(hd / b) * (2 + (size_t)b);
    default: return (size_t)(hd / b) * (2 + (size_t)b / 2); /* Q4_0 */
    }
}

/* NaN -> 0, then clamped to [lo, hi]: a malformed activation must not become undefined behaviour. */
static float clampf(float v, float lo, float hi) {
    if (v != v) return 0.0f;
    return v < lo ? lo : v > hi ? hi : v;
}

/* The scale is rounded to f16 first and the levels are computed with the rounded scale, so the decoded error
 * is at most half a step of the stored scale (Q4_0: one step at the clamped end of the range). */
static void store_q8_0(const float *x, uint8_t *row, int hd, int b) {
    for (int k = 0; k < hd; k += b, row += 2 + b) {
        float amax = 0.0f;
        for (int i = 0; i < b; i++) if (fabsf(x[k + i]) > amax) amax = fabsf(x[k + i]);
        uint16_t dh = hkv_f32_to_f16(amax / 127.0f);
        float d = hkv_f16_to_f32(dh), id = d != 0.0f ? 1.0f / d : 0.0f;
        memcpy(row, &dh, 2);
        for (int i = 0; i < b; i++) row[2 + i] = (uint8_t)(int8_t)lrintf(clampf(x[k + i] * id, -127.0f, 127.0f));
    }
}

static void store_q4_0(const float *x, uint8_t *row, int hd, int b) {
    for (int k = 0; k < hd; k += b, row += 2 + b / 2) {
        float amax = 0.0f, mx = 0.0f;
        for (int i = 0; i < b; i++)
            if (fabsf(x[k + i]) > amax) { amax = fabsf(x[k + i]); mx = x[k + i]; }
        uint16_t dh = hkv_f32_to_f16(mx / -8.0f);
        float d = hkv_f16_to_f32(dh), id = d != 0.0f ? 1.0f / d : 0.0f;
        memcpy(row, &dh, 2);
        for (int i = 0; i < b / 2; i++) {
            int lo = (int)floorf(clampf(x[k + i] * id + 8.5f, 0.0f, 15.0f));
            int hi = (int)floorf(clampf(x[k + b / 2 + i] * id + 8.5f, 0.0f, 15.0f));
            row[2 + i] = (uint8_t)(lo | hi << 4);
        }
    }
}

void kvrow_store(int type, int hd, const float *x, void *row) {
    int b = kvrow_block(type, hd);
    switch (type) {
    case HKV_KV_F32: memcpy(row, x, sizeof(float) * (size_t)hd); break;
    case HKV_KV_F16: for (int i = 0; i < hd; i++) ((uint16_t *)row)[i] = hkv_f32_to_f16(x[i]); break;
    case HKV_KV_BF16: for (int i = 0; i < hd; i++) ((uint16_t *)row)[i] = hkv_f32_to_bf16(x[i]); break;
    case HKV_KV_Q8_0: store_q8_0(x, row, hd, b); break;
    case HKV_KV_Q4_0: store_q4_0(x, row, hd, b); break;
    default: break;
    }
}

static float scale_of(const uint8_t *blk) {
    uint16_t dh;
    memcpy(&dh, blk, 2);
    return hkv_f16_to_f32(dh);
}

void kvrow_load(int type, int hd, const void *row, float *x) {
    int b = kvrow_block(type, hd);
    const uint8_t *r = row;
    switch (type) {
    case HKV_KV_F32: memcpy(x, row, sizeof(float) * (size_t)hd); break;
    case HKV_KV_F16: for (int i = 0; i < hd; i++) x[i] = hkv_f16_to_f32(((const uint16_t *)row)[i]); break;
    case HKV_KV_BF16: for (int i = 0; i < hd; i++) x[i] = hkv_bf16_to_f32(((const uint16_t *)row)[i]); break;
    case HKV_KV_Q8_0:
        for (int k = 0; k < hd; k += b, r += 2 + b) {
            float d = scale_of(r);
            for (int i = 0; i < b; i++) x[k + i] = (float)(int8_t)r[2 + i] * d;
        }
        break;
    case HKV_KV_Q4_0:
        for (int k = 0; k < hd; k += b, r += 2 + b / 2) {
            float d = scale_of(r);
            for (int i = 0; i < b / 2; i++) {
                x[k + i] = (float)((r[2 + i] & 15) - 8) * d;
                x[k + b / 2 + i] = (float)((r[2 + i] >> 4) - 8) * d;
            }
        }
        break;
    default: break;
    }
}

/* ---------------------------------------------------------------- scalar reference kernels */

#define KVROW_MAX_HD 1024   /* the reference decodes one row on the stack; context.c enforces the limit */

#define REF_KERNELS(NAME, TYPE)                                                                          \
    static void kdot_##NAME(const void *row, const float *q, int nr, int hd, float *s, size_t ss) {      \
        float x[KVROW_MAX_HD];                                                                           \
        kvrow_load(TYPE, hd, row, x);                                                                    \
        for (int r = 0; r < nr; r++) {                                                                   \
            const float *qr = q + (size_t)r * hd;                                                        \
            float a = 0.0f;                                                                              \
            for (int i = 0; i < hd; i++) a += qr[i] * x[i];                                              \
            s[(size_t)r * ss] = a;                                                                       \
        }                                                                                                \
    }                                                                                                    \
    static void vaxpy_##NAME(const void *row, const float *p, size_t ps, int nr, float *o, int hd) {     \
        float x[KVROW_MAX_HD];                                                                           \
        kvrow_load(TYPE, hd, row, x);                                                                    \
        for (int r = 0; r < nr; r++) {                                                                   \
            float a = p[(size_t)r * ps], *orow = o + (size_t)r * hd;                                     \
            for (int i = 0; i < hd; i++) orow[i] += a * x[i];                                            \
        }                                                                                                \
    }

REF_KERNELS(f32, HKV_KV_F32)
REF_KERNELS(f16, HKV_KV_F16)
REF_KERNELS(bf16, HKV_KV_BF16)
REF_KERNELS(q8_0, HKV_KV_Q8_0)
REF_KERNELS(q4_0, HKV_KV_Q4_0)

/* The softmax step and the probabilities with libm's expf, in index order (the reference arithmetic). */
static float softmax_ref(float *s, int n, float scale, float *m, float *keep) {
    float mx = *m, sum = 0.0f;
    for (int i = 0; i < n; i++) {
        s[i] *= scale;
        if (s[i] > mx) mx = s[i];
    }
    if (keep) memcpy(keep, s, sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += s[i];
    }
    *m = mx;
    return sum;
}

static void exp_acc_ref(const float *s, int n, float scale, float m, float w, float *a) {
    for (int i = 0; i < n; i++) {
        float t = s[i] * scale;
        a[i] += expf(t - m) * w;
    }
}

kvrow_kernels kvrow_kernels_ref(int type, int hd) {
    kvrow_kernels k = {NULL, NULL, NULL, NULL, softmax_ref, exp_acc_ref};
    if (!kvrow_block(type, hd) || hd > KVROW_MAX_HD) return k;
    switch (type) {
    case HKV_KV_F32: k.kdot = kdot_f32; k.vaxpy = vaxpy_f32; break;
    case HKV_KV_F16: k.kdot = kdot_f16; k.vaxpy = vaxpy_f16; break;
    case HKV_KV_BF16: k.kdot = kdot_bf16; k.vaxpy = vaxpy_bf16; break;
    case HKV_KV_Q8_0: k.kdot = kdot_q8_0; k.vaxpy = vaxpy_q8_0; break;
    case HKV_KV_Q4_0: k.kdot = kdot_q4_0; k.vaxpy = vaxpy_q4_0; break;
    default: break;
    }
    return k;
}

static atomic_int g_force_avx2; /* test hook, see kvrow_force_avx2 */

void kvrow_force_avx2(int on) { atomic_store(&g_force_avx2, on ? 1 : 0); }

/* The widest set attention and the vector exp may use: 2 AVX-512, 1 AVX2, 0 scalar. hkv_kernel_name() is
 * "scalar" when the CPU lacks AVX2/FMA/F16C, HEAVYKV_NO_SIMD is set or a test forced the scalar path, and
 * starts with "avx512" when the matmuls use AVX-512, so attention follows the same switch as the matmuls. */
#if defined(__x86_64__)
static int simd_level(void) {
    const char *name = hkv_kernel_name();
    if (!strncmp(name, "avx512", 6) && !atomic_load(&g_force_avx2)) return 2;
    return strcmp(name, "scalar") != 0;
}
#endif

void kvrow_exp(const float *x, float *y, int n) {
#if defined(__x86_64__)
    int level = simd_level();
    if (level == 2) {
        kvrow_exp_avx512(x, y, n);
        return;
    }
    if (level == 1) {
        kvrow_exp_avx2(x, y, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++) y[i] = expf(x[i]);
}

kvrow_kernels kvrow_kernels_get(int type, int hd) {
#if defined(__x86_64__)
    int level = simd_level();
    if (hd % 16 == 0 && level == 2) {
        kvrow_kernels k = kvrow_kernels_avx512(type, hd);
        if (k.kdot) return k;
    }
    if (hd % 8 == 0 && level >= 1) {
        kvrow_kernels k = kvrow_kernels_avx2(type, hd);
        if (k.kdot) return k;
    }
#endif
    return kvrow_kernels_ref(type, hd);
}
