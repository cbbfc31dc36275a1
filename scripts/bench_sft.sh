#!/usr/bin/env bash
# SFT benchmark: the tiny profile's trainer (benches/sft_step.rs) against PyTorch + PEFT
# (scripts/bench_sft.py) on the same machine, the same thread count and the same packed rows of
# the tiny data, with the embedded default model (SmolLM2-135M-Instruct, f32).
#
#   bash scripts/bench_sft.sh
#
# Env: STEPS (6 timed), WARMUP (1), THREADS (all cores).
# Needs the reference environment: bash scripts/setup_ref.sh. Prints a markdown table.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
steps=${STEPS:-6} warmup=${WARMUP:-1}
threads=${THREADS:-$(nproc)}
[ -x .venv-ref/bin/python ] || { echo "bench: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }

cargo bench --bench sft_step --no-run --locked 2>/dev/null
out=$(mktemp -d)
echo "bench: sft (candle)" >&2
RAYON_NUM_THREADS=$threads cargo bench --bench sft_step --locked -q -- --steps "$steps" \
  --warmup "$warmup" --export "$out/rows.json" --json 2>/dev/null | tail -1 > "$out/candle.json"
echo "bench: sft (pytorch)" >&2
.venv-ref/bin/python scripts/bench_sft.py --rows "$out/rows.json" --threads "$threads" --json \
  | tail -1 > "$out/torch.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
c = json.load(open(f"{out}/candle.json")); t = json.load(open(f"{out}/torch.json"))
print("| trainer | tokens/s | trained tokens/step | peak RSS | loss step 1 | loss last step |")
print("|---|---|---|---|---|---|")
for name, r in (("candle (abt sft)", c), (f"PyTorch {t['torch']} + PEFT {t['peft']}", t)):
    print(f"| {name} | {r['tokens_per_s']:.0f} | {r['trained_tokens_per_step']:.0f} | {r['peak_rss_mb']:.0f} MB "
          f"| {r['losses'][0]:.4f} | {r['losses'][-1]:.4f} |")
print(f"\nspeed ratio candle / PyTorch: **{c['tokens_per_s'] / t['tokens_per_s']:.2f}×** "
      f"({c['steps']} timed steps after {c['warmup']} warm-up, threads {c['threads']}, "
      f"micro-batch {c['micro_batch']} × {c['max_len']} tokens packed, grad accum {c['grad_accum']}, "
      f"checkpointing {c['checkpointing']}, {c['records']} records)")
PY
