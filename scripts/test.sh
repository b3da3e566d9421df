#!/usr/bin/env bash
# Builds heavykv and runs the whole test suite (CTest) with warnings as errors.
#   --sanitize   ASan+UBSan build in build-asan/
#   --clang      the same suite built with clang in build-clang/
#   --tsan       ThreadSanitizer build in build-tsan/ running only test_threads (two contexts, one model)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=build; extra=(-DHKV_WERROR=ON)
case "${1:-}" in
  --sanitize) dir=build-asan; extra+=(-DHKV_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  --clang) dir=build-clang; extra+=(-DCMAKE_C_COMPILER=clang) ;;
  --tsan) dir=build-tsan; only=test_threads
          extra+=(-DHKV_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHKV_BUILD_SHARED=OFF) ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--sanitize|--clang|--tsan]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" "${extra[@]}" >/dev/null
if [ -n "${only:-}" ]; then
  cmake --build "$dir" -j"$(nproc)" --target "$only"
  cd "$dir" && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -R "^${only}\$"
  exit
fi
cmake --build "$dir" -j"$(nproc)"
cd "$dir" && ctest --output-on-failure -j"$(nproc)"
