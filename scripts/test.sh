#!/usr/bin/env bash
# Builds heavykv and runs the whole test suite (CTest). --sanitize: ASan+UBSan build in build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=build; extra=""
if [ "${1:-}" = "--sanitize" ]; then dir=build-asan; extra="-DHKV_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo"; fi
cmake -S . -B "$dir" $extra >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir" && ctest --output-on-failure -j"$(nproc)"
