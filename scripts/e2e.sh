#!/usr/bin/env bash
# End-to-end tests: start real `flywheel serve` processes on real models and talk to
# them with the official OpenAI Python SDK and raw HTTP.
#
#   scripts/e2e.sh [PYTEST ARGS...]      e.g. scripts/e2e.sh -k stop
#
# Needs the release binary (cargo build --release); override with FLYWHEEL_BIN.
# Cache (venv, models, test GGUF): ${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
export FLYWHEEL_CACHE="$CACHE"
MODELS="$CACHE/models"
VENV="$CACHE/venv"
REQ="$ROOT/tests/e2e/requirements.txt"

log() { printf '[e2e] %s\n' "$*" >&2; }

# 0. Debian packages the suite needs: espeak-ng speaks the transcription tests' sentences.
if ! command -v espeak-ng >/dev/null 2>&1; then
  log "installing espeak-ng (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

# 1. Python environments (reinstalled only when their requirements change).
venv() {
  local dir="$1" req="$2" stamp="$1/.requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "creating/updating venv at $dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
    echo "$want" > "$stamp"
  else
    log "venv up to date ($dir)"
  fi
}
venv "$VENV" "$REQ"
PY="$VENV/bin/python"
# LlamaIndex's OpenAI clients pin openai<3: the client-matrix test runs them from their own venv.
venv "$CACHE/venv-llamaindex" "$ROOT/tests/e2e/clients/requirements-llamaindex.txt"
export FLYWHEEL_LLAMAINDEX_PYTHON="$CACHE/venv-llamaindex/bin/python"

# 2. Real models and tokenizer (cached, sha256-checked).
"$ROOT/scripts/fetch-models.sh" smollm2 qwen tokenizer minilm whisper

SMOL="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN="$MODELS/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
TOKENIZER="$MODELS/qwen-tokenizer.json"
TINY="$MODELS/tiny-llama3-template.gguf"
TINY_TOOLS="$MODELS/tiny-llama31-tools.gguf"
TINY_THINK="$MODELS/tiny-think.gguf"

# 3. Tiny random-weight qwen2 GGUF with a Llama-3-style template (deterministic; rebuilt
#    when missing or when the generator changed).
GEN="$ROOT/tests/e2e/make_test_gguf.py"
gen_sha="$(sha256sum "$GEN" | cut -d' ' -f1)"
for spec in "llama3:$TINY" "llama31-tools:$TINY_TOOLS" "think:$TINY_THINK"; do
  template="${spec%%:*}" out="${spec#*:}"
  if [ ! -f "$out" ] || [ "$(cat "$out.generator.sha256" 2>/dev/null)" != "$gen_sha" ]; then
    log "building $out"
    "$PY" "$GEN" --tokenizer-from "$QWEN" --template "$template" "$out"
    echo "$gen_sha" > "$out.generator.sha256"
  else
    log "test GGUF up to date ($out)"
  fi
done

# 4. Embedding models in GGUF, converted by this build's `flywheel convert`: all-MiniLM-L6-v2
#    from its safetensors, and a tiny random-weight cross-encoder (make_rank_model.py). Redone
#    when missing or when the converter's source or the generator changed.
export FLYWHEEL_BIN="${FLYWHEEL_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/flywheel/target}/release/flywheel}"
if [ ! -x "$FLYWHEEL_BIN" ]; then
  log "no server binary at $FLYWHEEL_BIN (cargo build --release, or set FLYWHEEL_BIN)"; exit 1
fi
MINILM_DIR="$MODELS/all-MiniLM-L6-v2"
MINILM="$MODELS/all-MiniLM-L6-v2.gguf"
MINILM_Q8="$MODELS/all-MiniLM-L6-v2.q8_0.gguf"
RANK="$MODELS/tiny-rank.gguf"
conv_sha="$(cat "$ROOT"/crates/convert/src/*.rs "$ROOT/tests/e2e/make_rank_model.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$MINILM" ] || [ ! -f "$MINILM_Q8" ] || [ "$(cat "$MINILM.converter.sha256" 2>/dev/null)" != "$conv_sha" ]; then
  log "converting $MINILM_DIR -> $MINILM"
  "$FLYWHEEL_BIN" convert "$MINILM_DIR" -o "$MINILM"
  "$FLYWHEEL_BIN" convert "$MINILM_DIR" -o "$MINILM_Q8" --outtype q8_0
  echo "$conv_sha" > "$MINILM.converter.sha256"
else
  log "MiniLM GGUF up to date ($MINILM)"
fi
if [ ! -f "$RANK" ] || [ "$(cat "$RANK.converter.sha256" 2>/dev/null)" != "$conv_sha" ]; then
  log "building $RANK"
  rank_dir="$(mktemp -d)"
  "$PY" "$ROOT/tests/e2e/make_rank_model.py" --tokenizer-from "$MINILM_DIR" "$rank_dir"
  "$FLYWHEEL_BIN" convert "$rank_dir" -o "$RANK"
  rm -rf "$rank_dir"
  echo "$conv_sha" > "$RANK.converter.sha256"
else
  log "rank GGUF up to date ($RANK)"
fi

# Whisper base: the CTranslate2 directory (faster-whisper loads it as it is) converted to the
# safetensors directory the speech engine serves.
WHISPER_CT2="$MODELS/whisper-base-ct2"
WHISPER="$MODELS/whisper-base"
if [ ! -f "$WHISPER/model.safetensors" ] || [ "$(cat "$WHISPER.converter.sha256" 2>/dev/null)" != "$conv_sha" ]; then
  log "converting $WHISPER_CT2 -> $WHISPER"
  "$FLYWHEEL_BIN" convert "$WHISPER_CT2" -o "$WHISPER"
  echo "$conv_sha" > "$WHISPER.converter.sha256"
else
  log "Whisper directory up to date ($WHISPER)"
fi

# 5. The console's browser tests: Debian's chromium and chromium-driver, axe-core from npm.
export FLYWHEEL_AXE_JS="$("$ROOT/scripts/browser-deps.sh")"

# 6. The suite.
export FLYWHEEL_WHISPER_CT2="$WHISPER_CT2" FLYWHEEL_WHISPER_DIR="$WHISPER"
export FLYWHEEL_MINILM_DIR="$MINILM_DIR" FLYWHEEL_MINILM_GGUF="$MINILM" FLYWHEEL_MINILM_Q8_GGUF="$MINILM_Q8" FLYWHEEL_RANK_GGUF="$RANK"
export FLYWHEEL_SMOL_GGUF="$SMOL" FLYWHEEL_QWEN_GGUF="$QWEN" FLYWHEEL_TINY_GGUF="$TINY" \
       FLYWHEEL_TINY_TOOLS_GGUF="$TINY_TOOLS" FLYWHEEL_TINY_THINK_GGUF="$TINY_THINK" \
       FLYWHEEL_QWEN_TOKENIZER="$TOKENIZER"
log "server: $FLYWHEEL_BIN"
cd "$ROOT"
set +e
"$PY" -m pytest tests/e2e -q -ra -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then log "no tests collected: failing"; exit 1; fi
exit "$rc"
