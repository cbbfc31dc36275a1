#!/usr/bin/env bash
# Create/refresh the Python reference environment .venv-ref (torch + transformers + peft + gguf) used by
# scripts/make_model_fixtures.py and scripts/bench_lora_step.py. Idempotent: re-installs only when
# scripts/requirements-ref.txt changes. Not needed to build or test the Rust crate.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
command -v python3 >/dev/null || { echo "setup_ref: python3 not found" >&2; exit 1; }

venv="$root/.venv-ref"
req="$root/scripts/requirements-ref.txt"
stamp="$venv/.requirements-ref.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup_ref: python3 -m venv failed; installing Debian's python3-venv"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    else
      echo "setup_ref: python3 -m venv failed. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
fi

if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup_ref: installing $req into .venv-ref (torch pulls ~5.6 GB of CUDA wheels)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$req"
  echo "$want" > "$stamp"
else
  echo "setup_ref: .venv-ref up to date"
fi
"$venv/bin/python" - <<'PY'
import torch, transformers, peft, gguf, safetensors, numpy
print("setup_ref: torch", torch.__version__, "| transformers", transformers.__version__,
      "| peft", peft.__version__, "| safetensors", safetensors.__version__, "| numpy", numpy.__version__)
PY
