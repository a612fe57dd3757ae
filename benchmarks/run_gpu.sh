#!/usr/bin/env bash
# The whole GPU benchmark + comparison on a CUDA machine with CuPy, NumPy, SciPy, pytest and
# PyTorch installed (nothing to pip install). Run from the repository root:
#     bash benchmarks/run_gpu.sh "$OUT"
# Writes under $1 (default benchmarks/results): the fused-kernel tests' log, then the
# benchmark JSON/Markdown/PNG (CuPy vs PyTorch CUDA; JAX-CPU is no peer for a GPU and is skipped). < 8 minutes.
set -euo pipefail
out="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}."
python3 -m pytest -q -m gpu tests 2>&1 | tee "$out/pytest-gpu.log" | tail -5 ||
    echo "GPU tests failed: see $out/pytest-gpu.log (benchmark runs anyway)"
python3 benchmarks/run.py --backend cupy --torch-device cuda --no-jax --out "$out" \
    --reps 7 --target-seconds 0.2 "${@:2}" 2>&1 | tee "$out/bench-gpu.log"
