"""Parameters (and gradients) as one flat buffer with named views.

``store["encoder.0.W"]`` is a view into ``store.flat``: reading and writing through the name
changes the flat buffer, and the optimizer updates every parameter with a few whole-buffer
operations on ``flat``. Gradients use a second store with the same names and layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from .backend import Backend, get_xp

Array = Any


def _total_size(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Scalars in all the named shapes together."""
    return sum(math.prod(int(n) for n in shape) for shape in shapes.values())


class ParamStore(Mapping):
    """An ordered mapping ``name -> array view`` over one contiguous buffer ``flat``."""

    def __init__(
        self, shapes: Mapping[str, tuple[int, ...]], backend: Backend, flat: Array | None = None
    ) -> None:
        """Zero-filled, or over ``flat`` (a 1-d array of the total size, used as it is)."""
        self.shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
        self.backend = backend
        size = _total_size(self.shapes)
        if flat is not None and tuple(flat.shape) != (size,):
            raise ValueError(f"flat must have shape ({size},), got {tuple(flat.shape)}")
        self.flat = backend.zeros(size) if flat is None else flat
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

    @classmethod
    def with_gradients(
        cls, shapes: Mapping[str, tuple[int, ...]], backend: Backend
    ) -> tuple[ParamStore, ParamStore]:
        """A zero-filled (params, grads) pair whose flat buffers are the two rows of one
        allocation. Why one: NumPy asks Linux for transparent huge pages (2 MB instead of
        4 KB) for an allocation of 4 MB or more, and the training step streams through the
        parameters, the gradients and the optimizer's moments (10 MB for the MNIST VAE in
        float32) every step; with huge pages that takes far fewer TLB misses (the measurement:
        benchmarks/README.md). Refused (BackendError) when training them would not fit in
        the memory available: parameters, gradients and Adam's two moments."""
        size = _total_size(shapes)
        need = 4 * size * backend.dtype.itemsize
        what = f"training a model of {size:,} parameters ({backend.dtype.name}: parameters, "
        backend.check_memory(need, what + "gradients and Adam's two moments)")
        both = backend.zeros((2, size))
        return cls(shapes, backend, flat=both[0]), cls(shapes, backend, flat=both[1])

    def copy(self) -> dict[str, Array]:
        """A dict of independent copies (the store's views are overwritten by later steps)."""
        return {name: view.copy() for name, view in self._views.items()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v}" for k, v in self.shapes.items())
        return f"ParamStore({self.size} scalars; {inner})"


class Workspace:
    """Named arrays kept from one training step to the next: the step's scratch and outputs.

    ``ws("h", (B, 400), like=x)`` returns the same array every step, so a step allocates
    nothing large. There is one array per name, shape and dtype (a short last batch gets its
    own), and none is ever dropped: a step replayed from a CUDA graph writes to the addresses it
    was captured with, which must stay this workspace's (:mod:`scratchvae.kernels.graph`).
    Not allocating is not only the saved ``malloc``: large arrays come from ``mmap``, and
    returning them to the system interrupts every core the process runs on, BLAS threads
    included (``benchmarks/README.md`` has the measurement).

    ``ws.scope("encoder.0")`` is the same store seen under a prefix, so every layer's op names
    its arrays "h", "dx", ... without clashing. Whatever an op writes here is valid until the
    next call of the same op in the same scope: :meth:`~scratchvae.models.Model.loss_and_grads`
    uses a workspace because its cache never leaves the call. An op given ``ws=None`` allocates.
    """

    def __init__(self, prefix: str = "", arrays: dict[tuple, Array] | None = None) -> None:
        self.prefix = prefix
        self._arrays: dict[tuple, Array] = {} if arrays is None else arrays
        self._scopes: dict[str, Workspace] = {}

    def __call__(self, name: str, shape: tuple[int, ...], like: Array) -> Array:
        """The array ``name`` of ``shape`` with ``like``'s dtype and array module."""
        shape = shape if type(shape) is tuple else tuple(shape)
        key = (self.prefix + name, shape, like.dtype)
        a = self._arrays.get(key)
        if a is None:
            a = self._arrays[key] = get_xp(like).empty(shape, dtype=like.dtype)
        return a

    def scope(self, name: str) -> Workspace:
        """This store under the prefix ``<prefix><name>.`` (made once, then looked up)."""
        ws = self._scopes.get(name)
        if ws is None:
            ws = self._scopes[name] = Workspace(f"{self.prefix}{name}.", self._arrays)
        return ws

    def __len__(self) -> int:
        return len(self._arrays)

    def names(self) -> set[str]:
        """The names of the arrays held (each with its prefix), whatever their shapes."""
        return {name for name, _, _ in self._arrays}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())


def buffer(ws: Workspace | None, name: str, shape: tuple[int, ...], like: Array) -> Array:
    """Where an op writes its result ``name``: ``ws``'s reused array, or a new one (ws None)."""
    if ws is None:
        return get_xp(like).empty(shape, dtype=like.dtype)
    return ws(name, shape, like)


def scope(ws: Workspace | None, name: str) -> Workspace | None:
    """``ws.scope(name)``, or None without a workspace."""
    return None if ws is None else ws.scope(name)
