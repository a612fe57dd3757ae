#!/usr/bin/env bash
# Issue 15's many-core check on a lent GPU machine's host CPU (16 cores; nothing to install:
# NumPy, Numba, PyTorch and JAX are there). Run from the repository root:
#     bash benchmarks/run_cpu_host.sh OUT
# Writes under OUT the thread sweep (`scratchvae bench --thread-sweep`: scratchvae, PyTorch and
# JAX jit on 1, 2, 4, ... cores, each count in a fresh process pinned to that many cores,
# batch 128 and 2048, float32) as JSON and Markdown; its last row is the whole machine, the
# "at least as fast as JAX jit" of issue 15's item 3. About 4 minutes on 16 cores (REPS=5).
set -uo pipefail
out="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}." PYTHONUNBUFFERED=1
export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""  # the CPU steps only, on every library
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket)" | tee "$out/cpu-host.txt"
python3 -c "import numpy, numba, threadpoolctl, torch, jax; print('numpy', numpy.__version__,
'numba', numba.__version__, 'torch', torch.__version__, 'jax', jax.__version__)" |
    tee -a "$out/cpu-host.txt"
timeout "${TIMEOUT:-420}" python3 -m scratchvae.bench --thread-sweep --reps "${REPS:-5}" \
    --target-seconds 0.2 --out "$out" 2>&1 | tee "$out/bench-cpu-host.log" | grep -v "^  "
