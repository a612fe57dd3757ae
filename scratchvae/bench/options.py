"""The options of ``scratchvae bench``, their defaults (the full suite or ``--quick``) and the
checks that need no machine: :func:`add_arguments` (also used by ``benchmarks/run.py``),
:func:`fill_defaults`, :func:`validate` (a one-line problem, or None).
"""

from __future__ import annotations

import argparse
import math
import os
import re

from .checks import check_busy_cores, check_name, usable_cores
from .conditions import CONDITIONS
from .timing import CONFIGS

__all__ = ["BATCH_SIZES", "DTYPES", "FULL", "QUICK", "add_arguments", "fill_defaults", "validate"]

BATCH_SIZES = (32, 128, 512, 2048)
DTYPES = ("float32", "float64")
FULL = {
    "configs": list(CONFIGS),
    "dtypes": list(DTYPES),
    "batch_sizes": list(BATCH_SIZES),
    "reps": 7,
    "target_seconds": 0.25,
    "pause": 0.15,
    "memory_steps": 1000,
    "eval_n": 10_000,
    "eval_k": 5000,
}
QUICK = {
    "configs": ["mnist"],
    "dtypes": ["float32"],
    "batch_sizes": [32, 128],
    "reps": 3,
    "target_seconds": 0.02,
    "pause": 0.0,
    "memory_steps": 20,
    "eval_n": 64,
    "eval_k": 16,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``scratchvae bench`` (also used by ``benchmarks/run.py``)."""
    parser.add_argument("--quick", action="store_true", help="a fast subset (seconds)")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument(
        "--torch-device",
        default="cpu",
        help="device of the PyTorch reference: cpu, cuda, or none to skip it (default cpu)",
    )
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX reference")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None)
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 7)")
    parser.add_argument(
        "--target-seconds", type=float, default=None, help="time per repetition (default 0.25)"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=None,
        help="seconds of rest before each repetition, so that other libraries' spinning "
        "threads sleep (default 0.15; quick 0)",
    )
    parser.add_argument(
        "--memory-steps", type=int, default=None, help="steps for memory growth (default 1000)"
    )
    parser.add_argument("--eval-n", type=int, default=None, help="inputs (default 10000)")
    parser.add_argument("--eval-k", type=int, default=None, help="iw samples, 0 skips (5000)")
    parser.add_argument(
        "--out",
        default=os.environ.get("SCRATCHVAE_BENCH_OUT"),
        help="output folder (default $SCRATCHVAE_BENCH_OUT, else a new temporary folder, "
        "printed; the repository's own results are in benchmarks/results)",
    )
    parser.add_argument("--name", default=None, help="file name stem (default: the machine)")
    parser.add_argument(
        "--contention",
        action="store_true",
        help="time the steps under --conditions instead (default: idle, busy, pair; batch "
        "128; mnist float32)",
    )
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=None)
    parser.add_argument(
        "--busy-cores",
        type=int,
        nargs="+",
        default=None,
        help="busy: one spinning process pinned to each of these cores (default: the first "
        "core this process may use)",
    )
    parser.add_argument(
        "--thread-sweep",
        action="store_true",
        help="time the steps with 1, 2, 4, ... threads up to the usable cores (batch 128, "
        "2048; mnist float32)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every library (BLAS, OpenMP, scratchvae's pool, XLA): the run "
        "restarts itself with these set; default: each library's own choice",
    )


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def validate(args: argparse.Namespace) -> str | None:
    if any(b < 1 for b in args.batch_sizes):
        return "batch sizes must be >= 1"
    if args.reps < 1 or args.target_seconds <= 0 or args.memory_steps < 1 or args.pause < 0:
        return "--reps and --memory-steps must be >= 1, --target-seconds > 0, --pause >= 0"
    if args.threads is not None and args.threads < 1:
        return "--threads must be >= 1"
    if not all(math.isfinite(v) for v in (args.target_seconds, args.pause)):
        return "--target-seconds and --pause must be finite numbers"
    if args.eval_n < 1 or args.eval_k < 0:
        return "--eval-n must be >= 1 and --eval-k >= 0 (0 skips the evaluation)"
    if not re.fullmatch(r"none|cpu|cuda(:[0-9]+)?", args.torch_device):
        return f"--torch-device must be cpu, cuda[:N] or none, got {args.torch_device!r}"
    if args.contention and args.thread_sweep:
        return "--contention and --thread-sweep are two runs; pass one of them"
    if args.threads is not None and args.threads > usable_cores():
        return (
            f"--threads {args.threads}: this process may use {usable_cores()} core(s); more "
            "threads than cores would time their contention, not the libraries"
        )
    if args.contention or args.thread_sweep:
        problem = _conditions_problem(args)
        if problem:
            return problem
    if args.busy_cores is not None and not args.contention:
        return "--busy-cores sets the busy condition of --contention; add --contention"
    if args.conditions is not None and not args.contention:
        return "--conditions chooses the conditions of --contention; add --contention"
    return check_name(args.name) or check_busy_cores(args.busy_cores)


def _conditions_problem(args: argparse.Namespace) -> str | None:
    """What --contention and --thread-sweep cannot do (bench/conditions.py): they time NumPy
    and PyTorch on the CPU, one config and one dtype, and set the threads themselves."""
    mode = "--contention" if args.contention else "--thread-sweep"
    if args.backend != "numpy" or args.torch_device not in ("cpu", "none"):
        return f"{mode} times the CPU steps only: drop --backend cupy and --torch-device cuda"
    if len(args.configs) > 1 or len(args.dtypes) > 1:
        return f"{mode} times one config and one dtype: give one --configs and one --dtypes"
    if args.thread_sweep and args.threads is not None:
        return "--thread-sweep sets the thread counts itself; drop --threads"
    return None
