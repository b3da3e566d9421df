#ifndef HKV_SAMPLER_H
#define HKV_SAMPLER_H
#include "heavykv.h"
/* Implementation of the hkv_sampler_* functions of heavykv.h: repetition penalty -> (greedy) -> top-k ->
 * softmax with temperature -> top-p -> min-p -> draw (xoshiro256** seeded via splitmix64: same seed, same
 * tokens). */
#endif
