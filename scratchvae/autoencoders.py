r"""The auto-encoder variants: denoising (a corrupted input, the clean target) and sparse (a
sigmoid code pushed to a target mean activation). Both are :class:`~scratchvae.models.AE`\ s
with one more piece each, written the same way: one op call per line, backward mirroring
forward."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from .backend import Backend
from .inputs import foreign_cache, real
from .mlp import MLPCache
from .models import AE, Noise, Terms
from .ops.activations import ActivationCache, sigmoid_backward, sigmoid_forward
from .ops.losses import LikelihoodCache, weighted
from .ops.sparsity import SparsityCache, sparsity_kl_backward, sparsity_kl_forward
from .params import ParamStore, Workspace, scope

Array = Any


def _number(value: Any, name: str) -> float:
    """``value`` as a float, or a one-line TypeError naming ``name`` (a string "0.3" or None
    would otherwise fail in a comparison with Python's own words)."""
    return float(real(value, name))  # type: ignore[arg-type]  # not optional: never None


# ============================================================================ denoising AE
class DenoisingAE(AE):
    """An AE trained to reconstruct the clean x from a corrupted copy (training only).

    noise="gaussian":  x_in = x + sigma * n,   n ~ N(0, I)          (``noise_level`` = sigma)
    noise="mask":      x_in = x * m,           m ~ Bernoulli(1 - p)  (``noise_level`` = p:
                       the fraction of input pixels zeroed; no rescaling)
    """

    kind = "dae"

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (400,),
        latent: int = 20,
        noise: str = "gaussian",
        noise_level: float = 0.3,
        **kwargs: Any,
    ) -> None:
        if noise not in ("gaussian", "mask"):
            raise ValueError(f"unknown noise {noise!r}; choose 'gaussian' or 'mask'")
        level = _number(noise_level, "noise_level")
        if noise == "mask" and not 0.0 <= level < 1.0:
            raise ValueError(f"masking fraction must be in [0, 1), got {noise_level}")
        if not (level >= 0 and math.isfinite(level)):  # NaN too
            raise ValueError(f"noise level must be >= 0 and finite, got {noise_level}")
        self.noise = noise
        self.noise_level = level
        super().__init__(n_features, hidden, latent, **kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "noise": self.noise, "noise_level": self.noise_level}

    def draw_noise(
        self, batch_size: int, backend: Backend | None = None, train: bool = True
    ) -> dict[str, Array]:
        noise = super().draw_noise(batch_size, backend, train)
        if not train:
            return noise
        bk, shape = backend or self.backend, (int(batch_size), self.n_features)  # checked above
        if self.noise == "gaussian":
            noise["input_noise"] = bk.normal(shape)
        else:
            noise["input_mask"] = bk.bernoulli(1.0 - self.noise_level, shape)
        return noise

    def corrupt(self, x: Array) -> Array:
        """A corrupted copy of x with fresh noise (for showing what the model is given)."""
        x = self.prepare(x)  # (a list too: its rows counted after the conversion)
        return self._corrupt(x, self.draw_noise(x.shape[0]))

    def _corrupt(self, x: Array, noise: Noise) -> Array:
        key = "input_noise" if self.noise == "gaussian" else "input_mask"
        n = noise.get(key)  # (B, D), drawn for this batch: else one line, not a KeyError or a
        if n is None or tuple(n.shape) != tuple(x.shape):  # broadcast (one mask for every row)
            got = "none" if n is None else f"shape {tuple(n.shape)}"
            raise ValueError(
                f"denoising AE noise needs {key!r} of shape {tuple(x.shape)} for this batch, "
                f"got {got}; use model.draw_noise({x.shape[0]})"
            )
        if self.noise == "gaussian":
            return x + self.noise_level * n  # x~ = x + sigma n
        return x * n  # x~ = x * m


# ============================================================================ sparse AE
class SparseAECache(NamedTuple):
    enc: MLPCache
    code: ActivationCache  # the sigmoid's: h = sigmoid(a)
    dec: MLPCache
    lik: LikelihoodCache
    sparsity: SparsityCache


class SparseAE(AE):
    """An AE whose code h = sigmoid(encoder(x)) is pushed to a mean activation rho per unit.

    loss = recon + beta * sum_j KL(rho || rho_hat_j),  rho_hat_j = mean over the batch of h_j.
    """

    rows_independent = False  # the penalty is on the batch mean: no batch split

    kind = "sae"

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (),
        latent: int = 100,
        rho: float = 0.05,
        beta: float = 3.0,
        **kwargs: Any,
    ) -> None:
        if not 0.0 < _number(rho, "rho") < 1.0:  # NaN too
            raise ValueError(f"target activation rho must be in (0, 1), got {rho}")
        if not (_number(beta, "beta") >= 0 and math.isfinite(beta)):  # NaN too
            raise ValueError(f"sparsity weight beta must be >= 0 and finite, got {beta}")
        self.rho = float(rho)
        self.beta = float(beta)
        super().__init__(n_features, hidden, latent, **kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "rho": self.rho, "beta": self.beta}

    def forward(  # type: ignore[override]  # its own cache, not an AE's (Model.backward)
        self,
        x: Array,
        noise: Noise | None = None,
        train: bool = True,
        kl_weight: float | None = None,
        ws: Workspace | None = None,
    ) -> tuple[Terms, SparseAECache]:
        x = self.prepare(x, 1)
        masks = self._noise(x, noise, train) if train else None
        a, enc = self.encoder.forward(self.params, x, masks, ws)  # (B, latent) pre-activation
        h, code = sigmoid_forward(a, scope(ws, "code"))  # the sparse code, in (0, 1)
        out, dec = self.decoder.forward(self.params, h, masks, ws)  # (B, D)
        recon, lik = self.lik.forward(out, x, ws=scope(ws, "lik"))
        sparsity, sp = sparsity_kl_forward(a, self.rho)  # sum_j KL(rho || mean_B h_j), from a
        terms = {
            "loss": recon + weighted(self.beta, sparsity),
            "recon": recon,
            "sparsity": sparsity,
        }
        return terms, SparseAECache(enc, code, dec, lik, sp)

    def backward(  # type: ignore[override]  # its own cache, not an AE's (Model.backward)
        self, cache: SparseAECache, ws: Workspace | None = None
    ) -> ParamStore:
        isinstance(cache, SparseAECache) or foreign_cache(cache, self)  # else one line
        dout = self.lik.backward(cache.lik, 1.0, scope(ws, "lik"))
        dh = self.decoder.backward(self.params, self.grads, cache.dec, dout, ws=ws)  # (B, latent)
        da = sigmoid_backward(cache.code, dh, scope(ws, "code"))  # dh * h (1 - h)
        da = da + sparsity_kl_backward(cache.sparsity, self.beta)  # dL/dsparsity = beta; (B, H)
        self.encoder.backward(self.params, self.grads, cache.enc, da, False, ws)
        return self.grads

    def encode(self, x: Array) -> Array:
        """The sparse code sigmoid(encoder(x)), (B, latent), in (0, 1)."""
        return sigmoid_forward(super().encode(x))[0]
