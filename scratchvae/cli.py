"""The ``scratchvae`` command line: train, evaluate, sample, reconstruct, plot, trace, bench.

:func:`build_parser` declares every command and its options; what a command does is in
:mod:`scratchvae.commands` (``trace`` and ``bench`` bring their own options and ``run_cli``).
``scratchvae`` with no command trains a VAE on the embedded digits; ``python -m scratchvae``
is the same program; ``scratchvae --version`` prints the version.

Bad input ends with one line ``scratchvae: error: ...`` on stderr and exit status 2; Ctrl-C with
exit status 130, leaving the last checkpoint intact (``--resume`` continues from it).
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
from .commands import (
    PROG,
    CLIError,
    cmd_evaluate,
    cmd_plot,
    cmd_reconstruct,
    cmd_sample,
    cmd_train,
)
from .data import BINARIZE_MODES, DataError
from .lab import trace  # `scratchvae trace`
from .models import MODEL_KINDS
from .train import TrainingDiverged

__all__ = ["build_parser", "main", "version"]

# commands whose options and run_cli live in their own module: (module, help)
_TOOLS = {
    "trace": (trace, "print one training step's backward pass op by op (--check: numerical check)"),
    "bench": (bench, "benchmarks: training-step throughput vs PyTorch/JAX and the matmul bound"),
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
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Auto-encoders and VAEs with hand-written backward passes (NumPy/CuPy). "
        "With no command: train a VAE on the embedded digits.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_sample(sub)
    _add_reconstruct(sub)
    _add_plot(sub)
    for name, (module, help_text) in _TOOLS.items():
        p = sub.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run_cli)
    return parser


def _add_data_args(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument(
        "--data",
        help=f"digits | mnist | fashion-mnist | PATH (.npy, .npz, folder); {default_help}",
    )
    p.add_argument(
        "--data-dir", help="where mnist/ and fashion-mnist/ live (default ~/.cache/scratchvae)"
    )


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["numpy", "cupy"], help="array backend (default numpy)")


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (the default command)",
        description="Train a model; writes checkpoint.npz, metrics.jsonl and PNG figures to "
        "--out. Defaults marked * depend on the data: digits: hidden 256, latent 2, epochs 100, "
        "batch 64; otherwise hidden 400, latent 20, epochs 10, batch 128, init uniform.",
    )
    _add_data_args(p, "default digits")
    p.add_argument("--model", choices=list(MODEL_KINDS), default="vae", help="default vae")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden layer sizes*")
    p.add_argument("--latent", type=int, help="latent dimensions*")
    p.add_argument("--activation", default="relu", help="default relu")
    p.add_argument(
        "--init",
        choices=["he", "glorot", "uniform"],
        help="weight init* (he: ReLU family, glorot otherwise; uniform: PyTorch's "
        "nn.Linear default, used for data other than digits)",
    )
    p.add_argument(
        "--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli", help="decoder"
    )
    p.add_argument("--epochs", type=int, help="epochs*")
    p.add_argument("--batch-size", type=int, help="batch size*")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--momentum", type=float, default=0.0, help="sgd momentum (default 0)")
    p.add_argument("--beta", type=float, default=1.0, help="VAE KL weight (default 1)")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="KL warm-up 0 -> beta")
    p.add_argument("--clip-norm", type=float, help="clip the global gradient norm")
    p.add_argument("--patience", type=int, help="early stopping on the validation loss")
    p.add_argument("--val-fraction", type=float, default=0.1, help="default 0.1")
    p.add_argument("--binarize", choices=BINARIZE_MODES, default="none", help="default none")
    p.add_argument("--noise", choices=["gaussian", "mask"], default="gaussian", help="dae")
    p.add_argument("--noise-level", type=float, default=0.3, help="dae (default 0.3)")
    p.add_argument("--rho", type=float, default=0.05, help="sae target activation")
    p.add_argument("--sparsity-weight", type=float, default=3.0, help="sae (default 3)")
    p.add_argument("--seed", type=int, default=0)
    _add_backend_args(p)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", help="run folder (default runs/<data>-<model>)")
    p.add_argument("--save-every", type=int, default=1, help="checkpoint every N epochs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (its model and settings; "
        "--epochs may raise the target)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=cmd_train)


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="DIR", help="run folder (or its checkpoint.npz)")


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test ELBO, importance-weighted bound, active units, bits/dim",
        description="Evaluate a trained model on held-out data; every figure in nats per "
        "example (sum over features, mean over examples).",
    )
    _add_run_dir(p)
    _add_data_args(p, "default: the data it was trained on")
    p.add_argument("--split", default="test", help="default test")
    p.add_argument(
        "--iw-samples",
        type=int,
        help="k for the IW bound; 0 skips it (default 1000 below 5000 examples, e.g. "
        "digits; else 100)",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--binarize", choices=BINARIZE_MODES, help="default: as trained")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise")
    _add_backend_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)


def _add_sample(sub: Any) -> None:
    p = sub.add_parser("sample", help="decode draws from the prior into a PNG grid")
    _add_run_dir(p)
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", help="PNG path (default DIR/samples.png)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)


def _add_reconstruct(sub: Any) -> None:
    p = sub.add_parser("reconstruct", help="inputs and their reconstructions as a PNG")
    _add_run_dir(p)
    _add_data_args(p, "default: the data it was trained on")
    p.add_argument("--split", default="test", help="default test")
    p.add_argument("--n", type=int, default=10, help="number of examples (default 10)")
    p.add_argument("--out", help="PNG path (default DIR/recon.png)")
    p.set_defaults(func=cmd_reconstruct)


def _add_plot(sub: Any) -> None:
    p = sub.add_parser("plot", help="write the standard figures of a run again")
    _add_run_dir(p)
    _add_data_args(p, "default: the data it was trained on")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["train", *argv]  # no command: train (the default)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or an argparse error (2, already printed)
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        out = getattr(args, "out_dir", None)
        kept = f"; the last checkpoint in {out} is intact (--resume continues)" if out else ""
        print(f"{PROG}: interrupted{kept}", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
