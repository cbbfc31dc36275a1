#!/usr/bin/env python3
"""Generate the committed PyTorch/transformers/PEFT reference fixtures under tests/fixtures/model/.

Run from the repo root after `bash scripts/setup_ref.sh`:

    .venv-ref/bin/python scripts/make_model_fixtures.py [--skip-gguf]

Everything is float32, CPU, eager attention, fixed seeds, so re-running it with the pinned versions in
scripts/requirements-ref.txt reproduces the files. The Rust tests only read the outputs; they never
run Python. See tests/fixtures/model/README.md for what each file holds.
"""

import argparse
import copy
import hashlib
import importlib.metadata
import json
import os
import struct
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a tqdm bar
import torch

warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 deprecation noise from PEFT
import transformers
import peft
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from peft import LoraConfig, get_peft_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "model"
GGUF_DIR = Path(os.path.expanduser("~/.cache/agentbench-tuning/models"))
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

BATCH, SEQ, VOCAB, PAD_ID = 3, 8, 128, 0
LEFT_PAD, RIGHT_PAD = 2, 3  # row 1 is left-padded by 2, row 2 right-padded by 3

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    attn_implementation="eager",
)

SMOL_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)
PROBE_IDS = [0, 1, 2, 100, 1000, 2000, 5000, 10000, 15000, 20000, 25000, 30000, 35000, 40000, 45000, 49151]

ALL_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def versions():
    return {"transformers": transformers.__version__, "torch": torch.__version__, "peft": peft.__version__}


# ----------------------------------------------------------------------------------------------------
# tiny random models


def make_configs():
    llama = LlamaConfig(
        **COMMON,
        rms_norm_eps=1e-5,
        rope_theta=100.0,
        tie_word_embeddings=False,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    )
    qwen2 = Qwen2Config(
        **COMMON,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        tie_word_embeddings=True,
        use_sliding_window=False,
    )
    qwen3 = Qwen3Config(
        **COMMON,
        head_dim=16,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        tie_word_embeddings=False,
        attention_bias=False,
    )
    return {
        "llama": (llama, LlamaForCausalLM, 1001),
        "qwen2": (qwen2, Qwen2ForCausalLM, 1002),
        "qwen3": (qwen3, Qwen3ForCausalLM, 1003),
    }


@torch.no_grad()
def reinit_(model, seed):
    """Overwrite every parameter so nothing is trivially 0 or 1 while logits stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # tied params are listed once (under embed_tokens)
        if "norm" in name:  # input_layernorm, post_attention_layernorm, model.norm, q_norm, k_norm
            assert name.endswith(".weight"), name
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif name.endswith(".bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    model.tie_weights()


def make_inputs():
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=g, dtype=torch.int64)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[1, :LEFT_PAD] = 0
    mask[2, SEQ - RIGHT_PAD :] = 0
    ids = ids.masked_fill(mask == 0, PAD_ID)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


@torch.no_grad()
def forward(model, ids, mask, pos):
    model.eval()
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    assert logits.shape == (BATCH, SEQ, VOCAB), logits.shape
    logits = logits.masked_fill(mask.unsqueeze(-1) == 0, 0.0)
    return logits.contiguous()


@torch.no_grad()
def check_rows_unpadded(model, ids, mask, logits, what):
    """Each row's real tokens alone (no padding, positions 0..n) must give the same logits."""
    worst = 0.0
    for b in range(BATCH):
        real = mask[b].bool()
        x = ids[b][real].unsqueeze(0)
        ref = model(input_ids=x).logits[0]
        worst = max(worst, (ref - logits[b][real]).abs().max().item())
    print(f"  [{what}] padded-vs-unpadded per-row max |diff| = {worst:.2e}")
    assert worst < 1e-5, f"{what}: padding changes real-token logits by {worst}"


def save_safetensors(tensors, path, metadata):
    """safetensors.torch.save_file with a reproducible header: the library writes the metadata map in
    hash order (differs run to run); rewrite the header with sorted metadata keys so regenerating the
    fixtures with the same versions gives byte-identical files."""
    save_file(tensors, str(path), metadata=metadata)
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])  # tensor entries keep the file's (offset) order
    meta = header.pop("__metadata__", {})
    out = {"__metadata__": dict(sorted(meta.items()))}
    out.update(header)
    h = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    os.chmod(path, 0o644)


def save_expected(path, ids, mask, pos, logits, extra_meta=None):
    meta = versions()
    if extra_meta:
        meta.update(extra_meta)
    tensors = {
        "input_ids": ids.contiguous(),
        "attention_mask": mask.contiguous(),
        "position_ids": pos.contiguous(),
        "logits": logits.contiguous(),
    }
    save_safetensors(tensors, path, meta)


def add_legacy_rope_keys(cfg_path):
    """transformers 5 writes rope settings only as `rope_parameters` ({rope_type, rope_theta, ...}).
    Published checkpoints (and most non-Python loaders) use top-level `rope_theta` and `rope_scaling`
    (null for default rope). Add those keys too so the fixture config looks like a real HF config;
    transformers 5 still loads it identically (checked below)."""
    cfg = json.loads(cfg_path.read_text())
    rp = cfg.get("rope_parameters")
    if rp is None:
        return
    cfg["rope_theta"] = rp["rope_theta"]
    if rp.get("rope_type", "default") == "default":
        cfg["rope_scaling"] = None
    else:
        cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def build_tiny(ids, mask, pos):
    bases = {}
    for name, (cfg, cls, seed) in make_configs().items():
        torch.manual_seed(seed)
        model = cls(cfg).float().eval()
        reinit_(model, seed)
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        add_legacy_rope_keys(d / "config.json")
        (d / "generation_config.json").unlink(missing_ok=True)  # not needed by the Rust loader
        logits = forward(model, ids, mask, pos)
        check_rows_unpadded(model, ids, mask, logits, name)
        # round-trip: reload what was written and check the logits are identical
        re = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        rl = forward(re, ids, mask, pos)
        assert torch.equal(rl, logits), f"{name}: reload mismatch {(rl - logits).abs().max()}"
        save_expected(d / "expected.safetensors", ids, mask, pos, logits)
        print(f"  {name}: max|logits| = {logits.abs().max().item():.4f}, std = {logits[mask.bool()].std().item():.4f}")
        bases[name] = (model, logits)
    return bases


# ----------------------------------------------------------------------------------------------------
# PEFT LoRA adapters


@torch.no_grad()
def randomize_lora_(peft_model, seed):
    g = torch.Generator().manual_seed(seed)
    n = 0
    for name, p in peft_model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
            n += 1
    assert n > 0
    return n


def tidy_adapter_dir(d, base_name):
    """PEFT writes target_modules from a Python set (order varies run to run) and a boilerplate model
    card. Make adapter_config.json reproducible and point it at the sibling base-model fixture."""
    (d / "README.md").unlink(missing_ok=True)
    p = d / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = f"../{base_name}"
    p.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def build_lora(bases, ids, mask, pos):
    specs = {
        "llama_lora": (
            "llama",
            LoraConfig(
                r=4,
                lora_alpha=8,
                lora_dropout=0.0,
                target_modules=ALL_LORA_TARGETS,
                task_type="CAUSAL_LM",
                bias="none",
            ),
            2001,
        ),
        "qwen2_rslora": (
            "qwen2",
            LoraConfig(
                r=8,
                lora_alpha=4,
                use_rslora=True,
                target_modules=["q_proj", "v_proj", "down_proj"],
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
                bias="none",
            ),
            2002,
        ),
    }
    for dname, (base_name, lcfg, seed) in specs.items():
        base, base_logits = bases[base_name]
        model = copy.deepcopy(base)  # get_peft_model mutates the model it wraps
        if base.config.tie_word_embeddings:
            model.tie_weights()
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        pm = get_peft_model(model, lcfg)
        n = randomize_lora_(pm, seed)
        pm.eval()
        d = OUT / dname
        d.mkdir(parents=True, exist_ok=True)
        pm.save_pretrained(d, safe_serialization=True, save_embedding_layers=False)
        tidy_adapter_dir(d, base_name)
        logits = forward(pm, ids, mask, pos)
        check_rows_unpadded(pm, ids, mask, logits, dname)
        # merged weights must give the same logits (sanity of the adapter itself)
        merged = copy.deepcopy(pm).merge_and_unload()
        ml = forward(merged, ids, mask, pos)
        merge_diff = (ml - logits).abs().max().item()
        assert merge_diff < 1e-4, merge_diff
        # reload base from disk + adapter from disk -> same logits
        from peft import PeftModel

        cls = type(base)
        rb = cls.from_pretrained(OUT / base_name, dtype=torch.float32, attn_implementation="eager")
        rp = PeftModel.from_pretrained(rb, d).eval()
        rl = forward(rp, ids, mask, pos)
        reload_diff = (rl - logits).abs().max().item()
        assert reload_diff < 1e-6, reload_diff
        save_expected(d / "expected.safetensors", ids, mask, pos, logits)
        delta = (logits - base_logits).abs().max().item()
        print(
            f"  {dname}: {n} lora tensors, max|logits| = {logits.abs().max().item():.4f}, "
            f"max|lora - base| = {delta:.4f}, merged-vs-unmerged = {merge_diff:.2e}, reload = {reload_diff:.2e}"
        )
        assert delta > 1e-2


# ----------------------------------------------------------------------------------------------------
# SmolLM2 from GGUF


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def build_gguf():
    path = GGUF_DIR / GGUF_FILE
    if not path.exists():
        print(f"  SKIP smollm2_gguf: {path} not found (scripts/fetch_default_model.sh)")
        return
    tok = AutoTokenizer.from_pretrained(str(GGUF_DIR), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        str(GGUF_DIR), gguf_file=GGUF_FILE, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = tok(SMOL_PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"].to(torch.int64)
    T = ids.shape[1]
    logits = model(input_ids=ids).logits[0].float()  # [T, V]
    V = logits.shape[-1]
    assert V == 49152, V
    probe = torch.tensor(PROBE_IDS, dtype=torch.int64)
    tokens = tok.convert_ids_to_tokens(ids[0].tolist())
    tensors = {
        "input_ids": ids.contiguous(),
        "logits_last": logits[-1].contiguous(),
        "logsumexp": torch.logsumexp(logits, dim=-1).contiguous(),
        "argmax": logits.argmax(dim=-1).to(torch.int64).contiguous(),
        "logits_probe": logits[:, probe].contiguous(),
        "probe_ids": probe,
    }
    meta = versions()
    meta.update(
        {
            "gguf": importlib.metadata.version("gguf"),
            "gguf_file": GGUF_FILE,
            "gguf_sha256": sha256(path),
            "tokens": json.dumps(tokens, ensure_ascii=False),
            "prompt": SMOL_PROMPT,
        }
    )
    d = OUT / "smollm2_gguf"
    d.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, d / "expected.safetensors", meta)
    cfg = model.config
    print(
        f"  smollm2_gguf: T={T}, layers={cfg.num_hidden_layers}, hidden={cfg.hidden_size}, "
        f"heads={cfg.num_attention_heads}/{cfg.num_key_value_heads}, tie={cfg.tie_word_embeddings}, "
        f"rope={getattr(cfg, 'rope_parameters', None)}, eps={cfg.rms_norm_eps}"
    )
    print(f"  tokens: {tokens}")
    print(f"  max|logits_last| = {logits[-1].abs().max().item():.4f}, max|logits| = {logits.abs().max().item():.4f}")
    top = torch.topk(torch.log_softmax(logits[-1], -1), 5)
    print("  top-5 next:", [(tok.decode([i]), round(p, 3)) for i, p in zip(top.indices.tolist(), top.values.exp().tolist())])
    print("  argmax per position decoded:", [tok.decode([i]) for i in tensors["argmax"].tolist()])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-gguf", action="store_true", help="do not (re)generate smollm2_gguf/")
    args = ap.parse_args()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    print("versions:", versions())
    ids, mask, pos = make_inputs()
    print("input_ids:\n", ids, "\nattention_mask:\n", mask, "\nposition_ids:\n", pos)
    print("tiny models:")
    bases = build_tiny(ids, mask, pos)
    print("lora adapters:")
    build_lora(bases, ids, mask, pos)
    if not args.skip_gguf:
        print("gguf:")
        build_gguf()
    for f in OUT.rglob("*"):
        if f.is_file():
            os.chmod(f, 0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
