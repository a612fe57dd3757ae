"""Memory of the training step, and the time and memory of the importance-weighted evaluation.

:func:`measure_memory` runs :func:`memory_probe` once per implementation, each in a fresh
Python process: memory an older process's allocator keeps after freeing it would hide new
peaks. On the CPU the probe reads the kernel's RSS figures (``/proc/self/status``) and, for
scratchvae, tracemalloc's count of NumPy allocations; on a GPU, the allocators' own figures.
:func:`eval_cost` times ``evaluate(model, x, iw_samples=k)`` and takes its peak memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from ..backend import Backend
from ..kernels import cpu as cpu_kernels
from ..models import VAE
from .references import TorchStep, import_torch
from .timing import CONFIGS, ScratchStep, StepFn

__all__ = ["eval_cost", "measure_memory", "memory_probe"]


def _proc_status_kib(field: str) -> int | None:
    """A 'VmRSS'/'VmHWM' line of /proc/self/status, in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_probe(impl: str, backend_name: str, batch: int, steps: int) -> dict[str, Any]:
    """Memory of ``steps`` training steps of the MNIST VAE (float32), from a baseline taken
    before the model exists. Meant for a fresh process (see :func:`measure_memory`): memory an
    older process's allocator keeps after freeing it would hide new peaks.

    CPU: the RSS peak above the baseline (the kernel's high-water mark, reset first) and the RSS
    growth from step 5 to the end; for scratchvae also tracemalloc's peak of NumPy allocations
    within the steps and their growth. GPU: the allocators' own figures.
    """
    bk = Backend(backend_name, "float32", seed=0)
    is_torch = impl.startswith("torch")
    if is_torch:  # the library and the weights to copy are loaded before the baseline
        import_torch()
        source = ScratchStep(CONFIGS["mnist"], batch, bk)
    else:  # likewise Numba's compiled kernels, when installed (benchmarks/README.md: Memory)
        cpu_kernels.warm_up("float32")
    gc.collect()
    rss0 = _proc_status_kib("VmRSS")
    resettable = _reset_peak_rss()
    step: Any = (
        TorchStep(source.model, source.x, impl.split("-", 1)[1])
        if is_torch
        else ScratchStep(CONFIGS["mnist"], batch, bk)
    )
    out: dict[str, Any] = {"impl": impl, "batch": batch, "steps": steps}
    out["params_grads_adam_mib"] = (
        16 * sum(p.numel() for p in step.parameters()) / 2**20
        if is_torch
        else 4 * step.model.params.flat.nbytes / 2**20
    )
    gpu = backend_name == "cupy" or impl == "torch-cuda"
    for _ in range(5):
        step()
    step.sync()
    gc.collect()
    rss_warm, used_warm = _proc_status_kib("VmRSS"), _gpu_used(impl, bk)
    for _ in range(steps):
        step()
    step.sync()
    gc.collect()
    rss_end, peak = _proc_status_kib("VmRSS"), _proc_status_kib("VmHWM")
    if gpu:
        out.update(_gpu_peak(impl, bk))
        out["gpu_used_growth_mib"] = (_gpu_used(impl, bk) - used_warm) / 2**20
    elif rss0 is not None and rss_warm is not None and rss_end is not None and peak is not None:
        out["rss_peak_above_baseline_mib"] = (peak - rss0) / 1024 if resettable else None
        out["rss_growth_mib"] = (rss_end - rss_warm) / 1024
    if impl.startswith("scratchvae") and not gpu:
        out.update(_tracemalloc_steps(step, steps))
    return out


def _gpu_used(impl: str, bk: Backend) -> int:
    if impl == "torch-cuda":
        return import_torch().cuda.memory_allocated()
    if bk.name == "cupy":
        return bk.xp.get_default_memory_pool().used_bytes()
    return 0


def _gpu_peak(impl: str, bk: Backend) -> dict[str, float]:
    if impl == "torch-cuda":
        return {"gpu_peak_mib": import_torch().cuda.max_memory_allocated() / 2**20}
    return {"gpu_pool_total_mib": bk.xp.get_default_memory_pool().total_bytes() / 2**20}


def _tracemalloc_steps(step: StepFn, steps: int) -> dict[str, float]:
    """tracemalloc: the most extra NumPy memory held during the steps, and its growth."""
    tracemalloc.start()
    try:
        step()
        tracemalloc.reset_peak()
        cur0 = tracemalloc.get_traced_memory()[0]
        for _ in range(steps):
            step()
        cur1, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "tracemalloc_step_peak_mib": (peak - cur0) / 2**20,
        "tracemalloc_growth_mib": (cur1 - cur0) / 2**20,
    }


def measure_memory(
    opts: argparse.Namespace, torch_device: str | None, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Memory of the MNIST-shaped step (float32, batch 128 or the closest asked for), each
    implementation measured in a fresh Python process."""
    batch = min(opts.batch_sizes, key=lambda b: abs(b - 128))
    log(f"memory: {opts.memory_steps} steps, batch {batch}, float32 (fresh processes)")
    impls = [f"scratchvae-{opts.backend}"] + ([f"torch-{torch_device}"] if torch_device else [])
    rows = []
    for impl in impls:
        code = (
            "import json; from scratchvae.bench.memory import memory_probe; "
            f"print(json.dumps(memory_probe({impl!r}, {opts.backend!r}, {batch}, "
            f"{opts.memory_steps})))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=1800
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            log(f"memory probe for {impl} failed: {tail}")
            rows.append({"impl": impl, "batch": batch, "steps": opts.memory_steps, "error": tail})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def eval_cost(backend: Backend, n: int, k: int) -> dict[str, Any]:
    """Time and peak memory of ``evaluate(model, x, iw_samples=k)`` on n MNIST-shaped inputs."""
    from ..evaluate import evaluate  # imported here: written alongside, not needed otherwise

    model = VAE(**CONFIGS["mnist"], backend=backend)
    x = backend.asarray(backend.uniform((n, 784)) < 0.5)
    use_tracemalloc = backend.name == "numpy"
    if use_tracemalloc:
        tracemalloc.start()
    else:
        pool = backend.xp.get_default_memory_pool()
        pool.free_all_blocks()
    t0 = time.perf_counter()
    try:
        res = evaluate(model, x, iw_samples=k)
        backend.synchronize()
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else pool.total_bytes()
    finally:
        if use_tracemalloc:
            tracemalloc.stop()
    return {
        "n": n,
        "k": k,
        "dtype": backend.dtype.name,
        "backend": backend.name,
        "seconds": seconds,
        "peak_mib": peak / 2**20,
        "peak_measure": "tracemalloc" if use_tracemalloc else "cupy pool total",
        "iw_nll": res.get("iw_nll"),
    }
