"""Fixtures of the data tests: tiny MNIST-like IDX files (the HTTP server on 127.0.0.1,
``serve``, is in tests/conftest.py).

Offline: every download in these tests comes from a server started inside the test."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from idx_helpers import STEMS, idx_bytes, md5

from scratchvae.data import idx


@pytest.fixture
def tiny():
    """Random 28x28 MNIST-like sets (5 train, 3 test): arrays, and raw/gz bytes of each file."""
    rng = np.random.default_rng(0)
    arrays = {
        "train": (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8)),
        "test": (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.arange(3, dtype=np.uint8)),
    }
    raw = {}
    for split, (x, y) in arrays.items():
        raw[STEMS[split][0]], raw[STEMS[split][1]] = idx_bytes(x), idx_bytes(y)
    gz = {f"{stem}.gz": gzip.compress(b, mtime=0) for stem, b in raw.items()}
    return {"arrays": arrays, "raw": raw, "gz": gz}


@pytest.fixture
def tiny_checksums(tiny, monkeypatch):
    """Replace the official MNIST md5 table with the tiny files' md5s (gz and raw)."""
    table = {name: md5(b) for name, b in {**tiny["raw"], **tiny["gz"]}.items()}
    monkeypatch.setitem(idx.CHECKSUMS, "mnist", table)
    return table
