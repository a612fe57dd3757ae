"""What each model's forward hands its backward: the plain AE's and the VAE's caches, one
named field per op (the AE variants keep theirs in :mod:`scratchvae.autoencoders`).
Used by :mod:`scratchvae.models`."""

from __future__ import annotations

from typing import NamedTuple

from .mlp import MLPCache
from .ops.iwae import BoundCache, IWLatentCache
from .ops.losses import LikelihoodCache
from .ops.reparam import LatentCache, RepeatCache


# ============================================================================ plain auto-encoder
class AECache(NamedTuple):
    enc: MLPCache  # the encoder's
    dec: MLPCache  # the decoder's
    lik: LikelihoodCache  # the reconstruction loss's


# ============================================================================ VAE
class VAECache(NamedTuple):
    enc: MLPCache  # the encoder's: x -> h = [mu | logvar]
    copies: RepeatCache  # k copies of h, for k samples per example (k = 1: h itself)
    latent: LatentCache  # the latent layer's: h, eps -> z, KL
    dec: MLPCache  # the decoder's: z -> out (Bernoulli logits, or Gaussian means)
    lik: LikelihoodCache  # the reconstruction loss's
    beta: float  # the KL weight of this step: dL/dKL


class IWCache(NamedTuple):
    enc: MLPCache  # the encoder's: x -> h = [mu | logvar]
    latent: IWLatentCache  # the k draws: h, eps -> z (k, B, L), log p(z) - log q(z|x)
    dec: MLPCache  # the decoder's, on the k B draws
    lik: LikelihoodCache  # -log p(x | z_k) per draw
    bound: BoundCache  # the k log-weights combined; their normalised weights
    beta: float  # the weight of log p(z) - log q(z|x) in log w
