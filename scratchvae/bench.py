"""Benchmarks: scratchvae's training step against PyTorch and JAX, the matmul bound, memory,
and the cost of the importance-weighted evaluation.

``scratchvae bench`` (or ``python benchmarks/run.py``) measures, for the MNIST-shaped VAE
784-400-20 and a wider 784-1024-1024-50 (ReLU, Bernoulli decoder, Adam 1e-3):

* throughput of one training step (draw eps, forward, backward, Adam update) in samples/s,
  for several batch sizes and dtypes, on the chosen backend (NumPy, or CuPy on a GPU);
* the same step in PyTorch (same architecture, loss, optimizer) and in JAX (``jax.jit``),
  timed in the same run, interleaved repetition by repetition so load changes hit all alike;
  before timing, both are checked to give the same loss, gradients and Adam update for the
  same weights, data and eps;
* the matrix-product bound: the step's products alone (same shapes, dtype, backend), and the
  fraction ``matmul time / step time`` the step reaches;
* memory: peak and growth over many steps (tracemalloc and RSS; the GPU's pools on CuPy);
* evaluation: the importance-weighted bound with k samples on N inputs (time, peak memory).

Results go to ``<out>/<machine>.json`` and ``.md``, and a plot ``<machine>.png``. PyTorch and
JAX are optional (extra ``bench``); what is missing is skipped and said so. Timings are medians
of repetitions with their quartiles (and min/max); the machine, BLAS, library versions and the
load average before and after are written next to them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from . import compiled
from .backend import Backend, BackendError, to_numpy
from .models import VAE
from .optim import Adam

CONFIGS: dict[str, dict[str, Any]] = {
    "mnist": {"n_features": 784, "hidden": (400,), "latent": 20},
    "wide": {"n_features": 784, "hidden": (1024, 1024), "latent": 50},
}
BATCH_SIZES = (32, 128, 512, 2048)
DTYPES = ("float32", "float64")
ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
SCHEMA = "scratchvae-bench/1"
# equivalence tolerances (max relative difference, normalised by each array's largest entry)
EQ_TOL = {"float32": 2e-4, "float64": 1e-9}

StepFn = Callable[[], Any]


# ============================================================================ timing
def summarize(times: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of per-step times (seconds)."""
    s = sorted(times)
    q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else (s[0],) * 3
    return {
        "median": statistics.median(s),
        "q1": q1,
        "q3": q3,
        "min": s[0],
        "max": s[-1],
        "reps": len(s),
    }


def _run(fn: StepFn, sync: Callable[[], None], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls, the device drained before and after."""
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


def time_interleaved(
    fns: dict[str, tuple[StepFn, Callable[[], None]]],
    reps: int,
    target_s: float,
    pause_s: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Time each ``name -> (fn, sync)`` ``reps`` times, round-robin, ~``target_s`` per rep.

    Each function is warmed up (compilation, buffer caches) and its calls per repetition set
    from a first measurement; the repetitions of all functions alternate, so a change of load
    on a shared machine shows in all of them rather than in one. ``pause_s`` between
    repetitions lets the previous library's worker threads (OpenBLAS, OpenMP, XLA spin a while
    after their last call) go to sleep before the next library is timed.
    """
    calls = {}
    for name, (fn, sync) in fns.items():
        per_call = min(_run(fn, sync, 2) for _ in range(2))  # warm-up, and a first estimate
        calls[name] = max(2, math.ceil(target_s / max(per_call, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, (fn, sync) in fns.items():
            time.sleep(pause_s)
            times[name].append(_run(fn, sync, calls[name]))
    return {name: summarize(t) for name, t in times.items()}


# ============================================================================ scratchvae
class ScratchStep:
    """One scratchvae training step on synthetic binary MNIST-shaped data."""

    def __init__(self, config: dict[str, Any], batch: int, backend: Backend) -> None:
        self.bk = backend
        self.model = VAE(**config, backend=backend)
        self.opt = Adam(ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
        self.batch = batch
        self.x = backend.asarray(backend.uniform((batch, config["n_features"])) < 0.5)

    def __call__(self) -> None:
        noise = self.model.draw_noise(self.batch)  # eps ~ N(0, I), (B, L)
        _, grads = self.model.loss_and_grads(self.x, noise)  # buffers reused step to step
        self.opt.step(self.model.params, grads)

    def sync(self) -> None:
        self.bk.synchronize()


def _dense_layers(model: VAE) -> list[tuple[str, int, int]]:
    """(name prefix, n_in, n_out) of every Dense layer, encoder then decoder."""
    out = []
    for net in (model.encoder, model.decoder):
        for i, (n_in, n_out) in enumerate(zip(net.sizes[:-1], net.sizes[1:], strict=True)):
            out.append((f"{net.prefix}.{i}", n_in, n_out))
    return out


def matmul_bound_fn(model: VAE, batch: int) -> StepFn:
    """The step's matrix products alone, same shapes, layouts and dtype, through the backend.

    Per Dense layer (B, n_in) @ (n_in, n_out): forward x @ W, backward x^T @ dy and dy @ W^T
    (the first encoder layer needs no dx). Every product writes into a preallocated output,
    as the step does (its :class:`~scratchvae.params.Workspace`): the fastest these products
    run, so the bound is not flattered by allocation costs the step no longer pays.
    """
    bk = model.backend
    xp = bk.xp
    ops = []
    for name, n_in, n_out in _dense_layers(model):
        x, dy, W = bk.normal((batch, n_in)), bk.normal((batch, n_out)), model.params[f"{name}.W"]
        ops.append((x, W, bk.zeros((batch, n_out))))  # forward
        ops.append((x.T, dy, bk.zeros((n_in, n_out))))  # dW
        if name != "encoder.0":
            ops.append((dy, W.T, bk.zeros((batch, n_in))))  # dx

    def run() -> None:
        for a, b, out in ops:
            xp.matmul(a, b, out=out)

    return run


# ============================================================================ PyTorch
def _torch() -> Any:
    import torch

    return torch


class TorchStep:
    """The same VAE in PyTorch: Linear layers holding scratchvae's weights, same loss, Adam."""

    def __init__(self, model: VAE, x: Any, device: str, seed: int = 0) -> None:
        torch = _torch()
        self.torch, self.device = torch, device
        self.dtype = getattr(torch, model.backend.dtype.name)
        self.latent, self.batch = model.latent, x.shape[0]
        self.enc = self._mlp(model, model.encoder)
        self.dec = self._mlp(model, model.decoder)
        self.x = torch.as_tensor(to_numpy(x), device=device)
        self.opt = torch.optim.Adam(
            self.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"]
        )
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def _mlp(self, model: VAE, net: Any) -> Any:
        torch = self.torch
        layers: list[Any] = []
        for i, (n_in, n_out) in enumerate(zip(net.sizes[:-1], net.sizes[1:], strict=True)):
            lin = torch.nn.Linear(n_in, n_out, dtype=self.dtype, device=self.device)
            with torch.no_grad():  # torch stores W as (out, in): y = x W^T + b
                lin.weight.copy_(torch.as_tensor(to_numpy(model.params[f"{net.prefix}.{i}.W"]).T))
                lin.bias.copy_(torch.as_tensor(to_numpy(model.params[f"{net.prefix}.{i}.b"])))
            layers += [lin, torch.nn.ReLU()]
        return torch.nn.Sequential(*layers[:-1])  # no activation after the last layer

    def parameters(self) -> list[Any]:
        return [*self.enc.parameters(), *self.dec.parameters()]

    def loss(self, eps: Any) -> Any:
        """-ELBO per example: BCE-with-logits summed over pixels + KL, both averaged over B."""
        F = self.torch.nn.functional
        h = self.enc(self.x)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + self.torch.exp(0.5 * logvar) * eps
        logits = self.dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, self.x, reduction="sum")
        kl = 0.5 * (mu * mu + logvar.exp() - logvar - 1).sum()
        return (recon + kl) / self.batch

    def __call__(self) -> None:
        eps = self.torch.randn(
            self.batch, self.latent, generator=self.gen, dtype=self.dtype, device=self.device
        )
        loss = self.loss(eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def grads_like_scratch(self, model: VAE) -> dict[str, Any]:
        """Gradients as NumPy arrays under scratchvae's names and layouts (W as (in, out))."""
        out = {}
        for net, seq in ((model.encoder, self.enc), (model.decoder, self.dec)):
            for i, lin in enumerate(m for m in seq if hasattr(m, "weight")):
                out[f"{net.prefix}.{i}.W"] = lin.weight.grad.detach().cpu().numpy().T
                out[f"{net.prefix}.{i}.b"] = lin.bias.grad.detach().cpu().numpy()
        return out

    def set_grads(self, model: VAE, grads: Any) -> None:
        """Overwrite torch's .grad with scratchvae's gradients (transposing W)."""
        torch = self.torch
        for net, seq in ((model.encoder, self.enc), (model.decoder, self.dec)):
            for i, lin in enumerate(m for m in seq if hasattr(m, "weight")):
                dW = to_numpy(grads[f"{net.prefix}.{i}.W"]).T.copy()
                lin.weight.grad = torch.as_tensor(dW, device=self.device)
                db = to_numpy(grads[f"{net.prefix}.{i}.b"]).copy()
                lin.bias.grad = torch.as_tensor(db, device=self.device)

    def params_like_scratch(self, model: VAE) -> dict[str, Any]:
        out = {}
        for net, seq in ((model.encoder, self.enc), (model.decoder, self.dec)):
            for i, lin in enumerate(m for m in seq if hasattr(m, "weight")):
                out[f"{net.prefix}.{i}.W"] = lin.weight.detach().cpu().numpy().T
                out[f"{net.prefix}.{i}.b"] = lin.bias.detach().cpu().numpy()
        return out


def _max_rel(a: dict[str, Any], b: dict[str, Any]) -> float:
    """max over arrays of max|a - b| / max|b| (relative to each array's scale)."""
    worst = 0.0
    for k in b:
        ref = to_numpy(b[k]).astype("float64")
        diff = abs(to_numpy(a[k]).astype("float64") - ref).max()
        worst = max(worst, float(diff / max(abs(ref).max(), 1e-30)))
    return worst


def check_torch(step: ScratchStep, device: str) -> dict[str, Any]:
    """Loss, gradients and one Adam update of scratchvae vs PyTorch: same weights, x and eps."""
    model = step.model
    ref = TorchStep(model, step.x, device)
    noise = model.draw_noise(step.batch)
    terms, grads = model.loss_and_grads(step.x, noise)
    loss_s = float(to_numpy(terms["loss"]))
    eps = ref.torch.as_tensor(to_numpy(noise["eps"]), device=device)
    loss_t = ref.loss(eps)
    loss_t.backward()
    g_rel = _max_rel(grads, ref.grads_like_scratch(model))
    # one Adam step each from equal weights AND equal gradients (scratchvae's, copied into
    # torch): a gradient entry near 0 whose sign differs by rounding would otherwise move by
    # +-lr in one and -+lr in the other, which says nothing about the optimizers.
    ref.set_grads(model, grads)
    opt = Adam(ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    opt.step(model.params, grads)
    ref.opt.step()
    p_rel = _max_rel(model.params, ref.params_like_scratch(model))
    loss_t = loss_t.detach()
    loss_rel = abs(loss_s - float(loss_t)) / abs(float(loss_t))
    tol = EQ_TOL[model.backend.dtype.name]
    return {
        "reference": f"torch-{device}",
        "loss_scratch": loss_s,
        "loss_reference": float(loss_t),
        "loss_rel_diff": loss_rel,
        "grad_max_rel_diff": g_rel,
        "params_after_adam_max_rel_diff": p_rel,
        "tolerance": tol,
        "ok": max(loss_rel, g_rel, p_rel) <= tol,
    }


# ============================================================================ JAX
class JaxStep:
    """The same step in JAX: a pure loss, jax.grad, Adam written out, the whole step jitted."""

    def __init__(self, model: VAE, x: Any, seed: int = 0) -> None:
        import jax
        import jax.numpy as jnp

        if model.backend.dtype.name == "float64":
            jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp = jax, jnp
        self.latent, self.batch = model.latent, x.shape[0]
        self.dtype = jnp.dtype(model.backend.dtype.name)
        names = [n for n in model.params]
        self.names = names
        self.params = [jnp.asarray(to_numpy(model.params[n])) for n in names]
        self.m = [jnp.zeros_like(p) for p in self.params]
        self.v = [jnp.zeros_like(p) for p in self.params]
        self.t = jnp.asarray(0, dtype=self.dtype)
        self.x = jnp.asarray(to_numpy(x))
        self.key = jax.random.PRNGKey(seed)
        self.n_enc = len(model.encoder.sizes) - 1
        self.n_dec = len(model.decoder.sizes) - 1
        self._step = jax.jit(self._step_impl, donate_argnums=(0, 1, 2))
        self.last = None

    def _mlp(self, ps: list[Any], h: Any) -> Any:
        jnp = self.jnp
        n = len(ps) // 2
        for i in range(n):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < n - 1:
                h = jnp.maximum(h, 0)
        return h

    def loss(self, params: list[Any], x: Any, eps: Any) -> Any:
        jnp = self.jnp
        enc, dec = params[: 2 * self.n_enc], params[2 * self.n_enc :]
        h = self._mlp(enc, x)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = self._mlp(dec, z)
        recon = (self.jax.nn.softplus(logits) - x * logits).sum()
        kl = 0.5 * (mu * mu + jnp.exp(logvar) - logvar - 1).sum()
        return (recon + kl) / x.shape[0]

    def _step_impl(self, params, m, v, t, x, key):  # noqa: ANN001, ANN202 - traced by jax.jit
        jax, jnp = self.jax, self.jnp
        key, sub = jax.random.split(key)
        eps = jax.random.normal(sub, (x.shape[0], self.latent), dtype=self.dtype)
        loss, grads = jax.value_and_grad(self.loss)(params, x, eps)
        t = t + 1
        b1, b2 = ADAM["betas"]
        m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads, strict=True)]
        v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads, strict=True)]
        step = ADAM["lr"] / (1 - b1**t)
        c2 = jnp.sqrt(1 - b2**t)
        params = [
            p - step * mi / (jnp.sqrt(vi) / c2 + ADAM["eps"])
            for p, mi, vi in zip(params, m, v, strict=True)
        ]
        return params, m, v, t, key, loss

    def __call__(self) -> None:
        self.params, self.m, self.v, self.t, self.key, self.last = self._step(
            self.params, self.m, self.v, self.t, self.x, self.key
        )

    def sync(self) -> None:
        if self.last is not None:
            self.last.block_until_ready()


def check_jax(step: ScratchStep) -> dict[str, Any]:
    """Loss and gradients of scratchvae vs JAX autodiff: same weights, x and eps."""
    model = step.model
    ref = JaxStep(model, step.x)
    noise = model.draw_noise(step.batch)
    terms, grads = model.loss_and_grads(step.x, noise)
    eps = ref.jnp.asarray(to_numpy(noise["eps"]))
    loss_j, g_j = ref.jax.value_and_grad(ref.loss)(ref.params, ref.x, eps)
    g_rel = _max_rel(grads, dict(zip(ref.names, g_j, strict=True)))
    loss_s = float(to_numpy(terms["loss"]))
    loss_rel = abs(loss_s - float(loss_j)) / abs(float(loss_j))
    tol = EQ_TOL[model.backend.dtype.name]
    return {
        "reference": "jax-cpu",
        "loss_scratch": loss_s,
        "loss_reference": float(loss_j),
        "loss_rel_diff": loss_rel,
        "grad_max_rel_diff": g_rel,
        "tolerance": tol,
        "ok": max(loss_rel, g_rel) <= tol,
    }


def _available(module: str) -> str | None:
    """The installed version of ``module``, or None."""
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


# ============================================================================ memory
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
    before the model exists. Meant for a fresh process (see :func:`_bench_memory`): memory an
    older process's allocator keeps after freeing it would hide new peaks.

    CPU: the RSS peak above the baseline (the kernel's high-water mark, reset first) and the RSS
    growth from step 5 to the end; for scratchvae also tracemalloc's peak of NumPy allocations
    within the steps and their growth. GPU: the allocators' own figures.
    """
    bk = Backend(backend_name, "float32", seed=0)
    is_torch = impl.startswith("torch")
    if is_torch:  # the library and the weights to copy are loaded before the baseline
        _torch()
        source = ScratchStep(CONFIGS["mnist"], batch, bk)
    else:  # likewise Numba's compiled kernels (LLVM alone is ~50 MiB), when installed
        compiled.warm_up("float32")
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
    elif None not in (rss0, rss_warm, rss_end, peak):
        out["rss_peak_above_baseline_mib"] = (peak - rss0) / 1024 if resettable else None
        out["rss_growth_mib"] = (rss_end - rss_warm) / 1024
    if impl.startswith("scratchvae") and not gpu:
        out.update(_tracemalloc_steps(step, steps))
    return out


def _gpu_used(impl: str, bk: Backend) -> int:
    if impl == "torch-cuda":
        return _torch().cuda.memory_allocated()
    if bk.name == "cupy":
        return bk.xp.get_default_memory_pool().used_bytes()
    return 0


def _gpu_peak(impl: str, bk: Backend) -> dict[str, float]:
    if impl == "torch-cuda":
        return {"gpu_peak_mib": _torch().cuda.max_memory_allocated() / 2**20}
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


# ============================================================================ evaluation cost
def eval_cost(backend: Backend, n: int, k: int) -> dict[str, Any]:
    """Time and peak memory of ``evaluate(model, x, iw_samples=k)`` on n MNIST-shaped inputs."""
    from .evaluate import evaluate  # imported here: written alongside, not needed otherwise

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
        "platform": platform.platform(),
        "python": platform.python_version(),
        "blas": _blas_info(backend),
        "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {
            m: _available(m)
            for m in (
                "scratchvae",
                "numpy",
                "scipy",
                "numba",
                "torch",
                "jax",
                "jaxlib",
                "cupy-cuda12x",
            )
        },
        # the optional Numba kernels (scratchvae.compiled: Adam and three fused passes) in use
        "compiled_adam": backend.name == "numpy" and compiled.enabled(),
        "thread_env": {v: os.environ.get(v) for v in THREAD_VARS if os.environ.get(v)},
    }
    if backend.name == "cupy":
        props = backend.xp.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["versions"]["cupy"] = backend.xp.__version__
    if torch_device:
        torch = _torch()
        info["torch_threads"] = torch.get_num_threads()
        if torch_device.startswith("cuda"):
            info["torch_gpu"] = torch.cuda.get_device_name(0)
    return info


def _blas_info(backend: Backend) -> str:
    """NumPy's BLAS, from its build configuration (``numpy.show_config``)."""
    xp = Backend("numpy").xp  # named xp: code outside backend.py never calls np.*
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
    return f"cpu-{slug(info['cpu'])}-{info['cores']}c"


# ============================================================================ the whole run
def run_benchmarks(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Everything ``scratchvae bench`` measures, as one JSON-ready dict."""
    torch_device = _resolve_torch(opts.torch_device, log)
    use_jax = not opts.no_jax and _available("jax") is not None
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
    for cfg_name in opts.configs:
        for dtype in opts.dtypes:
            for batch in opts.batch_sizes:
                _bench_cell(results, cfg_name, dtype, batch, opts, torch_device, use_jax, log)
    results["memory"] = _bench_memory(opts, torch_device, log)
    if opts.eval_k > 0:
        log(f"evaluation: iw bound k={opts.eval_k} on {opts.eval_n} inputs")
        results["eval"] = eval_cost(Backend(opts.backend, "float32", 0), opts.eval_n, opts.eval_k)
    results["machine"]["load_avg_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    return results


def _resolve_torch(device: str, log: Callable[[str], None]) -> str | None:
    if device == "none":
        return None
    if _available("torch") is None:
        log(
            "PyTorch not installed: skipping the PyTorch reference "
            "(pip install 'scratchvae[bench]')"
        )
        return None
    if device.startswith("cuda") and not _torch().cuda.is_available():
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
    log: Callable[[str], None],
) -> None:
    """Check and time one (config, dtype, batch) cell: scratchvae, references, matmul bound."""
    config = CONFIGS[cfg_name]
    step = ScratchStep(config, batch, Backend(opts.backend, dtype, seed=0))
    key = {"config": cfg_name, "dtype": dtype, "batch": batch}
    fns: dict[str, tuple[StepFn, Callable[[], None]]] = {}
    if torch_device:
        if batch == opts.batch_sizes[0]:
            results["equivalence"].append({**key, **check_torch(step, torch_device)})
        ref = TorchStep(step.model, step.x, torch_device)
        fns[f"torch-{torch_device}"] = (ref, ref.sync)
    if use_jax:
        if batch == opts.batch_sizes[0]:
            results["equivalence"].append({**key, **check_jax(step)})
        jstep = JaxStep(step.model, step.x)
        fns["jax-cpu"] = (jstep, jstep.sync)
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
    log(
        f"{cfg_name:6s} {dtype} B={batch:5d}  scratchvae {batch / timed[scratch]['median']:9.0f}/s"
        + "".join(f"  x{row[k]:.2f} {k[11:]}" for k in row if k.startswith("speedup_vs_"))
        + f"  matmul fraction {row['matmul_fraction']:.2f}"
        + f" (best reps {row['matmul_fraction_best']:.2f})"
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


def _bench_memory(
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
            "import json; from scratchvae.bench import memory_probe; "
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


# ============================================================================ output
def write_outputs(results: dict, out_dir: Path, name: str) -> list[Path]:
    """``name``.json, ``name``.md and ``name``.png under ``out_dir``. Returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    paths[0].write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    paths[1].write_text(markdown_report(results))
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
        f"# scratchvae benchmark: {m.get('gpu') or m['cpu']} ({m['cores']} cores)",
        "",
        f"- backend `{s['backend']}`; BLAS {m['blas']}; Python {m['python']}"
        + ("; compiled kernels (Numba)" if m.get("compiled_adam") else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- load average at start {m.get('load_avg_start')}, end {m.get('load_avg_end')}",
        f"- step = {s['step']}; Adam lr {ADAM['lr']}; {s['reps']} repetitions, median "
        "(interquartile range); repetitions of all implementations interleaved",
        "",
        "## Training-step throughput (samples/s)",
        "",
    ]
    impls = list(dict.fromkeys(r["impl"] for r in results["throughput"]))
    head = ["config", "dtype", "batch", *impls, *[f"x vs {i}" for i in impls[1:-1]]]
    head += ["matmul frac.", "(best reps)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in results["throughput"]:
        by_key.setdefault((r["config"], r["dtype"], r["batch"]), {})[r["impl"]] = r
    for row in results["summary"]:
        cells = by_key[(row["config"], row["dtype"], row["batch"])]
        vals = [row["config"], row["dtype"], str(row["batch"])]
        for impl in impls:
            r = cells.get(impl)
            vals.append(_fmt_rate(r) if r else "-")
        vals += [f"{row.get(f'speedup_vs_{i}', float('nan')):.2f}" for i in impls[1:-1]]
        vals.append(f"{row['matmul_fraction']:.2f}")
        vals.append(f"{row['matmul_fraction_best']:.2f}" if "matmul_fraction_best" in row else "-")
        lines.append("| " + " | ".join(vals) + " |")
    lines += [
        "",
        "`matmul-bound`: the step's matrix products alone; `matmul frac.` = matmul time / "
        "scratchvae step time, from the medians; `(best reps)`: the same from each one's "
        "fastest repetition (what a quiet machine gives: other tenants of a shared host slow "
        "the step's memory-bound part more than the products). "
        "`x vs R` = R's step time / scratchvae's (> 1: scratchvae faster).",
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


def _fmt_rate(r: dict[str, Any]) -> str:
    t, b = r["step_s"], r["batch"]
    return f"{b / t['median']:.0f} ({b / t['q3']:.0f}-{b / t['q1']:.0f})"


def _md_equivalence(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = [
        "## Same numbers before timing",
        "",
        "| config | dtype | reference | loss rel. diff | grad max rel. diff | after Adam | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        adam = r.get("params_after_adam_max_rel_diff")
        out.append(
            f"| {r['config']} | {r['dtype']} | {r['reference']} | {r['loss_rel_diff']:.1e} | "
            f"{r['grad_max_rel_diff']:.1e} | {'-' if adam is None else f'{adam:.1e}'} | "
            f"{'yes' if r['ok'] else 'NO'} |"
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ============================================================================ command line
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
        default=os.environ.get("SCRATCHVAE_BENCH_OUT", "benchmarks/results"),
        help="output folder (default $SCRATCHVAE_BENCH_OUT or benchmarks/results)",
    )
    parser.add_argument("--name", default=None, help="file name stem (default: the machine)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every library (BLAS, OpenMP, scratchvae's pool, XLA): the run "
        "restarts itself with these set; default: each library's own choice",
    )


def _fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    full = {
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
    defaults = QUICK if args.quick else full
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def _validate(args: argparse.Namespace) -> str | None:
    if any(b < 1 for b in args.batch_sizes):
        return "batch sizes must be >= 1"
    if args.reps < 1 or args.target_seconds <= 0 or args.memory_steps < 1 or args.pause < 0:
        return "--reps and --memory-steps must be >= 1, --target-seconds > 0, --pause >= 0"
    if args.threads is not None and args.threads < 1:
        return "--threads must be >= 1"
    if args.eval_n < 1 or args.eval_k < 0:
        return "--eval-n must be >= 1 and --eval-k >= 0 (0 skips the evaluation)"
    if args.torch_device not in ("none", "cpu") and not args.torch_device.startswith("cuda"):
        return f"--torch-device must be cpu, cuda[:N] or none, got {args.torch_device!r}"
    return None


THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SCRATCHVAE_THREADS")


def _rerun_with_threads(n: int) -> int:
    """Run this same command in a fresh process whose libraries all use ``n`` threads
    (BLAS reads its thread count when it loads, so the variables must be set before that)."""
    env = dict(os.environ, **{v: str(n) for v in THREAD_VARS}, SCRATCHVAE_BENCH_THREADS=str(n))
    if n == 1:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
            " intra_op_parallelism_threads=1"
        ).strip()
    argv = sys.argv[1:]
    argv = argv[1:] if argv[:1] == ["bench"] else argv  # `scratchvae bench ...`
    return subprocess.run([sys.executable, "-m", "scratchvae.bench", *argv], env=env).returncode


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmarks and write the results. Returns the exit status."""
    args = _fill_defaults(args)
    problem = _validate(args)
    if problem:
        print(f"scratchvae bench: {problem}", file=sys.stderr)
        return 2
    if args.threads and os.environ.get("SCRATCHVAE_BENCH_THREADS") != str(args.threads):
        return _rerun_with_threads(args.threads)
    if args.threads and _available("torch") and args.torch_device != "none":
        _torch().set_num_threads(args.threads)
    try:
        results = run_benchmarks(args, log=lambda msg: print(msg, flush=True))
    except BackendError as exc:
        print(f"scratchvae bench: {exc}", file=sys.stderr)
        return 2
    name = args.name or machine_name(results["machine"], args.backend)
    if not args.name:
        name += f"-{args.threads}thread" if args.threads else ""
        name += "-quick" if args.quick else ""
    paths = write_outputs(results, Path(args.out), name)
    print("wrote " + ", ".join(str(p) for p in paths))
    bad = [e for e in results["equivalence"] if not e["ok"]]
    if bad:
        print(f"scratchvae bench: {len(bad)} reference check(s) disagree: see {paths[1]}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m scratchvae.bench``."""
    parser = argparse.ArgumentParser(prog="scratchvae bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
