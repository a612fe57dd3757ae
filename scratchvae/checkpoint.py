"""Checkpoints: one ``.npz`` that holds everything needed to resume training bit for bit.

Layout of the file (every entry a plain array, so it loads with ``allow_pickle=False``)::

    __format__        0-d str    "scratchvae-checkpoint"   (the marker: foreign files lack it)
    __version__       0-d int    FORMAT_VERSION
    meta              0-d str    JSON: model config, train config, epoch, step, history, backend
    rng_state         0-d str    JSON: the backend generator's state at the epoch boundary
    param/<name>      arrays     the model's parameters by name ("param/encoder.0.W", ...)
    optim/<key>       arrays     the optimizer's state_dict ("optim/t", "optim/m.flat", ...)

Writing is atomic (:func:`scratchvae.atomic.atomic_write`): a crash or Ctrl-C while saving
leaves the previous checkpoint as it was.

This module is an I/O boundary: it uses NumPy to read and write the file, and moves arrays to
and from the backend with ``backend.asarray`` / ``to_numpy``.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: checkpoint file I/O

from .atomic import atomic_write
from .backend import Backend, get_backend, to_numpy
from .models import AE, build_model
from .optim import Optimizer

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "copy_params",
    "load_checkpoint",
    "load_model",
    "restore_optimizer",
    "save_checkpoint",
]

FORMAT = "scratchvae-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used (a one-line message: what is wrong, what to do)."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint file, on the host (NumPy arrays, plain Python values)."""

    path: Path
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    params: dict[str, Any]
    optim_state: dict[str, Any]
    rng_state: str
    epoch: int
    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    backend: dict[str, Any] = field(default_factory=dict)


def resolve_path(path: str | os.PathLike) -> Path:
    """A run folder means the ``checkpoint.npz`` inside it; a file path is used as given."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


# ------------------------------------------------------------------------------------ saving
def _arrays(
    model: AE,
    optimizer: Optimizer | None,
    rng_state: str,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Everything to store, as NumPy arrays keyed by their name in the file."""
    arrays: dict[str, Any] = {
        "__format__": np.array(FORMAT),
        "__version__": np.array(FORMAT_VERSION),
        "meta": np.array(json.dumps(meta)),
        "rng_state": np.array(rng_state),
    }
    for name, value in model.params.items():
        arrays[f"param/{name}"] = to_numpy(value)
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            arrays[f"optim/{key}"] = np.asarray(to_numpy(value))
    return arrays


def save_checkpoint(
    path: str | os.PathLike,
    model: AE,
    optimizer: Optimizer | None = None,
    *,
    epoch: int = 0,
    step: int = 0,
    rng_state: str | None = None,
    train_config: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``model`` (+ optimizer state, generator state, progress) to ``path`` atomically.

    ``rng_state`` defaults to the model backend's current state. Refuses (CheckpointError) to
    save non-finite parameters, so a diverged run never overwrites its last good checkpoint.
    """
    path = Path(path)
    bk = model.backend
    if not bk.is_finite(model.params.flat):
        raise CheckpointError(f"refusing to save non-finite parameters to {path}")
    meta = {
        "model_config": model.config,
        "train_config": train_config or {},
        "epoch": int(epoch),
        "step": int(step),
        "history": history or [],
        "backend": {"name": bk.name, "dtype": bk.dtype.name, "seed": bk.seed},
    }
    state = bk.rng_state() if rng_state is None else rng_state
    with atomic_write(path) as f:
        np.savez(f, **_arrays(model, optimizer, state, meta))
    return path


# ------------------------------------------------------------------------------------ loading
def _read_all(path: Path) -> dict[str, Any]:
    """Every array of the .npz, read eagerly (a damaged member fails here, not later)."""
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}; train first (scratchvae train --out DIR) or pass the "
            "run folder that holds checkpoint.npz"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable scratchvae checkpoint (truncated or not an .npz: "
            f"{reason}); use another checkpoint or train again"
        ) from None


def _text(arrays: dict[str, Any], key: str, path: Path) -> str:
    if key not in arrays:
        raise CheckpointError(f"{path} is damaged: entry {key!r} is missing; train again")
    return str(arrays[key][()])


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint file (or a run folder holding ``checkpoint.npz``)."""
    path = resolve_path(path)
    arrays = _read_all(path)
    if "__format__" not in arrays or str(arrays["__format__"][()]) != FORMAT:
        raise CheckpointError(
            f"{path} is not a scratchvae checkpoint (no format marker); pass a checkpoint.npz "
            "written by scratchvae train"
        )
    version = int(arrays.get("__version__", np.array(-1))[()])
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, this scratchvae reads version "
            f"{FORMAT_VERSION}; use the scratchvae version that wrote it"
        )
    try:
        meta = json.loads(_text(arrays, "meta", path))
        model_config, epoch, step = meta["model_config"], meta["epoch"], meta["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(
            f"{path} is damaged: its metadata is unreadable; train again"
        ) from None
    params = {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
    if not params:
        raise CheckpointError(f"{path} is damaged: it holds no parameters; train again")
    return Checkpoint(
        path=path,
        model_config=model_config,
        train_config=meta.get("train_config", {}),
        params=params,
        optim_state=optim,
        rng_state=_text(arrays, "rng_state", path),
        epoch=int(epoch),
        step=int(step),
        history=meta.get("history", []),
        backend=meta.get("backend", {}),
    )


def load_model(
    path: str | os.PathLike | Checkpoint, backend: Backend | None = None
) -> tuple[AE, Checkpoint]:
    """Rebuild the model with ``build_model(config, backend)`` and copy in the parameters.

    ``backend`` None: a NumPy backend with the dtype and seed the checkpoint was trained with.
    """
    ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)
    if backend is None:
        b = ckpt.backend
        backend = get_backend("numpy", b.get("dtype", "float32"), b.get("seed", 0))
    model = build_model(ckpt.model_config, backend)
    copy_params(ckpt, model)
    return model, ckpt


def copy_params(ckpt: Checkpoint, model: AE) -> None:
    """Copy the checkpoint's parameters into ``model`` after checking each one against it:
    the same names, shapes, a floating dtype, finite values."""
    missing = set(model.params) ^ set(ckpt.params)
    if missing:
        raise CheckpointError(
            f"{ckpt.path} does not match its model config (parameters {sorted(missing)[:3]} "
            "differ); the file is damaged, train again"
        )
    for name, value in ckpt.params.items():
        if tuple(value.shape) != model.params.shapes[name]:
            raise CheckpointError(
                f"{ckpt.path}: parameter {name} has shape {tuple(value.shape)}, its config "
                f"says {model.params.shapes[name]}; the file is damaged, train again"
            )
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            raise CheckpointError(
                f"{ckpt.path}: parameter {name} is not finite floating point "
                f"({value.dtype.name}); the file is damaged, train again"
            )
    for name, value in ckpt.params.items():
        model.params[name] = value


def restore_optimizer(ckpt: Checkpoint, optimizer: Optimizer, model: AE) -> None:
    """Load the optimizer state saved in ``ckpt`` into ``optimizer`` for ``model``'s parameters.

    Every array is checked against the model (keys, shapes, dtype, finiteness) on the host,
    before anything moves to the device or reaches an update kernel."""
    if "t" not in ckpt.optim_state:
        raise CheckpointError(
            f"{ckpt.path} holds no optimizer state, so training cannot resume from it; "
            "train again without --resume"
        )
    try:
        optimizer.check_state(ckpt.optim_state, model.params)
    except ValueError as exc:
        raise CheckpointError(
            f"{ckpt.path} is damaged: {exc}; train again without --resume"
        ) from None
    bk = model.backend
    state: dict[str, Any] = {"t": int(ckpt.optim_state["t"][()])}
    for key, value in ckpt.optim_state.items():
        if key != "t":
            state[key] = bk.asarray(value, dtype=value.dtype)
    optimizer.load_state_dict(state)
