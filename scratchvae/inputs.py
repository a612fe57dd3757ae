"""What the library's public calls check about their arguments, so that a mistake ends in one
line saying what was wrong and what to do (a ValueError or TypeError), not in a traceback from
inside an op, and never in a silently wrong number.

Each check runs where an argument enters: a model's constructor, :meth:`Model.prepare` (only for
input that is not already floating point: a float batch, what the trainer passes every step,
costs one attribute lookup), ``fit``, ``evaluate``. Float data is not scanned on the training
step's path; :func:`scratchvae.data.dataset_from_array` (which ``fit`` applies to an array) and
``evaluate`` scan it once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any, NoReturn

from .backend import Backend, get_xp

__all__ = [
    "check_backend",
    "check_codes",
    "check_targets",
    "layer_sizes",
    "real",
    "require",
    "whole",
]


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def whole(value: Any, name: str, low: int = 1) -> int:
    """``value`` as an int >= ``low``: an integer, or a float with no fraction (3.0), else a
    one-line ValueError naming ``name`` (2.7 is refused, not truncated to 2)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value == int(value) and int(value) >= low):
        raise ValueError(f"{name} must be >= {low} (a whole number), got {value!r}")
    return int(value)


def real(value: Any, name: str, optional: bool = False) -> float | None:
    """``value`` as a float (None passes when ``optional``), else a one-line TypeError naming
    ``name`` (a string "1e-3" is refused here, not in a comparison deep inside)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_backend(backend: Any, seed: Any = None) -> None:
    """TypeError unless ``backend`` is None or a :class:`Backend` (not its name); ValueError
    when a model is given both a backend and a ``seed`` (the backend's generator draws the
    weights: the seed would be ignored)."""
    if backend is not None and seed is not None:
        raise ValueError(
            f"seed={seed!r} with a backend would be ignored: the backend's generator draws the "
            "weights; pass Backend(..., seed=...) instead"
        )
    if backend is not None and not isinstance(backend, Backend):
        raise TypeError(
            f"backend must be a scratchvae Backend, got {backend!r}; pass "
            f"backend=Backend({backend!r}) or leave it out for NumPy float32"
            if isinstance(backend, str)
            else f"backend must be a scratchvae Backend, got a {type(backend).__name__}"
        )


def check_codes(z: Any, latent: int) -> Any:
    """``z`` unchanged when it is (n, latent), else a one-line ValueError."""
    if z.ndim != 2 or z.shape[1] != latent:
        raise ValueError(f"expected codes z of shape (n, {latent}), got {tuple(z.shape)}")
    return z


def foreign_cache(cache: Any, model: Any) -> NoReturn:
    """Refuse a ``cache`` that ``model.forward`` did not return (``backward(None)``, another
    model's cache) in one line. Called only then: ``isinstance(cache, C) or foreign_cache(...)``
    keeps the step's readable path out of this module."""
    raise TypeError(
        f"{type(model).__name__}.backward takes the cache its forward returned "
        f"(terms, cache = model.forward(x)), got {type(cache).__name__}"
    )


def check_targets(x: Any, likelihood: str, name: str = "x") -> None:
    """``x`` (a backend array) finite and, for a Bernoulli likelihood, in [0, 1]; else a
    one-line ValueError (8-bit grey levels 0..255 are told to divide by 255)."""
    xp = get_xp(x)
    if x.size == 0:
        return
    if not bool(xp.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf; remove or replace those values")
    lo, hi = float(x.min()), float(x.max())
    if likelihood == "bernoulli" and (lo < 0 or hi > 1):
        how = "divide 8-bit grey levels by 255, else " if lo >= 0 and hi <= 255 else ""
        raise ValueError(
            f"{name} has values in [{lo:g}, {hi:g}] but the Bernoulli likelihood needs [0, 1]; "
            f"{how}min-max scale to [0, 1], or build the model with likelihood='gaussian'"
        )


def layer_sizes(n_features: Any, hidden: Any, latent: Any) -> tuple[int, tuple[int, ...], int]:
    """(n_features, hidden, latent) as ints >= 1, else one line naming them all; ``hidden`` a
    list of sizes (``hidden=400`` is refused: write ``[400]``)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
        raise TypeError(f"hidden must be a list of layer sizes such as [400], got {hidden!r}")
    sizes = (n_features, *hidden, latent)
    ok = [
        isinstance(s, numbers.Real) and not isinstance(s, bool) and math.isfinite(s) for s in sizes
    ]
    if not all(ok) or any(s != int(s) for s in sizes):
        raise ValueError(
            f"layer sizes must be whole numbers; got n_features={n_features!r}, "
            f"hidden={list(hidden)!r}, latent={latent!r}"
        )
    n, *h, z = (int(s) for s in sizes)
    if n < 1 or z < 1 or any(s < 1 for s in h):
        raise ValueError(
            f"layer sizes must be >= 1 (features, hidden, latent); got "
            f"n_features={n}, hidden={h}, latent={z}"
        )
    return n, tuple(h), z
