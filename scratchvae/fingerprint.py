"""A fingerprint of a training run's data: its shape and a hash of its values.

A checkpoint records the fingerprint of the data set the run was trained on (its training and
validation parts: the split is the seed's, and the run's seed and validation fraction are
checked on resume too), so that a resume on other data is refused instead of continuing
silently (:func:`scratchvae.resume.check_same_data`).

What is hashed is the rows the run trains on as the data set serves them (``get_batch``:
float32, uint8 grey levels already scaled by 1/255), before any setting of the run touches them
(the backend's dtype, binarization). So the same data matches itself however it was given: a
uint8 array to ``fit``, the same array saved to a ``.npy`` (memory-mapped by ``--data``), or a
:class:`~scratchvae.data.Dataset`. A float64 file whose values round to the same float32
matches too: the run would see exactly the same numbers.

The hash is BLAKE2b (16 bytes), over the rows in order; a float32 array, in memory or
memory-mapped, is hashed where it lies, other data (uint8 scaled per read) a few MB of rows at
a time.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .data import Dataset

__all__ = ["data_fingerprint", "how_data_differs"]

_CHUNK_BYTES = 1 << 24  # rows read at a time for data that is not float32 rows in memory


def data_fingerprint(data: Dataset) -> dict[str, Any]:
    """``{"shape": [N, D], "dtype": "float32", "blake2b": hex}`` of ``data``'s rows."""
    h = hashlib.blake2b(digest_size=16)
    try:
        view: memoryview | None = memoryview(data.x)
    except TypeError:  # LazyScaled (uint8 on disk) has no buffer of float32 rows
        view = None
    if view is not None and view.format == "f" and view.c_contiguous and view.ndim == 2:
        h.update(view)  # float32 rows in memory: hashed without a copy
    else:
        rows = max(1, _CHUNK_BYTES // (4 * max(data.n_features, 1)))
        for start in range(0, data.n, rows):
            # (an ndarray is a buffer: NumPy's stubs say so from Python 3.12 only)
            h.update(data.get_batch(slice(start, start + rows)))  # type: ignore[arg-type]
    return {"shape": [data.n, data.n_features], "dtype": "float32", "blake2b": h.hexdigest()}


def how_data_differs(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How the data of fingerprint ``now`` differs from the data of ``saved`` (a phrase), or
    None when they are the same data."""
    if saved == now:
        return None
    (n0, d0), (n1, d1) = saved["shape"], now["shape"]
    if (n0, d0) != (n1, d1):
        return f"{n0} x {d0} there, {n1} x {d1} here"
    return f"the same shape, {n0} x {d0}, but other values"
