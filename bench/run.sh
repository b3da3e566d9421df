#!/usr/bin/env bash
# The reproducible benchmark set: writes synthetic models of real shapes with the real tokenizers (random
# weights, so the text is noise but every byte moved and every flop is real) and runs the standard table.
#
#   bash bench/run.sh              # the standard table (pp512 / tg128, 1 and 2 threads, 3 models)
#   bash bench/run.sh --long       # + prefill 4096, decode at depth 4096 and 16384, the --kv-memory experiment
#
# Needs only this repository and ../shared/tokenizers (or $HEAVYKV_SHARED); downloads and builds nothing else.
# Models go to bench/models/, results (Markdown + JSON) to bench/results/ (both git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
LONG=0
[ "${1:-}" = "--long" ] && LONG=1
SHARED=${HEAVYKV_SHARED:-../shared}
BIN=${HEAVYKV_BIN:-build/heavykv}
MODELS=bench/models
RESULTS=bench/results
REPS=${REPS:-3}
mkdir -p "$MODELS" "$RESULTS"
if [ ! -x "$BIN" ]; then
  cmake -S . -B build >/dev/null
  cmake --build build -j"$(nproc)" --target heavykv-cli
fi

# name preset type tokenizer
models=(
  "llama-3.2-1b-q8_0 Llama-3.2-1B Q8_0 llama3"
  "llama-3.2-1b-q4_k_m Llama-3.2-1B Q4_K_M llama3"
  "qwen2.5-0.5b-q8_0 Qwen2.5-0.5B Q8_0 qwen3"
)
for m in "${models[@]}"; do
  set -- $m
  f="$MODELS/$1.gguf"
  [ -f "$f" ] || "$BIN" synth --preset "$2" --type "$3" --tokenizer "$SHARED/tokenizers/$4/tokenizer.json" -o "$f"
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
md="$RESULTS/bench-$stamp.md"
{
  echo "# heavykv bench $stamp"
  echo
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
  echo "flags: $(grep -o -w -E 'avx2|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|fma|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "heavykv $(git describe --always --dirty 2>/dev/null || echo unknown)"
} > "$md"

run() { # title, then bench arguments
  local title=$1; shift
  echo >> "$md"; echo "## $title" >> "$md"; echo >> "$md"
  echo "\$ heavykv bench $*" >> "$md"; echo >> "$md"
  "$BIN" bench -r "$REPS" -o md --json "$RESULTS/$(echo "$title" | tr -c 'A-Za-z0-9' '_')-$stamp.json" "$@" | tee -a "$md"
}

for m in "${models[@]}"; do
  set -- $m
  for t in 1 2; do
    run "$1 pp512 tg128 t$t" -m "$MODELS/$1.gguf" -p 512 -n 128 -t "$t"
  done
done

if [ "$LONG" = 1 ]; then
  q8="$MODELS/llama-3.2-1b-q8_0.gguf"
  qw="$MODELS/qwen2.5-0.5b-q8_0.gguf"
  run "llama-3.2-1b-q8_0 prefill 4096" -m "$q8" -p 4096 -n 0 -t 2
  for f in "$q8" "$qw"; do
    run "$(basename "$f" .gguf) decode at depth 4096 and 16384" -m "$f" -p 16 -n 64 -d 4096,16384 \
      --kv-policy full,h2o --kv-budget 20% --prefill-chunk 512 -t 2
  done
  # the H2O paper's throughput experiment: the memory of 8 full 4k caches (1B: 32 KiB of K/V + 1.5 KiB of metadata
  # per token and sequence: 8 x 4,160 slots = 1,088.8 MiB)
  # (--shared-prompt: one 4,096-token prefill per policy, copied to the batch; decode work is unchanged;
  #  --prefill-chunk 64: a bounded sequence peaks at budget + 64 slots, so more of them fit)
  run "llama-3.2-1b-q8_0 --kv-memory = 8 full 4k caches" -m "$q8" -p 4096 -n 64 --kv-memory 1089MiB \
    --shared-prompt --prefill-chunk 64 --kv-policy full,h2o --kv-budget 20% -t 2
fi
echo "results: $md"
