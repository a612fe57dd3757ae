"""Shared test helpers for whole models: the model families, small random models as Hypothesis
strategies, parameter randomisation and a tiny binary data set.

* :data:`FAMILIES` names every model the package builds (kind + likelihood or noise);
  :func:`build_family` makes one of them; :func:`model_cases` draws a small random one with a
  batch, its fixed noise and (for a VAE) sometimes a KL warm-up weight.
* :func:`bars_dataset` is a data set a VAE can learn in a few hundred steps.

The independent plain-NumPy forward of a whole model is in ``reference.py``; the constants
shared with the op tests (activation names, seeds, batch sizes) come from ``op_cases.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from op_cases import ACTIVATION_NAMES, batch_sizes, seeds

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend
from scratchvae.models import AE, VAE

Array = Any

FAMILIES = (
    "ae-bernoulli",
    "ae-mse",
    "ae-gaussian",
    "ae-gaussian-learned",
    "dae-gaussian",
    "dae-mask",
    "sae",
    "vae-bernoulli",
    "vae-gaussian",
    "vae-gaussian-learned",
    "vae-mse",
)
VAE_BETA = 1.5  # every VAE family's beta: != 1, so a backward that drops it fails the check
KL_WEIGHTS = (None, 0.25)  # None: the model's beta; 0.25: a warm-up weight for loss_and_grads


@dataclass
class ModelCase:
    model: AE
    x: Array
    noise: dict[str, Array]
    kl_weight: float | None = None

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"ModelCase({self.model.config}, batch={self.x.shape[0]}, kl={self.kl_weight})"


def build_family(
    family: str,
    n_features: int,
    hidden: tuple[int, ...],
    latent: int,
    activation: str,
    dropout: float,
    backend: Backend,
) -> AE:
    """A model of ``family`` (see :data:`FAMILIES`)."""
    kind, _, rest = family.partition("-")
    common = dict(activation=activation, dropout=dropout, backend=backend)
    if kind == "ae":
        return AE(n_features, hidden, latent, likelihood=rest, decoder_std=0.7, **common)
    if kind == "dae":
        return DenoisingAE(n_features, hidden, latent, noise=rest, noise_level=0.3, **common)
    if kind == "sae":
        return SparseAE(n_features, hidden, latent, rho=0.1, beta=2.0, **common)
    return VAE(n_features, hidden, latent, beta=VAE_BETA, likelihood=rest, **common)


def randomize_params(model: AE, seed: int, scale: float = 0.6) -> None:
    """Non-zero biases and weights of a moderate size (every gradient entry matters)."""
    bk = Backend("numpy", model.backend.dtype.name, seed=seed)
    model.params.flat[...] = scale * bk.normal(model.params.flat.shape)


@st.composite
def model_cases(draw: st.DrawFn, family: str, dtype: str = "float64") -> ModelCase:
    """A small random model of ``family``, random parameters, a batch and its fixed noise."""
    seed = draw(seeds)
    bk = Backend("numpy", dtype, seed=seed)
    model = build_family(
        family,
        n_features=draw(st.integers(1, 5)),
        hidden=tuple(draw(st.lists(st.integers(1, 4), max_size=2))),
        latent=draw(st.integers(1, 3)),
        activation=draw(st.sampled_from(ACTIVATION_NAMES)),
        dropout=draw(st.sampled_from([0.0, 0.0, 0.3])),
        backend=bk,
    )
    randomize_params(model, seed + 1)
    B = draw(batch_sizes)
    x = bk.uniform((B, model.n_features))  # grey levels in [0, 1)
    if not family.endswith("bernoulli") and family.startswith(("ae-", "vae-")):
        x = 2 * bk.normal((B, model.n_features))  # real-valued data for Gaussian / MSE
    noise = model.draw_noise(B)
    kl_weight = draw(st.sampled_from(KL_WEIGHTS)) if family.startswith("vae") else None
    return ModelCase(model, x, noise, kl_weight)


def bars_dataset(seed: int, n: int = 512, side: int = 8) -> Array:
    """Binary side x side images, each the union of random horizontal and vertical bars
    (each bar on with probability 2/side), flattened to (n, side * side), float32."""
    bk = Backend("numpy", "float32", seed=seed)
    rows = bk.bernoulli(2.0 / side, (n, side, 1))
    cols = bk.bernoulli(2.0 / side, (n, 1, side))
    return np.maximum(rows, cols).reshape(n, side * side)
