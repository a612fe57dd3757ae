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
import time

import pytest

pytest.importorskip("numba")
from numba.core import event  # noqa: E402
from numba.core.compiler_lock import global_compiler_lock as LOCK  # noqa: E402

from scratchvae.kernels import compiling, cpu  # noqa: E402, F401 - cpu registers the listener

LIBC = ctypes.util.find_library("c")
pytestmark = pytest.mark.skipif(LIBC is None, reason="needs the C library's qsort")
COMPARE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))


def _sort_with_a_ctrl_c(presses: int = 1) -> None:
    """qsort calling back into Python, which gets ``presses`` Ctrl-Cs at its first comparison."""
    pressed = []

    def compare(a, b) -> int:
        if not pressed:
            pressed.append(True)
            for _ in range(presses):
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
        LOCK.acquire()  # its start event, then the lock
        _sort_with_a_ctrl_c()
        LOCK.release()  # the lock, then its end event
    finally:
        event.register("numba:compiler_lock", compiling._LISTENER)
    assert ctrl_c == [KeyboardInterrupt]


def test_a_ctrl_c_during_a_compile_acts_when_the_compiler_lock_is_released(ctrl_c) -> None:
    LOCK.acquire()
    LOCK.acquire()  # the lock is re-entrant: compiles nest
    _sort_with_a_ctrl_c()
    LOCK.release()  # still inside the outer compile
    with pytest.raises(KeyboardInterrupt):
        LOCK.release()  # released, then the end event: the Ctrl-C acts with no lock held
    assert not LOCK.is_locked()
    assert ctrl_c == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_the_listener_is_registered_once() -> None:
    listeners = event._registered["numba:compiler_lock"]
    compiling.defer_interrupts_while_compiling()
    assert listeners.count(compiling._LISTENER) == 1


def test_a_second_ctrl_c_during_a_compile_acts_at_once(ctrl_c) -> None:
    """A compile of the user's own may take long: the first Ctrl-C waits for its end, a
    second one interrupts it (found by review: one press waited 17 s)."""
    LOCK.acquire()
    signal.raise_signal(signal.SIGINT)  # the first: deferred
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # the second: Python's own handler again
    LOCK.release()  # nothing pending: the first press is spent
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
        LOCK.acquire()  # raises at its start event, before the lock: no end event follows
    assert compiling._LISTENER.depth == 0
    monkeypatch.setattr(compiling, "interrupts_deferred", real)
    test_a_ctrl_c_during_a_compile_acts_when_the_compiler_lock_is_released(ctrl_c)


def test_a_second_ctrl_c_inside_the_compilers_callback_waits(ctrl_c, monkeypatch) -> None:
    """Acting at once inside llvmlite's ctypes callback would lose both presses (the
    exception printed and dropped there): there the second one waits too (review)."""
    from scratchvae import interrupts

    monkeypatch.setattr(interrupts, "_CALLBACKS", (__file__,))  # this file's callback stands in
    LOCK.acquire()
    _sort_with_a_ctrl_c(presses=2)
    with pytest.raises(KeyboardInterrupt):
        LOCK.release()
    assert ctrl_c == []


def test_a_second_ctrl_c_while_waiting_for_the_lock_does_not_switch_deferring_off(
    ctrl_c,
) -> None:
    """Waiting for another thread's compile, a second press raised out of the lock's acquire()
    with no end event: the count stayed at 1 and no later compile deferred anything."""
    import threading

    held, go = threading.Event(), threading.Event()

    def other_compile() -> None:
        with LOCK:
            held.set()
            go.wait(10)

    worker = threading.Thread(target=other_compile)
    worker.start()
    held.wait(10)
    main = threading.main_thread().ident  # a signal to the main thread interrupts its wait

    def press_twice() -> None:
        for _ in range(2):
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.1)

    threading.Timer(0.2, press_twice).start()
    with pytest.raises(KeyboardInterrupt):
        LOCK.acquire()  # waits; the second press raises out of it
    go.set()
    worker.join(10)
    test_a_ctrl_c_during_a_compile_acts_when_the_compiler_lock_is_released(ctrl_c)
