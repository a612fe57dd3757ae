"""The reparameterization trick: a sample of q(z|x) = N(mu, diag(exp(logvar))) written as a
deterministic function of (mu, logvar) and outside noise eps ~ N(0, I).

    sigma = exp(logvar / 2)          (logvar is the log-VARIANCE, so the std is exp(logvar/2))
    z     = mu + sigma * eps

Because eps does not depend on the parameters, dz/dmu and dz/dlogvar exist and gradients flow
through the sample. The SAME eps must be used in forward and backward: it is part of the cache.
"""

from __future__ import annotations

from typing import Any

from .backend import cupy_kernel, get_xp, is_cupy

Array = Any


def reparam_forward(mu: Array, logvar: Array, eps: Array) -> tuple[Array, tuple[Array, Array]]:
    """z = mu + exp(logvar/2) * eps.   mu, logvar, eps, z: (B, L).  cache = (eps, sigma)."""
    if is_cupy(logvar):  # the same two lines as one GPU kernel
        kernel = cupy_kernel(
            "scratchvae_reparam",
            "T mu, T logvar, T eps",
            "T z, T sigma",
            "sigma = exp((T)0.5 * logvar); z = mu + sigma * eps",
        )
        z, sigma = kernel(mu, logvar, eps)
        return z, (eps, sigma)
    sigma = get_xp(logvar).exp(0.5 * logvar)
    z = mu + sigma * eps
    return z, (eps, sigma)


def reparam_backward(cache: tuple[Array, Array], dz: Array) -> tuple[Array, Array]:
    """Backward of z = mu + exp(logvar/2) * eps. Returns (dmu, dlogvar), each (B, L).

    dL/dmu     = dz                                   (dz/dmu = 1)
    dL/dlogvar = dz * eps * 0.5 * exp(logvar/2)       (dz/dlogvar = eps * sigma / 2)
    """
    eps, sigma = cache
    dmu = dz
    dlogvar = dz * eps * (0.5 * sigma)
    return dmu, dlogvar
