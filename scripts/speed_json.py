"""Benchmark rows in docs/results/speed.json, written by the benchmark scripts, never by hand.

Each row: {"name", "candle", "reference", "unit", "ratio", "settings", "cpu", "commit"}; the
ratio is above 1 when this project is faster (for a time: reference / candle; for a rate:
candle / reference). A row replaces the earlier row of the same name and CPU.

    python3 scripts/speed_json.py ROWS.json      (a JSON list of rows without cpu/commit/ratio)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEED = ROOT / "docs" / "results" / "speed.json"
SIMD = ["avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "avx2", "fma", "f16c", "amx_tile"]
TIMES = {"ms", "s"}


def cpu_description():
    """The CPU model and its SIMD flags, as /proc/cpuinfo says."""
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    have = [f for f in SIMD if f in flags]
    return f"{model} ({', '.join(have) or 'no AVX'}; {os.cpu_count()} cores visible)"


def commit():
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(rows):
    """Adds `rows` to speed.json (atomically), filling cpu, commit and ratio."""
    cpu, rev = cpu_description(), commit()
    data = json.loads(SPEED.read_text()) if SPEED.exists() else {"rows": []}
    for row in rows:
        row = dict(row)
        c, r = row["candle"], row["reference"]
        row["ratio"] = round(r / c if row["unit"] in TIMES else c / r, 3)
        row.setdefault("cpu", cpu)
        row["commit"] = rev
        data["rows"] = [x for x in data["rows"] if (x["name"], x.get("cpu")) != (row["name"], row["cpu"])]
        data["rows"].append(row)
    SPEED.parent.mkdir(parents=True, exist_ok=True)
    tmp = SPEED.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(SPEED)


if __name__ == "__main__":
    record(json.load(open(sys.argv[1])))
