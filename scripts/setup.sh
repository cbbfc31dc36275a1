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
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: python3 -m venv failed; installing Debian's python3-venv"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    else
      echo "setup: python3 -m venv failed. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the notebook engine into .venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
  echo "$want" > "$stamp"
else
  echo "setup: .venv is up to date"
fi

# 2. The Rust kernel.
bash "$root/kernel/install.sh" "$@"
