"""Parameters (and gradients) as one flat buffer with named views.

``store["encoder.0.W"]`` is a view into ``store.flat``: reading and writing through the name
changes the flat buffer, and the optimizer updates every parameter with a few whole-buffer
operations on ``flat``. Gradients use a second store with the same names and layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from .backend import Backend

Array = Any


class ParamStore(Mapping):
    """An ordered mapping ``name -> array view`` over one contiguous buffer ``flat``."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], backend: Backend) -> None:
        self.shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
        self.backend = backend
        size = sum(math.prod(s) for s in self.shapes.values())
        self.flat = backend.zeros(size)
        self._views: dict[str, Array] = {}
        offset = 0
        for name, shape in self.shapes.items():
            n = math.prod(shape)
            self._views[name] = self.flat[offset : offset + n].reshape(shape)
            offset += n

    def __getitem__(self, name: str) -> Array:
        return self._views[name]

    def __setitem__(self, name: str, value: Array) -> None:
        """Copy ``value`` (an array, or nested lists) into the named view (shape must match)."""
        view = self._views[name]
        value = self.backend.asarray(value)  # lists and scalars get a .shape (and our dtype)
        if tuple(value.shape) != view.shape:
            raise ValueError(f"{name}: expected shape {view.shape}, got {tuple(value.shape)}")
        view[...] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    @property
    def size(self) -> int:
        """Number of scalars in all parameters together."""
        return int(self.flat.size)

    def like(self) -> ParamStore:
        """A zero-filled store with the same names and shapes (for gradients or state)."""
        return ParamStore(self.shapes, self.backend)

    def copy(self) -> dict[str, Array]:
        """A dict of independent copies (the store's views are overwritten by later steps)."""
        return {name: view.copy() for name, view in self._views.items()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v}" for k, v in self.shapes.items())
        return f"ParamStore({self.size} scalars; {inner})"
