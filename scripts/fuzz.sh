#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan+UBSan, build-fuzz/) and runs each for a bounded time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default 30 s, every target
# The seed corpus fuzz/corpus/<target>/ is read but not modified: new inputs go to build-fuzz/corpus/<target>/.
# A crash leaves its input in build-fuzz/artifacts/ and fails the script; minimise it with
#   build-fuzz/fuzz/fuzz_<target> -minimize_crash=1 -runs=10000 <crash file>
# and add the result to fuzz/corpus/<target>/ as a regression input once fixed.
# Executions per target are printed (and collected in build-fuzz/fuzz-summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gguf tokenizer_json tokenize sampler parse request http)
if ! command -v clang >/dev/null; then echo "fuzz.sh: clang not found (scripts/setup.sh installs it)" >&2; exit 2; fi
probe=$(mktemp -d)
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' > "$probe/p.c"
if ! clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2>/dev/null; then
  rm -rf "$probe"
  echo "fuzz.sh: clang cannot link -fsanitize=fuzzer (Debian: apt-get install libclang-rt-14-dev)" >&2
  exit 2
fi
rm -rf "$probe"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHKV_FUZZ=ON -DHKV_SANITIZE=ON \
      -DHKV_WERROR=ON -DHKV_BUILD_SHARED=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")
mkdir -p build-fuzz/artifacts
: > build-fuzz/fuzz-summary.txt
status=0
for t in "${targets[@]}"; do
  work="build-fuzz/corpus/$t"
  mkdir -p "$work"
  log="build-fuzz/fuzz-$t.log"
  # -rss_limit_mb: a harness that needs more than 2 GB is a finding; -timeout: one input must not take 10 s.
  if ! ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
       build-fuzz/fuzz/fuzz_"$t" "$work" "fuzz/corpus/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
       -max_len=8192 -print_final_stats=1 -artifact_prefix=build-fuzz/artifacts/"$t"- >"$log" 2>&1; then
    echo "fuzz.sh: $t FAILED (see $log and build-fuzz/artifacts/)" >&2
    tail -30 "$log" >&2
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz $t: $execs executions in ${secs}s" | tee -a build-fuzz/fuzz-summary.txt
done
exit $status
