"""Where the CPU training step's time goes: each phase of the 784-400-20 VAE's step, timed
alone, on the cores this process may use.

    python benchmarks/step_phases.py [--batch-sizes 128 2048] [--reps 9] [--dtype float32]

Phases, each the median over ``--reps`` blocks of steps (ms per step):

* ``noise``: drawing eps (B, 20);
* ``forward``, ``backward``: the model's passes over the whole batch (BLAS on its threads);
* ``adam``: the update of the 653k parameters;
* ``step (whole)``: the four above in one step, the batch never split;
* ``step (as trained)``: ``loss_and_grads`` + Adam as the trainer runs them (the batch split
  across the threads where :func:`scratchvae.backend.row_chunks` says so);
* ``products``: the step's matrix products alone (the bench's matmul bound).

``whole - products`` is what the step spends beside the products: the part that the
elementwise kernels, Adam's threads and Python decide. Prints one line per batch size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scratchvae.backend import Backend, cpu_threads, row_chunks  # noqa: E402
from scratchvae.bench.timing import CONFIGS, matmul_bound_fn  # noqa: E402
from scratchvae.cliargs import COUNT  # noqa: E402
from scratchvae.kernels.cpu import warm_up  # noqa: E402
from scratchvae.models import VAE  # noqa: E402
from scratchvae.optim import Adam  # noqa: E402


def phases(batch: int, dtype: str, reps: int, target_s: float = 0.2) -> dict[str, float]:
    """Median ms per step of each phase (see the module's docstring)."""
    bk = Backend("numpy", dtype=dtype, seed=0)
    model, opt = VAE(**CONFIGS["mnist"], backend=bk), Adam(1e-3)
    x = bk.asarray(bk.uniform((batch, CONFIGS["mnist"]["n_features"])) < 0.5)
    ws, state = model.workspace, {}

    def noise() -> None:
        state["noise"] = model.draw_noise(batch)

    def forward() -> None:
        state["terms"], state["cache"] = model.forward(x, state["noise"], True, None, ws)

    def backward() -> None:
        state["grads"] = model.backward(state["cache"], ws)

    def adam() -> None:
        opt.step(model.params, state["grads"])

    def whole() -> None:
        for part in (noise, forward, backward, adam):
            part()

    def as_trained() -> None:
        _, grads = model.loss_and_grads(x, model.draw_noise(batch))
        opt.step(model.params, grads)

    parts: dict[str, Callable[[], None]] = {"noise": noise, "forward": forward}
    parts |= {"backward": backward, "adam": adam, "step (whole)": whole}
    parts |= {"step (as trained)": as_trained, "products": matmul_bound_fn(model, batch)}
    whole()
    t0 = time.perf_counter()
    for _ in range(5):
        as_trained()
    steps = max(3, int(target_s / max((time.perf_counter() - t0) / 5, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(reps):
        for name, fn in parts.items():  # in step order: each phase finds its inputs
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", nargs="+", type=COUNT, default=[128, 2048])
    p.add_argument("--reps", type=COUNT, default=9)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = p.parse_args()
    warm_up(args.dtype)
    for batch in args.batch_sizes:
        ms = phases(batch, args.dtype, args.reps)
        chunks = row_chunks(batch)
        split = f"{len(chunks)} chunks" if chunks else "not split"
        rest = ms["step (whole)"] - ms["products"]
        print(
            f"batch {batch} ({cpu_threads()} threads, {split}), ms per step: "
            + ", ".join(f"{name} {t:.3f}" for name, t in ms.items())
            + f"; whole - products {rest:.3f}"
        )


if __name__ == "__main__":
    main()
