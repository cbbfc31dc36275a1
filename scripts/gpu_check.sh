#!/usr/bin/env bash
# The one-call GPU check, for a lent GPU machine (no Rust, no network there). Here first:
#
#   bash scripts/build_gpu_check.sh        # the binaries, linked for CUDA, into .gpu-check/
#
# then on the GPU machine, in one call of the device tool (the parts' limits add up to 8 minutes;
# give the call 9):
#
#   bash scripts/gpu_check.sh              # carry: [".gpu-check"]
#
# It runs the GPU tests (tests/gpu.rs: fixtures' logits, LoRA gradients against the CPU, dropout
# masks, in f32, bf16 and f16), a LoRA training step at 4096 tokens on the Qwen2.5-0.5B and
# Qwen2.5-7B shapes in bf16 (and 0.5B in f16, a T4's dtype), and greedy generation; it samples
# the GPU's memory with nvidia-smi throughout. Results go to $OUT (or runs/gpu-check):
# gpu_check.json, gpu_check.md and the full log. Each part has its own time limit; a part that
# fails or runs out is reported as such and the others still run. Exits 1 if any part failed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-$root/runs/gpu-check}
mkdir -p "$out"
log="$out/gpu_check.log"
parts="$out/parts"
rm -rf "$parts" && mkdir -p "$parts"
: >"$log"
say() { echo "$*" | tee -a "$log"; }

if [ ! -f .gpu-check/bin.tar.xz ]; then
  say "gpu_check: .gpu-check/bin.tar.xz is missing: run bash scripts/build_gpu_check.sh here first and carry .gpu-check"
  exit 2
fi
bin=$(mktemp -d)
python3 -m tarfile -e .gpu-check/bin.tar.xz "$bin"
cp .gpu-check/build.json "$parts/build.json"
export ABT_CACHE_DIR="$bin/cache"

# The tests read their fixtures through the checkout path they were built in.
manifest=$(python3 -c 'import json; print(json.load(open(".gpu-check/build.json"))["manifest_dir"])')
if [ "$manifest" != "$root" ] && [ ! -e "$manifest" ]; then
  mkdir -p "$(dirname "$manifest")" && ln -s "$root" "$manifest"
fi

# libcuda comes with the driver; cuBLAS, cuRAND and NVRTC (CUDA 13) from the PyPI wheels beside
# PyTorch, or a toolkit under /usr/local/cuda.
wheel_libs=$(python3 - <<'PY'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = {d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${wheel_libs:+$wheel_libs:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

say "== the machine"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader \
  | tee "$parts/gpu.csv" | tee -a "$log"
say "== the binaries' CUDA libraries"
ldd "$bin/gpu" | grep -E 'cuda|cublas|curand|nvrtc|not found' | tee -a "$log"

# Samples the GPU's used memory every 200 ms into $1 until stopped.
sample_memory() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null &
  echo $!
}

# run NAME LIMIT_S COMMAND...: one part, its output in parts/NAME.out, its exit status and peak
# GPU memory in parts/NAME.status.
run() {
  local name=$1 limit=$2
  shift 2
  say "== $name (limit ${limit}s)"
  local sampler started status
  sampler=$(sample_memory "$parts/$name.mem")
  started=$(date +%s.%N)
  timeout "$limit" "$@" >"$parts/$name.out" 2>&1
  status=$?
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  python3 - "$parts/$name" "$status" "$started" <<'PY'
import json, sys, time
base, status, started = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
mem = [int(x) for x in open(base + ".mem").read().split() if x.strip().isdigit()]
json.dump({"status": status, "seconds": round(time.time() - started, 1),
           "peak_gpu_mb": max(mem) if mem else None}, open(base + ".status", "w"))
PY
  tail -n 5 "$parts/$name.out" | tee -a "$log"
  say "-- $name: exit $status"
}

run tests 150 "$bin/gpu" --test-threads=1 --nocapture
step=(--bench --batch 1 --seq 4096 --steps 3 --warmup 1 --checkpoint --json)
run step_0.5b_bf16 60 "$bin/lora_step" --model qwen2.5-0.5b --dtype bf16 "${step[@]}"
run step_0.5b_f16 60 "$bin/lora_step" --model qwen2.5-0.5b --dtype f16 "${step[@]}"
run step_7b_bf16 150 "$bin/lora_step" --model qwen2.5-7b --dtype bf16 "${step[@]}"
run generate_0.5b_bf16 60 "$bin/generate" --bench --model qwen2.5-0.5b --dtype bf16 \
  --batch 8 --prompt 128 --new 64 --reps 2 --json

python3 "$root/scripts/gpu_report.py" "$parts" "$out"
status=$?
cat "$out/gpu_check.md" >>"$log" 2>/dev/null
rm -rf "$bin"
exit "$status"
