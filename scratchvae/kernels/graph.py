"""The training step replayed as one CUDA graph.

At the sizes of the training step the GPU spends more time waiting for the host to launch its
forty-odd kernels than running them. :class:`StepGraph` runs a step function ``fn(x, *args)``
once normally, and on the second consecutive call with the same key (the batch's shape and
dtype and the step's host arguments, e.g. the KL weight) captures it into a CUDA graph
(CuPy's stream capture); from then on each call copies the batch into the graph's static input
array and launches the graph: one host call for the whole step.

What makes a step capturable, and how this code keeps to it:

* nothing may synchronise with the host or call a library CuPy refuses to capture: the ops'
  CuPy kernels (:mod:`scratchvae.kernels.gpu`) do their products through the graph-safe cuBLAS
  binding (:mod:`scratchvae.kernels.cublas`), and the random numbers come from the counter-based
  generator (:mod:`scratchvae.kernels.gpu_random`), whose counter advances on the device, so
  every replay draws new eps;
* host numbers are frozen at capture: Adam's step count lives on the device, and a host
  argument that changes (the KL weight during warm-up) is part of the key, so the warm-up runs
  uncaptured and the graph is captured once the weight stops changing;
* memory: the warm-up call and the capture allocate from a memory pool of the graph's own,
  which nothing else allocates from; the addresses the graph writes to are never handed to
  anyone else, and replays allocate nothing.

When a capture fails, the step goes on uncaptured and :func:`StepGraph.fallback_reason` says
why (the trainer prints it once).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..backend import import_cupy

Array = Any


class StepGraph:
    """``fn(x, *args)`` replayed as a CUDA graph per key (see the module docstring)."""

    def __init__(self, fn: Callable[..., None]) -> None:
        xp = import_cupy()
        self.fn = fn
        self.pool = xp.cuda.MemoryPool()  # the graphs' own memory
        self.stream = xp.cuda.Stream(non_blocking=True)  # captures happen here
        self.graphs: dict[Hashable, tuple[Array, Any]] = {}  # key -> (static x, graph)
        self.pending: Hashable | None = None  # the key of the last uncaptured call
        self.fallback_reason: str | None = None  # why capturing stopped, if it did
        self.replays = 0

    def __call__(self, x: Array, *args: Any) -> None:
        key = (tuple(x.shape), x.dtype.str, *args)
        entry = self.graphs.get(key)
        if entry is not None:
            static_x, graph = entry
            static_x[...] = x  # one copy kernel on the current stream
            graph.launch()
            self.replays += 1
        elif self.fallback_reason is not None or key != self.pending:
            self.pending = key
            self.fn(x, *args)
        else:
            self._capture(key, x, args)

    def _capture(self, key: Hashable, x: Array, args: tuple) -> None:
        """This call's step (run normally, from the graph's pool), then its capture."""
        xp = import_cupy()
        with xp.cuda.using_allocator(self.pool.malloc):
            static_x = x.copy()
            self.fn(static_x, *args)  # the real step for this batch; fills the pool's cache
            self.stream.wait_event(xp.cuda.get_current_stream().record())
            graph = None
            with self.stream:
                try:
                    self.stream.begin_capture()
                except Exception as exc:  # noqa: BLE001 - a stream that cannot capture
                    self.fallback_reason = _why(exc)
                else:
                    graph = self._record(static_x, args)
            xp.cuda.get_current_stream().wait_event(self.stream.record())
        if graph is not None and self.fallback_reason is None:
            graph.upload()
            self.graphs[key] = (static_x, graph)

    def _record(self, static_x: Array, args: tuple) -> Any:
        """The step recorded on the capturing stream; the graph, or None (the reason kept)."""
        graph = None
        try:
            self.fn(static_x, *args)  # recorded, not run
        except Exception as exc:  # noqa: BLE001 - any failure means: run uncaptured
            self.fallback_reason = _why(exc)
        finally:
            try:
                graph = self.stream.end_capture()
            except Exception as exc:  # noqa: BLE001 - invalidated capture
                self.fallback_reason = self.fallback_reason or _why(exc)
                graph = None
        return graph


def _why(exc: BaseException) -> str:
    """An exception in one line: its type, then its message's first non-blank line (if any)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
