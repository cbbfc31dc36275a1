"""PyTorch side of the matmul benchmark: the shapes of benches/matmul.rs, f32, timed one by one
(median of --reps after one warm-up). Prints one JSON line with --json.

    .venv-ref/bin/python scripts/bench_matmul.py --model smollm2 --tokens 1024 --threads 2 --json
"""

import argparse
import json
import time

import torch

SHAPES = {"smollm2": (576, 1536, 192, 49152), "qwen2.5-0.5b": (896, 4864, 128, 151936)}


def shapes(model, tokens):
    h, f, kv, vocab = SHAPES[model]
    r, head_rows = 16, (16 << 20) // vocab
    return [
        ("q/o projection", tokens, h, h), ("k/v projection", tokens, kv, h),
        ("gate/up projection", tokens, f, h), ("down projection", tokens, h, f),
        ("gate/up backward", tokens, h, f), ("down backward", tokens, f, h),
        ("lora A r16", tokens, r, h), ("lora B r16", tokens, f, r),
        ("output head chunk", head_rows, vocab, h),
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2", choices=sorted(SHAPES))
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    with torch.no_grad():
        for name, m, n, k in shapes(a.model, a.tokens):
            x = torch.ones(m, k)
            backward = name.endswith("backward")
            w = torch.ones(k, n) if backward else torch.ones(n, k)

            def run():
                start = time.perf_counter()
                y = x @ w if backward else x @ w.t()
                assert y.shape == (m, n)
                return time.perf_counter() - start

            run()
            secs = sorted(run() for _ in range(max(a.reps, 1)))[max(a.reps, 1) // 2]
            rows.append(dict(name=name, m=m, n=n, k=k, ms=secs * 1e3, gflops=2 * m * n * k / secs / 1e9))
    out = dict(model=a.model, tokens=a.tokens, rows=rows, threads=torch.get_num_threads(), torch=torch.__version__)
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
