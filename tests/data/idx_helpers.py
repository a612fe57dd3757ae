"""Helpers for the data tests: tiny IDX files written to folders, md5s, the real-MNIST folder.

The fixtures built on them (``tiny``, ``tiny_checksums``, ``serve``) are in this folder's
conftest.py. Named idx_helpers so no other module in tests/ shares its basename."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
from dead_port import dead_url

SHARED = Path(__file__).parents[2].parent / "shared"  # the real MNIST, where the machine has it
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEAD_URL = dead_url()  # every connection refused: any download attempt fails


def idx_bytes(a: np.ndarray) -> bytes:
    """Raw IDX bytes of a uint8 array (magic 0x0000_08_ndim, big-endian sizes)."""
    return struct.pack(f">I{a.ndim}I", 0x0800 | a.ndim, *a.shape) + a.astype(np.uint8).tobytes()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, b in files.items():
        (folder / name).write_bytes(b)
    return folder


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]
