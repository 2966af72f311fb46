#!/usr/bin/env bash
# Builds the anchors the benchmarks compare against, once, into the cache:
# llama.cpp's llama-server, llama-bench and llama-batched-bench from the llama.cpp tree that the
# PyPI source package llama-cpp-python carries (CPU, Release, native flags like Flywheel's build).
# Prints the directory holding the binaries.
set -euo pipefail
CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
LCP_VERSION=0.3.36
DIR="$CACHE/anchors/llama.cpp-from-llama-cpp-python-$LCP_VERSION"
log() { printf '[anchors] %s\n' "$*" >&2; }

if [ -x "$DIR/bin/llama-batched-bench" ] && [ -x "$DIR/bin/llama-bench" ] && [ -x "$DIR/bin/llama-server" ]; then
  log "llama.cpp anchors cached in $DIR"
  echo "$DIR/bin"; exit 0
fi
start=$(date +%s)
mkdir -p "$DIR"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
log "downloading llama-cpp-python==$LCP_VERSION sources (PyPI)"
python3 -m pip download --no-deps --no-binary llama-cpp-python --disable-pip-version-check -q -d "$tmp" "llama-cpp-python==$LCP_VERSION"
tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
src=$(echo "$tmp"/llama_cpp_python-*/vendor/llama.cpp)
log "configuring llama.cpp ($src)"
cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DBUILD_SHARED_LIBS=OFF >"$DIR/cmake.log" 2>&1 \
  || { log "cmake failed; see $DIR/cmake.log"; exit 1; }
log "building llama-server, llama-bench, llama-batched-bench (about 10 min on 2 cores)"
cmake --build "$tmp/build" -j"$(nproc)" --target llama-server llama-bench llama-batched-bench >"$DIR/build.log" 2>&1 \
  || { log "build failed; see $DIR/build.log"; exit 1; }
mkdir -p "$DIR/bin"
cp "$tmp"/build/bin/llama-server "$tmp"/build/bin/llama-bench "$tmp"/build/bin/llama-batched-bench "$DIR/bin/"
( cd "$src" && git rev-parse --short HEAD 2>/dev/null || grep -m1 -o 'LLAMA_BUILD_COMMIT[^)]*' CMakeLists.txt || true ) > "$DIR/version.txt"
"$DIR/bin/llama-bench" --version >> "$DIR/version.txt" 2>&1 || true
log "anchors built in $(( $(date +%s) - start ))s: $DIR/bin"
echo "$DIR/bin"
