"""The reparameterization trick and the VAE's latent layer.

A sample of q(z|x) = N(mu, diag(exp(logvar))) written as a deterministic function of (mu,
logvar) and outside noise eps ~ N(0, I):

    sigma = exp(logvar / 2)          (logvar is the log-VARIANCE, so the std is exp(logvar/2))
    z     = mu + sigma * eps

Because eps does not depend on the parameters, dz/dmu and dz/dlogvar exist and gradients flow
through the sample. The SAME eps must be used in forward and backward: it is in the cache.

:func:`latent_forward` is the VAE's whole latent layer: from the encoder's output
h = [mu | logvar] to the sample z and KL(q(z|x) || N(0, I)); :func:`latent_backward` takes both
upstream gradients (dL/dz from the decoder, dL/dKL = beta from the loss) back to dL/dh.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..backend import get_xp, op
from ..params import Workspace, buffer
from .losses import GaussianKLCache, gaussian_kl_backward, gaussian_kl_forward

Array = Any
WS = Workspace | None


class ReparamCache(NamedTuple):
    eps: Array  # (B, L) the noise of this sample
    sigma: Array  # (B, L) exp(logvar / 2)


class ReparamGrads(NamedTuple):
    dmu: Array  # (B, L)
    dlogvar: Array  # (B, L)


@op
def reparam_forward(mu: Array, logvar: Array, eps: Array) -> tuple[Array, ReparamCache]:
    """z = mu + exp(logvar/2) * eps.   mu, logvar, eps, z: (..., L)."""
    sigma = get_xp(logvar).exp(0.5 * logvar)
    z = mu + sigma * eps
    return z, ReparamCache(eps, sigma)


@op
def reparam_backward(cache: ReparamCache, dz: Array) -> ReparamGrads:
    """Backward of z = mu + exp(logvar/2) * eps:

    dL/dmu     = dz                                   (dz/dmu = 1)
    dL/dlogvar = dz * eps * 0.5 * exp(logvar/2)       (dz/dlogvar = eps * sigma / 2)
    """
    return ReparamGrads(dz, dz * cache.eps * (0.5 * cache.sigma))


def noise_eps(noise: Mapping[str, Array], batch: int, latent: int) -> Array:
    """``noise["eps"]`` for a batch of ``batch`` rows: (batch, latent), or (k, batch, latent) for
    k draws per example; anything else is a one-line ValueError (an eps drawn for another batch
    size would otherwise pass as k draws per example)."""
    eps = noise.get("eps")
    if eps is None or tuple(eps.shape[-2:]) != (batch, latent) or eps.ndim not in (2, 3):
        got = "none" if eps is None else f"shape {tuple(eps.shape)}"
        raise ValueError(
            f"VAE noise needs 'eps' of shape ({batch}, {latent}) or (k, {batch}, {latent}) for "
            f"this batch, got {got}; use model.draw_noise({batch})"
        )
    return eps


def split_latent(h: Array) -> tuple[Array, Array]:
    """The encoder output h = [mu | logvar] (..., 2L) as the views (mu, logvar), (..., L) each."""
    L = h.shape[-1] // 2
    return h[..., :L], h[..., L:]


# ------------------------------------------------------------------------------ latent layer
class LatentCache(NamedTuple):
    h: Array  # (B, 2L) the encoder's output [mu | logvar]
    eps: Array  # (B, L) the noise of the sample
    sigma: Array  # (B, L) exp(logvar / 2)


class LatentGrads(NamedTuple):
    dh: Array  # (B, 2L) dL/d[mu | logvar]


@op
def latent_forward(h: Array, eps: Array, ws: WS = None) -> tuple[tuple[Array, Array], LatentCache]:
    """((z, kl), cache) from h = [mu | logvar] (B, 2L) and eps (B, L):

    z  = mu + exp(logvar/2) * eps                       (B, L)   the sample (reparam_forward)
    kl = KL(q(z|x) || N(0, I)), sum over L, mean over B   ()     (gaussian_kl_forward)
    """
    mu, logvar = split_latent(h)  # views of h, (B, L) each
    z, sample_cache = reparam_forward(mu, logvar, eps)
    kl, _ = gaussian_kl_forward(mu, logvar)  # its cache would be (mu, logvar): h holds them
    return (z, kl), LatentCache(h, eps, sample_cache.sigma)


@op
def latent_backward(cache: LatentCache, dz: Array, dkl: Any, ws: WS = None) -> LatentGrads:
    """dL/dh from dz = dL/dz (B, L) and dkl = dL/dKL (the loss's KL weight beta):

    dL/dmu     = dz                       + dkl * mu / B                  (sample + KL)
    dL/dlogvar = dz * eps * sigma / 2     + dkl * (exp(logvar) - 1) / (2B)
    """
    mu, logvar = split_latent(cache.h)
    via_z = reparam_backward(ReparamCache(cache.eps, cache.sigma), dz)  # the sample's branch
    via_kl = gaussian_kl_backward(GaussianKLCache(mu, logvar), dkl)  # the KL's branch
    dh = buffer(ws, "dh", cache.h.shape, dz)
    dmu, dlogvar = split_latent(dh)  # views: writing them fills dh = [dmu | dlogvar]
    get_xp(dz).add(via_z.dmu, via_kl.dmu, out=dmu)
    get_xp(dz).add(via_z.dlogvar, via_kl.dlogvar, out=dlogvar)
    return LatentGrads(dh)


# ------------------------------------------------------------------------------ k draws per example
def per_sample(out: Array, k: int) -> Array:
    """A decoder's output for k draws per example, (k B, D) -> (k, B, D) (k = 1: as it is),
    so that the likelihood compares each draw with its example's x (B, D)."""
    return out if k == 1 else out.reshape(k, -1, out.shape[-1])


def all_rows(a: Array) -> Array:
    """(k, B, D) -> (k B, D), the inverse of :func:`per_sample` ((B, D) stays as it is)."""
    return a.reshape(-1, a.shape[-1])


# ------------------------------------------------------------------------------ K copies
class RepeatCache(NamedTuple):
    k: int  # how many copies were stacked


@op
def repeat_forward(a: Array, k: int) -> tuple[Array, RepeatCache]:
    """k copies of a (B, ...) stacked: (k B, ...), copy j in rows j B .. (j + 1) B - 1. (The
    ELBO with k samples runs the one-sample step on k copies of each example.)"""
    if k == 1:
        return a, RepeatCache(1)
    return get_xp(a).concatenate([a] * k, axis=0), RepeatCache(k)


@op
def repeat_backward(cache: RepeatCache, dtiled: Array) -> Array:
    """dL/da = the sum of the k copies' gradients: (k B, ...) -> (B, ...)."""
    if cache.k == 1:
        return dtiled
    return dtiled.reshape(cache.k, -1, *dtiled.shape[1:]).sum(axis=0)
