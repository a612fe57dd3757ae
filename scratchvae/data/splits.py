"""What a trainer does with a data set: the train/validation split and binarization.

:func:`holdout` and :func:`train_val_split` index host arrays (NumPy, the seeded permutation);
:func:`binarize` works on backend arrays through ``backend.xp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np  # numpy-boundary: the split's seeded permutation, on the host

from .dataset import MIN_TRAIN, DataError

if TYPE_CHECKING:
    from scratchvae.backend import Backend

__all__ = ["binarize", "holdout", "train_val_split"]


def holdout(n: int, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held): the last ``n_held`` of a seeded permutation of 0..n-1, each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n - n_held]), np.sort(perm[n - n_held :])


def train_val_split(
    n: int, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): sorted int arrays partitioning 0..n-1, the same for the same seed.

    The validation part has round(n * val_fraction) examples (at least one if the fraction > 0).
    The training part needs at least 2 (:data:`MIN_TRAIN`): a model learns nothing to speak of
    from one example, and the figures of a run compare two (interpolation, latent space).
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n < MIN_TRAIN:
        raise DataError(
            f"the data has {n} example{'' if n == 1 else 's'}, but training needs at least "
            f"{MIN_TRAIN} (the figures compare two); use a data set of more examples"
        )
    if n - n_val < MIN_TRAIN:
        raise DataError(
            f"{n} examples with a validation fraction of {val_fraction:g} leave {n - n_val} for "
            f"training, but training needs at least {MIN_TRAIN} (the figures compare two); "
            "lower the fraction (--val-fraction, val_fraction; 0 for none) or use more data"
        )
    return holdout(n, n_val, seed)


def binarize(x: Any, mode: str, backend: Backend) -> Any:
    """Bernoulli targets from grey levels ``x`` in [0, 1] (a backend array).

    * ``none``       the grey levels themselves (x is returned as is);
    * ``threshold``  1 where x > 0.5, else 0;
    * ``dynamic``    a fresh draw with P(1) = x from ``backend.rng`` (call it again each epoch).
    """
    if mode == "none":
        return x
    if mode == "threshold":
        return backend.xp.greater(x, 0.5).astype(backend.dtype)
    if mode == "dynamic":
        return backend.bernoulli(x)
    raise DataError(f"unknown binarization {mode!r}; choose 'none', 'threshold' or 'dynamic'")
