#!/usr/bin/env python3
"""PyTorch + PEFT side of the SFT benchmark (CPU, float32).

Trains SmolLM2-135M-Instruct with LoRA on exactly the rows that `benches/sft_step.rs --export`
wrote: the same packed rows of the tiny profile's data, the same loss masks, the same
configuration (rank, alpha, dropout, targets, lr, AdamW, warmup + cosine, clipping, gradient
accumulation, activation checkpointing). One step = forward + backward of every micro-batch
(loss = summed NLL of trained tokens / trained tokens of the step) + clipping + AdamW.

Packed rows carry `position_ids` that restart at every example and no attention mask, so
transformers builds the block-diagonal causal mask itself (its packed-sequence detection).

    .venv-ref/bin/python scripts/bench_sft.py --rows /tmp/rows.json --json
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
from bench_common import build_model, peft_trainer, rss_mb  # noqa: E402  (sets TQDM_DISABLE before torch)

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def micro_batch_tensors(rows, pad_id):
    """input_ids, position_ids and labels (-100 where no loss) of one micro-batch of packed rows."""
    width = max(sum(len(e["ids"]) for e in row) for row in rows)
    ids, pos, labels, tokens = [], [], [], 0
    for row in rows:
        r_ids, r_pos, r_lab = [], [], []
        for e in row:
            n = len(e["ids"])
            r_ids += e["ids"]
            r_pos += list(range(n))
            # Token k is a target when it is trained and not the example's first token.
            r_lab += [-100] + [t if m == 1 else -100 for t, m in zip(e["ids"][1:], e["mask"][1:])]
            tokens += n
        pad = width - len(r_ids)
        r_ids += [pad_id] * pad
        r_pos += list(range(pad))
        r_lab += [-100] * pad
        ids.append(r_ids)
        pos.append(r_pos)
        labels.append(r_lab)
    as_long = lambda x: torch.tensor(x, dtype=torch.int64)  # noqa: E731
    return as_long(ids), as_long(pos), as_long(labels), tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", required=True, help="the JSON written by benches/sft_step.rs --export")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a summary")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import transformers
    import peft

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    export = json.load(open(args.rows))
    cfg, pad_id, warmup, steps = export["config"], export["pad_id"], export["warmup"], export["steps"]
    lora = cfg["lora"]
    torch.manual_seed(lora["seed"])

    model = build_model("smollm2", args.attn)
    model, trainable, opt = peft_trainer(model, cfg)
    total = len(steps)
    sched = transformers.get_cosine_schedule_with_warmup(opt, round(cfg["warmup_ratio"] * total), total)

    losses, tok_per_s, trained_per_step = [], [], []
    for step, micro in enumerate(steps):
        t = time.perf_counter()
        batches = [micro_batch_tensors(rows, pad_id) for rows in micro]
        trained = sum(int((lab != -100).sum()) for _, _, lab, _ in batches)
        loss_sum, tokens = 0.0, 0
        for ids, pos, lab, n in batches:
            logits = model(input_ids=ids, position_ids=pos).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
            )
            loss = nll / max(trained, 1)
            loss.backward()
            loss_sum += loss.item()
            tokens += n
        if cfg["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(trainable, cfg["max_grad_norm"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        losses.append(loss_sum)
        if step >= warmup:
            tok_per_s.append(tokens / dt)
            trained_per_step.append(trained)
        if not args.json:
            print(f"  step {step + 1}/{total}: loss {loss_sum:.4f}  {tokens / dt:.0f} tok/s", flush=True)

    result = {
        "impl": "pytorch+peft",
        "attn": args.attn,
        "threads": torch.get_num_threads(),
        "checkpointing": cfg["checkpointing"],
        "steps": total - warmup,
        "warmup": warmup,
        "tokens_per_s": statistics.median_high(tok_per_s),
        "trained_tokens_per_step": statistics.mean(trained_per_step),
        "losses": losses,
        "peak_rss_mb": rss_mb(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['tokens_per_s']:.0f} tok/s (median of {len(tok_per_s)} steps), peak RSS {result['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
