"""Baselines for the score-function estimator (:mod:`scratchvae.lab.estimators`), moved out of
it unchanged (that module was at the 400-line limit): a baseline c that does not depend on
sample s keeps E[(f_s - c) d log q(z_s)] = E[f_s d log q(z_s)], since E[d log q] = 0, and
lowers the variance when c is close to f_s.

    none     c = 0
    loo      c_s = the mean of the other S - 1 samples' f (leave-one-out; needs S >= 2)
    running  c = an exponential moving average of f over earlier calls (NVIL-style)
"""

from __future__ import annotations

from typing import Any

Array = Any

__all__ = [
    "BASELINES",
    "RunningBaseline",
    "TooFewSamples",
    "baseline_for",
    "check_samples",
    "leave_one_out",
]

BASELINES = ("none", "loo", "running")


class TooFewSamples(ValueError):
    """An estimator that cannot work with this few samples (leave-one-out with S = 1)."""


def check_samples(n_samples: int, baseline: str) -> None:
    """A one-line ValueError for an unknown baseline or fewer samples than it needs."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if int(n_samples) < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n_samples}")
    if baseline == "loo" and n_samples < 2:
        raise TooFewSamples("the leave-one-out baseline needs n_samples >= 2; use more samples")


def leave_one_out(f: Array) -> Array:
    """The baseline of sample s: the mean of the other S - 1 values, (sum f - f_s) / (S - 1)."""
    S = f.shape[0]
    return (f.sum(axis=0, keepdims=True) - f) / (S - 1)


class RunningBaseline:
    """An exponential moving average of f over earlier calls (NVIL-style baseline).

    ``value`` has the shape of one sample of f (one value per example of a fixed batch, as in
    this lab's studies); the first call, before any update, uses c = 0. The value used by a call
    is computed before that call's samples, so the estimate stays unbiased.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.value: Array | None = None

    def current(self, f: Array) -> Array | float:
        """The baseline for samples f (S, ...): the stored average, or 0 before any update."""
        if self.value is None or self.value.shape != f.shape[1:]:
            return 0.0
        return self.value

    def update(self, f: Array) -> None:
        """value <- decay * value + (1 - decay) * mean_S f."""
        m = f.mean(axis=0)
        if self.value is None or self.value.shape != m.shape:
            self.value = m
        else:
            self.value = self.decay * self.value + (1 - self.decay) * m


def baseline_for(f: Array, baseline: str, running: RunningBaseline | None) -> Array | float:
    """The baseline c of each sample of f (S, ...): 0 ("none"), the leave-one-out mean, or the
    running average before this call's samples (then updated with them)."""
    if baseline == "loo":
        return leave_one_out(f)
    if baseline == "running":
        if running is None:
            raise ValueError("baseline='running' needs a RunningBaseline (pass running=...)")
        c = running.current(f)
        running.update(f)
        return c
    return 0.0
