"""scratchvae.bench.references: the PyTorch and JAX steps compute scratchvae's numbers.

Each test needs its library (the ``bench`` extra) and is skipped without it."""

from __future__ import annotations

import pytest

from scratchvae.backend import Backend
from scratchvae.bench import references, timing
from scratchvae.bench.equivalence import max_rel


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
    worst = res["adam_update_worst"]  # each array's update within its own tolerance
    assert worst["rel_diff"] <= worst["tolerance"] and res["weights_max_rel_diff"] == 0


def test_torch_step_copies_the_weights_and_trains() -> None:
    pytest.importorskip("torch")
    step = _step("float32", "wide", batch=4)
    ref = references.TorchStep(step.model, step.x, "cpu")
    assert max_rel(ref.params_like_scratch(step.model), step.model.params) == 0.0
    ref()
    ref.sync()
    assert max_rel(ref.params_like_scratch(step.model), step.model.params) > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_gives_the_same_loss_and_gradients(dtype) -> None:
    pytest.importorskip("jax")
    res = references.check_jax(_step(dtype))
    assert res["ok"], res
    worst = res["adam_update_worst"]  # was not checked
    assert worst["rel_diff"] <= worst["tolerance"]


def test_jax_step_runs_jitted() -> None:
    pytest.importorskip("jax")
    step = _step("float32", batch=4)
    ref = references.JaxStep(step.model, step.x)
    ref()
    ref.sync()
    assert float(ref.last) > 0 and int(ref.t) == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_torch_reference_with_a_planted_difference_is_caught(monkeypatch, dtype) -> None:
    pytest.importorskip("torch")

    def kl_sign_flipped(self, eps):
        F = self.torch.nn.functional
        h = self.enc(self.x)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        logits = self.dec(mu + self.torch.exp(0.5 * logvar) * eps)
        recon = F.binary_cross_entropy_with_logits(logits, self.x, reduction="sum")
        return (recon - 0.5 * (mu * mu + logvar.exp() - logvar - 1).sum()) / self.batch

    with monkeypatch.context() as m:
        m.setattr(references.TorchStep, "loss", kl_sign_flipped)
        res = references.check_torch(_step(dtype), "cpu")
    assert not res["ok"] and res["grad_max_rel_diff"] > 1e-3, res
    with monkeypatch.context() as m:  # Adam's eps 1e-7 in the reference only
        m.setattr(references, "ADAM", {**timing.ADAM, "eps": 1e-7})
        res = references.check_torch(_step(dtype), "cpu")
    assert not res["ok"] and res["adam_update_max_rel_diff"] > 1e-3, res
    assert res["grad_max_rel_diff"] <= res["grad_tolerance"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_jax_reference_with_a_planted_difference_is_caught(monkeypatch, dtype) -> None:
    pytest.importorskip("jax")
    with monkeypatch.context() as m:  # Adam's eps 1e-7 in JAX's hand-written Adam only
        m.setattr(references, "ADAM", {**timing.ADAM, "eps": 1e-7})
        res = references.check_jax(_step(dtype))
    assert not res["ok"] and res["adam_update_max_rel_diff"] > 1e-3, res
    real_loss = references.JaxStep.loss

    def kl_sign_flipped(self, params, x, eps):
        enc = params[: 2 * self.n_enc]
        h = self._mlp(enc, x)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        kl = 0.5 * (mu * mu + self.jnp.exp(logvar) - logvar - 1).sum() / x.shape[0]
        return real_loss(self, params, x, eps) - 2 * kl

    with monkeypatch.context() as m:
        m.setattr(references.JaxStep, "loss", kl_sign_flipped)
        res = references.check_jax(_step(dtype))
    assert not res["ok"] and res["grad_max_rel_diff"] > 1e-3, res
