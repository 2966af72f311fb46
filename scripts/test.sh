#!/usr/bin/env bash
# Every test: formatting and lints, the Rust tests, then the end-to-end suite (python `openai`
# against a real server with real models). Installs what it needs; caches builds, models and the
# venv under ${FLYWHEEL_CACHE:-~/.cache/flywheel} (never required to exist).
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FLYWHEEL_CACHE/target}"
start=$(date +%s)
step() { echo "==> $* ($(( $(date +%s) - start ))s)" >&2; }

step "setup"
scripts/setup.sh
# Tests of the PostgreSQL store use the server on 127.0.0.1:5432 (trust auth); start it if down.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "[test] starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
step "cargo test"
# Real GGUFs for the control crate's sizing and replica tests (they skip, saying so, if unset).
scripts/fetch-models.sh smollm2 qwen
export FLYWHEEL_SMOL_GGUF="$FLYWHEEL_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
export FLYWHEEL_QWEN_GGUF="$FLYWHEEL_CACHE/models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
# The flywheel crate's integration tests (crates/flywheel/tests) make this build the release
# binary with the test run's features; the end-to-end suite uses it. A separate
# `cargo build -p flywheel` would resolve other features and build llama.cpp a second time.
cargo test --release --workspace
test -x "$CARGO_TARGET_DIR/release/flywheel" || { echo "[test] cargo test did not build the binary" >&2; exit 1; }
step "end-to-end suite"
scripts/e2e.sh
step "all tests passed"
