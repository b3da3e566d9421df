#!/usr/bin/env bash
# Install test (registered by CMakeLists.txt as test_install): installs the current build into a temporary
# prefix, then
#   1. compiles and runs every examples/*.c against it with pkg-config (shared library, LD_LIBRARY_PATH), and
#      examples/simple.c once more against the static library (pkg-config --static),
#   2. builds a tiny CMake project with find_package(heavykv) + heavykv::heavykv and runs it,
#   3. builds the same project with add_subdirectory(<source tree>) instead.
# usage: test_install.sh BUILD_DIR SOURCE_DIR C_COMPILER SHARED_DIR BUILD_TYPE [EXTRA_CFLAGS]
# ($HEAVYKV_SHARED overrides SHARED_DIR, as for the other tests.)
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd) cc=$3 shared=${HEAVYKV_SHARED:-$4} btype=${5:-Release} extra=${6:-}
model=$shared/models/stories260K.gguf
[ -f "$model" ] || { echo "test_install: FAIL: no model at $model" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hkv_install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "test_install: FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }
for f in include/heavykv.h bin/heavykv; do [ -e "$prefix/$f" ] || fail "$f not installed"; done
pc=$(find "$prefix" -name heavykv.pc | head -1)
[ -n "$pc" ] || fail "heavykv.pc not installed"
libdir=$(dirname "$(dirname "$pc")")
[ -e "$libdir/libheavykv.a" ] || fail "static library not installed"
[ -e "$libdir/libheavykv.so" ] || fail "shared library not installed"
[ -e "$libdir/cmake/heavykv/heavykvConfig.cmake" ] || fail "CMake package not installed"
"$prefix/bin/heavykv" --version | grep -q "^heavykv " || fail "installed heavykv --version"
export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ "$(pkg-config --modversion heavykv)" = "$("$prefix/bin/heavykv" --version | cut -d' ' -f2)" ] || fail "pkg-config version"

# 1. every example, against the installed shared library
n=0
for ex in "$src"/examples/*.c; do
  name=$(basename "$ex" .c)
  # shellcheck disable=SC2046,SC2086
  "$cc" -std=c11 -Wall -Wextra -Werror $extra "$ex" -o "$tmp/$name" $(pkg-config --cflags --libs heavykv) \
    || fail "compiling $name against the installed library"
  "$tmp/$name" "$model" >"$tmp/$name.out" 2>&1 || { cat "$tmp/$name.out"; fail "running $name"; }
  echo "ok: examples/$name.c (pkg-config, shared)"
  n=$((n + 1))
done
[ "$n" -ge 2 ] || fail "expected examples/*.c"
# shellcheck disable=SC2046,SC2086
"$cc" -std=c11 $extra "$src/examples/simple.c" -o "$tmp/simple_static" -static-libgcc \
  $(pkg-config --cflags heavykv) "$libdir/libheavykv.a" $(pkg-config --libs --static heavykv | sed 's/-lheavykv//') \
  || fail "compiling simple.c against the static library"
"$tmp/simple_static" "$model" >"$tmp/static.out" 2>&1 || { cat "$tmp/static.out"; fail "running simple (static)"; }
cmp -s "$tmp/simple.out" "$tmp/static.out" || fail "static and shared builds of simple.c disagree"
echo "ok: examples/simple.c (static library)"

# 2. find_package
mkdir -p "$tmp/pkg"
cp "$src/examples/simple.c" "$tmp/pkg/"
cat >"$tmp/pkg/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(uses_heavykv C)
find_package(heavykv 0.2 REQUIRED)
add_executable(simple simple.c)
target_link_libraries(simple PRIVATE heavykv::heavykv)
CM
cmake -S "$tmp/pkg" -B "$tmp/pkg/build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE="$btype" \
  -DCMAKE_C_FLAGS="$extra" >"$tmp/pkg.log" 2>&1 || { cat "$tmp/pkg.log"; fail "find_package configure"; }
cmake --build "$tmp/pkg/build" >>"$tmp/pkg.log" 2>&1 || { cat "$tmp/pkg.log"; fail "find_package build"; }
"$tmp/pkg/build/simple" "$model" >"$tmp/pkg.out" 2>&1 || { cat "$tmp/pkg.out"; fail "running the find_package build"; }
cmp -s "$tmp/simple.out" "$tmp/pkg.out" || fail "find_package build output differs"
echo "ok: find_package(heavykv) + heavykv::heavykv"

# 3. add_subdirectory of the source tree (library only: apps and tests are off when not top-level). Built
#    without optimization to keep the test short, so its output is only checked to be a continuation.
mkdir -p "$tmp/sub"
cp "$src/examples/simple.c" "$tmp/sub/"
cat >"$tmp/sub/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.18)
project(embeds_heavykv C)
set(HKV_BUILD_SHARED OFF CACHE BOOL "" FORCE)
add_subdirectory("$src" heavykv)
add_executable(simple simple.c)
target_link_libraries(simple PRIVATE heavykv::heavykv)
CM
cmake -S "$tmp/sub" -B "$tmp/sub/build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS="$extra" >"$tmp/sub.log" 2>&1 || { cat "$tmp/sub.log"; fail "add_subdirectory configure"; }
grep -q "heavykv-cli\|test_api" "$tmp/sub/build/Makefile" 2>/dev/null && fail "add_subdirectory builds apps/tests"
cmake --build "$tmp/sub/build" -j2 >>"$tmp/sub.log" 2>&1 || { cat "$tmp/sub.log"; fail "add_subdirectory build"; }
"$tmp/sub/build/simple" "$model" >"$tmp/sub.out" 2>&1 || { cat "$tmp/sub.out"; fail "running the add_subdirectory build"; }
grep -q "^Once upon a time." "$tmp/sub.out" || { cat "$tmp/sub.out"; fail "add_subdirectory build output"; }
echo "ok: add_subdirectory(heavykv)"
echo "test_install: all passed"
