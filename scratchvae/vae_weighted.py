"""The VAE's step on k log-weights, moved out of :mod:`scratchvae.models` (its ``VAE`` calls
them as its methods ``_forward_weighted`` and ``_backward_weighted``): the IWAE bound L_k
(objective ``"iwae"``, k > 1), or the mean of k ELBOs through the log-weights (estimator
``stl`` or ``dreg``). log w = log p(x|z) + beta (log p(z) - log q(z|x)) for k draws z per
example; :mod:`scratchvae.ops.iwae` combines them and gives the encoder's gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .mlp import MLPCache
from .model_caches import IWCache
from .ops.iwae import iw_bound_backward, iw_bound_forward, iw_latent_backward, iw_latent_forward
from .ops.reparam import all_rows
from .params import ParamStore, Workspace, scope

if TYPE_CHECKING:
    from .models import VAE, Noise, Terms

Array = Any


def _forward_weighted(
    self: VAE,
    x: Array,
    h: Array,
    enc: MLPCache,
    eps: Array,
    masks: Noise | None,
    beta: float,
    ws: Workspace | None,
) -> tuple[Terms, IWCache]:
    # the k log-weights log w = log p(x|z) + beta (log p(z) - log q(z|x)), combined
    k, B, L = eps.shape
    (z, log_ratio), lat = iw_latent_forward(h, eps)  # z (k, B, L), log ratio (k, B)
    out, dec = self.decoder.forward(self.params, z.reshape(k * B, L), masks, ws)  # (k B, D)
    nll, lik = self.lik.forward(out.reshape(k, B, -1), x, "none", scope(ws, "lik"))  # (k, B)
    combine = "logmeanexp" if self.objective == "iwae" else "mean"
    bound, comb = iw_bound_forward(beta * log_ratio - nll, combine)  # mean over B
    terms = {"loss": -bound, "recon": nll.mean()}
    return terms, IWCache(enc, lat, dec, lik, comb, beta)


def _backward_weighted(self: VAE, cache: IWCache, ws: Workspace | None) -> ParamStore:
    dlog_w = iw_bound_backward(cache.bound, -1.0)  # dL/dlog w, (k, B)
    dout = self.lik.backward(cache.lik, -dlog_w, scope(ws, "lik"))  # dL/dnll = -dL/dlog w
    dz = self.decoder.backward(self.params, self.grads, cache.dec, all_rows(dout), ws=ws)
    dz = dz.reshape(cache.latent.eps.shape)  # type: ignore[union-attr]  # (k, B, L): need_dx
    w, beta = cache.bound.weights, cache.beta  # dlog_w: -w / B
    dh = iw_latent_backward(cache.latent, dz, beta * dlog_w, self.estimator, w, beta)  # (B, 2L)
    self.encoder.backward(self.params, self.grads, cache.enc, dh, False, ws)
    return self.grads
