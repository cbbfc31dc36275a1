#!/usr/bin/env bash
# Measure the evcxr opt-level trade-off: for each level, a fresh kernel build directory, then
# notebooks/00_setup.ipynb run twice (cold: compiles candle and the crate; warm: reuses them).
# Reports the first cell's time (the `:dep` build), the whole notebook, and matmul GFLOP/s
# (512x512 f32), i.e. compile cost against run-time speed.
#
#   bash scripts/bench_kernel_opt.sh 0 1 2     # levels to compare (default: 0 2)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[ -x .venv/bin/python ] || bash scripts/setup.sh
levels=("$@"); [ ${#levels[@]} -gt 0 ] || levels=(0 2)
spec="${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}/kernels/rust/kernel.json"
work=$(mktemp -d "${TMPDIR:-/tmp}/abt-bench-opt.XXXXXX")
trap 'rm -rf "$work"' EXIT
for level in "${levels[@]}"; do
  d="$work/opt$level"
  mkdir -p "$d/config" "$d/build" "$d/jupyter/kernels/rust-opt$level"
  printf '[evcxr]\nopt_level = "%s"\n' "$level" > "$d/config/evcxr.toml"
  python3 - "$spec" "$d" "$level" > "$d/jupyter/kernels/rust-opt$level/kernel.json" <<'PY'
import json, sys
spec, d, level = sys.argv[1:]
k = json.load(open(spec))
k["env"].update({"EVCXR_TMPDIR": f"{d}/build", "EVCXR_CONFIG_DIR": f"{d}/config"})
k["display_name"] = f"Rust (opt {level})"
print(json.dumps(k))
PY
  for pass in cold warm; do
    echo "== opt-level $level, $pass"
    JUPYTER_PATH="$d/jupyter" .venv/bin/python scripts/run_notebooks.py --kernel "rust-opt$level" \
      --run-dir "$d/$pass" notebooks/00_setup.ipynb | tail -1
  done
done
python3 - "$work" "${levels[@]}" <<'PY'
import json, re, sys
from datetime import datetime
work, levels = sys.argv[1], sys.argv[2:]
def seconds(cell):
    t = cell["metadata"].get("execution", {})
    a, b = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(b) - parse(a)).total_seconds() if a and b else float("nan")
def gflops(nb):
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            html = o.get("data", {}).get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            m = re.search(r"<td>512x512</td><td>([0-9.]+)</td>", html)
            if m:
                return float(m.group(1))
    return float("nan")
print(f"\n{'opt':>3}  {'cold :dep s':>11}  {'cold total s':>12}  {'warm :dep s':>11}  {'warm total s':>12}  {'GFLOP/s 512':>11}")
for level in levels:
    row = []
    for p in ("cold", "warm"):
        nb = json.load(open(f"{work}/opt{level}/{p}/notebooks/00_setup.ipynb"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        row += [seconds(code[0]), nb["metadata"]["abt_runner"]["seconds"]]
    print(f"{level:>3}  {row[0]:11.1f}  {row[1]:12.1f}  {row[2]:11.1f}  {row[3]:12.1f}  {gflops(nb):11.1f}")
PY
