#!/usr/bin/env bash
# Sourced by scripts/check_cuda.sh and scripts/build_gpu_check.sh: a CUDA 13 compiler from PyPI's
# wheels, unpacked once into a cache ($ABT_CUDA_CACHE, default ~/.cache/agentbench-tuning/cuda13;
# ~100 MB download), and the environment that builds candle's kernels with it.
#
# It exports NVCC (a wrapper, below), PATH, CUDA_HOME/CUDA_ROOT/CUDA_PATH and CUDA_COMPUTE_CAP
# (80 unless set), and sets $cache (the cache) and $cuda (the toolkit).
#
# candle-kernels' build script also compiles a static MoE/MMQ library of GPU machine code
# (15 files, 40-60 min on 2 cores) for quantized mixture-of-experts and GGUF matmul kernels,
# which this project never calls. The nvcc wrapper gives empty objects for those 15 sources;
# every other nvcc call goes to the real compiler. A link keeps none of the library's symbols
# (the linker drops the unused code that refers to them).
cache=${ABT_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentbench-tuning/cuda13}
cuda=$cache/toolkit/nvidia/cu13
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)

if [ ! -f "$cache/toolkit/.complete" ]; then
  echo "== installing nvcc (CUDA 13, from PyPI) into $cache/toolkit"
  python=python3
  if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; fi
  rm -rf "$cache/toolkit" "$cache/wheels"
  mkdir -p "$cache/wheels"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" "${wheels[@]}"
  for w in "$cache"/wheels/*.whl; do
    "$python" -m zipfile -e "$w" "$cache/toolkit"
  done
  chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
  ln -sfn lib "$cuda/lib64"
  if [ ! -e "$cuda/lib/libcudart.so" ]; then
    ln -s "$(basename "$(ls "$cuda"/lib/libcudart.so.* | head -n 1)")" "$cuda/lib/libcudart.so"
  fi
  "$cuda/bin/nvcc" --version | tail -n 2
  touch "$cache/toolkit/.complete"
  rm -rf "$cache/wheels"
fi

# The wrapper sits in a toolkit-shaped directory (bin/, include/, lib64/): the kernel builder
# finds the headers and libraries next to the nvcc it is given.
wrap=$cache/check-wrapper
mkdir -p "$wrap/bin"
ln -sfn "$cuda/include" "$wrap/include"
ln -sfn "$cuda/lib" "$wrap/lib64"
cat > "$wrap/bin/nvcc.tmp" <<EOF
#!/usr/bin/env bash
# nvcc for this project's CUDA builds: the sources of candle-kernels' static MoE/MMQ library
# become empty objects (a link drops the unused code that refers to them); everything else goes
# to the real nvcc.
real="$cuda/bin/nvcc"
out=""
stub=""
lib=""
prev=""
for a in "\$@"; do
  case "\$a" in
    *moe/*.cu|*mmq_gguf/*.cu|*mmvq_gguf.cu) stub=1 ;;
    --lib) lib=1 ;;
  esac
  if [ "\$prev" = "-o" ]; then out="\$a"; fi
  prev="\$a"
done
if [ -n "\$stub" ] && [ -n "\$out" ]; then
  exec cc -c -x c /dev/null -o "\$out"
fi
if [ -n "\$lib" ] && [ -n "\$out" ] && [[ "\$out" == */libmoe.a ]]; then
  rm -f "\$out"
  objs=()
  for a in "\$@"; do case "\$a" in *.o) objs+=("\$a") ;; esac; done
  exec ar rcs "\$out" "\${objs[@]}"
fi
exec "\$real" "\$@"
EOF
chmod +x "$wrap/bin/nvcc.tmp"
mv "$wrap/bin/nvcc.tmp" "$wrap/bin/nvcc"

export NVCC="$wrap/bin/nvcc"
export PATH="$cuda/bin:$PATH"
export CUDA_HOME="$cuda" CUDA_ROOT="$cuda" CUDA_PATH="$cuda"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}

