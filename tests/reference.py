"""An independent forward of a whole model, in plain NumPy, from its named parameters.

:func:`reference_loss` recomputes a model's training loss without any of the package's ops:
its own activations, MLP, latent sample, KL, sparsity penalty and likelihoods, written from the
formulas. It also reports how close any ReLU-family pre-activation is to its kink, so a
gradient check can stay clear of it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from model_cases import ModelCase
from op_cases import KINKED

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.models import AE, VAE

Array = Any

_ACT = {
    "identity": lambda a: a,
    "relu": lambda a: np.maximum(a, 0.0),
    "leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a),
    "elu": lambda a: np.where(a > 0, a, np.exp(np.minimum(a, 0.0)) - 1.0),
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "softplus": lambda a: np.log1p(np.exp(a)),
}


def _mlp(model: AE, prefix: str, x: Array, noise: dict, train: bool, kinks: list) -> Array:
    """Plain-NumPy MLP from the named parameters; collects hidden pre-activations in kinks."""
    n_layers = len(model.hidden) + 1
    h = x
    for i in range(n_layers):
        W = np.asarray(model.params[f"{prefix}.{i}.W"])
        b = np.asarray(model.params[f"{prefix}.{i}.b"])
        a = h @ W + b
        if i == n_layers - 1:
            return a
        kinks.append(a)
        h = _ACT[model.activation](a)
        mask = noise.get(f"{prefix}.{i}.dropout") if train else None
        if mask is not None:
            h = h * mask
    raise AssertionError("unreachable")


def _nll(model: AE, out: Array, x: Array) -> float:
    """-log p(x | out), summed over features, averaged over the batch."""
    B, D = x.shape
    kind = model.lik.kind
    if kind == "bernoulli":  # -[x log s + (1-x) log(1-s)], written with log-sigmoids
        log_s, log_1ms = -np.logaddexp(0, -out), -np.logaddexp(0, out)
        return float(-(x * log_s + (1 - x) * log_1ms).sum() / B)
    if kind == "mse":
        return float(((out - x) ** 2).sum() / B)
    if kind == "gaussian":
        mean, logvar = out, np.full_like(out, 2 * math.log(model.lik.std))
    else:
        mean, logvar = out[:, :D], out[:, D:]
    var = np.exp(logvar)
    return float((0.5 * ((x - mean) ** 2 / var + logvar + math.log(2 * math.pi))).sum() / B)


def reference_loss(
    case: ModelCase, train: bool = True, kl_weight: float | None = None
) -> tuple[float, float]:
    """(loss, kink margin) of ``case`` computed independently of the package's forward.

    ``kl_weight`` replaces a VAE's beta, as in ``model.forward(..., kl_weight=...)``. The margin
    is min |pre-activation| over hidden layers for ReLU-family models (inf otherwise): the
    gradient check assumes it is large enough that a step h never crosses a kink.
    """
    model, noise = case.model, case.noise
    x = np.asarray(case.x)
    kinks: list[Array] = []
    x_in = x
    if train and isinstance(model, DenoisingAE):
        if model.noise == "gaussian":
            x_in = x + model.noise_level * noise["input_noise"]
        else:
            x_in = x * noise["input_mask"]
    code = _mlp(model, "encoder", x_in, noise, train, kinks)
    extra = 0.0
    if isinstance(model, VAE):
        L = model.latent
        mu, logvar = code[:, :L], code[:, L:]
        code = mu + np.exp(0.5 * logvar) * noise["eps"]
        kl = 0.5 * (mu**2 + np.exp(logvar) - logvar - 1).sum() / x.shape[0]
        extra = (model.beta if kl_weight is None else kl_weight) * kl
    elif isinstance(model, SparseAE):
        code = 1.0 / (1.0 + np.exp(-code))
        r, rho = code.mean(axis=0), model.rho
        extra = model.beta * (rho * np.log(rho / r) + (1 - rho) * np.log((1 - rho) / (1 - r))).sum()
    out = _mlp(model, "decoder", code, noise, train, kinks)
    margin = math.inf
    if model.activation in KINKED and kinks:
        margin = min(float(np.min(np.abs(a))) for a in kinks)
    return _nll(model, out, x) + float(extra), margin
