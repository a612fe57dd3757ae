#!/usr/bin/env bash
# The GPU checks and benchmarks on a CUDA machine with CuPy, NumPy, SciPy, pytest, PyTorch and
# JAX installed (nothing to pip install). Run from the repository root:
#     bash benchmarks/run_gpu.sh OUT [MNIST_DIR]
# Writes under OUT: the GPU tests' log; the training-step benchmark (CuPy, replayed as a CUDA
# graph, against PyTorch eager, PyTorch with its step captured in a CUDA graph, and JAX jit on
# the GPU, all in float32 with true FP32 products) as JSON/Markdown/PNG; the step's phases
# (eps, forward, backward, Adam, the products), each replayed as its own CUDA graph
# (benchmarks/step_phases.py); and, with MNIST_DIR (a folder holding mnist-train.npz and
# mnist-test.npz), ten epochs of the PyTorch example's protocol with scratchvae's trainer and
# with PyTorch eager. About 6 minutes on an H100; the steps' timeouts add up to 570 s, so the
# whole script fits one 600 s device call (a session has 15 minutes of device time, start-up
# included).
set -uo pipefail
case "${1:-}" in  # --help: the lines above; another option is no folder name
    -h | --help) sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run_gpu.sh: unknown option $1 (usage: bash benchmarks/run_gpu.sh OUT [MNIST_DIR]; --help)" >&2; exit 2 ;;
esac
out="${1:-${OUT:-benchmarks/results}}"
mnist="${2:-}"
if [ -n "$mnist" ] && [ ! -f "$mnist/mnist-train.npz" ]; then  # said now, not after the rest
    echo "run_gpu.sh: $mnist holds no mnist-train.npz (MNIST_DIR: mnist-train.npz, mnist-test.npz)" >&2
    exit 2
fi
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"  # absolute: the commands below run from the repository root
[ -z "$mnist" ] || mnist="$(cd "$mnist" && pwd)"
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}." PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX would otherwise take 75% of the GPU's memory
nvidia-smi -L | tee "$out/device.txt"
python3 -c "import cupy, numpy, torch, jax; print('cupy', cupy.__version__, 'numpy', numpy.__version__,
'torch', torch.__version__, 'jax', jax.__version__, jax.default_backend())" | tee -a "$out/device.txt"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$out/pytest-gpu.log" |
    tail -15
timeout 180 python3 -m scratchvae.bench --backend cupy --torch-device cuda --configs mnist \
    --dtypes float32 --batch-sizes 128 2048 --eval-k 0 --memory-steps 100 --reps 5 \
    --target-seconds 0.2 --out "$out" 2>&1 | tee "$out/bench-gpu.log" | grep -v "^  "
# where the GPU step's time goes: each phase replayed as its own CUDA graph, and the products
timeout 60 python3 benchmarks/step_phases.py --backend cupy --reps 5 2>&1 |
    tee "$out/phases-gpu.txt" | grep -v "^  "
if [ -n "$mnist" ]; then
    timeout 90 python3 benchmarks/mnist_epochs.py "$mnist" --backend cupy --torch-device cuda \
        --out "$out" 2>&1 | tee "$out/mnist-gpu.log" | tail -4
fi
