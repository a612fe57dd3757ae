"""Progress on the command line: a bar in a terminal, plain lines in a log file.

A carriage-return bar is for a person watching a terminal; written to a file it becomes
kilobytes of half-lines. :class:`Progress` shows a tqdm bar only when asked to and its stream
(stderr) is a terminal; otherwise it shows no bar, and :meth:`Progress.status` writes a plain
line now and then instead (after 5 s, then every tenth of the work or every minute).
:meth:`Progress.line` writes a line in both cases (above the bar when there is one): the
trainer's line per epoch (:func:`epoch_line`). :class:`Stages` shows the stages of
:func:`scratchvae.evaluate.evaluate`. :func:`quiet_float_warnings` keeps NumPy's overflow
warnings of a diverging step off the console: the trainer reports the divergence itself.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from collections.abc import Callable
from typing import IO, Any, TypeVar

from tqdm import tqdm

__all__ = [
    "Progress",
    "Stages",
    "duration",
    "epoch_line",
    "is_terminal",
    "postfix",
    "quiet_float_warnings",
]

STATUS_FIRST = 5.0  # without a bar: a first status line after this many seconds (an estimate),
STATUS_FRACTION = 0.1  # then one every tenth of the work ...
STATUS_SECONDS = 60.0  # ... or every minute, whichever comes first


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, None)."""
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def duration(seconds: float) -> str:
    """'42 s', '12 min', '3.5 h', '2.0 days': a rough length of time."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Progress:
    """``total`` units of work: a bar when ``bar`` and ``stream`` is a terminal, else status
    lines; ``lines`` (default stdout) is where :meth:`line` writes."""

    def __init__(
        self,
        total: int,
        desc: str = "",
        unit: str = "ex",
        bar: bool = True,
        stream: IO[str] | None = None,
        lines: IO[str] | None = None,
        bar_format: str | None = None,
    ) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.stream = sys.stderr if stream is None else stream
        self.lines = lines
        self.shows_bar = bar and is_terminal(self.stream)
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=self.stream,
            disable=not self.shows_bar,
            bar_format=bar_format,
        )
        self._t0 = self._last_t = time.perf_counter()
        self._last_done, self._interval = 0, STATUS_FIRST

    def update(self, n: int) -> None:
        self.done += n
        self._bar.update(n)

    def describe(self, desc: str) -> None:
        self.desc = desc
        self._bar.set_description(desc, refresh=False)

    def postfix(self, values: dict[str, str]) -> None:
        self._bar.set_postfix(values, refresh=False)

    def line(self, text: str) -> None:
        """One line to ``lines`` (stdout), above the bar if there is one."""
        out = sys.stdout if self.lines is None else self.lines
        if self.shows_bar:
            self._bar.write(text, file=out)
        else:
            print(text, file=out, flush=True)

    def status(self, what: str) -> None:
        """Without a bar: '<what>: 40% (12 s, about 18 s left)' on the stream, once 5 s have
        passed since the start, then when a tenth of the work or a minute has passed since the
        last line; nothing once the work is done, or with a bar (it shows as much)."""
        if self.shows_bar or self.total <= 0 or self.done >= self.total:
            return
        now = time.perf_counter()
        if now - self._t0 < STATUS_FIRST:  # work that ends within seconds: no status lines
            return
        step = (self.done - self._last_done) / self.total
        if step < STATUS_FRACTION and now - self._last_t < self._interval:
            return
        self._last_done, self._last_t, self._interval = self.done, now, STATUS_SECONDS
        spent = now - self._t0
        left = spent * (self.total - self.done) / max(self.done, 1)
        print(
            f"{what}: {100 * self.done / self.total:.0f}% ({duration(spent)}, about "
            f"{duration(left)} left)",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stages:
    """A ``progress(stage, done, total)`` callback (:func:`scratchvae.evaluate.evaluate`'s):
    each stage gets a bar in a terminal, else a line when it starts and status lines while it
    runs. ``prefix`` begins each line ('scratchvae: ')."""

    def __init__(
        self, bar: bool = True, prefix: str = "", unit: str = "", stream: Any = None
    ) -> None:
        self.bar, self.prefix, self.unit, self.stream = bar, prefix, unit, stream
        self.stage: str | None = None
        self.current: Progress | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.current = Progress(total, stage, self.unit, self.bar, self.stream)
            if not self.current.shows_bar:
                print(f"{self.prefix}{stage} ...", file=self.current.stream, flush=True)
        assert self.current is not None
        self.current.update(done - self.current.done)
        self.current.status(f"{self.prefix}{stage}")

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.stage = self.current = None


# ============================================================================ training lines
def postfix(means: dict[str, float], rate: float) -> dict[str, str]:
    """The bar's postfix: the loss terms so far (nats per example) and the speed."""
    shown = {k: f"{v:.2f}" for k, v in means.items() if k in ("loss", "recon", "kl", "sparsity")}
    return {**shown, "samples/s": f"{rate:,.0f}"}


def epoch_line(r: dict[str, Any], epochs: int, warmup: tuple[float, float] | None = None) -> str:
    """'epoch 10/100  train loss 27.04 (recon 25.25, kl 1.79)  val loss 27.50 (recon 25.61,
    kl 1.89)  [41,503 samples/s; nats per example]' from a history record. ``warmup``: the
    KL weights of the epoch's first and last steps when they were below their final value:
    the training loss is then recon + w kl with those w (the validation loss: the final
    weight), and the line says so: '(recon 47.97, kl 0.77; KL weight 0.00 -> 0.89 in
    warm-up)'."""

    def terms(split: str) -> str:
        parts = {k.split("_", 1)[1]: v for k, v in r.items() if k.startswith(split)}
        if "loss" not in parts:
            return ""
        rest = ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if k != "loss")
        if split == "train_" and warmup is not None:
            rest += f"; KL weight {warmup[0]:.2g} -> {warmup[1]:.2g} in warm-up"  # 0.001: not 0.00
        return f"  {split.rstrip('_')} loss {parts['loss']:.2f}" + (f" ({rest})" if rest else "")

    return (
        f"epoch {r['epoch']}/{epochs}{terms('train_')}{terms('val_')}  "
        f"[{r['samples_per_s']:,.0f} samples/s; nats per example]"
    )


_FLOAT_WARNINGS = r"(overflow|invalid value|divide by zero) encountered"
F = TypeVar("F", bound=Callable[..., Any])


def quiet_float_warnings(fn: F) -> F:
    """``fn`` run with NumPy's floating-point RuntimeWarnings (overflow, invalid value, divide
    by zero) silenced: a loss that overflows is reported once by its caller (the trainer's
    :class:`~scratchvae.train.TrainingDiverged`), not first as a screen of warnings."""

    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _FLOAT_WARNINGS, RuntimeWarning)
            return fn(*args, **kwargs)

    return quiet  # type: ignore[return-value]
