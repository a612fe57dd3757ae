"""Ctrl-C and SIGTERM while Numba compiles a kernel (or loads it from its disk cache).

Numba's compiler calls back into Python while it works (llvmlite's object cache, through
ctypes). A Ctrl-C or SIGTERM handled in such a callback raised KeyboardInterrupt inside it,
where ctypes printed "Exception ignored on calling ctypes callback function" and a traceback,
and dropped it: the program went on as if nothing had been pressed. While the main thread
holds Numba's compiler lock, the first of the two signals now waits for the lock's release,
then acts as it would have (:func:`scratchvae.interrupts.interrupts_deferred`): one line, exit
status 130 or 143. A second one acts at once (a long compile of the user's own is not made
uninterruptible). The lock is released before its end event is sent, so the exception is
raised with no lock held. A compile in another thread needs nothing: Python runs signal
handlers in the main thread.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Any

from ..interrupts import interrupts_deferred

try:  # an optional dependency, as in kernels/cpu.py
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.event import Listener, register
except ImportError:  # pragma: no cover - depends on the environment
    Listener = register = global_compiler_lock = None  # type: ignore[assignment, misc, unused-ignore]

__all__ = ["defer_interrupts_while_compiling"]


class _Deferring(Listener or object):  # type: ignore[misc]
    """A Numba event listener: interrupts deferred from the main thread's first
    ``numba:compiler_lock`` start to its last end (the lock is re-entrant: compiles nest)."""

    def __init__(self) -> None:
        self.depth = 0
        self.stack: ExitStack | None = None

    def on_start(self, _: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            if self.depth and not global_compiler_lock.is_locked():  # a stale count: a second
                self.depth, self.stack = 0, None  # Ctrl-C raised while waiting for the lock
            if self.depth == 0:  # entered before it is counted: a failure leaves depth 0
                stack = ExitStack()
                stack.enter_context(interrupts_deferred(again_at_once=True))
                self.stack = stack
            self.depth += 1

    def on_end(self, _: Any) -> None:
        if threading.current_thread() is threading.main_thread() and self.depth:
            self.depth -= 1
            if self.depth == 0 and self.stack is not None:
                stack, self.stack = self.stack, None
                stack.close()  # a signal caught meanwhile acts now (KeyboardInterrupt here)


_LISTENER: _Deferring | None = None


def defer_interrupts_while_compiling() -> None:
    """Register the listener with Numba once (a no-op without Numba)."""
    global _LISTENER
    if register is None or _LISTENER is not None:
        return
    _LISTENER = _Deferring()
    register("numba:compiler_lock", _LISTENER)
