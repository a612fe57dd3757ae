"""The options of ``scratchvae train``, and those the commands that read a run share (its
folder, its data, the split, the backend): declared here, read by :mod:`scratchvae.commands`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cliargs import COUNT, FRACTION, NATURAL, NON_NEGATIVE, OPEN_UNIT, POSITIVE
from .commands import cmd_train
from .data import BINARIZE_MODES
from .models import MODEL_KINDS
from .ops.activations import ACTIVATIONS

__all__ = ["add_backend_args", "add_data_args", "add_run_dir", "add_split_arg", "add_train"]


def add_data_args(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument(
        "--data",
        help=f"digits | mnist | fashion-mnist | PATH (.npy, .npz, folder); {default_help}",
    )
    p.add_argument(
        "--data-dir",
        help="the folder holding mnist/ and fashion-mnist/ (their IDX files, downloaded there "
        "on first use); default $SCRATCHVAE_DATA, else $XDG_CACHE_HOME/scratchvae, else "
        "~/.cache/scratchvae",
    )


def add_split_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split",
        help="train, test or all, as the data has them (default test; a file given by --data "
        "that has no test split: all of it, unless it is the data the run trained on)",
    )


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["numpy", "cupy"], help="array backend (default numpy)")


def add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (the default command)",
        description="Train a model; writes checkpoint.npz, metrics.jsonl and PNG figures to "
        "--out. Defaults marked * depend on the data: digits: hidden 256, latent 2, epochs 100, "
        "batch 64; otherwise hidden 400, latent 20, epochs 10, batch 128, init uniform.",
    )
    add_data_args(p, "default digits")
    p.add_argument("--model", choices=list(MODEL_KINDS), default="vae", help="default vae")
    p.add_argument("--hidden", type=COUNT, nargs="+", help="hidden layer sizes*")
    p.add_argument("--latent", type=COUNT, help="latent dimensions*")
    p.add_argument(
        "--activation", choices=list(ACTIVATIONS), default="relu", help="hidden layers' (relu)"
    )
    p.add_argument(
        "--init",
        choices=["he", "glorot", "uniform"],
        help="weight init* (he: ReLU family, glorot otherwise; uniform: PyTorch's "
        "nn.Linear default, used for data other than digits)",
    )
    p.add_argument(
        "--likelihood",
        choices=["bernoulli", "gaussian"],
        default="bernoulli",
        help="the decoder's distribution p(x|z): bernoulli (logits; data in [0, 1]) or "
        "gaussian (means, std --decoder-std) (default bernoulli)",
    )
    p.add_argument(
        "--decoder-std",
        type=POSITIVE,
        default=1.0,
        help="gaussian: the decoder's fixed std (default 1). On data in [0, 1] a std of 1 "
        "makes the reconstruction term so flat that a VAE leaves its code unused (KL near 0): "
        "try 0.1",
    )
    p.add_argument("--epochs", type=COUNT, help="epochs*")
    p.add_argument("--batch-size", type=COUNT, help="batch size*")
    p.add_argument("--lr", type=POSITIVE, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument(
        "--optimizer",
        choices=["adam", "sgd"],
        default="adam",
        help="default adam (betas 0.9, 0.999)",
    )
    p.add_argument("--momentum", type=FRACTION, default=0.0, help="sgd momentum (default 0)")
    p.add_argument("--beta", type=NON_NEGATIVE, default=1.0, help="VAE KL weight (default 1)")
    p.add_argument(
        "--objective",
        choices=["elbo", "iwae"],
        default="elbo",
        help="vae: the bound trained, elbo (the mean of K single-sample ELBOs) or iwae (the "
        "importance-weighted bound of Burda et al. 2016) (default elbo)",
    )
    p.add_argument(
        "--k-train", type=COUNT, default=1, help="vae: samples per example in training (1)"
    )
    p.add_argument(
        "--estimator",
        choices=["pathwise", "stl", "dreg"],
        default="pathwise",
        help="vae: the encoder's gradient estimator; stl: sticking the landing, dreg: doubly "
        "reparameterized (with --objective iwae) (default pathwise)",
    )
    p.add_argument(
        "--warmup-epochs", type=NON_NEGATIVE, default=0.0, help="KL warm-up 0 -> beta (default 0)"
    )
    p.add_argument("--clip-norm", type=POSITIVE, help="clip the global gradient norm (default off)")
    p.add_argument("--patience", type=COUNT, help="early stopping on the validation loss (off)")
    p.add_argument("--val-fraction", type=FRACTION, default=0.1, help="held-out part (default 0.1)")
    p.add_argument("--binarize", choices=BINARIZE_MODES, default="none", help="default none")
    p.add_argument("--noise", choices=["gaussian", "mask"], default="gaussian", help="dae")
    p.add_argument(
        "--noise-level", type=NON_NEGATIVE, default=0.3, help="dae: noise std or masked share (0.3)"
    )
    p.add_argument("--rho", type=OPEN_UNIT, default=0.05, help="sae target activation (0.05)")
    p.add_argument(
        "--sparsity-weight", type=NON_NEGATIVE, default=3.0, help="sae: penalty weight (3)"
    )
    p.add_argument(
        "--seed",
        type=NATURAL,
        default=0,
        help="seed of the weights, the validation split and every random draw (default 0)",
    )
    add_backend_args(p)
    p.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="default float32"
    )
    p.add_argument(
        "--out", help="run folder (default runs/<data>-<model>; <data>: a path's file name stem)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start afresh in --out even if it holds a run or a run's files (its checkpoint "
        "and metrics are removed when the new run starts, its figures written over)",
    )
    p.add_argument("--save-every", type=COUNT, default=1, help="checkpoint every N epochs (1)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (its model and settings; "
        "--epochs may raise the target)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (one line per epoch is printed all the same; the bar is shown "
        "only when stderr is a terminal)",
    )
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=cmd_train)


def add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="DIR", help="run folder (or its checkpoint.npz)")
