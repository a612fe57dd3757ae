"""scratchvae.progress: a bar only on a terminal, plain status lines otherwise, the epoch line,
the stages of an evaluation, and NumPy's overflow warnings kept off the console."""

from __future__ import annotations

import io
import warnings

import numpy as np  # numpy-boundary: provoking NumPy's floating-point warnings

from scratchvae import progress
from scratchvae.progress import Progress, Stages, duration, epoch_line, quiet_float_warnings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_only_when_asked_and_the_stream_is_a_terminal():
    assert Progress(10, stream=Terminal()).shows_bar
    assert not Progress(10, stream=Terminal(), bar=False).shows_bar
    assert not Progress(10, stream=io.StringIO()).shows_bar  # a log file
    assert not progress.is_terminal(None)
    closed = io.StringIO()
    closed.close()  # isatty raises ValueError on a closed file
    assert not progress.is_terminal(closed) and not progress.is_terminal(object())


def test_stages_on_a_terminal_are_bars_without_start_lines():
    term = Terminal()
    stages = Stages(prefix="scratchvae: ", stream=term)
    stages("ELBO", 0, 10)
    stages("ELBO", 10, 10)
    stages("importance-weighted bound, k=5", 50, 50)
    stages.close()
    text = term.getvalue()
    assert "ELBO" in text and "%|" in text and " ...\n" not in text


def test_a_bar_goes_to_the_terminal_and_lines_above_it():
    term, out = Terminal(), io.StringIO()
    with Progress(4, "epoch 1/1", stream=term, lines=out) as bar:
        bar.update(2)
        bar.line("epoch 1/1  train loss 3.00")
    assert "%|" in term.getvalue() and out.getvalue() == "epoch 1/1  train loss 3.00\n"


def test_without_a_bar_status_lines_come_now_and_then(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    log = io.StringIO()
    p = Progress(1000, stream=log)

    def advance(seconds: float, n: int) -> None:
        clock[0] += seconds
        p.update(n)
        p.status("work")

    advance(1.0, 10)  # 1 s, 1%: too early
    assert log.getvalue() == ""
    advance(4.0, 10)  # 5 s: the first estimate
    assert log.getvalue() == "work: 2% (5 s, about 4 min left)\n"
    advance(30.0, 10)  # neither a tenth nor a minute since the last line
    advance(30.0, 10)  # a minute
    advance(1.0, 100)  # a tenth
    advance(1.0, 870)  # done: nothing (the caller says what comes next)
    assert log.getvalue().splitlines()[1:] == [
        "work: 4% (65 s, about 26 min left)",
        "work: 14% (66 s, about 7 min left)",
    ]
    assert "\r" not in log.getvalue()


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (42, 720, 12_600, 3 * 86400)] == [
        "42 s",
        "12 min",
        "3.5 h",
        "3.0 days",
    ]


def test_the_epoch_line_names_each_term_in_nats_per_example():
    record = {
        "epoch": 3,
        "step": 66,
        "train_loss": 27.04,
        "train_recon": 25.25,
        "train_kl": 1.79,
        "val_loss": 27.5,
        "val_recon": 25.61,
        "val_kl": 1.89,
        "kl_weight": 1.0,
        "seconds": 0.1,
        "samples_per_s": 41503.2,
    }
    assert epoch_line(record, 10) == (
        "epoch 3/10  train loss 27.04 (recon 25.25, kl 1.79)  val loss 27.50 (recon 25.61, "
        "kl 1.89)  [41,503 samples/s; nats per example]"
    )
    ae = {"epoch": 1, "train_loss": 5.0, "samples_per_s": 10.0}  # no terms, no validation
    assert epoch_line(ae, 1) == "epoch 1/1  train loss 5.00  [10 samples/s; nats per example]"


def test_stages_say_when_each_stage_starts_in_a_log_file():
    log = io.StringIO()
    stages = Stages(prefix="scratchvae: ", stream=log)
    stages("ELBO", 0, 10)
    stages("ELBO", 10, 10)
    stages("importance-weighted bound, k=5", 0, 50)
    stages("importance-weighted bound, k=5", 50, 50)
    stages.close()
    assert log.getvalue() == (
        "scratchvae: ELBO ...\nscratchvae: importance-weighted bound, k=5 ...\n"
    )


def test_quiet_float_warnings_silences_overflow_and_nothing_else():
    @quiet_float_warnings
    def overflow() -> None:
        np.exp(np.float32(1000.0))  # overflow encountered in exp
        np.zeros(1) / np.zeros(1)  # invalid value encountered in divide
        warnings.warn("something else", RuntimeWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        overflow()
        np.exp(np.float32(1000.0))  # outside: the usual warning
    assert [str(w.message) for w in caught] == [
        "something else",
        "overflow encountered in exp",
    ]
