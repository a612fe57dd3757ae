"""Ctrl-C while Numba compiles: Numba's compiler calls back into Python (llvmlite's object
cache, through ctypes), and a KeyboardInterrupt raised inside a ctypes callback is printed as
"Exception ignored on calling ctypes callback function" and dropped. A SIGTERM sent to a
benchmark while it compiled its kernels printed that traceback and the program went on
(tests/bench/test_bench_interrupts.py, under load). The signals now wait for the compiler
lock's release (scratchvae/kernels/compiling.py).

A C function calling back into Python stands in for the compiler here: libc's qsort, with a
comparison that receives the Ctrl-C."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

import pytest

pytest.importorskip("numba")
from numba.core import event  # noqa: E402

from scratchvae.kernels import compiling, cpu  # noqa: E402, F401 - cpu registers the listener

LIBC = ctypes.util.find_library("c")
pytestmark = pytest.mark.skipif(LIBC is None, reason="needs the C library's qsort")
COMPARE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))


def _sort_with_a_ctrl_c() -> None:
    """qsort calling back into Python, which gets a Ctrl-C at its first comparison."""
    pressed = []

    def compare(a, b) -> int:
        if not pressed:
            pressed.append(True)
            signal.raise_signal(signal.SIGINT)  # handled at the callback's next instruction
        return a[0] - b[0]

    values = (ctypes.c_int * 4)(3, 1, 2, 0)
    ctypes.CDLL(LIBC).qsort(values, len(values), ctypes.sizeof(ctypes.c_int), COMPARE(compare))


@pytest.fixture
def ctrl_c(monkeypatch):
    """Python's own Ctrl-C handler, and the exceptions a callback dropped."""
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield dropped
    signal.signal(signal.SIGINT, before)


def test_without_the_listener_a_callbacks_ctrl_c_is_dropped(ctrl_c) -> None:
    """The defect itself, with the listener taken away: the KeyboardInterrupt never arrives."""
    event.unregister("numba:compiler_lock", compiling._LISTENER)
    try:
        event.start_event("numba:compiler_lock")
        _sort_with_a_ctrl_c()
        event.end_event("numba:compiler_lock")
    finally:
        event.register("numba:compiler_lock", compiling._LISTENER)
    assert ctrl_c == [KeyboardInterrupt]


def test_a_ctrl_c_during_a_compile_acts_when_the_compiler_lock_is_released(ctrl_c) -> None:
    event.start_event("numba:compiler_lock")
    event.start_event("numba:compiler_lock")  # the lock is re-entrant: compiles nest
    _sort_with_a_ctrl_c()
    event.end_event("numba:compiler_lock")  # still inside the outer compile
    with pytest.raises(KeyboardInterrupt):
        event.end_event("numba:compiler_lock")
    assert ctrl_c == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_the_listener_is_registered_once() -> None:
    listeners = event._registered["numba:compiler_lock"]
    compiling.defer_interrupts_while_compiling()
    assert listeners.count(compiling._LISTENER) == 1


def test_a_second_ctrl_c_during_a_compile_acts_at_once(ctrl_c) -> None:
    """A compile of the user's own may take long: the first Ctrl-C waits for its end, a
    second one interrupts it (found by review: one press waited 17 s)."""
    event.start_event("numba:compiler_lock")
    signal.raise_signal(signal.SIGINT)  # the first: deferred
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # the second: Python's own handler again
    event.end_event("numba:compiler_lock")  # nothing pending: the first press is spent
    assert compiling._LISTENER.depth == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_set_outside_python_is_left_alone(ctrl_c, monkeypatch) -> None:
    """getsignal() is None for a handler a host program set in C: putting None back raised
    TypeError out of Numba's lock release, and left the catcher installed for good."""
    from scratchvae.interrupts import interrupts_deferred

    real = signal.getsignal
    monkeypatch.setattr(signal, "getsignal", lambda s: None if s == signal.SIGTERM else real(s))
    before = real(signal.SIGTERM)
    with interrupts_deferred():
        assert real(signal.SIGTERM) is before  # not replaced: it could not be put back
        assert real(signal.SIGINT) is not signal.default_int_handler  # deferred
    assert real(signal.SIGINT) is signal.default_int_handler


def test_a_failure_to_start_deferring_does_not_switch_it_off(ctrl_c, monkeypatch) -> None:
    """The depth was counted before the handlers were installed: an interrupt landing there
    left it at 1, and no later compile deferred anything."""
    from contextlib import contextmanager

    real = compiling.interrupts_deferred

    @contextmanager
    def failing(**kwargs):
        raise KeyboardInterrupt
        yield  # pragma: no cover

    monkeypatch.setattr(compiling, "interrupts_deferred", failing)
    with pytest.raises(KeyboardInterrupt):
        event.start_event("numba:compiler_lock")  # as Numba's acquire() would: no end follows
    assert compiling._LISTENER.depth == 0
    monkeypatch.setattr(compiling, "interrupts_deferred", real)
    test_a_ctrl_c_during_a_compile_acts_when_the_compiler_lock_is_released(ctrl_c)
