#!/usr/bin/env bash
# Builds heavykv and runs the whole test suite (CTest) with warnings as errors.
#   --sanitize   ASan+UBSan build in build-asan/
#   --clang      the same suite built with clang in build-clang/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=build; extra=(-DHKV_WERROR=ON)
case "${1:-}" in
  --sanitize) dir=build-asan; extra+=(-DHKV_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  --clang) dir=build-clang; extra+=(-DCMAKE_C_COMPILER=clang) ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--sanitize|--clang]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" "${extra[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir" && ctest --output-on-failure -j"$(nproc)"
