#!/usr/bin/env python3
"""PyTorch + PEFT side of the LoRA training-step benchmark (CPU, float32).

One step = forward + causal-LM cross-entropy (labels = input_ids) + backward + AdamW.step + zero_grad,
with LoRA (r=16, alpha=32, dropout 0) on q/k/v/o/gate/up/down and only the LoRA weights trainable.
--checkpoint turns on gradient checkpointing, --nf4 QLoRA (bitsandbytes Linear4bit, NF4 with double
quantisation). `peak_rss_mb` is the peak during the steps (reset after loading).
The batch is one fixed LCG-generated batch of token ids (no padding; the same ids as benches/lora_step.rs), reused every step, so the loss
should go down step by step.

    .venv-ref/bin/python scripts/bench_lora_step.py --model qwen2-55m --steps 8 --warmup 2 --json

Models (built in scripts/bench_common.py):
  qwen2-55m     random Qwen2 (hidden 512, 8 layers, 8 heads / 2 kv, ffn 1408, vocab 32000, untied)
  smollm2       SmolLM2-135M-Instruct from ~/.cache/agentbench-tuning/models/*.Q4_1.gguf, dequantised to f32
  qwen2.5-0.5b  random Qwen2 with Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14/2 heads, ffn 4864,
                vocab 151936, tied)
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (  # noqa: E402  (sets TQDM_DISABLE before torch)
    MODELS,
    build_model,
    reset_peak_rss,
    rss_mb,
    step_peak_rss_mb,
    to_nf4,
    token_ids,
)

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 deprecation noise from PEFT

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, default="qwen2-55m")
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="transformers attention kernel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", action="store_true", help="gradient checkpointing (non-reentrant)")
    ap.add_argument("--nf4", action="store_true", help="QLoRA: bitsandbytes NF4 base projections")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a human summary")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import transformers
    import peft
    from peft import LoraConfig, get_peft_model

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    base = build_model(args.model, args.attn)
    total_params = sum(p.numel() for p in base.parameters())
    if args.nf4:
        to_nf4(base, TARGETS)
    if args.checkpoint:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    model = get_peft_model(
        base,
        LoraConfig(
            r=args.rank,
            lora_alpha=args.alpha,
            lora_dropout=0.0,
            target_modules=TARGETS,
            task_type="CAUSAL_LM",
            bias="none",
        ),
    )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=args.lr)
    load_s = time.perf_counter() - t0
    load_peak_rss = rss_mb()
    reset_peak_rss()

    vocab = model.config.vocab_size
    ids = torch.tensor(token_ids(args.batch, args.seq, vocab), dtype=torch.int64)

    losses, times_ms = [], []
    for step in range(args.warmup + args.steps):
        t = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = (time.perf_counter() - t) * 1000.0
        losses.append(out.loss.item())
        if step >= args.warmup:
            times_ms.append(dt)
        if not args.json:
            tag = "warmup" if step < args.warmup else "step"
            print(f"  {tag} {step}: loss {losses[-1]:.4f}  {dt:.1f} ms", flush=True)

    med = statistics.median(times_ms) if times_ms else float("nan")
    result = {
        "impl": "pytorch+peft",
        "model": args.model,
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank,
        "alpha": args.alpha,
        "lr": args.lr,
        "attn": args.attn,
        "dtype": "f32",
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "ms_per_step_median": med,
        "ms_per_step": times_ms,
        "tokens_per_s": args.batch * args.seq / (med / 1000.0) if times_ms else float("nan"),
        "losses": losses,  # every step in order, warmup steps first
        "params_total": total_params,
        "params_trainable": n_trainable,
        "load_s": load_s,
        "peak_rss_mb": step_peak_rss_mb(),
        "load_peak_rss_mb": load_peak_rss,
        "checkpointing": args.checkpoint,
        "nf4": args.nf4,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.model}: {med:.1f} ms/step (median of {len(times_ms)}), {result['tokens_per_s']:.1f} tok/s, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB, {n_trainable:,} trainable / {total_params:,} params, "
            f"threads {result['threads']}, torch {torch.__version__}, peft {peft.__version__}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
