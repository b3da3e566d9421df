/* "pyramidkv": PyramidKV (Cai et al. 2024) = SnapKV's selection with a pyramid of per-layer budgets: lower
 * layers, whose attention is spread wide, keep more tokens; upper layers, whose attention concentrates on a
 * few, keep fewer; the total over layers equals the uniform budget (see hkv_layer_budgets, schedule
 * "pyramid"). Options are SnapKV's (--pyramidkv-window, --pyramidkv-kernel); --kv-budget-layers overrides the
 * schedule (uniform gives plain SnapKV). */
#include "policy.h"

static const hkv_policy_option pyramidkv_options[] = {
    { "window", NULL, 8, 1, 4096, "observation window W: last prompt queries that vote, also kept (default 8)" },
    { "kernel", NULL, 7, 1, 63, "max-pooling kernel over positions, odd (default 7; 1 = no pooling)" },
};

const hkv_policy_ops hkv_policy_pyramidkv = {
    .name = "pyramidkv", .help = "PyramidKV: SnapKV with more budget in lower layers (same total)",
    .needs_probs = 1, .state_floats = 1, .default_layers = "pyramid",
    .options = pyramidkv_options, .n_options = 2,
    .derive_budget = hkv_snapkv_derive, .observe = hkv_snapkv_observe, .victim = hkv_snapkv_victim,
    .select = hkv_snapkv_select, .score = hkv_snapkv_score,
};
