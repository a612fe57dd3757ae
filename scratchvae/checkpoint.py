"""Checkpoints: one ``.npz`` that holds everything needed to resume training bit for bit.

Layout of the file (every entry a plain array, so it loads with ``allow_pickle=False``)::

    __format__        0-d str    "scratchvae-checkpoint"   (the marker: foreign files lack it)
    __version__       0-d int    FORMAT_VERSION
    meta              0-d str    JSON: model config, train config, epoch, step, history, backend,
                                 data_fingerprint (absent in files written before it)
    rng_state         0-d str    JSON: the backend generator's state at the epoch boundary
    param/<name>      arrays     the model's parameters by name ("param/encoder.0.W", ...)
    optim/<key>       arrays     the optimizer's state_dict ("optim/t", "optim/m.flat", ...)

Writing is atomic (:func:`scratchvae.atomic.atomic_write`): a crash or Ctrl-C while saving
leaves the previous checkpoint as it was. Reading trusts nothing in the file: the .npz is read
safely (:mod:`scratchvae.checkpoint_file`), then every entry is checked
(:mod:`scratchvae.checkpoint_checks` for the metadata, :func:`check_params` and the
optimizer's ``check_state`` for the arrays) before a model is built or a kernel sees an array.

This module is an I/O boundary: it uses NumPy to read and write the file, and moves arrays to
and from the backend with ``backend.asarray`` / ``to_numpy``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: checkpoint file I/O

from .atomic import atomic_write, path_is_dir
from .backend import Backend, BackendError, get_backend, to_numpy
from .checkpoint_checks import (
    MAX_COUNT,
    check_meta,
    check_progress,
    check_rng_state,
    check_schedule,
)
from .checkpoint_file import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    damaged,
    one_line,
    read_entries,
)
from .models import AE, build_model
from .optim import Optimizer

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "check_params",
    "copy_params",
    "load_checkpoint",
    "load_model",
    "restore_optimizer",
    "restore_training",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.npz"


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
    data_fingerprint: dict[str, Any] | None = None  # the training data's (fingerprint.py)
    # the first epoch of train_config's warm-up (check_schedule); None: a file from before it
    # was recorded, whose KL weights cannot be checked (a warm-up changed on resume fits none)
    warmup_since: int | None = 1
    image_shape: tuple[int, int] | None = None  # (H, W) of the training images, if recorded


def resolve_path(path: str | os.PathLike) -> Path:
    """A run folder means the ``checkpoint.npz`` inside it; a file path is used as given."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path_is_dir(path) else path


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
    data_fingerprint: dict[str, Any] | None = None,
    warmup_since: int = 1,
    image_shape: tuple[int, int] | None = None,
) -> Path:
    """Write ``model`` (+ optimizer state, generator state, progress, the fingerprint of the
    data it was trained on and its images' ``image_shape``) to ``path`` atomically.

    ``rng_state`` defaults to the model backend's current state. Refuses (CheckpointError) to
    save non-finite parameters or optimizer state, so a diverged run never overwrites its last
    good checkpoint,
    and a ``history`` that is not one record per epoch done or disagrees with its
    ``train_config`` (:func:`~scratchvae.checkpoint_checks.check_schedule`): a file it could not
    load again. ``warmup_since``: the first epoch trained with ``train_config``'s warm-up (a
    resume may change it, with ``allow_changes``).
    """
    path = Path(path)
    bk = model.backend
    if not bk.is_finite(model.params.flat):
        raise CheckpointError(f"refusing to save non-finite parameters to {path}")
    try:
        check_progress(int(epoch), int(step), history or [])
        check_schedule(int(epoch), history or [], model.config, train_config or {}, warmup_since)
        if optimizer is not None:  # as restore_training checks it: else a file it refuses
            optimizer.check_state({"t": optimizer.t, **optimizer.state}, model.params)
        if rng_state is not None:  # another backend's generator: a file resume would refuse
            check_rng_state(rng_state, bk.name)
    except ValueError as exc:
        raise CheckpointError(f"refusing to save to {path}: {exc}") from None
    meta = {
        "model_config": model.config,
        "train_config": train_config or {},
        "epoch": int(epoch),
        "step": int(step),
        "history": history or [],
        "backend": {"name": bk.name, "dtype": bk.dtype.name, "seed": bk.seed},
        "data_fingerprint": data_fingerprint,
    }
    meta["warmup_since"] = int(warmup_since)  # always: a file without it is an older one
    if image_shape is not None:  # what `sample` draws in, the data file not read again
        meta["image_shape"] = [int(n) for n in image_shape]
    state = bk.rng_state() if rng_state is None else rng_state
    with atomic_write(path) as f:
        np.savez(f, **_arrays(model, optimizer, state, meta))
    return path


# ------------------------------------------------------------------------------------ loading
def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint file (or a run folder holding ``checkpoint.npz``).

    Everything is checked on the host before it is used (:mod:`scratchvae.checkpoint_checks`):
    the metadata's fields and types, the model config against the stored parameters' shapes,
    the generator state's structure. A file that fails any check raises CheckpointError (one
    line naming the entry); the parameters' and optimizer state's values are checked against
    the model they are copied into (:func:`copy_params`, :func:`restore_optimizer`)."""
    path = resolve_path(path)
    arrays, meta, rng_state = read_entries(path)
    params = {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
    if not params:
        raise damaged(path, "it holds no parameters")
    try:
        check_meta(meta, params)
        check_rng_state(rng_state)  # (whose backend: restore_training's check, on resume)
    except ValueError as exc:
        raise damaged(path, one_line(exc, 300)) from None
    return Checkpoint(
        path=path,
        model_config=meta["model_config"],
        train_config=meta.get("train_config", {}),
        params=params,
        optim_state=optim,
        rng_state=rng_state,
        epoch=meta["epoch"],
        step=meta["step"],
        history=meta.get("history", []),
        backend=meta.get("backend", {}),
        data_fingerprint=meta.get("data_fingerprint"),
        warmup_since=meta.get("warmup_since"),
        image_shape=tuple(meta["image_shape"]) if "image_shape" in meta else None,
    )


def load_model(
    path: str | os.PathLike | Checkpoint, backend: Backend | None = None
) -> tuple[AE, Checkpoint]:
    """Rebuild the model with ``build_model(config, backend)`` and copy in the parameters.

    ``backend`` None: a NumPy backend with the dtype and seed the checkpoint was trained with.
    The config was checked against the stored arrays when the file was loaded, so the model
    allocates no more than the file holds."""
    ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)
    if backend is None:
        b = ckpt.backend
        backend = get_backend("numpy", b.get("dtype", "float32"), b.get("seed", 0))
    try:
        model = build_model(ckpt.model_config, backend)
    except ValueError as exc:  # a value the model refuses (beta < 0, an unknown noise, ...)
        raise damaged(ckpt.path, f"its model_config is refused: {one_line(exc)}") from None
    copy_params(ckpt, model)
    return model, ckpt


def check_params(ckpt: Checkpoint, model: AE) -> None:
    """Raise CheckpointError unless the checkpoint's parameters fit ``model``: the same names
    and shapes, floating point, finite in the model's dtype (1e300 is not a float32)."""
    have, want = {n: tuple(a.shape) for n, a in ckpt.params.items()}, model.params.shapes
    differ = sorted(set(have) ^ set(want)) or [n for n in have if have[n] != want[n]]
    if differ:  # another model's sizes (a loaded file's parameters fit its own config)
        n = differ[0]
        what = f"parameter {n}: {have.get(n, 'none')} there, {want.get(n, 'none')} here"
        if ckpt.model_config == model.config:  # a Checkpoint not made by load_checkpoint
            raise CheckpointError(f"{ckpt.path} does not match its model config ({what})")
        other = _other_model(ckpt.model_config, model.config)
        raise CheckpointError(f"{ckpt.path} holds {other} ({what}); build it with load_model")
    dtype = model.params.flat.dtype
    for name, value in ckpt.params.items():
        if value.dtype.kind != "f":
            raise CheckpointError(
                f"{ckpt.path}: parameter {name} is {value.dtype.name}, not floating point; "
                "the file is damaged, train again"
            )
        with np.errstate(over="ignore"):
            finite = np.isfinite(value.astype(dtype, copy=False)).all()
        if not finite:
            raise CheckpointError(
                f"{ckpt.path}: parameter {name} holds NaN or infinite values (in {dtype.name}); "
                "the file is damaged, use another checkpoint or train again"
            )


def _other_model(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """'a model of hidden=[8], not hidden=[16]': the settings where two configs differ."""
    keys = [k for k in {**saved, **now} if saved.get(k) != now.get(k)]
    was, asked = (", ".join(f"{k}={c.get(k)!r}" for k in keys) for c in (saved, now))
    return f"a model of {was}, not {asked}"


def copy_params(ckpt: Checkpoint, model: AE) -> None:
    """Copy the checkpoint's parameters into ``model`` after :func:`check_params`."""
    check_params(ckpt, model)
    for name, value in ckpt.params.items():
        model.params[name] = value


def _optimizer_state(ckpt: Checkpoint, optimizer: Optimizer, model: AE) -> dict[str, Any]:
    """The checkpoint's optimizer state, checked against ``model`` (keys, shapes, dtype,
    finiteness) on the host, before anything moves to the device or reaches an update
    kernel, and moved to the model's backend."""
    if "t" not in ckpt.optim_state:
        raise CheckpointError(
            f"{ckpt.path} holds no optimizer state, so training cannot resume from it; "
            "train again without --resume"
        )
    try:
        optimizer.check_state(ckpt.optim_state, model.params)
    except ValueError as exc:
        raise CheckpointError(
            _other_settings(ckpt, optimizer, model)
            or f"{ckpt.path} is damaged: {one_line(exc)}; train again without --resume"
        ) from None
    saved = ckpt.optim_state
    if int(saved["t"][()]) > MAX_COUNT:  # its next steps would overflow the int64 counter
        raise CheckpointError(
            f"{ckpt.path} is damaged: its optimizer step count {int(saved['t'][()])} is more "
            "than a run takes (2**53); train again without --resume"
        )
    state = {k: model.backend.asarray(v, dtype=v.dtype) for k, v in saved.items() if k != "t"}
    return {"t": int(saved["t"][()]), **state}


def _other_settings(ckpt: Checkpoint, optimizer: Optimizer, model: AE) -> str | None:
    """Why a sound checkpoint's optimizer state does not fit, when it is the settings: the run
    was trained in another dtype or with another optimizer (else None: the file is damaged)."""
    other_dtype = _other_dtype(ckpt, model)
    saved, now = ckpt.train_config.get("optimizer"), type(optimizer).__name__.lower()
    if other_dtype or not saved or saved == now:
        return other_dtype
    return f"{ckpt.path} was trained with {saved}, not {now}; resume with the same optimizer"


def _other_dtype(ckpt: Checkpoint, model: AE) -> str | None:
    """Why ``model`` cannot resume ``ckpt``'s run: another dtype (none saved: float32); or None."""
    saved, now = ckpt.backend.get("dtype", "float32"), model.params.flat.dtype.name
    if saved == now:
        return None
    return f"{ckpt.path} was trained in {saved}, not {now}; resume with the same dtype"


def restore_optimizer(ckpt: Checkpoint, optimizer: Optimizer, model: AE) -> None:
    """Load the optimizer state saved in ``ckpt`` into ``optimizer`` for ``model``'s parameters
    (checked first: a refused state leaves the optimizer as it was)."""
    optimizer.load_state_dict(_optimizer_state(ckpt, optimizer, model))


def restore_training(ckpt: Checkpoint, model: AE, optimizer: Optimizer) -> None:
    """Everything a resumed run takes from ``ckpt``: parameters, optimizer state and the
    generator's state. All of it is checked before any of it is applied, so a refused
    checkpoint (CheckpointError) leaves the model, optimizer and backend as they were."""
    if ckpt.model_config != model.config:
        raise CheckpointError(
            f"{ckpt.path} was trained with {_other_model(ckpt.model_config, model.config)}; "
            "resume with the same model settings or use another out_dir"
        )
    other_dtype = _other_dtype(ckpt, model)  # another run: other arithmetic, other draws
    if other_dtype:
        raise CheckpointError(other_dtype)
    check_params(ckpt, model)
    state = _optimizer_state(ckpt, optimizer, model)
    try:
        check_rng_state(ckpt.rng_state, ckpt.backend.get("name"))  # the run's own generator's
        model.backend.set_rng_state(ckpt.rng_state, reseed_offset=ckpt.epoch)
    except (BackendError, ValueError) as exc:
        raise CheckpointError(
            f"{ckpt.path}: its rng_state cannot be used: {one_line(exc)}"
        ) from None
    copy_params(ckpt, model)
    optimizer.load_state_dict(state)
