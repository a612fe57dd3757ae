"""Run the scratchvae benchmarks (the same code as ``scratchvae bench``).

CPU, everything (PyTorch and JAX from the `bench` extra, in their own virtualenv):
    .venv-bench/bin/python benchmarks/run.py --out benchmarks/results
A fast subset (without --out: into a new temporary folder, printed):
    python benchmarks/run.py --quick
GPU (CuPy + PyTorch on CUDA; JAX skipped when absent), results under $OUT:
    PYTHONPATH=. python3 benchmarks/run.py --backend cupy --torch-device cuda --out $OUT

See ``python benchmarks/run.py --help`` and :mod:`scratchvae.bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from scratchvae.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
