#!/usr/bin/env python3
"""PyTorch + PEFT side of the GRPO benchmark (CPU, float32): the update half of a GRPO step.

Makes the same updates as `benches/grpo_step.rs --export` on exactly the episodes it played:
SmolLM2-135M-Instruct (with the same SFT adapter merged, when the candle side had one), fresh
LoRA adapters with the same configuration, and per step:

  advantages   (r - mean) / (sample std + 1e-4) within each group (or r - mean), flat groups skipped
  reference    log-probs of the policy's tokens with the adapters off (no gradient)
  policy       the same with the adapters on, in micro-batches of `micro_batch` episodes
  loss         -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * k3 KL,
               aggregated as configured (grpo: mean per episode, then over the step's episodes)
  update       backward, global-norm clipping, AdamW at the cosine schedule's learning rate

With one iteration per step the sampling policy is the current one (ratio 1), as in the trainer.
Rollouts are not replayed here (the environments live in Rust); generation speed against
transformers is `scripts/bench_generate.sh`.

    .venv-ref/bin/python scripts/bench_grpo.py --episodes /tmp/grpo.json [--adapter DIR] --json
"""

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import build_model, peft_trainer, rss_mb  # noqa: E402  (sets TQDM_DISABLE before torch)

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def group_advantages(scores, g, scale):
    """Advantages and kept flags, as agentbench_tuning::train::group_advantages."""
    adv, kept = [], []
    for i in range(0, len(scores), g):
        group = scores[i : i + g]
        if max(group) - min(group) < 1e-9:
            adv += [0.0] * len(group)
            kept += [False] * len(group)
            continue
        mean = sum(group) / len(group)
        div = 1.0
        if scale == "std":
            div = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - 1)) + 1e-4
        adv += [(r - mean) / div for r in group]
        kept += [True] * len(group)
    return adv, kept


def policy_logprobs(model, episodes, pad_id, temperature):
    """[n, t-1] log-probs of each next token at the rollout temperature (as the candle trainer
    takes them) and the [n, t-1] mask of the policy's own tokens."""
    width = max(len(e["tokens"]) for e in episodes)
    ids = torch.tensor([e["tokens"] + [pad_id] * (width - len(e["tokens"])) for e in episodes])
    attn = torch.tensor([[1] * len(e["tokens"]) + [0] * (width - len(e["tokens"])) for e in episodes])
    mask = torch.tensor([e["mask"][1:] + [0] * (width - len(e["mask"])) for e in episodes], dtype=torch.float32)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / temperature
    lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return lp, mask


def grpo_loss(lp, old, ref, adv, mask, loss_cfg, norm_sequences, norm_tokens):
    """The step-normalised GRPO loss of one micro-batch, its summed KL and its token count."""
    keep = mask != 0
    ratio = torch.where(keep, lp - old, torch.zeros_like(lp)).exp()
    a = adv.unsqueeze(1)
    lo, hi = 1.0 - loss_cfg["epsilon_low"], 1.0 + loss_cfg["epsilon_high"]
    surrogate = torch.minimum(ratio * a, ratio.clamp(lo, hi) * a)
    per_token = -surrogate
    kl_sum = 0.0
    if ref is not None:
        d = torch.where(keep, ref - lp, torch.zeros_like(lp))
        kl = d.exp() - d - 1.0
        kl_sum = float((kl.detach() * mask).sum())
        if loss_cfg["beta"] > 0:
            per_token = per_token + loss_cfg["beta"] * kl
    masked = per_token * mask
    agg = loss_cfg["aggregation"]
    if agg == "grpo":
        loss = (masked.sum(1) / mask.sum(1).clamp(min=1)).sum() / max(norm_sequences, 1)
    elif agg == "dapo":
        loss = masked.sum() / max(norm_tokens, 1)
    else:
        loss = masked.sum() / (max(norm_sequences, 1) * loss_cfg["max_completion_tokens"])
    return loss, kl_sum, int(mask.sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", required=True, help="the JSON written by benches/grpo_step.rs --export")
    ap.add_argument("--adapter", help="the PEFT adapter the candle side merged (its --adapter)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a summary")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import transformers
    import peft
    from peft import PeftModel

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    export = json.load(open(args.episodes))
    cfg, pad_id, warmup, steps = export["config"], export["pad_id"], export["warmup"], export["steps"]
    lora, loss_cfg = cfg["lora"], cfg["loss"]
    if cfg["iterations"] != 1:
        sys.exit("bench_grpo: only one iteration per step is mirrored")
    if cfg.get("mask_truncated"):
        sys.exit("bench_grpo: mask_truncated is not mirrored")
    torch.manual_seed(lora["seed"])

    model = build_model("smollm2", args.attn)
    if args.adapter:
        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    model, trainable, opt = peft_trainer(model, cfg)
    total = len(steps)
    sched = transformers.get_cosine_schedule_with_warmup(opt, math.ceil(cfg["warmup_ratio"] * total), total)

    g, mb = cfg["group_size"], cfg["micro_batch"]
    losses, kls, update_s, trained = [], [], [], []
    for step, episodes in enumerate(steps):
        t = time.perf_counter()
        adv, kept_flags = group_advantages([e["score"] for e in episodes], g, cfg["advantage"])
        kept = [i for i, k in enumerate(kept_flags) if k and sum(episodes[i]["mask"]) > 0]
        norm_sequences = len(kept)
        norm_tokens = sum(sum(episodes[i]["mask"][1:]) for i in kept)
        chunks = [kept[i : i + mb] for i in range(0, len(kept), mb)]
        loss_sum, kl_sum, tokens = 0.0, 0.0, 0
        refs = []
        if loss_cfg["beta"] > 0:
            with torch.no_grad(), model.disable_adapter():
                refs = [policy_logprobs(model, [episodes[i] for i in c], pad_id, cfg["temperature"])[0] for c in chunks]
        for c, chunk in enumerate(chunks):
            lp, mask = policy_logprobs(model, [episodes[i] for i in chunk], pad_id, cfg["temperature"])
            a = torch.tensor([adv[i] for i in chunk], dtype=torch.float32)
            loss, kl, n = grpo_loss(
                lp, lp.detach(), refs[c] if refs else None, a, mask, loss_cfg, norm_sequences, norm_tokens
            )
            loss.backward()
            loss_sum += loss.item()
            kl_sum += kl
            tokens += n
        if chunks:
            if cfg["max_grad_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg["max_grad_norm"])
            opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        seq_tokens = sum(len(episodes[i]["tokens"]) for i in kept)
        losses.append(loss_sum)
        kls.append(kl_sum / max(tokens, 1))
        trained.append(seq_tokens)
        if step >= warmup:
            update_s.append(dt)
        if not args.json:
            print(f"  step {step + 1}/{total}: loss {loss_sum:+.4f} kl {kls[-1]:.5f} {seq_tokens} tokens in {dt:.1f}s", flush=True)

    result = {
        "impl": "pytorch+peft",
        "attn": args.attn,
        "threads": torch.get_num_threads(),
        "checkpointing": cfg["checkpointing"],
        "steps": total - warmup,
        "warmup": warmup,
        "update_s_steps": update_s,
        # over all timed steps together: they differ several-fold in size
        "update_tokens_per_s": sum(trained[warmup:]) / sum(update_s),
        "trained_tokens": trained,
        "losses": losses,
        "kl": kls,
        "peak_rss_mb": rss_mb(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        per_step = " / ".join(f"{s:.1f}" for s in update_s)
        print(f"update {per_step} s, {result['update_tokens_per_s']:.0f} tok/s, peak RSS {result['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
