"""CPU threads: how many the training step may use, the pool that runs them, BLAS on one.

Why the step does not leave the threads to BLAS. OpenBLAS splits each matrix product across
its threads, and every thread waits (spinning) at the end of each product for the others. On
an idle machine that is fine; when another process takes a core, the product waits for a
thread that is not running, at every product of the step: with one busy competing process the
step kept about a third of its speed, with several about 1/40 (benchmarks/README.md, "CPU
threads", has the numbers).

So on NumPy the step runs BLAS on one thread and splits the *batch* instead
(:mod:`scratchvae.parallel`): each worker thread runs the forward and backward passes of its
rows, products and kernels included, and the threads meet once per step, not at every
product. A worker that is descheduled delays that one meeting; the others do not spin.

``SCRATCHVAE_THREADS=N`` (or :func:`threads`) sets the number of threads; by default, the
cores this process may run on. :func:`run_parallel` runs a list of tasks on a persistent pool
(the caller runs the first), :func:`one_blas_thread` keeps BLAS on one thread inside a block.

A training run (:func:`training_threads`, around :meth:`scratchvae.train.Trainer.fit`) picks
its thread count from the cores that are free: at its start (from 0.2 s of ``/proc/stat``) and
again after every epoch (from the epoch's own), it counts the cores other processes kept busy
and uses the rest, for the split and for BLAS. On a busy machine every thread then has a core:
with one busy process on a 2-core machine, one thread keeps about 75% of the idle two-thread
speed at batch 128, where two threads kept under a half; two trainings side by side, each on
one thread, each keep 0.9 of a lone one, against 0.2 on two threads (benchmarks/README.md).
The numbers of a step depend on the thread count (BLAS on two threads sums in another order
than on one), so each epoch's count is in the run's metrics, and ``SCRATCHVAE_THREADS=N`` pins
it: then the same seed gives the same numbers whatever else the machine is doing.
"""

from __future__ import annotations

import os
import threading
import time
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
    "training_threads",
    "usable_core_ids",
    "usable_cores",
]


def usable_core_ids() -> list[int]:
    """The cores this process may run on (its CPU affinity; all of them where unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many cores this process may run on (:func:`usable_core_ids`)."""
    return len(usable_core_ids())


def _from_environment() -> int | None:
    """SCRATCHVAE_THREADS as a number, None when unset or "auto" (a run picks the count)."""
    text = os.environ.get("SCRATCHVAE_THREADS", "").strip()
    if not text or text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"SCRATCHVAE_THREADS must be a whole number >= 1 or auto, got {text!r}")
    return int(text)


# read once, at import; a bad value is reported when a count is needed (by the training run:
# one line), not raised by ``import scratchvae`` as a traceback before any command could
try:
    _THREADS: int | None = _from_environment()
    _BAD_ENVIRONMENT: str | None = None
except ValueError as exc:
    _THREADS, _BAD_ENVIRONMENT = None, str(exc)


def _pinned() -> int | None:
    """The count set by SCRATCHVAE_THREADS or :func:`threads` (None: not set); a bad
    SCRATCHVAE_THREADS raises its one-line ValueError here."""
    if _THREADS is None and _BAD_ENVIRONMENT is not None:
        raise ValueError(_BAD_ENVIRONMENT)
    return _THREADS


def cpu_threads() -> int:
    """The number of threads a training step on NumPy may use."""
    return _pinned() or usable_cores()


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


def _controller() -> Any:
    """threadpoolctl's controller of this process's BLAS (False without threadpoolctl)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - on first use
        except ImportError:  # pragma: no cover - a required dependency, but never fatal
            _CONTROLLER = False
        else:
            _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def one_blas_thread() -> Any:
    """A context in which BLAS (OpenBLAS, MKL, ... as threadpoolctl finds them) runs on one
    thread; a no-op without threadpoolctl."""
    controller = _controller()
    return controller.limit(limits=1, user_api="blas") if controller else nullcontext()


# ============================================================================ free cores
def _cpu_ticks(stat: str | None = None) -> tuple[int, int] | None:
    """(busy, all) clock ticks of this process's usable cores since boot, from /proc/stat's
    per-core lines (user nice system idle iowait irq softirq steal: all but idle and iowait
    are busy; steal too, a core the hypervisor gave away); None where there is none."""
    if stat is None:
        try:
            with open("/proc/stat") as f:
                stat = f.read()
        except OSError:  # pragma: no cover - not Linux
            return None
    try:
        cores = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover
        cores = None
    busy = total = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cores is not None and int(name[3:]) not in cores:
            continue
        ticks = [int(v) for v in rest.split()[:8]]
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


class LoadProbe:
    """How many cores other processes kept busy since the last look: the usable cores' busy
    time (/proc/stat) less this process's own CPU time, over the wall time between looks."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self) -> None:
        self._last = self._now()

    @staticmethod
    def _now() -> tuple[tuple[int, int] | None, float, float]:
        return _cpu_ticks(), time.process_time(), time.perf_counter()

    def others(self) -> float | None:
        """Cores busy with other processes since the last call (or creation); None unknown."""
        (ticks0, own0, wall0), now = self._last, self._now()
        self._last = now
        ticks, own, wall = now
        if ticks is None or ticks0 is None or wall - wall0 < 0.05:
            return None
        busy_s = (ticks[0] - ticks0[0]) / self.HZ
        return max(0.0, (busy_s - (own - own0)) / (wall - wall0))


def free_threads(others: float | None, cores: int) -> int:
    """The threads to use when ``others`` cores are busy elsewhere: the rest, at least one
    (a core counts as taken when over half of it is)."""
    if others is None:
        return cores
    return max(1, cores - int(others + 0.5))


class ThreadChoice:
    """The thread count of a training run: pinned (SCRATCHVAE_THREADS=N, :func:`threads`) or
    chosen from the free cores by :meth:`update`; ``count`` is the current one, ``busy`` the
    cores found busy with other work (None: not measured)."""

    busy: float | None

    def __init__(self, pinned: int | None, probe: LoadProbe | None = None) -> None:
        self.pinned, self.probe = pinned, probe
        self.count, self.busy = pinned or usable_cores(), None
        self._limiter: Any = None
        self._said = usable_cores()

    def news(self) -> str | None:
        """A line to show when the chosen count differs from the last one shown (at first,
        from the usable cores), else None."""
        if self.busy is None or self.count == self._said:
            return None
        self._said = self.count
        return (f"scratchvae: {self.count} CPU thread(s): {self.busy:.1f} of {usable_cores()} "
                "cores busy with other work (SCRATCHVAE_THREADS=N pins the count)")  # fmt: skip

    def update(self) -> int:
        """Choose again from the cores busy since the last call; set the split's and BLAS's
        thread count to it. Returns the count."""
        if self.probe is not None:
            self.busy = self.probe.others()
            self.count = free_threads(self.busy, usable_cores())
        global _THREADS
        _THREADS = self.count
        self._limit_blas(self.count)
        return self.count

    def _limit_blas(self, n: int) -> None:
        controller = _controller()
        if controller:
            limiter = controller.limit(limits=n, user_api="blas")
            self._limiter = self._limiter or limiter  # the first holds the limits before

    def restore(self) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()


@contextmanager
def training_threads(numpy: bool = True, start_probe: float = 0.2) -> Iterator[ThreadChoice]:
    """The thread count of a training run on NumPy (``numpy`` False: a no-op choice): pinned
    when SCRATCHVAE_THREADS or :func:`threads` says so, else chosen from ``start_probe``
    seconds of the machine's load now; the caller calls ``update()`` again after each epoch.
    The split's count and BLAS's are restored on exit."""
    global _THREADS
    before = _pinned() if numpy else _THREADS
    auto = numpy and before is None
    choice = ThreadChoice(before, LoadProbe() if auto else None)
    if numpy:
        if auto:
            time.sleep(start_probe)
        choice.update()
    try:
        yield choice
    finally:
        choice.restore()
        _THREADS = before
