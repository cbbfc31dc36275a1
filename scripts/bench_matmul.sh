#!/usr/bin/env bash
# Matmul benchmark: the f32 products of a training step and a prefill (projections forward and
# backward, LoRA A/B, an output-head chunk) in candle's gemm (benches/matmul.rs) and PyTorch
# (scripts/bench_matmul.py), same shapes, same machine and thread count, interleaved per model.
#
#   bash scripts/bench_matmul.sh [models...]     (default: smollm2 qwen2.5-0.5b)
#
# Env: TOKENS (1024 rows), REPS (10), THREADS (all cores). Needs .venv-ref
# (bash scripts/setup_ref.sh). Prints a markdown table with the CPU and its SIMD flags, and
# records the rows in docs/results/speed.json (named `matmul ...`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tokens=${TOKENS:-1024} reps=${REPS:-10} threads=${THREADS:-$(nproc)}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2 qwen2.5-0.5b)
[ -x .venv-ref/bin/python ] || { echo "bench: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }

cargo bench --bench matmul --no-run --locked 2>/dev/null
out=$(mktemp -d)
for m in "${models[@]}"; do
  echo "bench: matmul $m (candle)" >&2
  RAYON_NUM_THREADS=$threads cargo bench --bench matmul --locked -q -- --model "$m" --tokens "$tokens" \
    --reps "$reps" --json 2>/dev/null | tail -1 > "$out/$m.candle.json"
  echo "bench: matmul $m (pytorch)" >&2
  .venv-ref/bin/python scripts/bench_matmul.py --model "$m" --tokens "$tokens" --reps "$reps" \
    --threads "$threads" --json | tail -1 > "$out/$m.torch.json"
done
python3 - "$out" "${models[@]}" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from speed_json import cpu_description, record
out, models = sys.argv[1], sys.argv[2:]
print("| model | product | m × n × k | candle GFLOP/s | PyTorch GFLOP/s | ratio |")
print("|---|---|---|---|---|---|")
rows = []
for m in models:
    c = json.load(open(f"{out}/{m}.candle.json")); t = json.load(open(f"{out}/{m}.torch.json"))
    settings = f"f32, {c['threads']} threads, median of runs; torch {t['torch']}"
    for cr, tr in zip(c["rows"], t["rows"]):
        shape = f"{cr['m']} × {cr['n']} × {cr['k']}"
        print(f"| {m} | {cr['name']} | {shape} | {cr['gflops']:.1f} | {tr['gflops']:.1f} | **{cr['gflops'] / tr['gflops']:.2f}×** |")
        rows.append(dict(name=f"matmul {m} {cr['name']} {cr['m']}x{cr['n']}x{cr['k']}", candle=round(cr["gflops"], 1),
                         reference=round(tr["gflops"], 1), unit="GFLOP/s", settings=settings))
print(f"\n{cpu_description()}; {settings}")
record(rows)
PY
