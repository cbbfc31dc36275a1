#!/usr/bin/env bash
# Checks that what this crate writes is what PEFT and transformers read: a LoRA adapter saved by
# `Decoder::save_adapter` loads with `PeftModel.from_pretrained`, and `Decoder::save_merged` loads
# with `AutoModelForCausalLM.from_pretrained`, both giving the Rust logits (tolerance 1e-4).
# With --qlora the adapter is trained through an NF4 base (QLoRA) and PEFT loads it onto the base
# with bitsandbytes' NF4 round trip on every projection, which must give the Rust logits, and onto the
# full-precision base, which must load (its logits differ by the quantisation); the merged export
# is not checked then.
# Needs the reference environment (bash scripts/setup_ref.sh). Not part of the test command,
# which never runs Python.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[ -x .venv-ref/bin/python ] || { echo "check_peft_export: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fixture=tests/fixtures/model/qwen3
cargo run -q --locked --example export_adapter -- "$fixture" "$out" "$@"
TQDM_DISABLE=1 .venv-ref/bin/python - "$fixture" "$out" "$@" <<'PY'
import os, sys, warnings
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
warnings.filterwarnings("ignore")
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
fixture, out, qlora = sys.argv[1], sys.argv[2], "--qlora" in sys.argv[3:]
e = load_file(f"{fixture}/expected.safetensors")
rust = load_file(f"{out}/rust_logits.safetensors")["logits"]
real = e["attention_mask"].bool()
def logits(model):
    with torch.no_grad():
        return model(input_ids=e["input_ids"], attention_mask=e["attention_mask"], position_ids=e["position_ids"]).logits
load = lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
if qlora:
    # Each projection replaced by bitsandbytes' NF4 round trip (single quantisation, as the Rust
    # side), dequantised by bitsandbytes' reference implementation: its native CPU kernel reads
    # the scales per row, wrong for these rows of 32 values (docs/memory.md).
    import bitsandbytes.functional as F
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    base = load(fixture)
    code = F.get_4bit_type("nf4", device="cpu")
    for m in base.modules():
        for name, child in m.named_children():
            if isinstance(child, torch.nn.Linear) and name in targets:
                w = child.weight.data
                packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
                child.weight.data = _dequantize_4bit_compute(packed.reshape(-1), state.absmax, code, 64, w.shape, w.dtype)
    nf4 = (logits(PeftModel.from_pretrained(base, out).eval()) - rust)[real].abs().max().item()
    full = (logits(PeftModel.from_pretrained(load(fixture), out).eval()) - rust)[real].abs().max().item()
    print(f"PEFT loading the QLoRA adapter onto the base with bitsandbytes' NF4 round trip: max |Δlogits| {nf4:.1e}; "
          f"onto the full-precision base: {full:.2f} (the quantisation's own effect)")
    sys.exit(0 if nf4 < 1e-4 else 1)
peft = (logits(PeftModel.from_pretrained(load(fixture), out).eval()) - rust)[real].abs().max().item()
merged = (logits(load(f"{out}/merged")) - rust)[real].abs().max().item()
effect = (rust - e["logits"])[real].abs().max().item()
print(f"PEFT loading the Rust adapter: max |Δlogits| {peft:.1e}; transformers loading the merged export: {merged:.1e} (the adapter moves logits by {effect:.2f})")
sys.exit(0 if max(peft, merged) < 1e-4 and effect > 1e-2 else 1)
PY
