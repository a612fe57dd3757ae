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
    "check_range",
    "check_targets",
    "layer_sizes",
    "real",
    "require",
    "value_range",
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


#: Values are scanned this many elements at a time (in whole rows): a memory-mapped array is
#: never read whole, and a chunk's min and max (two reads of it) both find it in the cache.
SCAN_ELEMENTS = 1 << 18


def value_range(x: Any, name: str, error: type[ValueError] = ValueError) -> tuple[float, float]:
    """(min, max) of ``x`` (a host array, memory-mapped too, or a backend array), read in chunks
    of rows on the host; ``error`` naming the first row that holds NaN or Inf. Min and max
    carry NaN and reach +-Inf, so finiteness costs no pass of its own: the row is looked for
    only once a chunk is known to hold one. An empty ``x`` is (inf, -inf)."""
    xp, shape = get_xp(x), tuple(x.shape)
    if not shape:  # a scalar: one row of one value
        x, shape = x.reshape(1), (1,)
    per_row = math.prod(shape[1:])
    # one chunk on a GPU: its memory is not mapped from a file, and each min waits for the device
    rows = SCAN_ELEMENTS // max(1, per_row) if xp.__name__ == "numpy" else shape[0]
    step = max(1, rows)
    lo, hi = math.inf, -math.inf
    for start in range(0, shape[0] if per_row else 0, step):
        chunk = x[start : start + step]
        c_lo, c_hi = float(chunk.min()), float(chunk.max())
        if not (math.isfinite(c_lo) and math.isfinite(c_hi)):
            row = start + int(xp.argwhere(~xp.isfinite(chunk))[0, 0])
            raise error(f"{name} contains NaN or Inf (first in row {row}); remove or replace it")
        lo, hi = min(lo, c_lo), max(hi, c_hi)
    return lo, hi


def check_range(
    lo: float, hi: float, likelihood: str, name: str, error: type[ValueError] = ValueError
) -> None:
    """``error`` unless values in [``lo``, ``hi``] suit ``likelihood``: [0, 1] for a Bernoulli
    one (8-bit grey levels 0..255 are told to divide by 255), any finite values otherwise."""
    if likelihood == "bernoulli" and (lo < 0 or hi > 1):
        how = "divide 8-bit grey levels by 255, else " if lo >= 0 and hi <= 255 else ""
        raise error(
            f"{name} has values in [{_bound(lo)}, {_bound(hi)}] but the Bernoulli likelihood "
            "needs [0, 1]; "
            f"{how}min-max scale to [0, 1], or use a Gaussian likelihood (--likelihood "
            "gaussian, likelihood='gaussian')"
        )


def _bound(v: float) -> str:
    """``v`` to 6 digits, or all of them where 6 would show 1 or 0 ([0, 1]'s own ends) for a
    value outside [0, 1] (1.000000000001 is not 1)."""
    short = f"{v:g}"
    return repr(float(v)) if (short in ("1", "0", "-0") and v not in (0, 1)) else short


def check_targets(x: Any, likelihood: str, name: str = "x") -> None:
    """``x`` (a backend array) finite and, for a Bernoulli likelihood, in [0, 1]; else a
    one-line ValueError, in the words :func:`scratchvae.data.validate_values` uses for a data
    set (:func:`value_range`, :func:`check_range`)."""
    if x.size:
        check_range(*value_range(x, name), likelihood, name)


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
