"""Where the training step's time goes: each phase of the 784-400-20 VAE's step, timed alone,
on the cores this process may use or on the GPU.

    python benchmarks/step_phases.py [--batch-sizes 128 2048] [--reps 9] [--dtype float32]
        [--backend numpy|cupy]

Phases, each the median over ``--reps`` blocks of steps (ms per step):

* ``noise``: drawing eps (B, 20);
* ``forward``, ``backward``: the model's passes over the whole batch (BLAS on its threads);
* ``adam``: the update of the 653k parameters;
* ``step (whole)``: the four above in one step, the batch never split;
* ``step (as trained)``: ``loss_and_grads`` + Adam as the trainer runs them (the batch split
  across the threads where :func:`scratchvae.backend.row_chunks` says so);
* ``products``: the step's matrix products alone (the bench's matmul bound).

``whole - products`` is what the step spends beside the products: the part that the
elementwise kernels, Adam's threads and Python decide. On CuPy each phase is replayed as its
own CUDA graph, as the trainer replays the whole step (``Backend.step_graph``), and the GPU is
drained around each block of calls; the step is never split there. Prints one line per batch
size.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scratchvae.backend import Backend, cpu_threads, row_chunks  # noqa: E402
from scratchvae.bench.timing import CONFIGS, matmul_bound_fn, time_interleaved  # noqa: E402
from scratchvae.cliargs import COUNT, script_parser  # noqa: E402
from scratchvae.kernels.cpu import warm_up  # noqa: E402
from scratchvae.models import VAE  # noqa: E402
from scratchvae.optim import Adam  # noqa: E402


def phases(
    batch: int, dtype: str, reps: int, target_s: float = 0.2, backend: str = "numpy"
) -> dict[str, float]:
    """Median ms per step of each phase (see the module's docstring)."""
    bk = Backend(backend, dtype=dtype, seed=0)
    # a learning rate too small to move the weights far: the phases repeat one batch and one
    # gradient thousands of times, which at 1e-3 drove the weights to overflow (NaN products)
    model, opt = VAE(**CONFIGS["mnist"], backend=bk), Adam(1e-7)
    x = bk.asarray(bk.uniform((batch, CONFIGS["mnist"]["n_features"])) < 0.5)
    ws, state = model.workspace, {}

    def noise(_: Any = None) -> None:
        state["noise"] = model.draw_noise(batch)

    def forward(_: Any = None) -> None:
        state["terms"], state["cache"] = model.forward(x, state["noise"], True, None, ws)

    def backward(_: Any = None) -> None:
        state["grads"] = model.backward(state["cache"], ws)

    def adam(_: Any = None) -> None:
        opt.step(model.params, state["grads"])

    def whole(_: Any = None) -> None:
        for part in (noise, forward, backward, adam):
            part()

    def as_trained(_: Any = None) -> None:
        _, grads = model.loss_and_grads(x, model.draw_noise(batch))
        opt.step(model.params, grads)

    parts = {"noise": noise, "forward": forward, "backward": backward, "adam": adam}
    parts |= {"step (whole)": whole, "step (as trained)": as_trained}
    whole()  # every phase finds its inputs from here on
    fns = {}
    for name, fn in parts.items():
        runner = bk.step_graph(fn)  # a CUDA graph of its own on CuPy; fn itself on NumPy
        fns[name] = (lambda runner=runner: runner(x), bk.synchronize)
    fns["products"] = (matmul_bound_fn(model, batch), bk.synchronize)
    timed = time_interleaved(fns, reps, target_s)  # in this order: each phase's inputs ready
    return {name: t["median"] * 1e3 for name, t in timed.items()}


def main() -> None:
    p = script_parser(__file__, __doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", nargs="+", type=COUNT, default=[128, 2048])
    p.add_argument("--reps", type=COUNT, default=9)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    args = p.parse_args()
    warm_up(args.dtype)
    for batch in args.batch_sizes:
        ms = phases(batch, args.dtype, args.reps, backend=args.backend)
        chunks = row_chunks(batch) if args.backend == "numpy" else None
        split = f"{len(chunks)} chunks" if chunks else "not split"
        where = f"{cpu_threads()} threads" if args.backend == "numpy" else "GPU, CUDA graphs"
        rest = ms["step (whole)"] - ms["products"]
        print(
            f"batch {batch} ({where}, {split}), ms per step: "
            + ", ".join(f"{name} {t:.3f}" for name, t in ms.items())
            + f"; whole - products {rest:.3f}"
        )


if __name__ == "__main__":
    main()
