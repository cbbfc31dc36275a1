#!/usr/bin/env bash
# LoRA training-step benchmark: candle (benches/lora_step.rs) against PyTorch + PEFT
# (scripts/bench_lora_step.py) on the same machine, same thread count, same token ids.
#
#   bash scripts/bench_lora_step.sh [models...]     (default: qwen2-55m smollm2 qwen2.5-0.5b)
#
# Env: STEPS (8), WARMUP (2), BATCH (4), SEQ (256), THREADS (all cores).
# Needs the reference environment: bash scripts/setup_ref.sh. Prints a markdown table and records
# the rows in docs/results/speed.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
steps=${STEPS:-8} warmup=${WARMUP:-2} batch=${BATCH:-4} seq=${SEQ:-256}
threads=${THREADS:-$(nproc)}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(qwen2-55m smollm2 qwen2.5-0.5b)
[ -x .venv-ref/bin/python ] || { echo "bench: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }

cargo bench --bench lora_step --no-run --locked 2>/dev/null
out=$(mktemp -d)
for m in "${models[@]}"; do
  echo "bench: $m (candle)" >&2
  RAYON_NUM_THREADS=$threads cargo bench --bench lora_step --locked -q -- --model "$m" \
    --steps "$steps" --warmup "$warmup" --batch "$batch" --seq "$seq" --json 2>/dev/null | tail -1 > "$out/$m.candle.json"
  echo "bench: $m (pytorch)" >&2
  .venv-ref/bin/python scripts/bench_lora_step.py --model "$m" --steps "$steps" --warmup "$warmup" \
    --batch "$batch" --seq "$seq" --threads "$threads" --json | tail -1 > "$out/$m.torch.json"
done
python3 - "$out" "${models[@]}" <<'PY'
import json, sys
out, models = sys.argv[1], sys.argv[2:]
print("| model | params | candle ms/step (fwd/bwd/opt) | PyTorch ms/step | candle tok/s | PyTorch tok/s | speed ratio | candle peak RSS | PyTorch peak RSS | loss step 0 candle / PyTorch |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    c = json.load(open(f"{out}/{m}.candle.json")); t = json.load(open(f"{out}/{m}.torch.json"))
    tm = t["ms_per_step_median"]
    print(f"| {m} | {c['params']/1e6:.0f}M | {c['ms_per_step']:.0f} ({c['forward_ms']:.0f}/{c['backward_ms']:.0f}/{c['optimizer_ms']:.0f}) "
          f"| {tm:.0f} | {c['tokens_per_s']:.0f} | {t['tokens_per_s']:.0f} | **{tm / c['ms_per_step']:.2f}×** "
          f"| {c['peak_rss_mb']:.0f} MB | {t['peak_rss_mb']:.0f} MB | {c['losses'][0]:.4f} / {t['losses'][0]:.4f} |")
settings = f"threads {c['threads']}, batch {c['batch']} × {c['seq']} tokens, LoRA r 16 alpha 32 on 7 projections, f32; torch {t['torch']}, peft {t['peft']}"
print(f"\n{settings}")
import sys; sys.path.insert(0, "scripts")
from speed_json import record
rows = []
for m in models:
    c = json.load(open(f"{out}/{m}.candle.json")); t = json.load(open(f"{out}/{m}.torch.json"))
    rows.append(dict(name=f"lora step {m} {c['batch']}x{c['seq']}", candle=round(c["ms_per_step"], 1),
                     reference=round(t["ms_per_step_median"], 1), unit="ms", settings=settings,
                     peak_rss_mb=[round(c["peak_rss_mb"]), round(t["peak_rss_mb"])]))
record(rows)
PY
