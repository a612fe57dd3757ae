"""What is timed and how: scratchvae's training step, interleaved repetitions, the matmul bound.

:class:`ScratchStep` is the step every implementation is compared on (draw eps, forward,
backward, Adam update) for the model shapes in :data:`CONFIGS`. :func:`time_interleaved` times
several such steps round-robin, so a change of load on a shared machine hits all of them, and
:func:`summarize` reduces each one's repetitions to a median with its quartiles.
:func:`matmul_bound_fn` is the step's matrix products alone: the fastest the step could run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from ..backend import Backend
from ..models import VAE
from ..optim import Adam

__all__ = [
    "ADAM",
    "CONFIGS",
    "ScratchStep",
    "StepFn",
    "matmul_bound_fn",
    "summarize",
    "time_interleaved",
]

CONFIGS: dict[str, dict[str, Any]] = {
    "mnist": {"n_features": 784, "hidden": (400,), "latent": 20},
    "wide": {"n_features": 784, "hidden": (1024, 1024), "latent": 50},
}
ADAM: dict[str, Any] = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}  # every library's

StepFn = Callable[[], Any]


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


class ScratchStep:
    """One scratchvae training step on synthetic binary MNIST-shaped data."""

    def __init__(self, config: dict[str, Any], batch: int, backend: Backend) -> None:
        self.bk = backend
        self.model = VAE(**config, backend=backend)
        self.opt = Adam(ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
        self.batch = batch
        self.x = backend.asarray(backend.uniform((batch, config["n_features"])) < 0.5)
        self.runner = backend.step_graph(self.step)  # as the trainer runs it (a CUDA graph)

    def step(self, x: Any) -> None:
        noise = self.model.draw_noise(x.shape[0])  # eps ~ N(0, I), (B, L)
        _, grads = self.model.loss_and_grads(x, noise)  # buffers reused step to step
        self.opt.step(self.model.params, grads)

    def __call__(self) -> None:
        self.runner(self.x)

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
    ops = []
    for name, n_in, n_out in _dense_layers(model):
        x, dy, W = bk.normal((batch, n_in)), bk.normal((batch, n_out)), model.params[f"{name}.W"]
        ops.append((x, W, bk.zeros((batch, n_out)), False, False))  # forward: x W
        ops.append((x, dy, bk.zeros((n_in, n_out)), True, False))  # dW = x^T dy
        if name != "encoder.0":
            ops.append((dy, W, bk.zeros((batch, n_in)), False, True))  # dx = dy W^T
    if bk.name == "numpy":
        xp = bk.xp

        def run() -> None:
            for a, b, out, ta, tb in ops:
                xp.matmul(a.T if ta else a, b.T if tb else b, out=out)

        return run
    # on a GPU the step is one CUDA graph: so are its products here, through the same cuBLAS
    from ..kernels.cublas import gemm  # noqa: PLC0415 - GPU only

    def products(_: Any) -> None:
        for op in ops:
            gemm(*op)

    runner, dummy = bk.step_graph(products), bk.zeros((1,))
    return lambda: runner(dummy)
