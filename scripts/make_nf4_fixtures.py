#!/usr/bin/env python3
"""Generate tests/fixtures/nf4/nf4.safetensors: bitsandbytes' NF4 quantisation of fixed tensors.

Run from the repo root after `bash scripts/setup_ref.sh`:

    .venv-ref/bin/python scripts/make_nf4_fixtures.py [--skip-model]

Holds, for each case `NAME` (a weight `[out, in]`):
  NAME                      the input (float32, or bfloat16 for `bf16`)
  NAME.packed / .absmax     bitsandbytes.functional.quantize_4bit(blocksize=64, quant_type="nf4")
  NAME.dequant              its dequantisation (bitsandbytes' reference implementation), float32
  NAME.dq.codes / .absmax2 / .offset / .dequant  (no .dequant tensors for `big`)
                            the same with compress_statistics=True (the block scales quantised to
                            8 bits in blocks of 256 around their mean)
  NAME.dq.nearest           the 8-bit codes of the scales by exact nearest-code rounding (what the
                            CUDA kernel computes; bitsandbytes' CPU kernel rounds through a
                            65536-entry table, which differs on a few scales)
and `code.nf4` [16], `code.dynamic` [256]: the code books.

Unless --skip-model, also tests/fixtures/nf4/smollm2_nf4.safetensors: the embedded default model
(SmolLM2-135M-Instruct Q4_1 GGUF, `bash scripts/fetch_default_model.sh`) loaded by transformers in
f32, with every projection replaced by bitsandbytes' NF4 (double quantisation) round trip, as
QLoRA computes it: `input_ids`, the next-token log-probs `logprobs` (f32 model) and
`logprobs_nf4` (`logprobs_nf4_dq` with double quantisation). The Rust tests only read the files.
"""

import argparse
import importlib.metadata
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import bitsandbytes.functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from safetensors.torch import save_file

OUT = Path("tests/fixtures/nf4/nf4.safetensors")
MODEL_OUT = Path("tests/fixtures/nf4/smollm2_nf4.safetensors")


def cases():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(48, 256, generator=g) * 0.02
    a[3, :64] = 0.0  # an all-zero block
    a[5, 70] = 0.9  # an outlier dominating its block
    a[7, :64] = torch.linspace(-1.0, 1.0, 64)  # every code book region
    big = torch.randn(40, 1024, generator=g) * 0.05  # 640 blocks: three 256-blocks of scales
    bf16 = (torch.randn(64, 96, generator=g) * 0.03).to(torch.bfloat16)
    odd = torch.randn(5, 27, generator=g)  # 135 values: a partial last block, an odd count
    return {"a": a, "big": big, "bf16": bf16, "odd": odd}


def dequantize(packed, absmax, shape, dtype):
    """bitsandbytes' reference dequantisation (flat blocks of 64, as its CUDA kernel). Its native
    CPU kernel (0.50.2) reads the scales per row, so rows that are not a multiple of 64 values
    (the `bf16` case) get other blocks' scales there."""
    code = F.get_4bit_type("nf4", device="cpu")
    return _dequantize_4bit_compute(packed.reshape(-1), absmax, code, 64, shape, dtype).float().contiguous()


def versions():
    return {
        "generator": "scripts/make_nf4_fixtures.py",
        "bitsandbytes": importlib.metadata.version("bitsandbytes"),
        "torch": torch.__version__,
    }


def model_fixture():
    """Next-token log-probs of the default model, f32 and with NF4 projections (bitsandbytes)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(Path(__file__).parent))
    from make_model_fixtures import GGUF_DIR, GGUF_FILE
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(GGUF_DIR), gguf_file=GGUF_FILE, dtype=torch.float32, attn_implementation="eager"
    )
    ids = load_file("tests/fixtures/model/smollm2_gguf/expected.safetensors")["input_ids"].reshape(1, -1)

    def logprobs():
        with torch.no_grad():
            logits = model(ids).logits[0]
        return torch.log_softmax(logits, -1)[:-1].gather(1, ids[0, 1:, None])[:, 0].contiguous()

    out = {"input_ids": ids.contiguous(), "logprobs": logprobs()}
    linears = [
        m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"
    ]
    weights = [m.weight.data.clone() for m in linears]
    for key, double in [("logprobs_nf4", False), ("logprobs_nf4_dq", True)]:
        for module, w in zip(linears, weights):
            packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double)
            module.weight.data = F.dequantize_4bit(packed, state)
        out[key] = logprobs()
    full, nf4 = out["logprobs"], out["logprobs_nf4_dq"]
    save_file(out, str(MODEL_OUT), metadata={"versions": json.dumps(versions())})
    print(f"wrote {MODEL_OUT}: mean log-prob {full.mean():.3f} (f32) vs {nf4.mean():.3f} (NF4)")


def main():
    out = {"code.nf4": F.get_4bit_type("nf4", device="cpu").float().contiguous(), "code.dynamic": F.create_dynamic_map().float()}
    for name, w in cases().items():
        out[name] = w.contiguous()
        packed, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
        out[f"{name}.packed"] = packed.reshape(-1).contiguous()
        out[f"{name}.absmax"] = st.absmax.float().contiguous()
        if name != "big":
            out[f"{name}.dequant"] = dequantize(packed, st.absmax, w.shape, w.dtype)
        packed2, st2 = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert torch.equal(packed2, packed)
        out[f"{name}.dq.codes"] = st2.absmax.reshape(-1).contiguous()
        out[f"{name}.dq.absmax2"] = st2.state2.absmax.float().contiguous()
        out[f"{name}.dq.offset"] = st2.offset.float().reshape(1).contiguous()
        if name != "big":
            scales = F.dequantize_blockwise(st2.absmax, st2.state2) + st2.offset
            out[f"{name}.dq.dequant"] = dequantize(packed2, scales, w.shape, w.dtype)
        # Exact nearest-code rounding of the centred scales, blocks of 256.
        centred = st.absmax.float() - st2.offset.float()
        code = out["code.dynamic"]
        nearest = []
        for i, block in enumerate(centred.split(256)):
            scale = block.abs().max()
            assert torch.equal(scale, st2.state2.absmax[i].float())
            normed = block * (1.0 / scale)
            mids = (code[:-1] + code[1:]) / 2
            nearest.append(torch.bucketize(normed, mids).to(torch.uint8))
        out[f"{name}.dq.nearest"] = torch.cat(nearest).contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(OUT), metadata={"versions": json.dumps(versions())})
    diff = sum(int((out[f"{n}.dq.codes"] != out[f"{n}.dq.nearest"]).sum()) for n in cases())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); 8-bit scale codes differing from nearest: {diff}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-model", action="store_true", help="only the tensor fixtures")
    args = parser.parse_args()
    main()
    if not args.skip_model:
        model_fixture()
