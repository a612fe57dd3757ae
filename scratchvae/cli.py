"""The ``scratchvae`` command line: train, evaluate, sample, reconstruct, plot, trace, bench.

:func:`build_parser` declares every command and its options; what a command does is in
:mod:`scratchvae.commands` (``trace`` and ``bench`` bring their own options and ``run_cli``).
``scratchvae`` with no command trains a VAE on the embedded digits; ``python -m scratchvae``
is the same program; ``scratchvae --version`` prints the version.

Bad input, argparse's errors included, ends with one line ``scratchvae: error: ...`` on stderr
and exit status 2 (:mod:`scratchvae.cliargs`). Ctrl-C ends with exit status 130 and SIGTERM with
143 (128 + the signal's number, as a shell reports them), each with one line saying so and the
last checkpoint intact (``--resume`` continues from it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from .backend import BackendError
from .bench import cli as bench  # `scratchvae bench`
from .checkpoint import CheckpointError
from .cli_options import add_backend_args, add_data_args, add_run_dir, add_split_arg, add_train
from .cliargs import (
    COUNT,
    NATURAL,
    OneLineParser,
    error_message,
    one_line_error,
    one_line_warnings,
    stdout_gone,
    typed_options,
    up_to,
)
from .commands import (
    MAX_RECONSTRUCTIONS,
    MAX_SAMPLES,
    PROG,
    CLIError,
    cmd_evaluate,
    cmd_plot,
    cmd_reconstruct,
    cmd_sample,
)
from .data import BINARIZE_MODES, DataError
from .interrupts import Terminated, ignore_interrupts, interrupted, sigterm_interrupts
from .lab import trace  # `scratchvae trace`
from .resume import ResumeWarning
from .train import TrainingDiverged

__all__ = ["Terminated", "build_parser", "main", "run", "version"]

# commands whose options and run_cli live in their own module: (module, help, description)
_TOOLS = {
    "trace": (
        trace,
        "print one training step's backward pass op by op (--check: numerical check)",
        "Run one training step of a VAE (or, with --checkpoint, of the run's AE, denoising or "
        "sparse AE) and print every op of its backward pass in order: "
        "shapes, the implementation that ran, the formula from the code; --check compares each "
        "backward op with central differences of its forward (float64).",
    ),
    "bench": (
        bench,
        "benchmarks: training-step throughput vs PyTorch/JAX and the matmul bound",
        bench.DESCRIPTION + " Results go to --out (default: a new temporary folder, printed).",
    ),
}


# ============================================================================ the parser
def version() -> str:
    """scratchvae's version: the installed distribution's, else the package's ``__version__``."""
    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per ``commands.cmd_*``, plus ``_TOOLS``."""
    parser = OneLineParser(
        prog=PROG,
        description="Auto-encoders and VAEs with hand-written backward passes (NumPy/CuPy). "
        "With no command: train a VAE on the embedded digits.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train(sub)
    _add_evaluate(sub)
    _add_sample(sub)
    _add_reconstruct(sub)
    _add_plot(sub)
    for name, (module, help_text, description) in _TOOLS.items():
        p = sub.add_parser(name, help=help_text, description=description)
        module.add_arguments(p)
        p.set_defaults(func=module.run_cli)
    return parser


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test ELBO, importance-weighted bound, active units, bits/dim",
        description="Evaluate a trained model on held-out data; every figure in nats per "
        "example (sum over features, mean over examples).",
    )
    add_run_dir(p)
    add_data_args(p, "default: the data it was trained on")
    add_split_arg(p)
    p.add_argument(
        "--iw-samples",
        type=NATURAL,
        help="k for the IW bound; 0 skips it (default 1000 below 5000 examples, e.g. "
        "digits; else 100)",
    )
    p.add_argument("--batch-size", type=COUNT, default=500, help="default 500")
    p.add_argument("--binarize", choices=BINARIZE_MODES, help="default: as trained")
    p.add_argument("--seed", type=NATURAL, default=0, help="seed of the evaluation noise (0)")
    add_backend_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_evaluate)


_OUT_HELP = (
    "the figure's file: .png (or .pdf, .svg, .eps, .jpg), .png added to a name without a "
    "suffix; a folder (one that exists, or a name ending in /) gets {name} inside it "
    "(default DIR/{name})"
)


def _add_sample(sub: Any) -> None:
    p = sub.add_parser(
        "sample",
        help="decode draws from the prior into a PNG grid",
        description="Draw codes z ~ N(0, I), decode them and write the images as one PNG "
        "grid (only a VAE is trained towards that prior: other models give poor samples).",
    )
    add_run_dir(p)
    p.add_argument(
        "--n",
        type=up_to(MAX_SAMPLES),
        default=64,
        help=f"number of samples, 1 to {MAX_SAMPLES:,} (default 64)",
    )
    p.add_argument("--out", help=_OUT_HELP.format(name="samples.png"))
    p.add_argument("--seed", type=NATURAL, default=0, help="seed of the draws (default 0)")
    p.set_defaults(func=cmd_sample)


def _add_reconstruct(sub: Any) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="inputs and their reconstructions as a PNG",
        description="Encode the first --n examples of a split and decode them again; write "
        "the inputs above their reconstructions as one PNG.",
    )
    add_run_dir(p)
    add_data_args(p, "default: the data it was trained on")
    add_split_arg(p)
    p.add_argument(
        "--n",
        type=up_to(MAX_RECONSTRUCTIONS),
        default=10,
        help=f"number of examples, 1 to {MAX_RECONSTRUCTIONS:,}; past 20 the rows wrap, each "
        "block of inputs above its reconstructions (default 10)",
    )
    p.add_argument("--out", help=_OUT_HELP.format(name="recon.png"))
    p.set_defaults(func=cmd_reconstruct)


def _add_plot(sub: Any) -> None:
    p = sub.add_parser(
        "plot",
        help="write the standard figures of a run again",
        description="Write a run's standard figures into its folder again: training curves, "
        "reconstructions, samples, the latent space, an interpolation (and the manifold of a "
        "2-D VAE, the denoising of a DAE).",
    )
    add_run_dir(p)
    add_data_args(p, "default: the data it was trained on")
    p.set_defaults(func=cmd_plot)


# ============================================================================ main
_USER_ERRORS = (
    CLIError,
    DataError,
    CheckpointError,
    BackendError,
    TrainingDiverged,
    ValueError,
    OSError,
)


_PATHS = {"out": "--out", "run": "DIR", "data": "--data", "data_dir": "--data-dir",
          "checkpoint": "--checkpoint"}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["train", *argv]  # no command: train (the default)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or an argparse error (2, already printed)
        return int(exc.code or 0)
    args.argv = argv[1:]  # the command's options as given (bench --threads runs them again)
    if hasattr(args, "resume"):  # train: which flags were typed, even at their defaults
        args.typed = typed_options(build_parser(), argv)
    empty = [name for name in _PATHS if getattr(args, name, None) == ""]
    if empty:  # "" would mean the current folder, or the default one: never what was meant
        print(one_line_error(f"argument {_PATHS[empty[0]]}: empty; give a path"), file=sys.stderr)
        return 2
    seed = getattr(args, "seed", None)
    if seed is not None and seed < 0:  # trace's own --seed (the other commands' have a type)
        msg = f"argument --seed: expected {NATURAL.__name__}, got '{seed}'"
        print(one_line_error(msg), file=sys.stderr)
        return 2
    try:
        with sigterm_interrupts(), one_line_warnings(ResumeWarning):
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        if _PROGRAM:  # the process ends now: a second Ctrl-C would print a traceback
            ignore_interrupts()
        out, trained = getattr(args, "out_dir", None), getattr(args, "trained", False)
        return interrupted(out, isinstance(exc, Terminated), trained)
    except MemoryError as exc:  # what the checks up front did not foresee
        first = str(exc).splitlines()[0] if str(exc) else "an allocation failed"
        less = _SMALLER.get(args.command, "a smaller model or batch")  # this command's flags
        msg = f"out of memory: {first}; choose {less}"
        print(one_line_error(msg), file=sys.stderr)
        return 2
    except _USER_ERRORS as exc:
        if stdout_gone(exc):  # the reader of the output stopped reading: as Python's docs do
            return 1
        print(one_line_error(error_message(exc)), file=sys.stderr)
        return 2


#: what to make smaller when a command runs out of memory, in its own flags
_SMALLER = {
    "train": "a smaller model (--hidden, --latent), --batch-size or --k-train",
    "evaluate": "a smaller --batch-size or --iw-samples",
    "trace": "a smaller --batch-size, --hidden or --k",
    "sample": "a smaller --n",
    "reconstruct": "a smaller --n",
    "bench": "smaller --batch-sizes",
}

_PROGRAM = False  # True in the scratchvae program (run), False when main is called in a process


def run() -> None:
    """The ``scratchvae`` program: exit with :func:`main`'s status."""
    global _PROGRAM
    _PROGRAM = True
    sys.exit(main())


if __name__ == "__main__":
    run()
