"""Benchmark conditions: the machine busy with something else, and the number of threads.

``scratchvae bench --contention`` times the training step of scratchvae, PyTorch and JAX
(interleaved, as everywhere in the benchmarks) under each condition it sets up itself:

* ``idle``: nothing else runs (the machine's own background aside);
* ``busy``: one process per core named by ``--busy-cores`` spins on that core (pinned to it
  where the OS allows), as a browser tab or a stray job would;
* ``pair``: a second scratchvae training (the same step, in another process) runs alongside,
  as in a sweep of two runs; its own throughput is measured too.

and reports each implementation's samples/s per condition and the share of its idle speed it
kept. ``scratchvae bench --thread-sweep`` times the same steps with 1, 2, 4, ... threads up
to the cores present (each count in a fresh process: BLAS reads it when it loads).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..backend import Backend, training_threads, usable_core_ids, usable_cores
from .equivalence import ReferenceMismatch, raise_if_disagrees
from .references import JaxStep, TorchStep, check_jax, check_torch, installed_version
from .report import (
    cores_text,
    interrupts_deferred,
    load_average,
    machine_info,
    machine_name,
    threads_env,
)
from .timing import CONFIGS, ScratchStep, time_interleaved

__all__ = ["CONDITIONS", "run_contention", "run_thread_sweep"]

CONDITIONS = ("idle", "busy", "pair")
# the children started here leave Ctrl-C to this process, which stops them (a KeyboardInterrupt
# traceback from each, on a terminal's Ctrl-C, was the output): each runs in its own process
# group (_start), out of the terminal's reach. Ignoring SIGINT in the child's first line was
# not enough: a Ctrl-C during its interpreter's start, before that line, still printed the
# traceback (90 of 200 children signalled in their first 20 ms). A group, not a session: Linux
# shares the CPU between sessions first (autogroups), so a spinner in a session of its own
# took more than its thread's share from the timed steps (PyTorch's busy step fell from 6k to
# 344 samples/s). They end by themselves once this process is gone (killed, it cannot stop
# them: a spinner then burned a core for ever). The parent's pid is written in: read in the
# child, it would be init's if the parent died meanwhile. (Out of the terminal's group, they
# also miss its Ctrl-Z: a suspended benchmark's spinners keep spinning until it goes on.)
_CHILD = "import os; PARENT = {parent}\n"
_BUSY = _CHILD + "while os.getppid() == PARENT:\n    for _ in range(100_000): pass"
_CALL = _CHILD + "import sys; from scratchvae.bench.conditions import {call} as f; f(*sys.argv[1:])"


def _child(code: str, call: str = "") -> list[str]:
    """The command line of a child running ``code`` (``_BUSY``, ``_CALL`` of ``call``)."""
    return [sys.executable, "-c", code.format(parent=os.getpid(), call=call)]


def _own_group(then: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Popen's arguments for a child in a process group of its own (see _CHILD), in the same
    session; ``then``: a function the child runs before its program (threads_env's pin)."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0, "preexec_fn": then}

    def setpgrp_then() -> None:  # pragma: no cover - Python 3.10
        os.setpgrp()
        if then is not None:
            then()

    return {"preexec_fn": setpgrp_then}


def _start(argv: list[str], **popen: Any) -> subprocess.Popen:
    """Start a child in its own process group: a terminal's Ctrl-C reaches this process only."""
    return subprocess.Popen(argv, **_own_group(), **popen)


# ============================================================================ competitors
class AsTraining:
    """scratchvae's step choosing its CPU thread count as a training run does
    (:func:`~scratchvae.backend.training_threads`): from the free cores when the condition
    starts, then again every second (a training run: after every epoch)."""

    def __init__(self, step: Any, choice: Any) -> None:
        self.step, self.choice, self.since = step, choice, time.perf_counter()

    def __call__(self) -> None:
        self.step()
        if self.choice.probe is not None and time.perf_counter() - self.since > 1.0:
            self.choice.update()
            self.since = time.perf_counter()


def _pin(pid: int, core: int) -> None:
    try:
        os.sched_setaffinity(pid, {core})
    except (AttributeError, OSError):  # pragma: no cover - no affinity on this OS
        pass


@contextmanager
def competitors(
    condition: str, busy_cores: list[int], config: str, batch: int, dtype: str
) -> Iterator[dict[str, Any]]:
    """Start what ``condition`` needs, yield a dict the partner's throughput is put into
    ("pair"), stop everything on exit (also on an error or Ctrl-C)."""
    procs: list[subprocess.Popen] = []
    info: dict[str, Any] = {"condition": condition}
    rate_file = Path(tempfile.mkstemp(prefix="scratchvae-partner-")[1])
    try:
        if condition == "busy":
            for core in busy_cores:
                procs.append(_start(_child(_BUSY)))
                _pin(procs[-1].pid, core)
            info["busy_cores"] = busy_cores
        elif condition == "pair":
            argv = [*_child(_CALL, "_partner"), config, str(batch), dtype,
                    str(rate_file), str(os.getpid())]  # fmt: skip
            procs.append(_start(argv, stdout=subprocess.DEVNULL))
            _wait_until_training(procs[-1], rate_file)
        if condition != "pair":
            time.sleep(0.3)  # the busy processes get going
        yield info
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                p.kill()
        if condition == "pair":
            text = rate_file.read_text().strip()
            info["partner_samples_per_s"] = float(text) if text not in ("", _READY) else None
        rate_file.unlink(missing_ok=True)


_READY = "training"  # what the partner writes to its rate file once warmed up


def _wait_until_training(proc: subprocess.Popen, rate_file: Path, limit_s: float = 300) -> None:
    """Return once the partner says it trains (its import and Numba's compilation done: on a
    fresh install that takes longer than any fixed pause), or it ended, or ``limit_s``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s and proc.poll() is None:
        if rate_file.read_text().strip() == _READY:
            return
        time.sleep(0.05)


def _partner(config: str, batch: str, dtype: str, rate_file: str, parent: str) -> None:
    """The second training of the "pair" condition: steps until SIGTERM, then writes its
    samples/s (after a warm-up) to ``rate_file``."""
    batch_size = int(batch)
    step = ScratchStep(CONFIGS[config], batch_size, Backend("numpy", dtype, seed=1))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with training_threads() as choice:
        run = AsTraining(step, choice)
        for _ in range(5):
            run()
        Path(rate_file).write_text(_READY + "\n")
        n, t0 = 0, time.perf_counter()
        while not stop and os.getppid() == int(parent):  # see _CHILD
            run()
            n += 1
    Path(rate_file).write_text(f"{batch_size * n / max(time.perf_counter() - t0, 1e-9)}\n")


# ============================================================================ the runs
def _steps(config: str, batch: int, dtype: str, torch: bool, jax: bool) -> dict[str, Any]:
    """The steps to time, each reference checked first (bench/equivalence.py)."""
    step = ScratchStep(CONFIGS[config], batch, Backend("numpy", dtype, seed=0))
    fns: dict[str, Any] = {"scratchvae": (step, step.sync)}
    key = {"config": config, "dtype": dtype, "batch": batch}
    if torch:
        raise_if_disagrees({**key, **check_torch(step, "cpu")})
        ref = TorchStep(step.model, step.x, "cpu")
        fns["torch"] = (ref, ref.sync)
    if jax:
        raise_if_disagrees({**key, **check_jax(step)})
        jstep = JaxStep(step.model, step.x)
        fns["jax"] = (jstep, jstep.sync)
    return fns


def _references(opts: argparse.Namespace) -> tuple[bool, bool]:
    torch = opts.torch_device != "none" and installed_version("torch") is not None
    return torch, not opts.no_jax and installed_version("jax") is not None


def run_contention(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """samples/s of each implementation under each condition, and the share of idle kept."""
    torch, jax = _references(opts)
    config, dtype = opts.configs[0], opts.dtypes[0]
    machine = machine_info(Backend("numpy"), "cpu" if torch else None)  # its load: at the start
    busy = opts.busy_cores if opts.busy_cores is not None else usable_core_ids()[:1]
    rows = []
    for batch in opts.batch_sizes:
        fns = _steps(config, batch, dtype, torch, jax)
        idle: dict[str, float] = {}
        for condition in opts.conditions:
            competing = competitors(condition, busy, config, batch, dtype)
            with competing as info, training_threads() as c:  # as a run starting now would
                step, sync = fns["scratchvae"]
                timed = time_interleaved({**fns, "scratchvae": (AsTraining(step, c), sync)},
                                         opts.reps, opts.target_seconds, opts.pause)  # fmt: skip
                info["scratchvae_threads"] = c.count
            for impl, t in timed.items():
                rate = batch / t["median"]
                if condition == "idle":
                    idle[impl] = rate
                row = {"batch": batch, **info, "impl": impl, "samples_per_s": rate,
                       "kept": rate / idle[impl] if impl in idle else None}  # fmt: skip
                rows.append(row)
            line = "  ".join(
                f"{r['impl']} {r['samples_per_s']:8.0f}/s" for r in rows[-len(timed) :]
            )
            partner = info.get("partner_samples_per_s")
            log(f"B={batch:5d} {condition:5s} {line}"
                + (f"  (partner {partner:.0f}/s)" if partner else ""))  # fmt: skip
    machine["load_avg_end"] = load_average()
    return {"schema": "scratchvae-bench-contention/1", "config": config, "dtype": dtype,
            "machine": machine, "threads": os.environ.get("SCRATCHVAE_THREADS"),
            "reps": opts.reps, "settings": _settings(opts, torch, jax),
            "load_avg_end": machine["load_avg_end"], "rows": rows}  # fmt: skip


def _settings(opts: argparse.Namespace, torch: bool, jax: bool) -> dict[str, Any]:
    """What the figures of a condition run depend on, besides the machine."""
    return {"config": opts.configs[0], "dtype": opts.dtypes[0],
            "batch_sizes": list(opts.batch_sizes), "reps": opts.reps,
            "target_seconds_per_rep": opts.target_seconds,
            "pause_seconds_between_reps": opts.pause, "torch": torch, "jax": jax,
            "conditions": getattr(opts, "conditions", None) if opts.contention else None,
            "busy_cores": getattr(opts, "busy_cores", None)}  # fmt: skip


def _sweep_counts() -> list[int]:
    counts, n = [], 1
    while n < usable_cores():
        counts.append(n)
        n *= 2
    return [*counts, usable_cores()]


def run_thread_sweep(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """The steps with 1, 2, 4, ... threads (each count in a fresh process). A PyTorch row
    records the threads PyTorch used in its process (``torch_threads``); this process's count,
    which timed nothing, is not recorded (it was, as the machine's)."""
    torch, jax = _references(opts)
    machine, rows = machine_info(Backend("numpy"), None), []
    for n in _sweep_counts():
        env, pin = threads_env(n)  # n threads for BLAS, OpenMP, scratchvae; n cores for JAX
        with tempfile.TemporaryDirectory() as tmp:
            argv = [*_child(_CALL, "_sweep_one"), tmp,
                    json.dumps(vars(opts), default=str)]  # fmt: skip
            proc = subprocess.run(argv, env=env, stderr=subprocess.PIPE, text=True,
                                  **_own_group(pin))  # fmt: skip
            if proc.returncode != 0:  # its last line: what went wrong (a traceback's, too)
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                last = last.removeprefix("scratchvae.bench.equivalence.ReferenceMismatch: ")
                raise ReferenceMismatch(f"the {n}-thread run of the sweep failed: {last}")
            for row in json.loads((Path(tmp) / "rows.json").read_text()):
                rows.append({"threads": n, **row})
                log(f"threads {n:3d} B={row['batch']:5d} {row['impl']:10s} "
                    f"{row['samples_per_s']:9.0f}/s")  # fmt: skip
    machine["load_avg_end"] = load_average()
    return {"schema": "scratchvae-bench-threads/1", "config": opts.configs[0],
            "dtype": opts.dtypes[0], "machine": machine,
            "settings": _settings(opts, torch, jax), "rows": rows}  # fmt: skip


def _sweep_one(out: str, opts_json: str) -> None:
    opts = argparse.Namespace(**json.loads(opts_json))
    torch, jax = _references(opts)
    used: dict[str, Any] = {}  # what this process's PyTorch was timed with
    if torch:
        from .references import import_torch  # noqa: PLC0415

        import_torch().set_num_threads(int(os.environ["SCRATCHVAE_THREADS"]))
    rows = []
    for batch in opts.batch_sizes:
        fns = _steps(opts.configs[0], batch, opts.dtypes[0], torch, jax)
        timed = time_interleaved(fns, opts.reps, opts.target_seconds, opts.pause)
        if torch:  # read after the timing: the count it ran with
            used["torch"] = {"torch_threads": import_torch().get_num_threads()}
        rows += [{"batch": batch, "impl": k, "samples_per_s": batch / t["median"],
                  **used.get(k, {})} for k, t in timed.items()]  # fmt: skip
    Path(out, "rows.json").write_text(json.dumps(rows))


# ============================================================================ the report
def markdown(results: dict) -> str:
    """The contention or thread-sweep results as a Markdown table."""
    m = results["machine"]
    head = [f"# scratchvae benchmark: {m['cpu']} ({cores_text(m)}), {results['config']} "
            f"{results['dtype']}", "", *_about(results), ""]  # fmt: skip
    if results["schema"].endswith("threads/1"):
        lines = ["| threads | batch | impl | samples/s |", "|---|---|---|---|"]
        for r in results["rows"]:
            n = r.get("torch_threads")  # PyTorch's own count, where it differs
            impl = r["impl"] + (f" ({n} threads)" if n is not None and n != r["threads"] else "")
            lines.append(f"| {r['threads']} | {r['batch']} | {impl} | {r['samples_per_s']:.0f} |")
        return "\n".join([*head, *lines, "", *_ratios(results["rows"], "threads"), ""])
    lines = ["| batch | condition | impl | samples/s | kept of idle | partner samples/s |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["rows"]:
        kept = "-" if r["kept"] is None else f"{100 * r['kept']:.0f}%"
        partner = r.get("partner_samples_per_s")
        partner = "-" if partner is None else f"{partner:.0f}"
        n = r.get("scratchvae_threads") if r["impl"] == "scratchvae" else None
        impl = r["impl"] + (f" ({n} thread{'s' * (n > 1)})" if n else "")
        lines.append(f"| {r['batch']} | {r['condition']} | {impl} | "
                     f"{r['samples_per_s']:.0f} | {kept} | {partner} |")  # fmt: skip
    note = ("busy: one spinning process per core in `busy_cores`; pair: a second scratchvae "
            "training of the same step alongside (its own rate in the last column).")  # fmt: skip
    return "\n".join([*head, *lines, "", note, "", *_ratios(results["rows"], "condition"), ""])


def _about(results: dict) -> list[str]:
    """The versions, BLAS, load and settings the figures depend on (the JSON has them all)."""
    m, s = results["machine"], results.get("settings") or {}
    load = [f"{v[0]:.1f}" if v else "?" for v in (m.get("load_avg_start"), m.get("load_avg_end"))]
    lines = [
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v),
        f"- BLAS {m.get('blas')}; 1-minute load average {load[0]} at the start, {load[1]} at "
        "the end",
    ]
    if s:
        lines.append(f"- median of {s['reps']} interleaved repetitions of "
                     f"{s['target_seconds_per_rep']} s each, {s['pause_seconds_between_reps']} s "
                     "pause before each")  # fmt: skip
    return lines


def _ratios(rows: list[dict], key: str) -> list[str]:
    """scratchvae's throughput over each reference's, per (batch, ``key``): the same condition
    or thread count, one run (> 1: scratchvae faster)."""
    refs = sorted({r["impl"] for r in rows} - {"scratchvae"})
    if not refs:
        return []
    rate = {(r["batch"], r[key], r["impl"]): r["samples_per_s"] for r in rows}
    lines = [f"| batch | {key} | " + " | ".join(f"x vs {ref}" for ref in refs) + " |",
             "|---|---|" + "---|" * len(refs)]  # fmt: skip
    for batch, k in dict.fromkeys((r["batch"], r[key]) for r in rows):
        ours = rate.get((batch, k, "scratchvae"))
        cells = [f"{ours / rate[batch, k, ref]:.2f}" if ours and rate.get((batch, k, ref))
                 else "-" for ref in refs]  # fmt: skip
        lines.append(f"| {batch} | {k} | " + " | ".join(cells) + " |")
    return ["scratchvae against each reference, same run and condition:", "", *lines]


def write(results: dict, out: Path, name: str) -> list[Path]:
    """``name``.json and ``name``.md under ``out``, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    texts = [json.dumps(results, indent=1) + "\n", markdown(results)]
    with interrupts_deferred():  # a signal waits: not a new JSON beside the old Markdown
        for path, text in zip(paths, texts, strict=True):
            with atomic_write(path, "w") as f:
                f.write(text)
    return paths


def default_name(results: dict, kind: str) -> str:
    return f"{machine_name(results['machine'], 'numpy')}-{kind}"
