"""What the command line accepts: a parser whose errors are one line, and checked option types.

Every error of ``scratchvae`` (argparse's own included) is one line ``scratchvae: error: ...``
on stderr with exit status 2: :class:`OneLineParser` prints argparse's message that way, with
no usage block (``--help`` still prints the usage and every option).

The types below convert an option's text and refuse what the program could not use, so that
argparse names the flag: ``--seed -1`` ends in ``scratchvae: error: argument --seed: expected
a whole number >= 0, got '-1'``. A float option never accepts ``inf`` or ``nan``.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

__all__ = [
    "COUNT",
    "FRACTION",
    "NATURAL",
    "NON_NEGATIVE",
    "OPEN_UNIT",
    "POSITIVE",
    "CLIError",
    "OneLineParser",
    "checked",
    "error_message",
    "one_line",
    "one_line_error",
    "one_line_warnings",
    "script_parser",
    "typed_options",
    "up_to",
]

PROG = "scratchvae"


class CLIError(ValueError):
    """A bad command line or input (printed as one line, exit status 2)."""


def one_line(text: str) -> str:
    """``text`` with its line breaks and other control characters written as ``repr`` writes
    them (``\\n``, ``\\x1b``): a path holding a newline stays on its one line, and shows where
    the newline is, instead of ending the message there."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line_error(message: str, prog: str = PROG) -> str:
    """``scratchvae: error: <message>`` on one line (what every error prints; the examples
    give their script's name as ``prog``): control characters escaped by :func:`one_line`."""
    return f"{prog}: error: {one_line(message.strip()) or 'unknown error'}"


def stdout_gone(exc: BaseException) -> bool:
    """True when ``exc`` is the broken pipe of a reader of stdout that stopped reading
    (``scratchvae ... | head``): not an error to report. stdout is then pointed at the null
    device, so that Python's own flush at exit does not fail on it again."""
    if not isinstance(exc, BrokenPipeError) or not _reader_gone(sys.stdout):
        return False  # a pipe of another kind (a socket, a child process's): an error
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return True


def _reader_gone(stream: Any) -> bool:
    """Whether ``stream`` is a pipe whose reading end is closed (poll says POLLERR for it;
    where there is no poll, any broken pipe is taken to be stdout's, as Python's docs do)."""
    if not hasattr(select, "poll"):
        return True
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # closed, or no file descriptor (a StringIO)
        return False


def error_message(exc: BaseException) -> str:
    """What a user error says: its message (its type's name when empty), and for an OSError
    the file it concerns when the message does not name it. A message scratchvae wrote is kept
    whole, whatever its lines (a newline in a path it names): :func:`one_line_error` puts it on
    one line. A message of several lines raised by another library (a listing, a report) is
    its first line, and how many lines were cut."""
    msg = str(exc).strip() or type(exc).__name__
    filename = getattr(exc, "filename", None)
    # Python's own message names it by its repr: 'C:\\data\\x.npy', 'a\\tb', PosixPath('/a')
    named = filename and (str(filename) in msg or repr(filename) in msg)
    if isinstance(exc, OSError) and filename and not named:
        msg = f"{msg}: {filename}"
    first, *rest = msg.splitlines()
    if rest and not _raised_by_scratchvae(exc):
        cut = len(rest)
        msg = f"{first.rstrip()} ({cut} more line{'s' * (cut > 1)} of the message cut)"
    return msg


_PACKAGE = os.path.dirname(os.path.abspath(__file__))  # scratchvae/


def _raised_by_scratchvae(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by scratchvae's own code (the last frame of its traceback is
    in the package), not by a library it called; True when there is no traceback."""
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = os.path.abspath(tb.tb_frame.f_code.co_filename)
    return where.startswith(_PACKAGE + os.sep)


@contextmanager
def one_line_warnings(category: type[Warning]) -> Iterator[None]:
    """Inside the block a warning of ``category`` is one line ``scratchvae: <message>`` on
    stderr, each time it is raised (Python would add its file, line and source line); other
    warnings show as Python shows them."""
    with warnings.catch_warnings():
        shown, one_lined = warnings.showwarning, category

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:  # warnings.showwarning's signature
            if issubclass(category, one_lined):
                print(f"{PROG}: {one_line(str(message))}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", category)
        yield


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit status 2 (subparsers made
    from it are of the same class), ``scratchvae: error: ...`` unless ``error_prog`` names
    another program (:func:`script_parser`)."""

    error_prog = PROG

    def error(self, message: str) -> NoReturn:
        self.exit(2, one_line_error(message, self.error_prog) + "\n")


def script_parser(script: str, description: str | None = None) -> OneLineParser:
    """The parser of a script (``__file__`` of one under ``benchmarks/``): its errors one line
    ``<script>.py: error: ...``, exit status 2, wherever it is run from."""
    parser = OneLineParser(prog=os.path.basename(script), description=description)
    parser.error_prog = parser.prog
    return parser


_UNTYPED = object()  # the default of every option while typed_options parses


def typed_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The ``dest`` of every option typed on ``argv``, at whatever value: ``argv`` parsed
    again by ``parser`` (a fresh one, changed here) with every option's default, its
    subcommands' included, replaced by a marker. Comparing a value with its default cannot
    tell ``--lr 0.001`` (typed, the default) from no ``--lr``; this can."""
    parsers = [parser]
    while parsers:
        p = parsers.pop()
        for action in p._actions:  # noqa: SLF001 - argparse keeps no public list of them
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                parsers.extend(action.choices.values())
            elif action.option_strings:
                action.default = _UNTYPED
    parsed = vars(parser.parse_args(argv))
    return {dest for dest, value in parsed.items() if value is not _UNTYPED}


def checked(convert: type, ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)``, refused unless finite and ``ok(value)``;
    argparse prefixes the message with the flag (``argument --lr: expected ...``)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        finite = value is not None and (convert is not float or math.isfinite(value))
        if not finite or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse shows the type's name in a few of its messages
    return parse


COUNT = checked(int, lambda v: v >= 1, "a whole number >= 1")
NATURAL = checked(int, lambda v: v >= 0, "a whole number >= 0")
POSITIVE = checked(float, lambda v: v > 0, "a finite number > 0")
NON_NEGATIVE = checked(float, lambda v: v >= 0, "a finite number >= 0")
FRACTION = checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
OPEN_UNIT = checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def up_to(limit: int) -> Callable[[str], Any]:
    """A whole number from 1 to ``limit``: a count whose largest values would take minutes
    and gigabytes to make something no one can use (``sample --n``)."""
    return checked(int, lambda v: 1 <= v <= limit, f"a whole number from 1 to {limit}")
