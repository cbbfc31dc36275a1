"""The GPU check's report: reads the parts scripts/gpu_check.sh wrote and writes gpu_check.json
and gpu_check.md. Exits 1 if any part failed.

    python3 scripts/gpu_report.py PARTS_DIR OUT_DIR

MFU is 6 · N · tokens/s ÷ the GPU's peak dense bf16 (f16 on a T4) FLOP/s, with N all of the
model's parameters (embeddings included). A LoRA step with activation checkpointing does about
6N FLOPs per token: the forward pass (2N), its recomputation (2N) and the gradients of the
activations (2N); the frozen weights get no gradient. The attention's own FLOPs are not counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Peak dense tensor FLOP/s of the GPUs this project targets, by a substring of the name
# nvidia-smi reports (vendors' data sheets; bf16 except on the T4, which has none).
PEAK_FLOPS = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("T4", 65e12),
]

PARTS = [
    ("tests", "GPU tests (tests/gpu.rs)"),
    ("step_0.5b_bf16", "LoRA step, Qwen2.5-0.5B shape, bf16, 1 × 4096 tokens"),
    ("step_0.5b_f16", "LoRA step, Qwen2.5-0.5B shape, f16, 1 × 4096 tokens"),
    ("step_7b_bf16", "LoRA step, Qwen2.5-7B shape, bf16, 1 × 4096 tokens"),
    ("generate_0.5b_bf16", "greedy generation, Qwen2.5-0.5B shape, bf16, 8 × (128 + 64)"),
]


def last_json(text: str) -> dict | None:
    """The last line of a benchmark's output that is a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def peak_flops(gpu_name: str) -> float | None:
    return next((f for key, f in PEAK_FLOPS if key in gpu_name), None)


def main(parts: Path, out: Path) -> int:
    gpu_line = (parts / "gpu.csv").read_text().strip() if (parts / "gpu.csv").exists() else ""
    fields = [f.strip() for f in gpu_line.split(",")] if gpu_line else []
    gpu = dict(zip(["name", "compute_capability", "memory", "driver"], fields))
    build = json.loads((parts / "build.json").read_text()) if (parts / "build.json").exists() else {}
    peak = peak_flops(gpu.get("name", ""))
    report = {"gpu": gpu, "build": build, "peak_flops": peak, "parts": {}}
    failed = []
    for name, title in PARTS:
        status_file = parts / f"{name}.status"
        if not status_file.exists():
            report["parts"][name] = {"title": title, "status": "not run"}
            failed.append(name)
            continue
        status = json.loads(status_file.read_text())
        output = (parts / f"{name}.out").read_text(errors="replace")
        part = {"title": title, **status,
                "outcome": "passed" if status["status"] == 0 else
                "timed out" if status["status"] == 124 else "failed"}
        if status["status"] != 0:
            failed.append(name)
            part["output_tail"] = output[-2000:]
        if name == "tests":
            part["summary"] = next((l.strip() for l in output.splitlines()
                                    if l.startswith("test result:")), None)
            part["lines"] = [l for l in output.splitlines()
                             if "on the GPU" in l or l.startswith(("GPU:", "skipped"))]
        else:
            bench = last_json(output)
            part["bench"] = bench
            if bench and name.startswith("step") and peak:
                part["mfu"] = 6 * bench["params"] * bench["tokens_per_s"] / peak
        report["parts"][name] = part
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print((out / "gpu_check.md").read_text())
    return 1 if failed else 0


def markdown(report: dict) -> str:
    gpu, build = report["gpu"], report["build"]
    lines = [
        "# GPU check",
        "",
        f"GPU: {gpu.get('name', '?')} (compute capability {gpu.get('compute_capability', '?')}, "
        f"{gpu.get('memory', '?')}, driver {gpu.get('driver', '?')}). "
        f"Built from {build.get('commit', '?')[:12]}{' (with uncommitted changes)' if build.get('dirty') else ''} "
        f"for compute capability {build.get('compute_capability', '?')} ({build.get('nvcc', '?')}).",
        "",
        "| part | outcome | time | peak GPU memory | tokens/s | ms/step | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, part in report["parts"].items():
        if part.get("status") == "not run":
            lines.append(f"| {part['title']} | not run | | | | | |")
            continue
        bench = part.get("bench") or {}
        mem = f"{part['peak_gpu_mb']} MiB" if part.get("peak_gpu_mb") is not None else ""
        tps = f"{bench['tokens_per_s']:.0f}" if "tokens_per_s" in bench else ""
        ms = f"{bench['ms_per_step']:.0f}" if "ms_per_step" in bench else ""
        mfu = f"{100 * part['mfu']:.1f} %" if "mfu" in part else ""
        outcome = part["outcome"] + (f" ({part['summary']})" if part.get("summary") else "")
        lines.append(f"| {part['title']} | {outcome} | {part['seconds']} s | {mem} | {tps} | {ms} | {mfu} |")
    lines += ["", "MFU: 6 · N · tokens/s ÷ peak dense FLOP/s "
              f"({report['peak_flops']:.3g}), N = all parameters." if report["peak_flops"]
              else "MFU: no peak FLOP/s known for this GPU.", ""]
    tests = report["parts"].get("tests", {})
    if tests.get("lines"):
        lines += ["## GPU tests", "", "```text", *tests["lines"], "```", ""]
    for name, part in report["parts"].items():
        if part.get("output_tail"):
            lines += [f"## {part['title']}: {part['outcome']}", "", "```text",
                      part["output_tail"].rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
