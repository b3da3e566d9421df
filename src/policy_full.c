/* "full": the baseline that never evicts. The cache is sized to the context length and budget flags do not
 * apply (never_evicts), so it needs no callbacks at all. */
#include "policy.h"

const hkv_policy_ops hkv_policy_full = {
    .name = "full", .help = "keep every token (no eviction; the reference the others are measured against)",
    .never_evicts = 1,
};
