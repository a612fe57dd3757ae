"""Fixtures of the data tests: tiny MNIST-like IDX files and an HTTP server on 127.0.0.1.

Offline: every download in these tests comes from a server started inside the test."""

from __future__ import annotations

import functools
import gzip
import http.server
import threading
from pathlib import Path

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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
