"""Ctrl-C and SIGTERM in the ``scratchvae`` program: both end a command as KeyboardInterrupt
(SIGTERM as its subclass :class:`Terminated`), so that whatever Ctrl-C leaves intact (the last
checkpoint, no temporary file) SIGTERM leaves intact too; :func:`interrupted` says what was
kept, and returns the exit status a shell would report (130, 143)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .checkpoint import CHECKPOINT_NAME
from .cliargs import PROG, one_line
from .history import METRICS_NAME

__all__ = [
    "Terminated",
    "ignore_interrupts",
    "interrupted",
    "interrupts_deferred",
    "sigterm_interrupts",
]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt: whatever Ctrl-C
    leaves intact (the last checkpoint, no temporary file) SIGTERM leaves intact too."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (the previous handler after it)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted(out: Path | None, terminated: bool, trained: bool = False) -> int:
    """Say how the run ended and what it left in its folder ``out`` (None: a command without
    one; ``trained``: the run had finished, its figures had not); return 143 (SIGTERM) or 130
    (Ctrl-C)."""
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    shown = None if out is None else one_line(str(out))  # a newline in it: still one line
    if out is None:
        kept = ""
    elif trained:  # --resume would have nothing to train: say what is missing
        kept = f"; the run in {shown} had finished (checkpoint written); "
        kept += f"scratchvae plot {shown} draws its figures"
    elif (out / CHECKPOINT_NAME).exists():
        kept = f"; the last checkpoint in {shown} is intact (--resume continues)"
    else:  # a run stopped before its first checkpoint may have written its metrics
        kept = f"; no checkpoint was written in {shown} yet"
        if (out / METRICS_NAME).exists():  # kept, so a plain rerun is refused: say how
            kept += f" (--force starts the run over, replacing its {METRICS_NAME})"
    print(f"{PROG}: {what}{kept}", file=sys.stderr)
    return 128 + signal.SIGTERM if terminated else 130


def ignore_interrupts() -> None:
    """Ignore Ctrl-C and SIGTERM from now on: the process is ending (a second Ctrl-C while the
    interpreter shuts down printed a traceback from an exit handler)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def interrupts_deferred(again_at_once: bool = False) -> Iterator[None]:
    """Ctrl-C and SIGTERM wait for the end of the block, then act as they would have: files
    written together stay together (the benchmark's JSON and Markdown: each file is atomic,
    the set is not), and a compiler calling back into Python is not interrupted inside the
    callback (:mod:`scratchvae.kernels.compiling`). ``again_at_once``: a second signal in the
    block acts at once, and the first is then spent (a user who presses Ctrl-C twice means
    it). Outside the main thread a plain block; so for a signal whose handler was set outside
    Python (it could not be put back)."""
    caught: list[int] = []
    previous: dict[int, Any] = {}  # the handlers to put back (emptied when put back)
    handlers: dict[int, Any] = {}  # each signal's own handler, for acting later

    def restore() -> None:
        while previous:
            sig, handler = previous.popitem()
            signal.signal(sig, handler)

    def catch(signum: int, frame: Any) -> None:
        caught.append(signum)
        if again_at_once and len(caught) > 1 and not _in_a_callback(frame):
            caught.clear()
            restore()
            _act(signum, handlers[signum])

    try:
        for sig in _DEFERRED:
            if signal.getsignal(sig) is not None:
                handlers[sig] = previous[sig] = signal.signal(sig, catch)
    except ValueError:  # not the main thread
        restore()
        yield
        return
    except BaseException:  # a signal between two installs: none of them left behind
        restore()
        raise
    try:
        yield
    finally:
        restore()
        if caught:  # the first signal, as its own handler would have taken it
            _act(caught[0], handlers[caught[0]])


def _in_a_callback(frame: Any) -> bool:
    """Whether ``frame`` runs inside llvmlite's object-cache callbacks, called from C through
    ctypes while Numba compiles: an exception raised there is printed and dropped, so a signal
    that would raise one waits (:mod:`scratchvae.kernels.compiling`)."""
    while frame is not None:
        if frame.f_code.co_filename.endswith(_CALLBACKS):
            return True
        frame = frame.f_back
    return False


_CALLBACKS = ("executionengine.py",)  # llvmlite/binding/: _raw_object_cache_notify & co


def _act(signum: int, handler: Any) -> None:
    """Do what ``handler`` (a signal's handler before it was deferred) does with ``signum``."""
    if callable(handler):  # Python's: KeyboardInterrupt, Terminated (called in place)
        handler(signal.Signals(signum), None)
    elif handler != signal.SIG_IGN:  # the system's default: raised
        signal.raise_signal(signum)


_DEFERRED = (signal.SIGINT, signal.SIGTERM)
