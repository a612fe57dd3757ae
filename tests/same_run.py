"""Two checkpoints of the same run, bit for bit: the check the resume tests share."""

from __future__ import annotations

from typing import Any

import numpy as np  # numpy-boundary: comparing host arrays

from scratchvae.checkpoint import Checkpoint, load_checkpoint

TIMINGS = ("seconds", "samples_per_s")  # a history record's fields that differ run to run


def same_checkpoint(a: Any, b: Any) -> tuple[Checkpoint, Checkpoint]:
    """Assert that the checkpoints of run folders (or files) ``a`` and ``b`` hold the same
    progress, generator state, parameters and optimizer state, and the same history but for
    its timings; returns both, for the caller's own checks."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert (ca.epoch, ca.step, ca.rng_state) == (cb.epoch, cb.step, cb.rng_state)
    assert ca.params.keys() == cb.params.keys()
    for name in ca.params:
        assert np.array_equal(ca.params[name], cb.params[name]), name
    assert ca.optim_state.keys() == cb.optim_state.keys()
    for key in ca.optim_state:
        assert np.array_equal(ca.optim_state[key], cb.optim_state[key]), key
    assert without_timings(ca.history) == without_timings(cb.history)
    return ca, cb


def without_timings(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in history]
