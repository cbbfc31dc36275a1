#!/usr/bin/env python3
"""Peak memory of one LoRA training step on the CPU: candle (benches/lora_step.rs) and PyTorch + PEFT
(+ bitsandbytes for NF4; scripts/bench_lora_step.py), with and without QLoRA and activation
checkpointing, recorded in docs/results/memory.json as each run ends (a row replaces the earlier
row of the same settings and CPU), which the memory planner's test reads (src/memory.rs).

    python3 scripts/bench_memory.py [--models smollm2 qwen2.5-0.5b] [--seq 1024] [--no-reference] [--missing]

Each run: batch 1 × SEQ tokens, LoRA r 16 alpha 32 dropout 0 on all seven projections, f32, one
warm-up step and one measured step; the peak is the kernel's VmHWM, reset after the model is
built, so it is the training step's (weights included), not the loading's. --missing skips the
settings already recorded for this CPU. Needs `bash scripts/setup_ref.sh` unless --no-reference.
Times are not recorded: speed is measured by the bench_*.sh scripts alone on the machine.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_json import ROOT, commit, cpu_description  # noqa: E402

MEMORY = ROOT / "docs" / "results" / "memory.json"


def load():
    return json.loads(MEMORY.read_text()) if MEMORY.exists() else []


def save(rows):
    tmp = MEMORY.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, MEMORY)


def key(row):
    return (row["model"], row["seq"], row["batch"], row["checkpointing"], row["nf4"], row["cpu"])


def run(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit(f"bench_memory: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "qwen2.5-0.5b"])
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--no-reference", action="store_true",
                    help="candle only (a recorded row keeps its PyTorch numbers)")
    ap.add_argument("--missing", action="store_true", help="skip settings already recorded")
    args = ap.parse_args()
    # Build once and run the binary itself, so edits made meanwhile change nothing measured.
    built = subprocess.run(
        ["cargo", "bench", "--bench", "lora_step", "--no-run", "--locked", "--message-format=json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    exe = [json.loads(l)["executable"] for l in built
           if '"executable"' in l and json.loads(l).get("target", {}).get("name") == "lora_step"][-1]
    cpu = cpu_description()
    for model in args.models:
        for nf4 in (False, True):
            for checkpointing in (True, False):
                row = dict(model=model, seq=args.seq, batch=1, checkpointing=checkpointing, nf4=nf4, cpu=cpu)
                rows = load()
                if args.missing and any(key(r) == key(row) for r in rows):
                    continue
                flags = ["--checkpoint"] * checkpointing + ["--nf4"] * nf4
                common = ["--model", model, "--steps", "1", "--warmup", "1", "--batch", "1", "--seq", str(args.seq)]
                print(f"bench_memory: {model} nf4={nf4} checkpointing={checkpointing}", file=sys.stderr)
                c = run([exe, "--bench", *common, *flags, "--json"])
                row.update(candle_peak_mb=round(c["peak_rss_mb"]), base_mb=round(c["base_mb"]))
                if not args.no_reference:
                    t = run([str(ROOT / ".venv-ref/bin/python"), "scripts/bench_lora_step.py", *common, *flags, "--json"])
                    row.update(torch_peak_mb=round(t["peak_rss_mb"]), torch=t["torch"], peft=t["peft"])
                row["commit"] = commit()
                old = [r for r in load() if key(r) == key(row)]
                if args.no_reference and old:
                    # Keep the reference's numbers: they do not depend on this project's code.
                    row = {**{k: v for k, v in old[0].items() if k.startswith("torch") or k == "peft"}, **row}
                rows = [r for r in load() if key(r) != key(row)] + [row]
                save(rows)
                print(json.dumps(row), file=sys.stderr)


if __name__ == "__main__":
    main()
