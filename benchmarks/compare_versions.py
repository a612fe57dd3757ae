"""Two versions of scratchvae, timed in one interleaved run on the same machine.

    python benchmarks/compare_versions.py OLD_TREE NEW_TREE [--reps 15] [--batch 128]
    python benchmarks/compare_versions.py OLD_TREE NEW_TREE --busy-core 0   # one core busy
    python benchmarks/compare_versions.py TREE TREE --new-env OPENBLAS_THREAD_TIMEOUT=28 \
        --new-setup "import scratchvae.backend.threads as t; t.MIN_ROWS = 1 << 30"  # a variant

A tree is a folder holding a ``scratchvae`` package (a git worktree of the old commit: ``git
worktree add /tmp/old <commit>``). Each repetition times the training step (draw eps, forward,
backward, Adam) of the 784-400-20 VAE in a fresh process for each version in turn (old, new,
old, new, ...), so a change in the machine's load hits both alike; the result is the median
of the per-repetition ratios old/new (new/old throughput) and the median step times.

Why one process per measurement: with both versions imported in one process, the second
version's Numba kernels ran up to three times slower than the first's (measured: the same
Bernoulli kernel, copied under a second package name, 480 vs 175 us), whichever came second.

Each process runs in its tree (``python -c`` puts the working directory first on the import
path, before PYTHONPATH: run from a checkout, both versions were that checkout until
2026-11-27) and reports the package it imported, which must lie in its tree. The order
alternates (old first, then new first), so a bias of the first or second slot cancels.

A variant of one version is the same tree twice with ``--old-env/--new-env NAME=VALUE`` (set
in that side's processes) or ``--old-setup/--new-setup CODE`` (Python run after the imports,
before the model is built: a module constant changed, say); ``--cores N`` pins every process
to the first N cores this one may use (BLAS and scratchvae size their threads from them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's, for its parser

from scratchvae.cliargs import script_parser  # noqa: E402 - the sides run in their own processes

STEP = r"""
import json, sys, time
import scratchvae
from scratchvae.backend import Backend
from scratchvae.models import VAE
from scratchvae.optim import Adam
try:  # warm the Numba kernels of either version before timing
    from scratchvae.kernels.cpu import warm_up
except ImportError:
    from scratchvae.compiled import warm_up
batch, dtype, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
exec(sys.argv[4])  # the side's --setup
warm_up(dtype)
bk = Backend("numpy", dtype, seed=0)
model, opt = VAE(784, hidden=[400], latent=20, backend=bk), Adam(1e-3)
x = bk.uniform((batch, 784))
def step():
    _, grads = model.loss_and_grads(x, model.draw_noise(batch))
    opt.step(model.params, grads)
for _ in range(20):
    step()
times = []
for _ in range(5):
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    times.append((time.perf_counter() - t0) / steps)
print(json.dumps({"seconds": sorted(times)[2], "package": scratchvae.__file__}))
"""


def time_tree(
    tree: str,
    batch: int,
    dtype: str,
    steps: int,
    env: dict[str, str] | None = None,
    setup: str = "",
    cores: int | None = None,
) -> float:
    """Seconds per step (the median of five blocks) in a fresh process importing ``tree``,
    with ``env`` added to its environment, ``setup`` run before the model is built, and
    pinned to the first ``cores`` usable cores (None: all)."""
    pinned = sorted(os.sched_getaffinity(0))[:cores] if cores else None
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(batch), dtype, str(steps), setup],
        env={"PYTHONPATH": tree, "PATH": "/usr/bin:/bin", **(env or {})},
        cwd=tree,  # -c puts the working directory first on the path: the tree's own package
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, pinned)) if pinned else None,
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"compare_versions: the step failed in {tree}: {last}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(result["package"]).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"compare_versions: {tree} imported {result['package']}, not its own")
    return float(result["seconds"])


def _tree(path: str) -> str:
    """An argparse type: a folder holding a scratchvae package."""
    if not (Path(path) / "scratchvae" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{path} holds no scratchvae package")
    return str(Path(path).resolve())


def _count(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return n


def _setting(text: str) -> tuple[str, str]:
    """An argparse type: NAME=VALUE."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main() -> None:
    p = script_parser(__file__, __doc__.split("\n\n")[0])
    p.add_argument("old", type=_tree)
    p.add_argument("new", type=_tree)
    p.add_argument("--reps", type=_count, default=15)
    p.add_argument("--batch", type=_count, default=128)
    p.add_argument("--steps", type=_count, default=40)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    for side in ("old", "new"):
        p.add_argument(
            f"--{side}-env",
            nargs="+",
            type=_setting,
            default=[],
            metavar="NAME=VALUE",
            help=f"environment variables of the {side} side's processes",
        )
        p.add_argument(f"--{side}-setup", default="", help=f"Python run first on the {side} side")
    p.add_argument("--cores", type=_count, default=None, help="pin to the first N usable cores")
    p.add_argument(
        "--busy-core",
        type=int,
        default=None,
        help="keep this core busy meanwhile (a spinning process pinned to it)",
    )
    args = p.parse_args()
    busy = None
    if args.busy_core is not None:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(busy.pid, {args.busy_core})
    try:
        _compare(args)
    finally:
        if busy is not None:
            busy.kill()


def _compare(args: argparse.Namespace) -> None:
    for dtype in args.dtypes:
        runs: dict[str, list[float]] = {"old": [], "new": []}
        for rep in range(args.reps):
            for name in ("old", "new") if rep % 2 == 0 else ("new", "old"):
                env, setup = dict(getattr(args, f"{name}_env")), getattr(args, f"{name}_setup")
                tree = getattr(args, name)
                seconds = time_tree(tree, args.batch, dtype, args.steps, env, setup, args.cores)
                runs[name].append(seconds)
        ratios = sorted(o / n for o, n in zip(runs["old"], runs["new"], strict=True))
        old, new = statistics.median(runs["old"]), statistics.median(runs["new"])
        print(
            f"{dtype} batch {args.batch}: old {old * 1e3:.3f} ms, new {new * 1e3:.3f} ms per step "
            f"(medians of {args.reps}); new/old throughput {statistics.median(ratios):.3f} "
            f"(median of the pairs; quartiles {ratios[len(ratios) // 4]:.3f}-"
            f"{ratios[3 * len(ratios) // 4]:.3f})"
        )


if __name__ == "__main__":
    main()
