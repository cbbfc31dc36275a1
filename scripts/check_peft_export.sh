#!/usr/bin/env bash
# Checks that what this crate writes is what PEFT and transformers read: a LoRA adapter saved by
# `Decoder::save_adapter` loads with `PeftModel.from_pretrained`, and `Decoder::save_merged` loads
# with `AutoModelForCausalLM.from_pretrained`, both giving the Rust logits (tolerance 1e-4).
# Needs the reference environment (bash scripts/setup_ref.sh). Not part of the test command,
# which never runs Python.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[ -x .venv-ref/bin/python ] || { echo "check_peft_export: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fixture=tests/fixtures/model/qwen3
cargo run -q --locked --example export_adapter -- "$fixture" "$out"
TQDM_DISABLE=1 .venv-ref/bin/python - "$fixture" "$out" <<'PY'
import sys, warnings
warnings.filterwarnings("ignore")
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
fixture, out = sys.argv[1], sys.argv[2]
e = load_file(f"{fixture}/expected.safetensors")
rust = load_file(f"{out}/rust_logits.safetensors")["logits"]
real = e["attention_mask"].bool()
def logits(model):
    with torch.no_grad():
        return model(input_ids=e["input_ids"], attention_mask=e["attention_mask"], position_ids=e["position_ids"]).logits
load = lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
peft = (logits(PeftModel.from_pretrained(load(fixture), out).eval()) - rust)[real].abs().max().item()
merged = (logits(load(f"{out}/merged")) - rust)[real].abs().max().item()
effect = (rust - e["logits"])[real].abs().max().item()
print(f"PEFT loading the Rust adapter: max |Δlogits| {peft:.1e}; transformers loading the merged export: {merged:.1e} (the adapter moves logits by {effect:.2f})")
sys.exit(0 if max(peft, merged) < 1e-4 and effect > 1e-2 else 1)
PY
