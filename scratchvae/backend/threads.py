"""CPU threads: how many the training step may use, the pool that runs them, BLAS on one.

Why the step does not leave the threads to BLAS. OpenBLAS splits each matrix product across
its threads, and every thread waits (spinning) at the end of each product for the others. On
an idle machine that is fine; when another process takes a core, the product waits for a
thread that is not running, at every product of the step: with one busy competing process the
step kept about a third of its speed, with several about 1/40 (issue 15 has the numbers).

So on NumPy the step runs BLAS on one thread and splits the *batch* instead
(:mod:`scratchvae.parallel`): each worker thread runs the forward and backward passes of its
rows, products and kernels included, and the threads meet once per step, not at every
product. A worker that is descheduled delays that one meeting; the others do not spin.

``SCRATCHVAE_THREADS=N`` (or :func:`threads`) sets the number of threads; by default, the
cores this process may run on. :func:`run_parallel` runs a list of tasks on a persistent pool
(the caller runs the first), :func:`one_blas_thread` keeps BLAS on one thread inside a block.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any

__all__ = [
    "MIN_ROWS",
    "cpu_threads",
    "one_blas_thread",
    "row_chunks",
    "run_parallel",
    "threads",
    "usable_cores",
]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _from_environment() -> int | None:
    text = os.environ.get("SCRATCHVAE_THREADS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"SCRATCHVAE_THREADS must be a whole number >= 1, got {text!r}")
    return int(text)


_THREADS: int | None = _from_environment()


def cpu_threads() -> int:
    """The number of threads a training step on NumPy may use."""
    return _THREADS or usable_cores()


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Inside the block the step uses ``n`` threads (None: the default, the usable cores)."""
    global _THREADS
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"the number of threads must be a whole number >= 1, got {n!r}")
    before, _THREADS = _THREADS, n
    try:
        yield
    finally:
        _THREADS = before


MIN_ROWS = 128  # the fewest rows a chunk of a split batch may have (benchmarks/README.md)


def row_chunks(rows: int) -> list[tuple[int, int]] | None:
    """The chunks [(start, stop), ...] a batch of ``rows`` rows is split into across the
    step's threads (as many as threads, none under MIN_ROWS rows: each chunk costs a pass over
    all the parameters, its weight gradients, and the sum of the chunks one more; below
    MIN_ROWS rows a thread saves less than that), or None: the step runs whole."""
    n = min(cpu_threads(), rows // MIN_ROWS)
    if n < 2:
        return None
    bounds = [rows * i // n for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A persistent pool with at least ``workers`` threads (grown, never shrunk)."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(workers, "scratchvae"), workers
        return _POOL


def run_parallel(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Each task's result, in order: tasks[1:] on the pool, tasks[0] on the calling thread.
    The first exception raised (in task order) is raised again once all have finished."""
    if len(tasks) == 1:
        return [tasks[0]()]
    futures = [_pool(len(tasks) - 1).submit(t) for t in tasks[1:]]
    results: list[Any] = []
    error: BaseException | None = None
    try:
        results.append(tasks[0]())
    except BaseException as exc:  # noqa: BLE001 - raised below, after the others finish
        error = exc
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as exc:  # noqa: BLE001
            error = error or exc
    if error is not None:
        raise error
    return results


_CONTROLLER: Any = None


def one_blas_thread() -> Any:
    """A context in which BLAS (OpenBLAS, MKL, ... as threadpoolctl finds them) runs on one
    thread; a no-op without threadpoolctl."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - on first use
        except ImportError:  # pragma: no cover - a required dependency, but never fatal
            _CONTROLLER = False
        else:
            _CONTROLLER = ThreadpoolController()
    if _CONTROLLER is False:
        return nullcontext()
    return _CONTROLLER.limit(limits=1, user_api="blas")
