"""Shared pieces of the Python reference benchmarks (bench_lora_step.py, bench_generate.py,
bench_sft.py, bench_grpo.py).

The model shapes and the LCG token ids here must stay in step with the Rust benches
(benches/lora_step.rs, benches/generate.rs), which rebuild the same batches.

Models:
  qwen2-55m     random Qwen2 (hidden 512, 8 layers, 8 heads / 2 kv, ffn 1408, vocab 32000, untied)
  smollm2       SmolLM2-135M-Instruct from ~/.cache/agentbench-tuning/models/*.Q4_1.gguf, dequantised to f32
  qwen2.5-0.5b  random Qwen2 with Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14/2 heads, ffn 4864,
                vocab 151936, tied)
"""

import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a tqdm bar
import torch

GGUF_DIR = Path(os.path.expanduser("~/.cache/agentbench-tuning/models"))
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS = ["qwen2-55m", "smollm2", "qwen2.5-0.5b"]

QWEN2_SHAPES = {
    "qwen2-55m": dict(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=1408,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
}


def build_model(name, attn):
    """The f32 model for `name`; the random Qwen2 shapes draw from torch's global RNG (seed it first)."""
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if name == "smollm2":
        path = GGUF_DIR / GGUF_FILE
        if not path.exists():
            sys.exit(f"bench: {path} not found (run scripts/fetch_default_model.sh)")
        return AutoModelForCausalLM.from_pretrained(
            str(GGUF_DIR), gguf_file=GGUF_FILE, dtype=torch.float32, attn_implementation=attn
        )
    cfg = Qwen2Config(
        **QWEN2_SHAPES[name],
        max_position_embeddings=4096,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        attn_implementation=attn,
    )
    return Qwen2ForCausalLM(cfg).float()


def token_ids(batch, seq, vocab):
    """The benchmark batch, identical to the Rust benches: an LCG over the vocabulary, rows drawn in order."""
    state, rows = 12345, []
    for _ in range(batch):
        row = []
        for _ in range(seq):
            state = (state * 1103515245 + 12345) % (1 << 31)
            row.append(state % vocab)
        rows.append(row)
    return rows


# The crate's LoRA target names (`model::Target`) as transformers names the projections.
TARGETS = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}


def peft_trainer(model, cfg):
    """PEFT LoRA on `model` and AdamW over its adapters, as an exported trainer config says
    (`lora`, `checkpointing`, `learning_rate`, `adamw`): (model in train mode, trainable, optimizer)."""
    from peft import LoraConfig, get_peft_model

    lora, adamw = cfg["lora"], cfg["adamw"]
    if cfg["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=[TARGETS[t] for t in lora["targets"]],
            use_rslora=lora["use_rslora"],
            task_type="CAUSAL_LM",
            bias="none",
        ),
    )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        trainable, lr=cfg["learning_rate"], betas=tuple(adamw["betas"]), eps=adamw["eps"],
        weight_decay=adamw["weight_decay"],
    )
    return model, trainable, opt


def rss_mb():
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def reset_peak_rss():
    """Returns free heap to the kernel (garbage collection, glibc's malloc_trim) and resets the
    kernel's peak resident size (VmHWM) to the current one (Linux), so that `step_peak_rss_mb`
    measures what follows from what is live (the Rust benches do the same)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def step_peak_rss_mb():
    """VmHWM in MB: the peak since `reset_peak_rss`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def to_nf4(model, targets, double_quant=True):
    """Replaces the `targets` linear layers of `model` by bitsandbytes' NF4 Linear4bit (f32
    compute, double quantisation unless told otherwise), as QLoRA with PEFT does; returns it."""
    import bitsandbytes as bnb

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and name in targets:
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=torch.float32,
                    compress_statistics=double_quant,
                    quant_type="nf4",
                )
                q.weight = bnb.nn.Params4bit(
                    child.weight.data, requires_grad=False, compress_statistics=double_quant, quant_type="nf4"
                )
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                # bitsandbytes repacks weights for its AVX-512 bf16 inference kernel in eval mode,
                # which needs rows of at least 64 values; keep the dequantise-and-multiply path
                # that training and other CPUs take.
                q.support_avx512bf16_for_cpu = False
                setattr(module, name, q.to("cpu"))
    return model
