"""scratchvae.bench.references: the PyTorch and JAX steps compute scratchvae's numbers.

Each test needs its library (the ``bench`` extra) and is skipped without it."""

from __future__ import annotations

import pytest

from scratchvae.backend import Backend
from scratchvae.bench import references, timing


def _step(dtype: str, config: str = "mnist", batch: int = 16) -> timing.ScratchStep:
    return timing.ScratchStep(timing.CONFIGS[config], batch, Backend("numpy", dtype, seed=0))


def test_installed_version_imports_nothing() -> None:
    assert references.installed_version("numpy")
    assert references.installed_version("no-such-distribution-xyz") is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_gives_the_same_loss_gradients_and_adam_update(dtype) -> None:
    pytest.importorskip("torch")
    res = references.check_torch(_step(dtype), "cpu")
    assert res["ok"], res
    assert res["params_after_adam_max_rel_diff"] <= references.EQ_TOL[dtype]


def test_torch_step_copies_the_weights_and_trains() -> None:
    pytest.importorskip("torch")
    step = _step("float32", "wide", batch=4)
    ref = references.TorchStep(step.model, step.x, "cpu")
    assert references._max_rel(ref.params_like_scratch(step.model), step.model.params) == 0.0
    ref()
    ref.sync()
    assert references._max_rel(ref.params_like_scratch(step.model), step.model.params) > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_gives_the_same_loss_and_gradients(dtype) -> None:
    pytest.importorskip("jax")
    res = references.check_jax(_step(dtype))
    assert res["ok"], res


def test_jax_step_runs_jitted() -> None:
    pytest.importorskip("jax")
    step = _step("float32", batch=4)
    ref = references.JaxStep(step.model, step.x)
    ref()
    ref.sync()
    assert float(ref.last) > 0 and int(ref.t) == 1
