"""``scratchvae bench``: its options, their checks, and the whole run.

:func:`add_arguments` (bench/options.py) adds the options to a parser (``scratchvae bench``,
``benchmarks/run.py``); :func:`run_cli` fills the defaults (``--quick`` or the full suite),
checks them, runs :func:`run_benchmarks` and writes the results: into ``--out``, else
``$SCRATCHVAE_BENCH_OUT``, else a new temporary folder (printed), never into the current
folder unasked. A busy machine (other processes' share of the cores while the steps were
timed, or a load average above the cores) is said to be, and a matmul fraction above 1, which
only a busy machine gives, is printed as "n/a". :func:`run_benchmarks` checks and times every
(config, dtype, batch) cell, scratchvae's step on the CPU threads a training run would take
(the free cores), then measures memory and the evaluation.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backend import Backend, BackendError, training_threads, usable_cores
from ..backend.threads import LoadProbe, ThreadChoice
from ..cliargs import OneLineParser, one_line_error
from ..interrupts import Terminated, ignore_interrupts, interrupted, sigterm_interrupts
from .checks import check_replaces_results_only, prepare_out
from .conditions import CONDITIONS, default_name, run_contention, run_thread_sweep, write
from .equivalence import ReferenceMismatch, raise_if_disagrees
from .memory import eval_cost, measure_memory
from .options import add_arguments, fill_defaults, validate
from .references import (
    JaxStep,
    TorchGraphStep,
    TorchStep,
    check_jax,
    check_torch,
    import_torch,
    installed_version,
)
from .report import (
    busy_note,
    load_average,
    machine_info,
    machine_name,
    threads_env,
    write_outputs,
)
from .timing import ADAM, CONFIGS, ScratchStep, StepFn, matmul_bound_fn, time_interleaved

__all__ = ["SCHEMA", "add_arguments", "main", "run_benchmarks", "run_cli"]

SCHEMA = "scratchvae-bench/1"
DESCRIPTION = "Benchmarks: scratchvae's training step against PyTorch and JAX, the matmul bound."


# ============================================================================ the whole run
def run_benchmarks(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Everything ``scratchvae bench`` measures, as one JSON-ready dict."""
    torch_device = _resolve_torch(opts.torch_device, log)
    use_jax = not opts.no_jax and installed_version("jax") is not None
    if not opts.no_jax and not use_jax:
        log("JAX not installed: skipping the JAX reference (pip install 'scratchvae[bench]')")
    Backend(opts.backend)  # fail early, in one line, if the backend is not available
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": machine_info(Backend(opts.backend), torch_device),
        "settings": {
            "backend": opts.backend,
            "torch_device": torch_device,
            "jax": use_jax,
            "configs": list(opts.configs),
            "dtypes": list(opts.dtypes),
            "batch_sizes": list(opts.batch_sizes),
            "reps": opts.reps,
            "target_seconds_per_rep": opts.target_seconds,
            "pause_seconds_between_reps": opts.pause,
            "threads": opts.threads,
            "quick": opts.quick,
            "adam": ADAM,
            "step": "draw eps, forward, backward, Adam update (synthetic binary data)",
        },
        "throughput": [],
        "summary": [],
        "equivalence": [],
        "memory": [],
        "eval": None,
    }
    # scratchvae's step takes the CPU threads a training run would (training_threads: the
    # free cores, chosen again after each cell as a run does after each epoch; pinned by
    # --threads): on a busy host, BLAS on every core waits at each product for a thread that
    # is not running (benchmarks/README.md, "A busy host"). The references keep their own.
    probe, numpy = LoadProbe(), opts.backend == "numpy"  # probe: others' load while timed
    with training_threads(numpy) as choice:
        for cfg_name in opts.configs:
            for dtype in opts.dtypes:
                for batch in opts.batch_sizes:
                    cell = (cfg_name, dtype, batch)
                    _bench_cell(results, *cell, opts, torch_device, use_jax, choice, log)
                    if numpy:
                        choice.update()
    results["machine"]["cores_busy_elsewhere"] = probe.others()
    results["memory"] = measure_memory(opts, torch_device, log)
    if opts.eval_k > 0:
        log(f"evaluation: iw bound k={opts.eval_k} on {opts.eval_n} inputs")
        results["eval"] = eval_cost(Backend(opts.backend, "float32", 0), opts.eval_n, opts.eval_k)
    results["machine"]["load_avg_end"] = load_average()
    return results


def _resolve_torch(device: str, log: Callable[[str], None]) -> str | None:
    if device == "none":
        return None
    if installed_version("torch") is None:
        log(
            "PyTorch not installed: skipping the PyTorch reference "
            "(pip install 'scratchvae[bench]')"
        )
        return None
    if device.startswith("cuda") and not import_torch().cuda.is_available():
        log("PyTorch sees no CUDA device: skipping the PyTorch reference")
        return None
    return device


def _bench_cell(
    results: dict,
    cfg_name: str,
    dtype: str,
    batch: int,
    opts: argparse.Namespace,
    torch_device: str | None,
    use_jax: bool,
    choice: ThreadChoice,
    log: Callable[[str], None],
) -> None:
    """Check and time one (config, dtype, batch) cell: scratchvae, references, matmul bound;
    scratchvae's step on ``choice.count`` threads."""
    config = CONFIGS[cfg_name]
    step = ScratchStep(config, batch, Backend(opts.backend, dtype, seed=0))
    key = {"config": cfg_name, "dtype": dtype, "batch": batch}
    fns: dict[str, tuple[StepFn, Callable[[], None]]] = {}
    if torch_device:
        if batch == opts.batch_sizes[0]:
            results["equivalence"].append({**key, **check_torch(step, torch_device)})
            raise_if_disagrees(results["equivalence"][-1])  # before anything is timed
        ref = TorchStep(step.model, step.x, torch_device)
        fns[f"torch-{torch_device}"] = (ref, ref.sync)
        if torch_device.startswith("cuda"):  # and the step replayed from a CUDA graph
            graphed = TorchGraphStep(step.model, step.x, torch_device)
            fns[f"torch-{torch_device}-graph"] = (graphed, graphed.sync)
    if use_jax:
        if batch == opts.batch_sizes[0]:
            results["equivalence"].append({**key, **check_jax(step)})
            raise_if_disagrees(results["equivalence"][-1])
        jstep = JaxStep(step.model, step.x)
        fns[f"jax-{jstep.jax.default_backend()}"] = (jstep, jstep.sync)
    scratch = f"scratchvae-{opts.backend}"
    fns = {scratch: (step, step.sync), **fns}
    fns["matmul-bound"] = (matmul_bound_fn(step.model, batch), step.sync)
    timed = time_interleaved(fns, opts.reps, opts.target_seconds, opts.pause)
    for impl, t in timed.items():
        results["throughput"].append(
            {**key, "impl": impl, "step_s": t, "samples_per_s": batch / t["median"]}
        )
    results["summary"].append(_summary_row(key, timed, scratch))
    row = results["summary"][-1]
    if opts.backend == "numpy":
        row["scratchvae_threads"], row["cores_busy_elsewhere"] = choice.count, choice.busy
    log(
        f"{cfg_name:6s} {dtype} B={batch:5d}  scratchvae {batch / timed[scratch]['median']:9.0f}/s"
        + "".join(f"  x{row[k]:.2f} {k[11:]}" for k in row if k.startswith("speedup_vs_"))
        + f"  {_fraction_log(row['matmul_fraction'], row['matmul_fraction_best'])}"
        + _threads_log(row)
    )


def _threads_log(row: dict[str, Any]) -> str:
    """'  on 1 of 2 threads (1.8 cores busy elsewhere)' when the step took fewer threads than
    the usable cores because others were busy, else ''."""
    n, busy = row.get("scratchvae_threads"), row.get("cores_busy_elsewhere")
    if n is None or busy is None or n >= usable_cores():
        return ""
    return f"  on {n} of {usable_cores()} threads ({busy:.1f} cores busy elsewhere)"


def _fraction_log(median: float, best: float) -> str:
    """The matmul fractions for the log; both "n/a" when either exceeds 1 (a busy machine)."""
    if max(median, best) <= 1:
        return f"matmul fraction {median:.2f} (best reps {best:.2f})"
    return (
        f"matmul fraction n/a (measured {median:.2f}, best reps "
        f"{best:.2f}: above 1 only when the machine is busy)"
    )


def _summary_row(key: dict, timed: dict[str, dict[str, float]], scratch: str) -> dict[str, Any]:
    s = timed[scratch]["median"]
    row: dict[str, Any] = {**key, "scratch_step_ms": 1e3 * s}
    for impl, t in timed.items():
        if impl not in (scratch, "matmul-bound"):
            row[f"{impl}_step_ms"] = 1e3 * t["median"]
            row[f"speedup_vs_{impl}"] = t["median"] / s
    row["matmul_ms"] = 1e3 * timed["matmul-bound"]["median"]
    row["matmul_fraction"] = timed["matmul-bound"]["median"] / s
    # the same ratio from each one's fastest repetition: the quiet-machine figure. On a shared
    # host, other tenants slow the step's memory-bound part (Adam) far more than the products,
    # so the ratio of medians depends on how busy the host was during the run
    row["matmul_fraction_best"] = timed["matmul-bound"]["min"] / timed[scratch]["min"]
    return row


# ============================================================================ entry points
def _rerun_with_threads(n: int, argv: list[str] | None) -> int:
    """Run this same command (its options ``argv``; None: this process's command line) in a
    fresh process whose libraries all use ``n`` threads (BLAS reads its thread count when it
    loads, so the variables must be set before that; JAX follows only the cores the process
    may use, so the process is pinned to ``n``)."""
    env, pin = threads_env(n)
    env["SCRATCHVAE_BENCH_THREADS"] = str(n)
    if argv is None:
        argv = sys.argv[1:]
        argv = argv[1:] if argv[:1] == ["bench"] else argv  # `scratchvae bench ...`
    cmd = [sys.executable, "-m", "scratchvae.bench", *argv]
    proc = subprocess.Popen(cmd, env=env, preexec_fn=pin)  # noqa: PLW1509 - no threads yet
    try:
        return proc.wait()
    except KeyboardInterrupt as exc:  # the run is the child's: it says how it ended, in one line
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if isinstance(exc, Terminated):  # sent to this process alone (`timeout`, `kill`)
                proc.terminate()
            try:  # a terminal's Ctrl-C reached the child too
                return proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)


def _run_conditions(args: argparse.Namespace) -> int:
    """``--contention`` or ``--thread-sweep``: their own tables (bench/conditions.py)."""
    if args.contention:
        args.conditions = args.conditions or list(CONDITIONS)
        results, kind = run_contention(args, log=lambda m: print(m, flush=True)), "contention"
    else:
        results, kind = run_thread_sweep(args, log=lambda m: print(m, flush=True)), "threads"
    paths = write(results, Path(args.out), args.name or default_name(results, kind))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _backend_problem(name: str) -> str | None:
    """Why the backend ``name`` cannot run here (CuPy missing, no GPU), or None."""
    try:
        Backend(name)
    except BackendError as exc:
        return str(exc)
    return None


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmarks and write the results. Returns the exit status."""
    if args.contention or args.thread_sweep:  # their defaults: one config, one dtype
        if args.batch_sizes is None:
            args.batch_sizes = [128] if args.contention else [128, 2048]
        args.configs, args.dtypes = args.configs or ["mnist"], args.dtypes or ["float32"]
    args = fill_defaults(args)
    problem = validate(args) or _backend_problem(args.backend) or prepare_out(args.out)
    problem = problem or check_replaces_results_only(args.out, args.name)
    if problem:  # all of it before any timing, any line and any folder made
        print(one_line_error(problem), file=sys.stderr)
        return 2
    if args.threads and os.environ.get("SCRATCHVAE_BENCH_THREADS") != str(args.threads):
        return _rerun_with_threads(args.threads, getattr(args, "argv", None))
    if args.threads and installed_version("torch") and args.torch_device != "none":
        import_torch().set_num_threads(args.threads)
    if not args.out:
        args.out = tempfile.mkdtemp(prefix="scratchvae-bench-")
        print(f"results go to {args.out} (a new temporary folder; --out DIR to choose)")
    try:
        if args.contention or args.thread_sweep:
            return _run_conditions(args)
        results = run_benchmarks(args, log=lambda msg: print(msg, flush=True))
    except BackendError as exc:
        print(one_line_error(str(exc)), file=sys.stderr)
        return 2
    except ReferenceMismatch as exc:  # a bug in a reference or in scratchvae: nothing written
        print(one_line_error(str(exc)), file=sys.stderr)
        return 1
    note = busy_note(results["machine"])
    if note:
        print(f"note: {note}")
    name = args.name or machine_name(results["machine"], args.backend)
    if not args.name:
        name += f"-{args.threads}thread" if args.threads else ""
        name += "-quick" if args.quick else ""
    paths = write_outputs(results, Path(args.out), name)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m scratchvae.bench`` and ``benchmarks/run.py``."""
    parser = OneLineParser(prog="scratchvae bench", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a rerun (--threads)
    try:  # as `scratchvae bench` (scratchvae/cli.py): Ctrl-C and SIGTERM end it in one line
        with sigterm_interrupts():
            return run_cli(args)
    except KeyboardInterrupt as exc:
        if argv is None:  # this process's own command line: it ends now
            ignore_interrupts()
        return interrupted(None, isinstance(exc, Terminated))
