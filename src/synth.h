/* Synthetic models: GGUF files with the real shapes, metadata keys and tensor names of llama.cpp conversions
 * (Llama 3.2, Qwen2.5, Qwen3, SmolLM2, TinyLlama), a real tokenizer, and random but well-scaled weights, so
 * architectures, quant formats and speed can be tested without downloading real weights. */
#ifndef HKV_SYNTH_H
#define HKV_SYNTH_H
#include <stdint.h>
#include "heavykv.h"
#include "quantize.h"

typedef hkv_synth_preset synth_preset;   /* public (heavykv.h) */

/* The presets, *n of them. */
const synth_preset *synth_presets(int *n);
const synth_preset *synth_find_preset(const char *name);   /* NULL if unknown */

/* How Llama 3 RoPE scaling is written. */
enum { SYNTH_ROPE_PRESET = HKV_SYNTH_ROPE_PRESET, SYNTH_ROPE_NONE = HKV_SYNTH_ROPE_NONE,
       SYNTH_ROPE_TENSOR = HKV_SYNTH_ROPE_TENSOR, SYNTH_ROPE_KEYS = HKV_SYNTH_ROPE_KEYS };

typedef struct synth_params {
    const char *preset;      /* preset name */
    const char *arch;        /* NULL: the preset's architecture */
    const char *tokenizer;   /* tokenizer.json (HF), or a .gguf whose tokenizer.* keys are copied; required */
    quant_ftype ftype;       /* weight types (1-D tensors are always F32) */
    int n_layer;             /* > 0: override the preset's layer count (small test models) */
    int head_dim;            /* > 0: override the head dimension */
    int rope_scaling;        /* SYNTH_ROPE_*: PRESET = rope_freqs.weight tensor when the preset has llama3 scaling
                                (what llama.cpp's converter writes), KEYS = {arch}.rope.scaling.* keys instead */
    uint64_t seed;
    int n_threads;           /* <= 0: all CPUs */
} synth_params;

synth_params synth_default_params(void);

typedef hkv_synth_info synth_info;       /* public (heavykv.h) */

/* Writes the model to path. info (may be NULL) describes what was written. */
hkv_status synth_write(const synth_params *p, const char *path, synth_info *info, char *err, size_t errlen);

/* How a tensor's values are drawn. */
typedef enum synth_init {
    SYNTH_MATRIX = 0,   /* N(0, 1/cols): activations keep unit scale through every projection */
    SYNTH_NORM = 1,     /* 1 + N(0, 0.05^2): close to identity but not exactly (a dropped multiply is visible) */
    SYNTH_BIAS = 2,     /* N(0, 0.1^2) */
} synth_init;

/* The F32 values synth_write draws for tensor `name` (before any quantization): rows [r0, r0+n) of a tensor
 * with `cols` columns into dst[n][cols]. Deterministic in (seed, name, row); independent of threads and of
 * the other tensors, so a model with fewer layers has the same first layers. */
void synth_fill(uint64_t seed, const char *name, synth_init kind, int64_t cols, int64_t r0, int64_t n, float *dst);
#endif
