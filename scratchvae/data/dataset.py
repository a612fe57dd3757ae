"""The data set type and the checks every array passes before it becomes one.

A :class:`Dataset` holds N flattened images of D features in [0, 1] (float32 in memory, or a
memory-mapped file read batch by batch) and optional labels. :func:`dataset_from_array`
validates an array (rank, size, dtype, finite values, the likelihood's range) and wraps it;
:mod:`.splits` has what a trainer does with one (the split, binarization).

This module is an I/O boundary, so it uses NumPy directly; the arrays it returns are NumPy arrays
on the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: host arrays read from files

from ..atomic import special_file
from ..backend.memory import host_available_memory
from ..inputs import SCAN_ELEMENTS, check_range, value_range

__all__ = [
    "BINARIZE_MODES",
    "LIKELIHOODS",
    "DataError",
    "MissingFiles",
    "Dataset",
    "LazyScaled",
    "as_dataset",
    "check_likelihood",
    "check_float32_range",
    "check_memory",
    "check_n_features",
    "check_regular_file",
    "check_split",
    "dataset_from_array",
    "host_rows",
    "special_file",
    "validate_values",
]


class DataError(ValueError):
    """Data that cannot be used as given (a one-line message: what is wrong, what to do)."""


class MissingFiles(DataError):
    """Official ``files`` (their names, "a and b") not in ``folder``, where downloading them
    was not allowed."""

    def __init__(self, message: str, folder: Any, files: str) -> None:
        super().__init__(message)
        self.folder, self.files = folder, files


LIKELIHOODS = ("bernoulli", "gaussian")
BINARIZE_MODES = ("none", "threshold", "dynamic")
#: The fewest examples a training part may have (:func:`train_val_split`).
MIN_TRAIN = 2

_FLOAT32_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------------------------
# The Dataset
# --------------------------------------------------------------------------------------------


class LazyScaled:
    """A memory-mapped uint8 array of shape (N, D) that reads as float32 in [0, 1].

    ``lazy[idx]`` reads only the rows asked for and divides them by ``divisor`` (255);
    nothing is loaded whole. ``raw`` is the underlying ``np.memmap``.
    """

    def __init__(self, raw: np.ndarray, divisor: float = 255) -> None:
        self.raw = raw
        self.divisor = divisor
        self.shape: tuple[int, ...] = raw.shape
        self.ndim = raw.ndim
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.divide(self.raw[idx], self.divisor, dtype=np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]  # reads everything: for small data only
        return out if dtype is None else out.astype(dtype)


@dataclass(eq=False)
class Dataset:
    """N examples of D features in [0, 1] (flattened images), with optional labels.

    ``x`` is an (N, D) float32 array in [0, 1], or, for a memory-mapped file, an ``np.memmap``
    (float data) or a :class:`LazyScaled` (uint8 data, scaled per read) that stays on disk.
    Read it through :meth:`get_batch`. ``image_shape`` is (H, W) when the rows are images
    (given, or guessed for a square D), else None.
    """

    x: Any
    y: np.ndarray | None
    image_shape: tuple[int, int] | None
    name: str
    description: str

    @property
    def n(self) -> int:
        """Number of examples N."""
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features D per example."""
        return int(self.x.shape[1])

    @property
    def memmapped(self) -> bool:
        """True when ``x`` stays on disk and is read batch by batch."""
        return isinstance(self.x, (np.memmap, LazyScaled))

    def batch_buffer(self, rows: int) -> np.ndarray:
        """An uninitialised float32 (rows, D) array for :meth:`get_batch`'s ``out``."""
        return np.empty((rows, self.n_features), dtype=np.float32)

    def get_batch(self, idx: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``idx`` (a slice or a NumPy integer array) as a float32 (B, D) array: a fresh one,
        or ``out`` (float32, (B, D)) overwritten, which a training loop reuses batch to batch."""
        if out is None:
            return np.array(self.x[idx], dtype=np.float32)
        out[...] = self.x[idx]
        return out


def check_n_features(dataset: Dataset, expected: int, what: str = "the checkpoint's model") -> None:
    """Raise :class:`DataError` unless the data has ``expected`` features per example."""
    if dataset.n_features != expected:
        shape = f" ({dataset.n} x {dataset.n_features})"  # the description's, after the name
        named = dataset.description.partition(shape)[0] or "the data"  # 'rows (v2).npy'
        raise DataError(
            f"{named} has {dataset.n_features} features but {what} expects {expected}; "
            "pass the data it was trained on"
        )


def check_likelihood(likelihood: str) -> None:
    """Raise :class:`DataError` unless ``likelihood`` is one of :data:`LIKELIHOODS`."""
    if likelihood not in LIKELIHOODS:
        raise DataError(f"unknown likelihood {likelihood!r}; choose 'bernoulli' or 'gaussian'")


def check_memory(nbytes: int, what: str, advice: str) -> None:
    """Raise :class:`DataError` when ``what`` (a phrase naming the file and the shape it
    announces) needs more than the host's available memory: a crafted size is refused up front,
    not allocated (NumPy only reserves pages, so Linux's out-of-memory killer would end the
    process while they are filled)."""
    free = host_available_memory()
    if free is not None and nbytes > free:
        raise DataError(
            f"{what} ({nbytes / 2**30:.3g} GiB) but {free / 2**30:.3g} GiB of memory is "
            f"available; {advice}"
        )


def check_regular_file(path: Path) -> None:
    """Raise :class:`DataError` when ``path`` is a named pipe or a device
    (:func:`special_file`). (A folder or a missing file is open()'s to report.)"""
    if special_file(path):
        raise DataError(
            f"{path} is not a regular file (a pipe or a device); save the data to a file"
        )


def check_split(split: str, allowed: tuple[str, ...], what: str) -> None:
    """Raise :class:`DataError` unless data set ``what`` has the split ``split``."""
    if split not in allowed:
        raise DataError(f"{what} has no split {split!r}; choose one of {', '.join(allowed)}")


# --------------------------------------------------------------------------------------------
# Validation and wrapping of arrays
# --------------------------------------------------------------------------------------------


def _as_array(x: Any, name: str) -> np.ndarray:
    """``x`` itself when it is an array (a masked one without masked values), else the array of
    a list (a ragged one, such as a tuple ``(x, y)`` of images and labels, is a one-line
    :class:`DataError`)."""
    if isinstance(x, np.ndarray):
        if (masked := int(np.ma.count_masked(x)) if np.ma.isMaskedArray(x) else 0) > 0:
            raise DataError(
                f"{name} is a masked array with {masked} masked value{'s' * (masked > 1)}; "
                "fill them first (x.filled(0)) or drop those examples"
            )
        return x
    try:
        return np.asarray(x)
    except ValueError:
        raise DataError(
            f"{name} is not one array of numbers (its parts differ in shape); pass the images "
            "alone as an (N, D) or (N, H, W) array (labels: dataset_from_array(x, y))"
        ) from None


def _flatten(x: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Check rank and size; (N, H, W) -> (N, H*W) (a memmap stays a memmap); guess image shape."""
    if x.ndim not in (2, 3):
        raise DataError(
            f"{name} has shape {x.shape} (rank {x.ndim}); expected (N, D) vectors or "
            "(N, H, W) grayscale images"
        )
    if x.size == 0:
        raise DataError(f"{name} is empty (shape {x.shape}); it needs at least one example")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name} has dtype {x.dtype}; expected numbers (uint8 or float)")
    if x.ndim == 3:
        return x.reshape(x.shape[0], -1), (int(x.shape[1]), int(x.shape[2]))
    side = math.isqrt(x.shape[1])
    return x, ((side, side) if side * side == x.shape[1] else None)


def _check_grey_levels(x: np.ndarray, name: str) -> None:
    """DataError when uint8 ``x`` holds only 0 and 1: binary images, which dividing by 255
    would turn into 0 and 1/255 (all 0 reads the same either way). Only its max is needed
    (uint8 is never below 0), read in chunks of rows."""
    rows = max(1, SCAN_ELEMENTS // max(1, x.shape[1]))
    if max(int(x[start : start + rows].max()) for start in range(0, x.shape[0], rows)) == 1:
        raise DataError(
            f"{name} is uint8 holding only 0 and 1, but uint8 is read as grey levels 0..255 and "
            "divided by 255 (1 would become 0.0039); save binary images as bool or float32 "
            "(x.astype(np.float32)), or grey levels as 0..255"
        )


def check_float32_range(x: np.ndarray, name: str = "data") -> tuple[float, float]:
    """Check ``x`` is finite and within float32's range (a data set holds float32: such values
    would become Inf); return (min, max). In chunks of rows, as :func:`validate_values`."""
    lo, hi = value_range(x, name, DataError)
    if max(-lo, hi) > _FLOAT32_MAX:  # finite here, Inf once held as float32
        raise DataError(
            f"{name} has values in [{lo:g}, {hi:g}], beyond float32's range (+-3.4e38), in "
            "which data sets are held and trained; scale them down"
        )
    return lo, hi


def validate_values(
    x: np.ndarray, likelihood: str = "bernoulli", name: str = "data"
) -> tuple[float, float]:
    """Check ``x`` is finite and, for a Bernoulli likelihood, in [0, 1]; return (min, max).

    The rule and its words are :func:`scratchvae.inputs.check_targets`'s (a model's check of
    its input), raised here as :class:`DataError`. Works in chunks of rows (one read of each
    for min and max), so a memory-mapped array is never loaded whole. Values beyond float32's
    range are refused (a data set holds float32: they would become Inf).
    """
    lo, hi = check_float32_range(x, name)
    check_range(lo, hi, likelihood, name, DataError)
    return lo, hi


def _check_labels(y: Any, n: int, name: str) -> np.ndarray | None:
    if y is None:
        return None
    try:
        y = np.asarray(y).reshape(-1)
    except ValueError:  # ragged
        raise DataError(
            f"{name}'s labels (y) are not one array of numbers (its parts differ in shape); "
            "pass one integer class per example"
        ) from None
    if len(y) != n:
        raise DataError(f"{name} has {n} examples but {len(y)} labels; pass matching x and y")
    whole = y.dtype.kind in "biu" or (
        y.dtype.kind == "f" and bool(np.isfinite(y).all()) and bool((y == np.round(y)).all())
    )
    # compared as Python numbers: 2**62 in y's own dtype (float16) would overflow, with a warning
    if not whole or (y.size and max(-float(y.min()), float(y.max())) > 2**62):
        raise DataError(
            f"{name}'s labels (y, dtype {y.dtype}) are not whole numbers of a usable size; save "
            "them as integer classes such as 0..9"
        )
    return y.astype(np.int64)


def dataset_from_array(
    x: np.ndarray,
    y: Any = None,
    name: str = "data",
    likelihood: str = "bernoulli",
    description: str | None = None,
) -> Dataset:
    """Validate an (N, D) or (N, H, W) array and wrap it as a :class:`Dataset`.

    uint8 values are scaled by 1/255 (uint8 holding only 0 and 1, binary images, is refused:
    it would become 0 and 1/255). An ``np.memmap`` stays on disk (uint8 through
    :class:`LazyScaled`); any other array becomes float32 in memory.
    """
    check_likelihood(likelihood)
    x, image_shape = _flatten(_as_array(x, name), name)
    y = _check_labels(y, x.shape[0], name)
    lazy = isinstance(x, np.memmap)
    if x.dtype == np.uint8:
        _check_grey_levels(x, name)
        data = LazyScaled(x) if lazy else np.divide(x, 255, dtype=np.float32)
        values = "grey levels in [0, 1] (uint8 scaled by 1/255)"
    else:
        lo, hi = validate_values(x, likelihood, name)
        data = x if lazy else x.astype(np.float32, copy=False)
        values = "grey levels in [0, 1]" if 0 <= lo and hi <= 1 else f"values in [{lo:g}, {hi:g}]"
    if description is None:
        description = f"{name} ({x.shape[0]} x {x.shape[1]}), {values}"
        description += ", memory-mapped" if lazy else ""
    return Dataset(data, y, image_shape, name, description)


def host_rows(x: Any, name: str = "the data") -> np.ndarray:
    """A host array or nested list of (N, D) vectors or (N, H, W) images as (N, D) rows, read as
    :func:`dataset_from_array` reads it: rank, size and dtype checked (one-line
    :class:`DataError`), uint8 grey levels scaled by 1/255 (float32), other numbers kept in
    their dtype (their values are the caller's to check)."""
    x, _ = _flatten(_as_array(x, name), name)
    if x.dtype != np.uint8:
        return x
    _check_grey_levels(x, name)
    return np.divide(x, 255, dtype=np.float32)


def as_dataset(data: Any, likelihood: str = "bernoulli") -> Dataset:
    """``data`` itself when it is a :class:`Dataset`, else an array (or nested list) checked and
    wrapped by :func:`dataset_from_array` for a model of ``likelihood`` (Bernoulli: values in
    [0, 1]; the Gaussian likelihoods and squared error: finite values)."""
    if isinstance(data, Dataset):
        return data
    return dataset_from_array(
        data, likelihood="gaussian" if likelihood != "bernoulli" else likelihood
    )
