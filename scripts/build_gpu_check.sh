#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh runs on a lent GPU machine, which has CUDA 13 and a driver but
# no Rust toolchain and no network: the GPU tests (tests/gpu.rs) and the LoRA-step and generation
# benchmarks, linked for CUDA, stripped and compressed into .gpu-check/ (git-ignored; ~11 MB,
# which the device call carries).
#
#   bash scripts/build_gpu_check.sh [COMPUTE_CAP]    # default 90: H100, H200
#
# candle compiles its kernels to PTX for one compute capability (PTX runs on that one and newer).
# Linking needs libcuda, cuBLAS, cuRAND and NVRTC, which this machine lacks. The link uses stub
# libraries instead: one per library, with the real one's soname (libcuda.so.1, libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13), defining every CUDA symbol cudarc refers to,
# written into the cached toolkit's lib/ (which cudarc's build script puts on the link path). The
# GPU machine's own libraries are loaded at run time.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
export CUDA_COMPUTE_CAP=${1:-90}
started=$(date +%s)
# shellcheck source=scripts/cuda_toolkit.sh
source "$root/scripts/cuda_toolkit.sh"
out="$root/.gpu-check"
build=(cargo build --release --locked --features cuda)

# The executables (or rlibs) of one package's artifacts in cargo's JSON messages.
artifacts() {
  python3 -c '
import json, sys
want = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact":
        continue
    name = msg["target"]["name"]
    if want == "rlib:cudarc" and name == "cudarc":
        print(*[f for f in msg["filenames"] if f.endswith(".rlib")])
    elif want == "exe" and msg.get("executable"):
        print(name, msg["executable"])
' "$1"
}

echo "== the library with CUDA (compute capability $CUDA_COMPUTE_CAP); nothing links yet"
rlib=$("${build[@]}" --lib --message-format=json-render-diagnostics | artifacts rlib:cudarc)
[ -f "$rlib" ] || { echo "build_gpu_check: no cudarc rlib in the build" >&2; exit 1; }

echo "== stub link libraries from the symbols cudarc refers to"
nm -u "$rlib" 2>/dev/null | awk '{print $2}' | sort -u | grep -E '^(cu|nvrtc)' |
  python3 -c '
import os, subprocess, sys, tempfile
lib_dir = sys.argv[1]
# (symbol prefix, library, soname): the first matching prefix wins (cublasLt before cublas).
libs = [("cublasLt", "cublasLt", "libcublasLt.so.13"), ("cublas", "cublas", "libcublas.so.13"),
        ("curand", "curand", "libcurand.so.10"), ("nvrtc", "nvrtc", "libnvrtc.so.13"),
        ("cu", "cuda", "libcuda.so.1")]
names = {lib: [] for _, lib, _ in libs}
for sym in sys.stdin.read().split():
    names[next(lib for prefix, lib, _ in libs if sym.startswith(prefix))].append(sym)
with tempfile.TemporaryDirectory() as tmp:
    for _, lib, soname in libs:
        src = os.path.join(tmp, f"{lib}.c")
        with open(src, "w") as f:
            f.write("".join(f"void {s}(void) {{}}\n" for s in names[lib]))
        subprocess.run(["cc", "-shared", "-fPIC", "-o", os.path.join(lib_dir, f"lib{lib}.so"),
                        src, f"-Wl,-soname,{soname}"], check=True)
        print(f"  lib{lib}.so ({soname}): {len(names[lib])} symbols")
' "$cuda/lib"

echo "== the GPU tests and benchmarks, linked"
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
"${build[@]}" --test gpu --bench lora_step --bench generate --message-format=json-render-diagnostics |
  artifacts exe | while read -r name exe; do
    case "$name" in gpu|lora_step|generate) strip -o "$out.tmp/$name" "$exe" ;; esac
  done
for name in gpu lora_step generate; do
  [ -x "$out.tmp/$name" ] || { echo "build_gpu_check: $name was not built" >&2; exit 1; }
done
python3 - "$out.tmp/build.json" "$CUDA_COMPUTE_CAP" "$root" <<'PY'
import json, subprocess, sys
path, cap, root = sys.argv[1:]
git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout.strip()
nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
json.dump({"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
           "compute_capability": cap, "nvcc": nvcc, "manifest_dir": root}, open(path, "w"), indent=1)
PY
# The generation benchmark decodes with Qwen2.5's tokenizer (scripts/fetch_tokenizers.sh), read
# from the cache directory gpu_check.sh points ABT_CACHE_DIR at.
bash "$root/scripts/fetch_tokenizers.sh" >/dev/null
mkdir -p "$out.tmp/cache/tokenizers/qwen2.5"
cp "${ABT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentbench-tuning}/tokenizers/qwen2.5/tokenizer.json" \
  "$out.tmp/cache/tokenizers/qwen2.5/"
# Compressed: the three stripped binaries and the tokenizer are ~84 MB, ~12 MB as xz.
(cd "$out.tmp" && tar -cJf bin.tar.xz gpu lora_step generate cache && rm -r gpu lora_step generate cache)
rm -rf "$out" && mv "$out.tmp" "$out"
du -sh "$out"/*
echo "build_gpu_check: built in $(( $(date +%s) - started )) s; run it with scripts/gpu_check.sh on the GPU machine"
