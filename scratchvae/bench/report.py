"""What a benchmark run writes: the machine it ran on, and the results as JSON, Markdown and a
throughput plot.

:func:`machine_info` records what the figures depend on (CPU, cores, BLAS, GPU, library
versions, thread settings, load average); :func:`machine_name` turns it into a file stem;
:func:`busy_note` says when the load average exceeded the cores (the timings are then noisy),
and :func:`fraction_text` prints a matmul fraction above 1, which only that gives, as "n/a".
:func:`write_outputs` writes ``<name>.json``, ``<name>.md`` (:func:`markdown_report`) and
``<name>.png`` (:func:`plot_throughput`), each atomically (:func:`~scratchvae.atomic.
atomic_write`): a reader sees the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..backend import Backend, kernels_enabled, to_numpy
from ..interrupts import interrupts_deferred  # re-exported: the bench's writers use it
from ..kernels import cpu as cpu_kernels
from .references import import_torch, installed_version
from .timing import ADAM

__all__ = [
    "THREAD_VARS",
    "cores_text",
    "threads_env",
    "busy_note",
    "fraction_text",
    "interrupts_deferred",
    "load_average",
    "machine_info",
    "machine_name",
    "markdown_report",
    "plot_throughput",
    "write_outputs",
]

# the environment variables that set the CPU threads of BLAS, OpenMP and scratchvae's pool
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cores_text(machine: dict[str, Any]) -> str:
    """'2 cores', '1 core', or '1 of 2 cores' for a run pinned to fewer than the machine has."""
    n, present = machine["cores"], machine.get("cores_present", machine["cores"])
    unit = "core" if present == 1 else "cores"
    return f"{n} {unit}" if n == present else f"{n} of {present} {unit}"


def threads_env(n: int) -> tuple[dict[str, str], Any]:
    """(environment, preexec_fn) for a child process whose libraries all use ``n`` threads.

    The variables set BLAS's and OpenMP's thread counts and scratchvae's; JAX (XLA's CPU client
    and the YNNPACK products under it) reads none of them and sizes its thread pools from the
    cores the process may run on, so the child is also pinned to the first ``n`` of this
    process's cores (None when ``n`` is all of them, or on a system without affinity)."""
    env = dict(os.environ, **{v: str(n) for v in THREAD_VARS}, SCRATCHVAE_THREADS=str(n))
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return env, None
    if n >= len(cores):
        return env, None
    chosen = set(cores[:n])
    return env, lambda: os.sched_setaffinity(0, chosen)


_VERSIONS_OF = ("scratchvae", "numpy", "scipy", "numba", "torch", "jax", "jaxlib", "cupy-cuda12x")


# ============================================================================ machine
def machine_info(backend: Backend, torch_device: str | None) -> dict[str, Any]:
    """CPU model, cores, BLAS, GPU, library versions, load: what the figures depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": cores,
        "cores_present": os.cpu_count() or cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "blas": _blas_info(backend),
        "load_avg_start": load_average(),
        "versions": {m: installed_version(m) for m in _VERSIONS_OF},
        # the optional Numba kernels of the ops (scratchvae.kernels.cpu) in use
        "cpu_kernels": backend.name == "numpy" and kernels_enabled() and bool(cpu_kernels.KERNELS),
        "thread_env": {v: os.environ.get(v) for v in THREAD_VARS if os.environ.get(v)},
    }
    if backend.name == "cupy":
        props = backend.xp.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["versions"]["cupy"] = backend.xp.__version__
    if torch_device:
        torch = import_torch()
        info["torch_threads"] = torch.get_num_threads()
        if torch_device.startswith("cuda"):
            info["torch_gpu"] = torch.cuda.get_device_name(0)
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def busy_note(machine: dict[str, Any], with_load: bool = True) -> str | None:
    """'the machine was busy: ...; the timings are noisy ...' when other processes kept half a
    core or more busy while the steps were timed (``cores_busy_elsewhere``, measured from
    /proc/stat), or the 1-minute load average exceeded the cores at the start or the end (it
    lags a minute behind: a load that began just before the run shows in the first only),
    else None. ``with_load`` False leaves the load average out of the first form (the
    Markdown's line states it already).

    Half a core whatever the core count: the references (PyTorch, JAX) take every core, so a
    core busy elsewhere slows their steps on any machine, not only on a small one."""
    cores = machine.get("cores_present") or machine.get("cores") or 1  # the load is the machine's
    start, end = (machine.get(k) or [0.0] for k in ("load_avg_start", "load_avg_end"))
    load = f"load average {start[0]:.1f} at the start, {end[0]:.1f} at the end"
    noisy = "the timings are noisy (the fastest repetitions least so)"
    elsewhere = machine.get("cores_busy_elsewhere")
    if elsewhere is not None and elsewhere >= 0.5:  # a core counts as taken when half of it is
        return (
            f"the machine was busy: other processes kept {elsewhere:.1f} cores busy (of "
            f"{cores}) while the steps were timed; " + (f"{load}; " if with_load else "") + noisy
        )
    if max(start[0], end[0]) <= cores:
        return None
    if not with_load:
        return f"the machine was busy: the load average exceeded its {cores} cores; {noisy}"
    return f"the machine was busy: {load}, on {cores} cores; {noisy}"


def fraction_text(fraction: float) -> str:
    """A matmul fraction (matmul time / step time) as text. Above 1 the products alone took
    longer than the whole step that contains them: the machine was busy, the figure means
    nothing, and it is shown as 'n/a (1.43)'."""
    return f"{fraction:.2f}" if fraction <= 1 else f"n/a ({fraction:.2f})"


def _blas_info(backend: Backend) -> str:
    """NumPy's BLAS, from its build configuration (``numpy.show_config``)."""
    xp = Backend("numpy").xp  # named xp: code outside backend/arrays.py never calls np.*
    try:
        cfg = xp.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def machine_name(info: dict[str, Any], backend: str) -> str:
    """A file name for the results: ``cpu-<model>-<cores>c`` or ``gpu-<model>``."""

    def slug(s: str) -> str:
        s = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", s.lower())
        return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:40] or "unknown"

    if backend == "cupy":
        return f"gpu-{slug(info.get('gpu', 'unknown'))}"
    return f"cpu-{slug(info['cpu'])}-{info.get('cores_present', info['cores'])}c"  # the machine's


# ============================================================================ files


def write_outputs(results: dict, out_dir: Path, name: str) -> list[Path]:
    """``name``.json, ``name``.md and ``name``.png under ``out_dir`` (created if needed), each
    written atomically, the three together (:func:`interrupts_deferred`). Returns the paths."""
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    texts = [json.dumps(results, indent=1, default=_json_default) + "\n", markdown_report(results)]
    with interrupts_deferred():
        for path, text in zip(paths, texts, strict=False):
            with atomic_write(path, "w") as f:
                f.write(text)
        plot_throughput(results, paths[2])
    return paths


def _json_default(o: Any) -> Any:
    try:
        return to_numpy(o).tolist()
    except Exception:
        return str(o)


def markdown_report(results: dict) -> str:
    """The results as Markdown: machine, throughput table, equivalence, memory, evaluation."""
    m, s = results["machine"], results["settings"]
    lines = [
        f"# scratchvae benchmark: {m.get('gpu') or m['cpu']} ({cores_text(m)})",
        "",
        f"- backend `{s['backend']}`; BLAS {m['blas']}; Python {m['python']}"
        + ("; compiled kernels (Numba)" if m.get("cpu_kernels") else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- load average at start {m.get('load_avg_start')}, end {m.get('load_avg_end')}"
        + (f" ({note})" if (note := busy_note(m, with_load=False)) else ""),
        f"- step = {s['step']}; Adam lr {ADAM['lr']}; {s['reps']} repetitions, median "
        "(interquartile range); repetitions of all implementations interleaved",
        "",
        "## Training-step throughput (samples/s)",
        "",
    ]
    impls = list(dict.fromkeys(r["impl"] for r in results["throughput"]))
    threads = any("scratchvae_threads" in row for row in results["summary"])  # NumPy's runs
    head = ["config", "dtype", "batch", *(["threads"] if threads else []), *impls]
    head += [*[f"x vs {i}" for i in impls[1:-1]], "matmul frac.", "(best reps)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in results["throughput"]:
        by_key.setdefault((r["config"], r["dtype"], r["batch"]), {})[r["impl"]] = r
    for row in results["summary"]:
        cells = by_key[(row["config"], row["dtype"], row["batch"])]
        vals = [row["config"], row["dtype"], str(row["batch"])]
        vals += [str(row.get("scratchvae_threads", "-"))] if threads else []
        for impl in impls:
            r = cells.get(impl)
            vals.append(_fmt_rate(r) if r else "-")
        vals += [f"{row.get(f'speedup_vs_{i}', float('nan')):.2f}" for i in impls[1:-1]]
        vals.append(fraction_text(row["matmul_fraction"]))
        best = row.get("matmul_fraction_best")
        vals.append("-" if best is None else fraction_text(best))
        lines.append("| " + " | ".join(vals) + " |")
    lines += [
        "",
        "`matmul-bound`: the step's matrix products alone; `matmul frac.` = matmul time / "
        "scratchvae step time, from the medians; `(best reps)`: the same from each one's "
        "fastest repetition (what a quiet machine gives: other tenants of a shared host slow "
        "the step's memory-bound part more than the products). "
        "`x vs R` = R's step time / scratchvae's (> 1: scratchvae faster). A fraction above 1 "
        "(`n/a`) means the products alone took longer than the whole step: the machine was "
        "busy." + (THREADS_NOTE if threads else ""),
        "",
    ]
    lines += _md_equivalence(results["equivalence"])
    lines += _md_memory(results["memory"])
    if results.get("eval"):
        e = results["eval"]
        lines += [
            "## Evaluation",
            "",
            f"Importance-weighted bound, k = {e['k']}, {e['n']} inputs, {e['dtype']} on "
            f"{e['backend']}: {e['seconds']:.1f} s, peak {e['peak_mib']:.0f} MiB "
            f"({e['peak_measure']}).",
            "",
        ]
    return "\n".join(lines)


THREADS_NOTE = (
    " `threads`: scratchvae's step (and the products) on the CPU threads a training run would "
    "take, the cores not busy elsewhere (`--threads N` pins them); the references on their own."
)


def _fmt_rate(r: dict[str, Any]) -> str:
    t, b = r["step_s"], r["batch"]
    return f"{b / t['median']:.0f} ({b / t['q3']:.0f}-{b / t['q1']:.0f})"


def _md_equivalence(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = [
        "## Same numbers before timing",
        "",
        "Same weights, data and eps; relative differences (each array's over its largest "
        "entry); the update: two Adam steps fed scratchvae's gradients, each array against "
        "its own tolerance (the rounding of its weights and of the step), the closest shown.",
        "",
        "| config | dtype | batch | reference | loss | gradients | tolerance | Adam update "
        "| its tolerance | ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        adam, worst = r.get("adam_update_max_rel_diff"), r.get("adam_update_worst")
        if worst is not None:
            adam_cells = f"{worst['rel_diff']:.1e} ({worst['array']}) | {worst['tolerance']:.1e}"
        else:  # a row written before each array had its own tolerance
            adam_cells = f"{'-' if adam is None else f'{adam:.1e}'} | -"
        out.append(
            f"| {r['config']} | {r['dtype']} | {r.get('batch', '-')} | {r['reference']} | "
            f"{r['loss_rel_diff']:.1e} | {r['grad_max_rel_diff']:.1e} | "
            f"{r.get('tolerance', 0):.0e} | {adam_cells} | {'yes' if r['ok'] else 'NO'} |"
        )
    return [*out, ""]


def _md_memory(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = ["## Memory (MNIST VAE, float32)", ""]
    for r in rows:
        parts = [f"{k} {v:.1f}" for k, v in r.items() if k.endswith("_mib") and v is not None]
        parts += [f"error: {r['error']}"] if "error" in r else []
        out.append(f"- {r['impl']}, batch {r['batch']}, {r['steps']} steps: " + ", ".join(parts))
    return [*out, ""]


def plot_throughput(results: dict, path: Path) -> None:
    """Samples/s against batch size, one panel per (config, dtype), one line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["config"], r["dtype"]) for r in results["throughput"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (cfg, dtype) in zip(axes[0], panels, strict=True):
        rows = [r for r in results["throughput"] if (r["config"], r["dtype"]) == (cfg, dtype)]
        for impl in dict.fromkeys(r["impl"] for r in rows):
            pts = sorted((r["batch"], r) for r in rows if r["impl"] == impl)
            b = [p[0] for p in pts]
            med = [p[0] / p[1]["step_s"]["median"] for p in pts]
            lo = [m - p[0] / p[1]["step_s"]["q3"] for m, p in zip(med, pts, strict=True)]
            hi = [p[0] / p[1]["step_s"]["q1"] - m for m, p in zip(med, pts, strict=True)]
            style = ":" if impl == "matmul-bound" else "-"
            ax.errorbar(b, med, yerr=[lo, hi], fmt="o" + style, label=impl, capsize=3)
        ax.set(xscale="log", yscale="log", xlabel="batch size", title=f"{cfg} {dtype}")
        ax.minorticks_off()  # only the batch sizes as x ticks
        ax.set_xticks([r for r in results["settings"]["batch_sizes"]])
        ax.set_xticklabels([str(r) for r in results["settings"]["batch_sizes"]])
    axes[0][0].set_ylabel("samples / s (training step)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
