#ifndef HKV_SAMPLER_H
#define HKV_SAMPLER_H
#include "heavykv.h"
/* Implementation of the hkv_sampler_* functions of heavykv.h: repetition penalty -> top-k -> top-p ->
 * min-p -> temperature -> draw (xorshift/splitmix RNG seeded from params.seed: same seed, same tokens). */
#endif
