#!/usr/bin/env bash
# Everything issue 13 measures on an NVIDIA GPU, in one go (a few minutes), written to OUTDIR:
#   gpu.txt          nvidia-smi: the GPU, its driver and clocks
#   cuda.txt/.json   `bench --device cuda --against torch --kernels 25`: training against the PyTorch twin on the same
#                    GPU (eager, 3 interleaved rounds, and torch.compile), the first step with a cold kernel cache,
#                    sampling with the KV cache, and the step's 25 slowest kernels
#   fp32.txt/.json   the same training step with full float32 matmuls (ALLOW_TF32=0) instead of TF32 tensor cores
#   schedule.txt     `bench --schedule cuda`: the estimates to set the kernel times against
# Usage: bash bench/gpu.sh OUTDIR   (with the project and its bench extra installed: pip install -e '.[bench]')
set -u -o pipefail
out=${1:?usage: bash bench/gpu.sh OUTDIR}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() { echo "== $*" >&2; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
export CACHEDB=$(mktemp -d)/cache.db  # tinygrad's kernel cache, empty: the first step compiles every kernel
step "training and sampling against PyTorch" &&
  $py cli.py bench --device cuda --against torch --kernels 25 --json "$out/cuda.json" 2>&1 | tee "$out/cuda.txt"
step "full float32 matmuls" &&
  ALLOW_TF32=0 $py cli.py bench --device cuda --kernels 25 --json "$out/fp32.json" 2>&1 | tee "$out/fp32.txt"
step "the schedule's estimates" && $py cli.py bench --schedule cuda --kernels 40 2>&1 | tee "$out/schedule.txt"
