#!/usr/bin/env bash
# Issue 15's many-core check on a lent GPU machine's host CPU (16 cores; nothing to install:
# NumPy, Numba, PyTorch and JAX are there). Run from the repository root:
#     bash benchmarks/run_cpu_host.sh OUT
# Writes under OUT the thread sweep (`scratchvae bench --thread-sweep`: scratchvae, PyTorch and
# JAX jit on 1, 2, 4, ... cores, each count in a fresh process pinned to that many cores,
# batch 128 and 2048, float32) as JSON and Markdown; its last row is the whole machine, the
# "at least as fast as JAX jit" of issue 15's item 3. Then three A/B comparisons on all the
# cores (benchmarks/compare_versions.py, fresh processes, alternating), to choose with numbers
# where two cores cannot tell: at batch 2048 the batch split (16 chunks of 128 rows, BLAS on
# one thread each) against the whole batch on BLAS's threads; at batch 128 OpenBLAS's worker
# spin (OPENBLAS_THREAD_TIMEOUT: scratchvae's 4 against OpenBLAS's own 28) and Adam on more
# threads (its split threshold, PARALLEL_MIN, measured on two cores). About 7 minutes on 16
# cores (REPS=5, AB_REPS=7); AB=0 skips the comparisons. benchmarks/step_phases.py prints
# where the step's time goes (products, Adam, the rest) between the two.
set -uo pipefail
case "${1:-}" in  # --help: the lines above; another option is no folder name
    -h | --help) sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run_cpu_host.sh: unknown option $1 (usage: bash benchmarks/run_cpu_host.sh OUT; --help)" >&2; exit 2 ;;
esac
out="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"  # absolute: the commands below run from the repository root
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}." PYTHONUNBUFFERED=1
export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""  # the CPU steps only, on every library
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket)" | tee "$out/cpu-host.txt"
python3 -c "import numpy, numba, threadpoolctl, torch, jax; print('numpy', numpy.__version__,
'numba', numba.__version__, 'torch', torch.__version__, 'jax', jax.__version__)" |
    tee -a "$out/cpu-host.txt"
timeout "${TIMEOUT:-420}" python3 -m scratchvae.bench --thread-sweep --reps "${REPS:-5}" \
    --target-seconds 0.2 --out "$out" 2>&1 | tee "$out/bench-cpu-host.log" | grep -v "^  "
# where scratchvae's step spends its time on all the cores (products, Adam, the rest)
timeout 90 python3 benchmarks/step_phases.py --reps 5 2>&1 | tee "$out/phases-cpu-host.txt"
if [ "${AB:-1}" != 0 ]; then
    ab="python3 benchmarks/compare_versions.py . . --dtypes float32 --reps ${AB_REPS:-7}"
    {
        echo "# old: batch split; new: whole batch on BLAS's threads"
        timeout 180 $ab --batch 2048 --steps 8 \
            --new-setup "import scratchvae.backend.threads as t; t.MIN_ROWS = 1 << 30"
        echo "# old: OPENBLAS_THREAD_TIMEOUT=4 (scratchvae's); new: 28 (OpenBLAS's default)"
        timeout 120 $ab --batch 128 --steps 40 --new-env OPENBLAS_THREAD_TIMEOUT=28
        echo "# old: Adam split from 2^18 elements a thread (2 threads); new: from 2^16 (9)"
        timeout 120 $ab --batch 128 --steps 40 \
            --new-setup "import scratchvae.kernels.cpu as k; k.PARALLEL_MIN = 1 << 16"
    } 2>&1 | tee "$out/ab-cpu-host.txt"
fi
