"""What each ``scratchvae`` command does with its parsed options (the parser and ``main`` are
in :mod:`scratchvae.cli`): train, evaluate, sample, reconstruct, plot.

``scratchvae`` with no arguments trains a VAE on the embedded UCI digits and writes
``runs/digits-vae/``: ``checkpoint.npz``, ``metrics.jsonl`` and figures.

Defaults that depend on the data set when not given on the command line:

=================  =============  ======  ======  ======  =========
data               --hidden       latent  epochs  batch   --init
=================  =============  ======  ======  ======  =========
digits (8x8)       256            2       100     64      he (relu)
anything else      400            20      10      128     uniform
=================  =============  ======  ======  ======  =========

(the second row is the PyTorch VAE example's protocol for MNIST, including PyTorch's default
``nn.Linear`` initialisation). All losses are printed in nats per example: summed over the
features, averaged over the examples. Bad input raises :class:`CLIError` (or the data,
checkpoint, backend or training error), which ``main`` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from .atomic import path_is_dir, path_is_file
from .backend import Backend, get_backend
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model
from .cliargs import PROG, CLIError, one_line
from .data import Dataset, binarize, load_dataset, named_dataset
from .data.splits import train_val_split
from .init import default_init
from .models import AE, VAE, model_classes
from .resume import (
    check_flags_apply,
    check_resume_flags,
    data_moved,
    nothing_to_train,
    resume_data,
)
from .runs import backend_for, data_likelihood, load_run, load_run_data, run_data
from .train import METRICS_NAME, TrainConfig, fit

__all__ = [
    "MAX_RECONSTRUCTIONS",
    "MAX_SAMPLES",
    "PROG",
    "CLIError",
    "cmd_evaluate",
    "cmd_plot",
    "cmd_reconstruct",
    "cmd_sample",
    "cmd_train",
]

# Defaults by data set (when not given): (hidden, latent, epochs, batch size, init).
_SMALL_DEFAULTS = ([256], 2, 100, 64, None)  # the 8x8 digits; init by activation (he for relu)
_LARGE_DEFAULTS = ([400], 20, 10, 128, "uniform")  # MNIST-sized: the PyTorch VAE example


# ============================================================================ helpers
def _say(msg: str) -> None:
    """A line on stderr, its control characters escaped (a path holding a newline)."""
    print(one_line(msg), file=sys.stderr)


def _tell(msg: str) -> None:
    """A line on stdout (what a command made), its control characters escaped as an error's
    (:func:`~scratchvae.cliargs.one_line`): a folder named with a newline stays on one line."""
    print(one_line(msg))


def _dataset_defaults(spec: str) -> tuple[list[int], int, int, int, str | None]:
    return _SMALL_DEFAULTS if spec.strip().lower() == "digits" else _LARGE_DEFAULTS


def _run_name(spec: str) -> str:
    return named_dataset(spec) or Path(spec).stem or "data"


def _absolute(path: str | None) -> str | None:
    """A file or folder as a run records it: absolute, so that the run can be resumed or
    evaluated from any working directory (a named data set stays a name)."""
    if path is None or named_dataset(path):
        return path
    return str(Path(path).expanduser().resolve())


def _guess_shape(n_features: int) -> tuple[int, int] | None:
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features else None


def _out_dir(run: str) -> Path:
    """The folder a run's figures go to: the run folder, or the folder of a checkpoint file
    (whatever its name: a copy named b.ckpt is a checkpoint all the same)."""
    run_path = Path(run)
    if path_is_file(run_path) or (run_path.suffix == ".npz" and not path_is_dir(run_path)):
        return run_path.parent
    return run_path


# ============================================================================ train
def _build_train_model(args: argparse.Namespace, n_features: int, bk: Backend) -> AE:
    hidden, latent, _, _, init = _dataset_defaults(args.data)
    common = dict(
        hidden=hidden if args.hidden is None else args.hidden,
        latent=latent if args.latent is None else args.latent,
        activation=args.activation,
        likelihood=args.likelihood,
        decoder_std=args.decoder_std,
        init=args.init or init or default_init(args.activation),
        backend=bk,
    )
    extra: dict[str, Any] = {
        "vae": {
            "beta": args.beta,
            "objective": args.objective,
            "k": args.k_train,
            "estimator": args.estimator,
        },
        "dae": {"noise": args.noise, "noise_level": args.noise_level},
        "sae": {"rho": args.rho, "beta": args.sparsity_weight},
        "ae": {},
    }[args.model]
    return model_classes()[args.model](n_features, **common, **extra)


def _train_config(args: argparse.Namespace, out: Path) -> TrainConfig:
    _, _, epochs, batch, _ = _dataset_defaults(args.data)
    return TrainConfig(
        epochs=epochs if args.epochs is None else args.epochs,
        batch_size=batch if args.batch_size is None else args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        warmup_epochs=args.warmup_epochs,
        clip_norm=args.clip_norm,
        binarize=args.binarize,
        val_fraction=args.val_fraction,
        patience=args.patience,
        seed=args.seed,
        out_dir=str(out),
        save_every=args.save_every,
        data=_absolute(args.data),
        data_dir=_absolute(args.data_dir),
    )


def _resume_setup(args: argparse.Namespace, out: Path) -> tuple[AE, TrainConfig, str | None]:
    """Model and settings from the checkpoint in ``out``, and why there is nothing to train
    (or None): flags that differ from them are refused; --epochs may raise the target,
    --data-dir say where the data lives now, --save-every how often it saves."""
    if not (out / CHECKPOINT_NAME).exists():  # a run stopped before its first checkpoint:
        again = "again with --force" if (out / METRICS_NAME).exists() else "without --resume first"
        raise CLIError(f"--resume: no checkpoint in {out}; train {again}")
    ckpt = load_checkpoint(out)
    overrides: dict[str, Any] = {"progress": not args.no_progress, "out_dir": str(out)}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.data_dir is not None:
        overrides["data_dir"] = _absolute(args.data_dir)
    # --data recorded now: for a run made by fit(), which records none (as a fresh CLI run
    # records it), and for data that moved (its fingerprint says, at the start, if it is the same)
    recorded = ckpt.train_config.get("data")
    if args.data is not None and (recorded is None or data_moved(ckpt, args.data)):
        overrides["data"] = _absolute(args.data)
    if "save_every" in getattr(args, "typed", ()):  # how often it saves: not the run's numbers
        overrides["save_every"] = args.save_every
    config = TrainConfig.from_dict(ckpt.train_config, **overrides)
    check_resume_flags(args, ckpt, config)
    done = nothing_to_train(ckpt, config)
    bk = backend_for(args, ckpt.backend, ckpt.backend.get("seed", 0), fallback=False)
    model, _ = load_model(ckpt, bk)
    return model, config, done


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume and args.force:
        raise CLIError("--resume continues the run in --out, --force replaces it: pass one")
    if args.resume:
        out = args.out_dir = Path(args.out or _default_out(args.data or "digits", args.model))
        model, config, done = _resume_setup(args, out)
        if done:
            _say(f"{PROG}: nothing to train in {out}: {done}")
            return 0
        spec = resume_data(args.data, config.data, out)
        recorded = None if args.data_dir is not None else config.data_dir
        data = load_run_data(spec, "train", args.data_dir, recorded, data_likelihood(model))
    else:
        args.data = args.data or "digits"
        out = args.out_dir = Path(args.out or _default_out(args.data, args.model))  # for Ctrl-C
        check_flags_apply(args)  # a flag's own error first: it does not depend on the folder
        _refuse_to_replace(out, args.force)
        config = _train_config(args, out)
        data = load_dataset(args.data, "train", args.data_dir, likelihood=args.likelihood)
        bk = get_backend(args.backend or "numpy", args.dtype, args.seed)
        model = _build_train_model(args, data.n_features, bk)
    # a line per epoch always; --no-progress hides the bar (shown only in a terminal anyway)
    config.progress, config.progress_bar = True, not args.no_progress
    _say(_start_line(model, data, config, args.resume))
    history = fit(model, data, config, resume=args.resume, replace=args.force)
    args.trained = True  # Ctrl-C from here on: the run is done, its figures are not
    figures = [] if args.no_figures else _figures(model, data, history, out, config.to_dict())
    _tell(_summary(history, out, len(figures)))
    return 0


# what a run writes in its folder (the figures: plots.save_standard_figures)
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, "curves.png", "recon.png", "samples.png",
             "latent.png", "interp.png", "manifold.png", "denoise.png")  # fmt: skip


def _refuse_to_replace(out: Path, force: bool) -> None:
    """A fresh run never replaces the run in ``out``, nor files a run would write over (a
    metrics.jsonl, figures), unless told to (--force)."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder for the run")
    if (out / CHECKPOINT_NAME).exists() and not force:
        raise CLIError(
            f"the folder {out} already holds a run ({CHECKPOINT_NAME}); pass --resume to "
            "continue it, --force to replace it, or another --out"
        )
    taken = [name for name in RUN_FILES if (out / name).exists()]
    if taken and not force:
        raise CLIError(
            f"the folder {out} holds {', '.join(taken)}, which a run would overwrite; pass "
            "--force to replace them, or another --out"
        )
    if taken:  # removed by fit once it holds the folder's lock, figures written over
        _say(f"{PROG}: --force: replacing {', '.join(taken)} in {out}")


def _start_line(model: AE, data: Dataset, config: TrainConfig, resume: bool) -> str:
    """'scratchvae: training VAE 64-256-2 (relu, bernoulli decoder; 34,884 parameters) on UCI
    digits train (1500 x 64): 1,350 for training, 150 for validation; numpy float32, seed 0'."""
    m, bk = model.config, model.backend
    sizes = "-".join(str(n) for n in (m["n_features"], *m["hidden"], m["latent"]))
    title, cut, _ = data.description.partition("), ")  # 'MNIST train (60000 x 784'
    n_val = len(train_val_split(data.n, config.val_fraction, config.seed)[1])  # or refused
    binarized = "" if config.binarize == "none" else f", binarization {config.binarize}"
    # a VAE trained with k samples per example (objective, k, estimator)
    sampling = f", {m['objective']} k={m['k']} {m['estimator']}" if "k" in m else ""
    return (
        f"{PROG}: {'resuming' if resume else 'training'} {type(model).__name__} {sizes} "
        f"({m['activation']}, {m['likelihood']} decoder{_std(m)}{sampling}; "
        f"{_weights(m)}{model.n_params:,} parameters) on "
        f"{title + ')' if cut else data.description}: {data.n - n_val:,} for training, "
        f"{n_val:,} for validation{binarized}; {bk.name} {bk.dtype.name}, seed {config.seed}"
    )


def _weights(m: dict[str, Any]) -> str:
    """'loss = recon + 2 kl; ' where the loss weighs a term the epoch lines show unweighted."""
    b = m.get("beta", 1.0)
    if m.get("objective") == "iwae":  # beta on log p(z)/q(z|x) in each log w and the val KL
        train = f"-L_{m['k']}" + (f" (KL weight {b:g})" if b != 1.0 else "")
        val = "the one-draw -ELBO" if b == 1.0 else f"one-draw recon + {b:g} kl"
        return f"training loss {train}, validation loss {val}; "
    if "rho" in m:  # the sparse AE
        return f"loss = recon + {b:g} sparsity (rho {m['rho']:g}); "
    return "" if b == 1.0 else f"loss = recon + {b:g} kl; "


def _std(m: dict[str, Any]) -> str:
    """' (std 0.1)' for a Gaussian decoder of fixed std, else ''."""
    return f" (std {m['decoder_std']:g})" if m["likelihood"] == "gaussian" else ""


def _default_out(spec: str, model: str) -> Path:
    return Path("runs") / f"{_run_name(spec)}-{model}"


def _summary(history: Any, out: Path, n_figures: int) -> str:
    last = history[-1] if len(history) else {}
    which, key = ("validation", "val_loss") if "val_loss" in last else ("training", "train_loss")
    loss = last.get(key, float("nan"))
    stop = " (early stop)" if history.stopped_early else ""
    epochs, figures = _count(len(history), "epoch"), _count(n_figures, "figure")
    files = f"{out / CHECKPOINT_NAME} and {out / METRICS_NAME}"  # --no-figures: no figures
    if n_figures:
        files = f"{out / CHECKPOINT_NAME}, {out / METRICS_NAME} and {figures} in {out}/"
    return f"{PROG}: {epochs}{stop}, {which} loss {loss:.2f} nats/example; wrote {files}"


def _count(n: int, noun: str) -> str:
    """'1 epoch', '3 epochs', '0 figures'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _figures(model: AE, data: Dataset, history: Any, out: Path, config: dict) -> list[Path]:
    from .plots import save_standard_figures  # matplotlib: imported only when drawing

    return save_standard_figures(model, data, history, out, binarize=config.get("binarize", "none"))


# ============================================================================ evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_report, json_numbers
    from .progress import Stages

    model, ckpt = load_run(args)
    if args.iw_samples not in (None, 0) and not isinstance(model, VAE):  # (0: none asked)
        raise CLIError(f"--iw-samples applies to a VAE's run only, not {type(model).__name__}")
    data, split = run_data(args, ckpt, model, args.split)
    mode = args.binarize or ckpt.train_config.get("binarize", "none")
    k = args.iw_samples if args.iw_samples is not None else 1000 if data.n < 5000 else 100
    bk = model.backend
    noise_bk = get_backend(bk.name, bk.dtype.name, args.seed)  # dynamic binarization draw
    x = binarize(bk.asarray(data.get_batch(slice(None))), mode, noise_bk)
    with closing(Stages(bar=not args.no_progress, prefix=f"{PROG}: ", unit="pairs")) as shown:
        results = evaluate(model, x, k, args.batch_size, seed=args.seed, progress=shown)
    results.update(checkpoint=str(ckpt.path), data=data.description, split=split, binarize=mode)
    if args.json:
        print(json.dumps(json_numbers(results), allow_nan=False))
    else:
        print(format_report(results, model, ckpt.epoch, data.n_features))
    return 0


# ============================================================================ figures
MAX_SAMPLES = 10_000  # a 100 x 100 grid; more would not show one sample per screen pixel
MAX_RECONSTRUCTIONS = 1000


def _check_n(n: int, limit: int) -> None:
    if not 1 <= n <= limit:
        raise CLIError(f"--n must be from 1 to {limit}, got {n}")


def _figure_out(args: argparse.Namespace, default_name: str) -> Path:
    """Where sample/reconstruct write: DIR/<default_name> without --out; inside a folder given
    as --out (one that exists, or a name ending in /); a name without a suffix gets .png."""
    from .plots import FIGURE_SUFFIXES, figure_path

    if not args.out:
        return _out_dir(args.run) / default_name
    out = Path(args.out).expanduser()
    if out.is_dir() or args.out.endswith(("/", os.sep)):
        return out / default_name
    if out.suffix and out.suffix.lower() not in FIGURE_SUFFIXES:
        raise CLIError(
            f"--out {args.out}: a figure is written as {', '.join(FIGURE_SUFFIXES)}, not "
            f"{out.suffix}; end the name in .png"
        )
    return figure_path(out)


def _image_shape(ckpt: Any, model: AE) -> tuple[int, int] | None:
    """The (H, W) of a run's images: recorded in its checkpoint, else (an older one) its own
    data file's (28 x 24 is no square), else the square guess or None."""
    spec, guess = ckpt.train_config.get("data"), _guess_shape(model.n_features)
    if ckpt.image_shape or not isinstance(spec, str) or named_dataset(spec):
        return ckpt.image_shape or guess
    try:
        data = load_dataset(spec, "train", likelihood=data_likelihood(model))
    except (ValueError, OSError):  # a DataError among them: the file is not as it was
        return guess
    return data.image_shape if data.n_features == model.n_features else guess


def cmd_sample(args: argparse.Namespace) -> int:
    from .plots import plot_samples, samples_title

    _check_n(args.n, MAX_SAMPLES)
    out = _figure_out(args, "samples.png")
    model, ckpt = load_run(args, seed=args.seed)
    shape = _image_shape(ckpt, model)
    path = plot_samples(model.sample(args.n), shape, out, samples_title(model))
    _tell(f"{PROG}: wrote {path}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .plots import plot_run_reconstructions

    _check_n(args.n, MAX_RECONSTRUCTIONS)
    out = _figure_out(args, "recon.png")
    model, ckpt = load_run(args)
    data, _ = run_data(args, ckpt, model, args.split)
    x = data.get_batch(slice(0, min(args.n, data.n)))
    mode = ckpt.train_config.get("binarize", "none")  # the inputs shown as the run saw them
    path = plot_run_reconstructions(model, x, data.image_shape, out, mode)
    _tell(f"{PROG}: wrote {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    model, ckpt = load_run(args)
    data, _ = run_data(args, ckpt, model, "train")
    paths = _figures(model, data, ckpt.history, _out_dir(args.run), ckpt.train_config)
    _tell(f"{PROG}: wrote {len(paths)} figures: {', '.join(str(p) for p in paths)}")
    return 0
