#!/usr/bin/env bash
# What the console's browser tests need, installed when missing: Debian's `chromium` and
# `chromium-driver` (headless, no browser download), and axe-core from npm (pinned) into
# ${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}/npm. Idempotent and quiet when everything is there.
set -euo pipefail
CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
AXE_VERSION="4.14.1"
log() { printf '[browser-deps] %s\n' "$*" >&2; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

AXE="$CACHE/npm/node_modules/axe-core/axe.min.js"
if [ ! -f "$AXE" ] || ! grep -q "\"version\": \"$AXE_VERSION\"" "$CACHE/npm/node_modules/axe-core/package.json"; then
  command -v npm >/dev/null 2>&1 || { log "npm not found: install Debian's npm"; exit 1; }
  log "installing axe-core@$AXE_VERSION into $CACHE/npm"
  mkdir -p "$CACHE/npm"
  npm install --silent --no-audit --no-fund --prefix "$CACHE/npm" "axe-core@$AXE_VERSION" >/dev/null
fi
echo "$AXE"
