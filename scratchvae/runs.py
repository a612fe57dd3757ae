"""A run folder as the commands find it: the backend it runs on, its model and checkpoint, and
the data it was trained on (:mod:`scratchvae.commands` does the rest of each command)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .atomic import path_exists
from .backend import Backend, BackendError, get_backend
from .checkpoint import load_checkpoint, load_model
from .cliargs import PROG, CLIError
from .data import Dataset, MissingFiles, check_n_features, load_dataset
from .data.load import NoSuchSplit
from .fingerprint import data_fingerprint, how_data_differs
from .models import AE
from .resume import resume_data, same_data

__all__ = ["backend_for", "data_likelihood", "load_run", "run_data"]


def backend_for(
    args: argparse.Namespace, saved: dict[str, Any], seed: int, fallback: bool = True
) -> Backend:
    """The backend a run was trained on (or --backend). A GPU run looked at where CuPy cannot
    run (``fallback``: evaluate, sample, ...) uses NumPy, with a line saying so."""
    given = getattr(args, "backend", None)
    name, dtype = given or saved.get("name", "numpy"), saved.get("dtype") or "float32"
    try:
        return get_backend(name, dtype, seed)
    except BackendError as exc:
        if given or name == "numpy":
            raise
        if not fallback:  # resuming a GPU run
            raise CLIError(f"{exc}; or resume on the CPU with --backend numpy") from None
        print(
            f"{PROG}: the run was trained on {name}, which cannot run here; using numpy",
            file=sys.stderr,
        )
        return get_backend("numpy", dtype, seed)


def load_run(args: argparse.Namespace, seed: int | None = None) -> tuple[AE, Any]:
    """The model and checkpoint of run folder ``args.run`` (missing folder: one-line error)."""
    run = Path(args.run)
    if not path_exists(run):
        raise CLIError(f"no run folder or checkpoint at {run}; train first: scratchvae train")
    ckpt = load_checkpoint(run)
    bk = backend_for(args, ckpt.backend, ckpt.backend.get("seed", 0) if seed is None else seed)
    return load_model(ckpt, bk)


def run_data(
    args: argparse.Namespace, ckpt: Any, model: AE, split: str | None
) -> tuple[Dataset, str]:
    """The data set named on the command line, else the one recorded in the checkpoint, and
    the split read. ``split`` None (no --split): the test split; a file or folder of the
    user's given by --data that has none is a held-out set in itself, read whole ("all").
    The run's own data (no --data) is never read whole in its place: that would be its
    training examples."""
    held_out = split in (None, "test")  # a file of the user's: no test split of its own
    spec = resume_data(args.data, ckpt.train_config.get("data"), ckpt.path.parent, held_out)
    recorded, likelihood = ckpt.train_config.get("data_dir"), data_likelihood(model)
    try:
        data = load_run_data(spec, split or "test", args.data_dir, recorded, likelihood)
    except NoSuchSplit as exc:  # the user's own file: say which flags choose other data
        if split is not None or args.data is None:
            raise CLIError(
                f"{exc.path} is one data set with no {exc.split!r} split; pass --split train "
                "to use it, or --data FILE with the held-out examples"
            ) from None
        split, data = "all", load_run_data(spec, "all", args.data_dir, recorded, likelihood)
        if _trained_on(ckpt, data, args.data):  # not held out: refused, as without --data
            raise CLIError(
                f"{exc.path} is the data the run was trained on (no test split: every example "
                "was a training or validation one); pass --data FILE with held-out examples, "
                "or --split all to read it anyway"
            ) from None
    check_n_features(data, model.n_features)
    return data, split or "test"


def load_run_data(
    spec: str, split: str, given_dir: str | None, recorded_dir: str | None, likelihood: str
) -> Dataset:
    """A run's data set: MNIST and Fashion-MNIST from ``--data-dir`` (``given_dir``; downloaded
    there when missing), else from the folder the run recorded, which is read but never
    downloaded into: a checkpoint (which may come from anyone) does not choose where files are
    written."""
    from_run = given_dir is None and recorded_dir is not None
    data_dir = given_dir or recorded_dir
    try:
        return load_dataset(spec, split, data_dir, download=not from_run, likelihood=likelihood)
    except MissingFiles as exc:
        raise CLIError(
            f"{exc.files} are not in {exc.folder}, under {recorded_dir}: the data folder the run "
            f"recorded, never downloaded into unasked; pass --data-dir {recorded_dir} to "
            "download them there, or another --data-dir"
        ) from None


def _trained_on(ckpt: Any, data: Dataset, given: str) -> bool:
    """Whether ``data`` (``given`` by --data) is what the run in ``ckpt`` trained on: its
    fingerprint, wherever the file is now, else the path the run records."""
    if ckpt.data_fingerprint is not None:
        return how_data_differs(ckpt.data_fingerprint, data_fingerprint(data)) is None
    recorded = ckpt.train_config.get("data")
    return recorded is not None and same_data(recorded, given)


def data_likelihood(model: AE) -> str:
    return "bernoulli" if model.lik.kind == "bernoulli" else "gaussian"
