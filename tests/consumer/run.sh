#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds a consumer project with find_package(rstream).
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
flags=$(grep -E '^CMAKE_CXX_FLAGS:' "$build_dir/CMakeCache.txt" | cut -d= -f2- || true)
sanitize=$(grep -E '^RSTREAM_SANITIZE:' "$build_dir/CMakeCache.txt" | cut -d= -f2- || true)
extra=()
if [ -n "$sanitize" ]; then
  extra+=("-DCMAKE_CXX_FLAGS=-fsanitize=$sanitize $flags" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=$sanitize")
fi
cmake -S "$source_dir/tests/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" "${extra[@]}" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
