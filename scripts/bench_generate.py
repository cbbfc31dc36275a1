#!/usr/bin/env python3
"""transformers side of the greedy-generation benchmark (CPU, float32); compare with benches/generate.rs.

Each timed rep is one `model.generate` call: prefill of a `--batch` x `--prompt` batch of LCG token ids
(scripts/bench_common.token_ids, the same ids the Rust bench builds; no padding, attention mask all ones)
followed by exactly `--new` greedy decode steps with the KV cache (min_new_tokens = max_new_tokens, so EOS
cannot end a row early). tokens_per_s = batch * new / median seconds, prefill included. Prefill is also
timed alone: one forward of the prompt with use_cache=True and logits_to_keep=1, which is what generate's
first step does.

    .venv-ref/bin/python scripts/bench_generate.py --model smollm2 --batch 1 --prompt 128 --new 64 --json

Models (built in scripts/bench_common.py; the random ones after torch.manual_seed(--seed)):
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
from bench_common import MODELS, build_model, rss_mb, token_ids  # noqa: E402  (sets TQDM_DISABLE before torch)

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)

FIRST_IDS = 16  # generated ids of row 0 reported for the cross-implementation sanity check


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, default="qwen2-55m")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128, help="prompt length in tokens (every row)")
    ap.add_argument("--new", type=int, default=64, help="new tokens generated per row")
    ap.add_argument("--reps", type=int, default=3, help="timed generate calls")
    ap.add_argument("--warmup", type=int, default=1, help="untimed generate calls before the timed ones")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="transformers attention kernel")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building a random model")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a human summary")
    args = ap.parse_args()
    if args.reps < 1 or args.new < 1 or args.prompt < 1 or args.batch < 1:
        sys.exit("bench: --reps, --new, --prompt and --batch must be at least 1")

    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    model = build_model(args.model, args.attn)
    model.eval()
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())

    vocab = model.config.vocab_size
    ids = torch.tensor(token_ids(args.batch, args.prompt, vocab), dtype=torch.int64)
    mask = torch.ones_like(ids)
    gen_kwargs = dict(
        attention_mask=mask,
        max_new_tokens=args.new,
        min_new_tokens=args.new,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
    )

    times, out = [], None
    with torch.inference_mode():
        for rep in range(args.warmup + args.reps):
            t = time.perf_counter()
            out = model.generate(ids, **gen_kwargs)
            dt = time.perf_counter() - t
            if out.shape != (args.batch, args.prompt + args.new):
                sys.exit(f"bench: generate returned shape {tuple(out.shape)}, expected {(args.batch, args.prompt + args.new)}")
            if rep >= args.warmup:
                times.append(dt)
            if not args.json:
                tag = "warmup" if rep < args.warmup else "rep"
                print(f"  {tag} {rep}: {dt:.3f} s  {args.batch * args.new / dt:.1f} tok/s", flush=True)

        prefill_ms = []
        for rep in range(args.warmup + args.reps):
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            dt = (time.perf_counter() - t) * 1000.0
            if rep >= args.warmup:
                prefill_ms.append(dt)

    med = statistics.median(times)
    first_ids = out[0, args.prompt : args.prompt + FIRST_IDS].tolist()
    result = {
        "impl": "transformers",
        "model": args.model,
        "batch": args.batch,
        "prompt": args.prompt,
        "new": args.new,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "reps": args.reps,
        "attn": args.attn,
        "dtype": "f32",
        "seconds_median": med,
        "seconds_all": times,
        "tokens_per_s": args.batch * args.new / med,
        "prefill_ms": statistics.median(prefill_ms),
        "prefill_ms_all": prefill_ms,
        "peak_rss_mb": rss_mb(),
        "params": params,
        "load_s": load_s,
        "first_ids": first_ids,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.model}: batch {args.batch}, prompt {args.prompt} + {args.new} new: {med:.3f} s (median of {len(times)}), "
            f"{result['tokens_per_s']:.1f} tok/s, prefill {result['prefill_ms']:.1f} ms, peak RSS {result['peak_rss_mb']:.0f} MB, "
            f"threads {result['threads']}, torch {torch.__version__}, transformers {transformers.__version__}\n"
            f"  first ids (row 0): {first_ids}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
