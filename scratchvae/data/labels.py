"""What a data set's labels mean: the class names of Fashion-MNIST, for legends.

MNIST's and the digits' labels are the digits themselves (0-9) and need no names; a user's own
data set's labels are shown as they are. A folder of IDX files given by path is told to be
MNIST's or Fashion-MNIST's by its labels (:func:`official_labels`), whatever it is called.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from .idx import CHECKSUMS, IDX_LABELS_MAGIC, IDX_STEMS

__all__ = ["FASHION_MNIST_CLASSES", "class_names", "official_labels"]

#: Fashion-MNIST's labels 0..9 (Xiao, Rasul and Vollgraf 2017, the data set's README).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_CLASS_NAMES = {"fashion-mnist": FASHION_MNIST_CLASSES}


def class_names(name: str) -> tuple[str, ...] | None:
    """The names of label 0, 1, ... of the data set called ``name`` (a :class:`Dataset`'s
    ``name``, e.g. ``"fashion-mnist"``), or None when its labels are their own names (MNIST's
    and the digits' digits, a user's labels)."""
    return _CLASS_NAMES.get(name)


def official_labels(y: Any) -> str | None:
    """The data set (``"mnist"``, ``"fashion-mnist"``) whose official train or test labels are
    exactly ``y`` (integers of one dimension, uint8 as the file holds them or any other integer
    dtype), else None: told by the md5 of the raw IDX file that holds them, so gzipped, raw or
    re-compressed files alike, at the cost of hashing N bytes. The two sets' files have the
    same names; their labels differ."""
    if getattr(y, "dtype", None) is None or y.dtype.kind not in "iu" or y.ndim != 1:
        return None
    if y.dtype.str != "|u1":  # torchvision's targets.numpy() are int64: as the file holds them
        if len(y) and not (0 <= y.min() and y.max() <= 255):
            return None
        y = y.astype("uint8")
    raw = struct.pack(">II", IDX_LABELS_MAGIC, len(y)) + y.tobytes()
    digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    for name, table in CHECKSUMS.items():
        if any(table.get(labels) == digest for _, labels in IDX_STEMS.values()):
            return name
    return None
