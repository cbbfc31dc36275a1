#!/usr/bin/env bash
# Create/refresh the Python reference environment .venv-ref (torch + transformers + peft + gguf) used by
# scripts/make_model_fixtures.py and scripts/bench_lora_step.py. Idempotent: re-installs only when
# scripts/requirements-ref.txt changes. Not needed to build or test the Rust crate.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
command -v python3 >/dev/null || { echo "setup_ref: python3 not found" >&2; exit 1; }

venv="$root/.venv-ref"
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv setup_ref "$venv" scripts/requirements-ref.txt "torch, transformers, PEFT (torch pulls ~5.6 GB of CUDA wheels)"
"$venv/bin/python" - <<'PY'
import torch, transformers, peft, gguf, safetensors, numpy, bitsandbytes
print("setup_ref: torch", torch.__version__, "| transformers", transformers.__version__,
      "| peft", peft.__version__, "| bitsandbytes", bitsandbytes.__version__, "| safetensors", safetensors.__version__, "| numpy", numpy.__version__)
PY
