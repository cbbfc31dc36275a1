#!/usr/bin/env bash
# Prepare this checkout to run notebooks: a Python venv (.venv) with the headless notebook engine
# and the evcxr Jupyter kernel for Rust. Idempotent and quick when everything is already there.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

need() {
  command -v "$1" >/dev/null || { echo "setup: $1 not found. $2" >&2; exit 1; }
}
need cargo "Install Rust: https://rustup.rs"
need python3 "Install Python 3 (Debian: apt-get install python3 python3-venv)"

# 1. Python venv with the notebook engine, re-installed only when requirements change.
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv setup "$root/.venv" scripts/requirements.txt "the notebook engine"

# 2. The Rust kernel.
bash "$root/kernel/install.sh" "$@"
