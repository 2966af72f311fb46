#!/usr/bin/env bash
# Installs what building Flywheel needs and a fresh machine may lack: cmake, clang and
# libclang-dev (llama.cpp is built from source by the llama-cpp-sys-2 crate), and protoc
# (protobuf-compiler: the etcd-client crate compiles etcd's gRPC definitions).
# Idempotent and quiet when everything is there.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v clang >/dev/null 2>&1 || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing ${missing[*]} (Debian packages)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "[setup] cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
