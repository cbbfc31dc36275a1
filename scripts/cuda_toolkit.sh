#!/usr/bin/env bash
# Sourced by scripts/check_cuda.sh and scripts/build_gpu_check.sh: a CUDA 13 compiler from PyPI's
# wheels, unpacked once into a cache ($ABT_CUDA_CACHE, default ~/.cache/agentbench-tuning/cuda13;
# ~100 MB download), and the environment that builds candle's kernels with it.
#
# It exports NVCC (a wrapper, below), PATH, CUDA_HOME/CUDA_ROOT/CUDA_PATH and CUDA_COMPUTE_CAP
# (80 unless set), and sets $cache (the cache) and $cuda (the toolkit).
#
# NVCC is kernel/nvcc_skip_moe.sh's wrapper: candle-kernels' static MoE/MMQ library (15 files,
# 40-60 min on 2 cores, never called by this project) becomes empty objects.
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

wrap=$cache/check-wrapper
bash "$root/kernel/nvcc_skip_moe.sh" "$cuda" "$wrap"

export NVCC="$wrap/bin/nvcc"
export PATH="$cuda/bin:$PATH"
export CUDA_HOME="$cuda" CUDA_ROOT="$cuda" CUDA_PATH="$cuda"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}

