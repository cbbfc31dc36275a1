"""PyTorch side of the attention benchmark: causal `scaled_dot_product_attention` forward +
backward on the shapes benches/attention.rs uses, same seeds' distribution (uniform in [-1, 1)),
same loss (sum of the output weighted by a fixed tensor). Prints one JSON line with --json.

    .venv-ref/bin/python scripts/bench_attention.py --seq 2048 --heads 14 --kv-heads 2 --head-dim 64 --threads 2 --json
"""

import argparse
import json
import time

from bench_common import rss_mb
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=14)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    b, t, d = a.batch, a.seq, a.head_dim

    def uniform(*shape):
        return torch.rand(*shape) * 2 - 1

    q = uniform(b, a.heads, t, d).requires_grad_()
    k = uniform(b, a.kv_heads, t, d).requires_grad_()
    v = uniform(b, a.kv_heads, t, d).requires_grad_()
    w = uniform(b, a.heads, t, d)

    def step():
        for x in (q, k, v):
            x.grad = None
        start = time.perf_counter()
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        loss = (y * w).sum()
        forward = time.perf_counter() - start
        loss.backward()
        total = time.perf_counter() - start
        return forward * 1e3, total * 1e3

    for _ in range(a.warmup):
        step()
    runs = [step() for _ in range(max(a.reps, 1))]
    median = lambda xs: sorted(xs)[len(xs) // 2]
    row = dict(
        path="sdpa", seq=t, batch=b, heads=a.heads, kv_heads=a.kv_heads, head_dim=d,
        forward_ms=median([r[0] for r in runs]), forward_backward_ms=median([r[1] for r in runs]),
        peak_rss_mb=rss_mb(), threads=torch.get_num_threads(), torch=torch.__version__,
    )
    print(json.dumps(row) if a.json else row)


if __name__ == "__main__":
    main()
