"""The multi-sample objectives: K draws of z per example, their importance weights, and the
gradient estimators of the importance-weighted bound (IWAE), as forward/backward pairs.

For one example x and K draws z_k = mu + sigma eps_k from q(z|x) = N(mu, diag(sigma^2)):

    log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)          (an importance weight)
    IWAE    L_K = log (1/K) sum_k w_k = logsumexp_k log w_k - log K   (Burda et al. 2016)
    ELBO    L   = (1/K) sum_k log w_k                                  (K single-sample ELBOs)

dL_K / dlog w_k = w~_k = w_k / sum_j w_j (the normalised weights: a softmax over k), and
dL / dlog w_k = 1/K. The gradient with respect to the encoder's parameters phi flows through
log w_k in two ways: through z_k = mu + sigma eps_k (the PATH), and through q's own parameters
with z_k held fixed (the SCORE, d log q(z|x) / dphi, whose expectation is zero). The estimators
(docs/derivations.md):

    pathwise  both                                  sum_k w~_k  d log w_k / dphi
    stl       the path only (Roeder et al. 2017)    sum_k w~_k  (d log w_k / dz_k) dz_k/dphi
    dreg      the path, weighted twice (Tucker et al. 2019)
                                                    sum_k w~_k^2 (d log w_k / dz_k) dz_k/dphi
              (with a KL weight beta, log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)):
               w~_k (1 - beta (1 - w~_k)) in place of w~_k^2)

The decoder's gradient is the IWAE gradient in all three. Shapes: K samples, B examples,
L latent units.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import get_special, get_xp, op
from ..params import Workspace
from .losses import log_normal_draw, log_standard_normal
from .reparam import split_latent

Array = Any
WS = Workspace | None
ESTIMATORS = ("pathwise", "stl", "dreg")
COMBINE = ("logmeanexp", "mean")


# ------------------------------------------------------------------------------ the K draws
class IWLatentCache(NamedTuple):
    h: Array  # (B, 2L) the encoder's output [mu | logvar]
    eps: Array  # (K, B, L) the noise of the K draws
    sigma: Array  # (B, L) exp(logvar / 2)
    z: Array  # (K, B, L) the draws


@op
def iw_latent_forward(
    h: Array, eps: Array, ws: WS = None
) -> tuple[tuple[Array, Array], IWLatentCache]:
    """((z, log_ratio), cache) from h = [mu | logvar] (B, 2L) and eps (K, B, L):

    z_k       = mu + exp(logvar/2) * eps_k                 (K, B, L)   K draws per example
    log_ratio = log p(z_k) - log q(z_k | x)                (K, B)      the prior over q
    (log q from eps: -0.5 sum_L [eps^2 + logvar + log 2 pi], exact however small sigma is)
    """
    mu, logvar = split_latent(h)
    sigma = get_xp(h).exp(0.5 * logvar)
    z = mu + sigma * eps
    log_ratio = log_standard_normal(z) - log_normal_draw(eps, logvar)
    return (z, log_ratio), IWLatentCache(h, eps, sigma, z)


@op
def iw_latent_backward(
    cache: IWLatentCache,
    dz: Array,
    dratio: Array,
    estimator: str = "pathwise",
    weights: Array | None = None,
    beta: float = 1.0,
    ws: WS = None,
) -> Array:
    """dL/dh (B, 2L) from dz = dL/dz (K, B, L) (the decoder's) and dratio = dL/dlog_ratio
    (K, B), for log w = log p(x|z) + beta log_ratio. With eps = (z - mu) / sigma, per unit:

    d log p(z)/dz = -z,   d log q(z|x)/dz (q fixed) = -eps / sigma    (the path into z)
    dz_total   = dz + dratio * (-z + eps / sigma)                   (K, B, L)
    dL/dmu     = sum_k dz_total                                     (z = mu + sigma eps)
    dL/dlogvar = sum_k dz_total * eps * sigma / 2
    pathwise adds the score, z held fixed (d log q/dmu = eps / sigma,
    d log q/dlogvar = (eps^2 - 1) / 2), which enters log w with -dratio:
    dL/dmu     -= sum_k dratio * eps / sigma
    dL/dlogvar -= sum_k dratio * (eps^2 - 1) / 2
    The score's eps / sigma cancels the path's exactly (log q at its own draw is
    -0.5 sum_L (eps^2 + logvar + log 2 pi), which depends on mu not at all), so pathwise is
    computed without forming the two: with path = dz - dratio * z,
    dL/dmu     = sum_k path
    dL/dlogvar = sum_k path * eps * sigma / 2 + sum_k dratio / 2
    (formed, each is about 1/sigma: at logvar -40, 5e8 in float32, where the gradient is ~1).
    stl leaves the score out; dreg leaves it out too and, with w~ = ``weights`` (K, B),
    dz_total *= 1 - beta (1 - w~)     (= w~ at beta = 1: the path weighted by w~^2)
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    xp = get_xp(dz)
    _, eps, sigma, z = cache
    dratio = dratio[..., None]  # (K, B, 1): the same for every latent unit
    path = dz - dratio * z  # (K, B, L): through log p(x|z) and log p(z)
    if estimator == "pathwise":  # the path's and the score's eps / sigma cancel: not formed
        dmu = path.sum(axis=0)  # (B, L)
        dlogvar = (path * eps).sum(axis=0) * (0.5 * sigma) + 0.5 * dratio.sum(axis=0)
        return xp.concatenate([dmu, dlogvar], axis=-1)
    # stl, dreg: the path into z only, dz_total = path + dratio eps / sigma, summed in two parts
    # so that sigma never multiplies eps / sigma (sigma 0 in float32 below logvar -207: the
    # product inf * 0 = NaN, where dL/dlogvar is finite):
    #   dL/dmu     = sum_k path + (sum_k dratio eps) / sigma   (its second term 0 when the sum is)
    #   dL/dlogvar = (sum_k path eps) sigma / 2 + sum_k dratio eps^2 / 2
    if estimator == "dreg":
        # Why (Tucker et al. 2019; docs/derivations.md, section 10): the score of beta log q
        # carries w~ (in dratio); reparameterized, with d w~/dz = w~ (1 - w~) d log w/dz, it
        # takes beta w~ (1 - w~) d log w/dz off the path's w~ d log w/dz: dz_total, both its
        # parts, times w~ + (1 - beta)(1 - w~) = 1 - beta (1 - w~), exactly w~ at beta = 1
        # (1 - (1 - w~) would round a weight under the dtype's eps to 0)
        # (mypy: weights may be None; dreg's callers give them)
        factor = (weights + (1 - beta) * (1 - weights))[..., None]  # type: ignore[operator, index]
        path, dratio = path * factor, dratio * factor
    score = dratio * eps  # (K, B, L)
    score_sum = score.sum(axis=0)  # (B, L)
    # a zero sum is 0 whatever sigma (at sigma 0, 0 / 0 was NaN: dratio 0 at KL weight 0)
    dmu = path.sum(axis=0) + score_sum / xp.where(score_sum == 0, 1, sigma)
    dlogvar = (path * eps).sum(axis=0) * (0.5 * sigma) + 0.5 * (score * eps).sum(axis=0)
    return xp.concatenate([dmu, dlogvar], axis=-1)


# ------------------------------------------------------------------------------ the bound
class BoundCache(NamedTuple):
    weights: Array  # (K, B) dL/dlog w_k per example: w~_k (IWAE) or 1/K (ELBO)
    scale: float  # 1/B (the mean over the batch) or 1 (reduce="none")


@op
def iw_bound_forward(
    log_w: Array, combine: str = "logmeanexp", reduce: str = "mean"
) -> tuple[Array, BoundCache]:
    """The bound per example from log w (K, B), combining the K samples by

    logmeanexp:  L_K = logsumexp_k log w_k - log K   (IWAE; weights w~ = softmax_k log w)
    mean:        L   = (1/K) sum_k log w_k           (K single-sample ELBOs; weights 1/K)

    then the mean over B (``reduce="mean"``) or one value per example (``"none"``). The
    weights under eps (the dtype's) times their example's largest are stored as 0 (below).

    An example whose largest log w is not finite has no weights (:func:`why_not_finite`):
    every log w -inf (L_K = -inf), one +inf (L_K = +inf: a density beyond the dtype's range,
    not a sample worth all the mass) or NaN. Its bound is that value, so the loss is not
    finite (the trainer stops: divergence), and its weights, 0/0 = NaN from exp(log w - max),
    are stored as 0 by the cut below (NaN >= cut is false): no test, no sync, no extra pass."""
    K = log_w.shape[0]
    if combine == "logmeanexp":
        bound = get_special(log_w).logsumexp(log_w, axis=0) - math.log(K)  # (B,), overflow-free
        # the softmax from the differences to the largest, not exp(log_w - logsumexp): that
        # sum is rounded to the dtype at |log w|'s magnitude (in float32 at |log w| = 1e6, to
        # 0.06), and the weights inherit its error as a factor (they summed to 1.03)
        shifted = get_xp(log_w).exp(log_w - log_w.max(axis=0))  # (K, B), the largest is 1
        weights = shifted / shifted.sum(axis=0)
    elif combine == "mean":
        bound, weights = log_w.mean(axis=0), get_xp(log_w).full(log_w.shape, 1.0 / K)
    else:
        raise ValueError(f"unknown combination {combine!r}; choose one of {', '.join(COMBINE)}")
    weights = weights.astype(log_w.dtype, copy=False)
    # a weight below eps times its example's largest becomes 0: its term of sum_k w~_k g_k is
    # under the rounding of the largest one (for gradients g_k of like size; all such terms
    # together are under K eps of it, 6e-6 at k = 50 in float32), but products of
    # such weights with small gradients are subnormal numbers, and the decoder's backward on the
    # K B rows ran 3-5x slower on them (k = 50: 53.7 ms a step against 14.7 ms with the CPU
    # flushing them to 0; benchmarks/README.md)
    xp = get_xp(weights)
    cut = xp.finfo(weights.dtype).eps * weights.max(axis=0)
    weights = xp.where(weights >= cut, weights, 0).astype(log_w.dtype)
    if reduce == "none":
        return bound, BoundCache(weights, 1.0)
    return bound.mean(), BoundCache(weights, 1.0 / bound.shape[0])


@op
def iw_bound_backward(cache: BoundCache, dbound: Any) -> Array:
    """dL/dlog w_k = dbound * w~_k [/ B]    (K, B), with the weights the forward computed.

    (A per-example dbound (B,) broadcasts over the K samples.)"""
    return cache.weights * (cache.scale * dbound)


def why_not_finite(top: Array, k: int) -> str:
    """Which examples have no importance weights and why ("" when every one has: every
    value of ``top`` (B,) finite). ``top``: per example, the largest of its k log-weights or their
    logsumexp (the two are -inf, +inf or NaN together): -inf when every log w is -inf (every
    sample impossible), +inf when one is +inf (no NaN), NaN when one is NaN. (A host sync:
    for the lab and evaluation, not for the training step.)"""
    xp = get_xp(top)
    counts = (
        (int((top == -xp.inf).sum()), f"every one of its {k} log-weights -inf"),
        (int((top == xp.inf).sum()), "a log-weight +inf"),
        (int(xp.isnan(top).sum()), "a log-weight NaN"),
    )
    bad = [f"{n} with {why}" for n, why in counts if n]
    if not bad:
        return ""
    total = sum(n for n, _ in counts)
    return (
        f"{total} of {top.shape[0]} examples have no importance weights ({'; '.join(bad)}): "
        "log p(x | z) + log p(z) - log q(z | x) is beyond the dtype's range; are the model's "
        "parameters extreme?"
    )
