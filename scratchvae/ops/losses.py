"""The log-densities per example, the losses built on them, and the decoder likelihoods.

Each formula is written once, here, and read by the training step, the evaluation (the ELBO
and the importance-weighted bound), the gradient estimators and the imputation:

    log Bernoulli(x | logits l) = -sum_D [ softplus(l) - x l ]         (x may be grey levels)
    log N(z; mu, diag(e^lv))    = -0.5 sum [ (z - mu)^2 e^-lv + lv + log 2 pi ]
    log N(z; 0, I)              = -0.5 sum [ z^2 + log 2 pi ]
    KL(N(mu, e^lv) || N(0, I))  =  0.5 sum [ mu^2 + e^lv - lv - 1 ]

Each sums over the last axis (features or latent units) and keeps the leading axes.

The losses are forward/backward pairs. ``reduce="mean"`` (the default, what training
minimises) SUMS over the features and takes the MEAN over the examples, so every value is in
nats per example, as in the published VAE numbers; ``reduce="none"`` keeps one value per example.
A backward takes the cache and the upstream gradient ``dloss`` (a number for "mean", one per
example for "none") and returns dL/d(input); with "mean" each example's gradient carries 1/B.
:class:`Likelihood` says what a decoder's output means and picks its loss.
Shapes: B examples, D features (pixels), L latent units, H hidden units.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import get_special, get_xp, op
from ..params import Workspace, buffer
from .activations import sigmoid_forward

Array = Any
WS = Workspace | None
REDUCTIONS = ("mean", "none")
LOG_2PI = math.log(2.0 * math.pi)
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned", "mse")


# ---------------------------------------------------------------------------- log-densities
@op
def bernoulli_log_prob(logits: Array, x: Array) -> Array:
    """log p(x | l) = sum_D [ x l - softplus(l) ] for logits l (..., D) and data x (..., D):
    on LOGITS, never on clipped probabilities. Logits (S, B, D) against data (B, D) give (S, B).

    (x log s(l) + (1 - x) log(1 - s(l)) = x l - softplus(l), with s the sigmoid.)
    """
    return (x * logits - get_special(logits).softplus(logits)).sum(axis=-1)


def log_normal(z: Array, mu: Array | float, logvar: Array | float) -> Array:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis.   (..., L) -> (...)

    ``logvar`` an array, or a float for a fixed variance (a Python float keeps float32 arrays
    float32)."""
    if hasattr(logvar, "shape"):
        # (an array: mypy does not narrow Array | float by hasattr)
        inv_var, lv_sum = get_xp(logvar).exp(-logvar), logvar.sum(axis=-1)  # type: ignore[union-attr]
    else:
        inv_var, lv_sum = math.exp(-logvar), z.shape[-1] * logvar
    return -0.5 * (((z - mu) ** 2 * inv_var).sum(axis=-1) + lv_sum + z.shape[-1] * LOG_2PI)


def log_normal_draw(eps: Array, logvar: Array) -> Array:
    """log N(z; mu, diag(exp(logvar))) at a draw z = mu + exp(logvar/2) eps, from its eps:

    -0.5 sum_L [eps^2 + logvar + log 2 pi]          eps (..., L), logvar broadcasting -> (...)

    :func:`log_normal` (z, mu, logvar) in exact arithmetic, without forming z - mu: that
    difference keeps only the digits of sigma eps that mu's rounding leaves (none once sigma is
    below mu's last bit), and exp(-logvar) overflows below logvar = -88.7 in float32."""
    return -0.5 * ((eps * eps).sum(axis=-1) + logvar.sum(axis=-1) + eps.shape[-1] * LOG_2PI)


def log_standard_normal(z: Array) -> Array:
    """log N(z; 0, I) = -0.5 sum_L [ z^2 + log 2 pi ].   (..., L) -> (...)"""
    return -0.5 * ((z * z).sum(axis=-1) + z.shape[-1] * LOG_2PI)


def kl_standard_normal(mu: Array, logvar: Array) -> Array:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) = 0.5 sum_L [mu^2 + e^lv - lv - 1].  (..., L) ->
    (...). In closed form: no sample needed."""
    return 0.5 * (mu * mu + get_xp(mu).exp(logvar) - logvar - 1).sum(axis=-1)


# ---------------------------------------------------------------------------- reductions
def _reduce(per_example: Array, reduce: str) -> Array:
    """The mean over all examples (a 0-d array) or the per-example values themselves."""
    if reduce == "mean":
        return per_example.mean()
    if reduce == "none":
        return per_example
    raise ValueError(f"unknown reduction {reduce!r}; choose one of {', '.join(REDUCTIONS)}")


def weighted(weight: float, term: Array) -> Array:
    """weight * term in term's dtype. (NumPy 1 turns a float32 scalar times a Python float into
    float64; NumPy 2 and CuPy keep float32, as this does.)"""
    return term.dtype.type(weight) * term


def _per_example_scale(reduce: str, per_example_shape: tuple[int, ...]) -> float:
    """d(reduced)/d(per-example value): 1/B for the mean over B examples, else 1."""
    return 1.0 / max(1, math.prod(per_example_shape)) if reduce == "mean" else 1.0


def _over_features(dloss: Any) -> Any:
    """dloss ready to multiply (..., D) arrays: a per-example dloss (...,) gets a last axis."""
    return dloss[..., None] if hasattr(dloss, "ndim") and dloss.ndim > 0 else dloss


# ---------------------------------------------------------------------------- Bernoulli NLL
class BernoulliCache(NamedTuple):
    dlogits: Array  # (..., D) dL/dlogits for dL/dloss = 1, computed in the forward's pass


@op
def bernoulli_nll_forward(
    logits: Array, x: Array, reduce: str = "mean", ws: WS = None
) -> tuple[Array, BernoulliCache]:
    """-log p(x | logits) for Bernoulli pixels, on LOGITS l (never on clipped probabilities):

    -log p = sum_D [ softplus(l) - x l ]          logits (..., D), x (..., D) in [0, 1]
    d(-log p)/dl = sigmoid(l) - x                  (d softplus(l)/dl = sigmoid(l))

    The gradient needs nothing from later in the network, so the forward computes it (the
    kernels do both in one pass) and the backward only scales it.
    """
    nll = _reduce(-bernoulli_log_prob(logits, x), reduce)
    dlogits = buffer(ws, "dlogits", logits.shape, logits)
    get_xp(logits).subtract(get_special(logits).expit(logits), x, out=dlogits)
    dlogits *= _per_example_scale(reduce, logits.shape[:-1])
    return nll, BernoulliCache(dlogits)


@op
def bernoulli_nll_backward(cache: BernoulliCache, dloss: Any, ws: WS = None) -> Array:
    """dL/dlogits = dloss * (sigmoid(l) - x) [/ B]   (..., D)."""
    if isinstance(dloss, int | float) and dloss == 1:
        return cache.dlogits  # the usual case: L is the loss itself
    out = buffer(ws, "dlogits_scaled", cache.dlogits.shape, cache.dlogits)
    return get_xp(out).multiply(cache.dlogits, _over_features(dloss), out=out)


# ---------------------------------------------------------------------------- Gaussian NLL
class GaussianNLLCache(NamedTuple):
    mean: Array  # (..., D)
    x: Array  # (..., D)
    logvar: Array | float  # (..., D) when learned, a float for a fixed variance
    scale: float  # 1/B for reduce="mean", else 1


class GaussianNLLGrads(NamedTuple):
    dmean: Array  # (..., D)
    dlogvar: Array | None  # (..., D); None for a fixed variance


@op
def gaussian_nll_forward(
    mean: Array, x: Array, logvar: Array | float, reduce: str = "mean"
) -> tuple[Array, GaussianNLLCache]:
    """-log N(x; mean, exp(logvar)) = 0.5 sum_D [ (x - mean)^2 / exp(logvar) + logvar + log 2pi ]
    mean, x: (..., D); logvar: (..., D) when learned, or a float for a fixed variance."""
    nll = _reduce(-log_normal(x, mean, logvar), reduce)
    return nll, GaussianNLLCache(mean, x, logvar, _per_example_scale(reduce, mean.shape[:-1]))


@op
def gaussian_nll_backward(cache: GaussianNLLCache, dloss: Any) -> GaussianNLLGrads:
    """dL/dmean   = dloss * (mean - x) / exp(logvar)              [/ B]
    dL/dlogvar = dloss * 0.5 * (1 - (x - mean)^2 / exp(logvar))   [/ B]"""
    mean, x, logvar, scale = cache
    learned = hasattr(logvar, "shape")
    inv_var = get_xp(mean).exp(-logvar) if learned else math.exp(-logvar)
    per_d = _over_features(dloss)
    dmean = (mean - x) * inv_var * (scale * per_d)
    if not learned:
        return GaussianNLLGrads(dmean, None)
    return GaussianNLLGrads(dmean, 0.5 * (1 - (x - mean) ** 2 * inv_var) * (scale * per_d))


# ---------------------------------------------------------------------------- squared error
class SquaredErrorCache(NamedTuple):
    y: Array  # (..., D) the reconstruction
    x: Array  # (..., D) the target
    scale: float  # 1/B for reduce="mean", else 1


@op
def squared_error_forward(
    y: Array, x: Array, reduce: str = "mean"
) -> tuple[Array, SquaredErrorCache]:
    """sum_D (y - x)^2 per example (the 'MSE' of an AE, reduced like every other loss)."""
    per_example = ((y - x) ** 2).sum(axis=-1)
    return _reduce(per_example, reduce), SquaredErrorCache(
        y, x, _per_example_scale(reduce, y.shape[:-1])
    )


@op
def squared_error_backward(cache: SquaredErrorCache, dloss: Any) -> Array:
    """dL/dy = dloss * 2 (y - x) [/ B].   (..., D)"""
    return (cache.y - cache.x) * (2 * cache.scale * _over_features(dloss))


# ---------------------------------------------------------------------------- Gaussian KL
class GaussianKLCache(NamedTuple):
    mu: Array  # (B, L)
    logvar: Array  # (B, L)


class GaussianKLGrads(NamedTuple):
    dmu: Array  # (B, L)
    dlogvar: Array  # (B, L)


@op
def gaussian_kl_forward(mu: Array, logvar: Array) -> tuple[Array, GaussianKLCache]:
    """KL( N(mu, diag(exp(logvar))) || N(0, I) ), sum over L, mean over B:

    KL = 0.5 * sum_L ( mu^2 + exp(logvar) - logvar - 1 )        mu, logvar: (B, L)
    """
    return kl_standard_normal(mu, logvar).mean(), GaussianKLCache(mu, logvar)


@op
def gaussian_kl_backward(cache: GaussianKLCache, dkl: Any) -> GaussianKLGrads:
    """dKL/dmu = mu / B,   dKL/dlogvar = 0.5 * (exp(logvar) - 1) / B;   each times dkl."""
    mu, logvar = cache
    c = dkl / (mu.size // mu.shape[-1])  # dkl / B
    return GaussianKLGrads(c * mu, (0.5 * c) * (get_xp(mu).exp(logvar) - 1))


# ---------------------------------------------------------------------------- sparsity KL
class SparsityCache(NamedTuple):
    h: Array  # (B, H) the code, in (0, 1)
    rho: float  # the target mean activation


@op
def sparsity_kl_forward(h: Array, rho: float = 0.05) -> tuple[Array, SparsityCache]:
    """Sparse-AE penalty sum_j KL(rho || rho_hat_j), rho_hat_j = mean_B h_j (h in (0, 1)).

    KL(rho || r) = rho log(rho / r) + (1 - rho) log((1 - rho) / (1 - r))     h: (B, H)
    A batch-level penalty (not per example); the model multiplies it by its weight beta.
    """
    xp = get_xp(h)
    r = h.mean(axis=0)  # (H,)
    penalty = (rho * xp.log(rho / r) + (1 - rho) * xp.log((1 - rho) / (1 - r))).sum()
    return penalty, SparsityCache(h, rho)


@op
def sparsity_kl_backward(cache: SparsityCache, dloss: Any) -> Array:
    """dP/dh_bj = (-rho / r_j + (1 - rho) / (1 - r_j)) / B  for every b, times dloss.  (B, H)"""
    h, rho = cache
    r = h.mean(axis=0)  # (H,)
    dpenalty_dr = -rho / r + (1 - rho) / (1 - r)  # (H,);  dr_j/dh_bj = 1/B
    return get_xp(h).broadcast_to(dpenalty_dr * (dloss / h.shape[0]), h.shape)


# ---------------------------------------------------------------------------- likelihoods
class LikelihoodCache(NamedTuple):
    loss: Any  # the loss op's cache (BernoulliCache, GaussianNLLCache, SquaredErrorCache)
    out_shape: tuple[int, ...]  # the decoder output's shape: dL/dout has it


class Likelihood:
    """One decoder likelihood (see the module docstring), with its fixed std when Gaussian."""

    def __init__(self, kind: str = "bernoulli", std: float = 1.0) -> None:
        if kind not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {kind!r}; choose one of {', '.join(LIKELIHOODS)}")
        if std <= 0:
            raise ValueError(f"decoder std must be > 0, got {std}")
        self.kind = kind
        self.std = float(std)
        self.fixed_logvar = 2.0 * math.log(self.std)

    def n_out(self, n_features: int) -> int:
        """The decoder's output width for ``n_features`` data features."""
        return 2 * n_features if self.kind == "gaussian-learned" else n_features

    @staticmethod
    def split(out: Array) -> tuple[Array, Array]:
        """[mean | logvar] (..., 2D) -> the views (mean, logvar), (..., D) each."""
        D = out.shape[-1] // 2
        return out[..., :D], out[..., D:]

    def forward(
        self, out: Array, x: Array, reduce: str = "mean", ws: Workspace | None = None
    ) -> tuple[Array, LikelihoodCache]:
        """-log p(x | out) (for ``mse`` the squared error): sum over features, mean over
        examples (``reduce="mean"``), or one value per example (``"none"``). x (..., D) against
        out (..., D or 2D)."""
        if self.kind == "bernoulli":
            nll, cache = bernoulli_nll_forward(out, x, reduce, ws)
        elif self.kind == "gaussian":
            nll, cache = gaussian_nll_forward(out, x, self.fixed_logvar, reduce)
        elif self.kind == "gaussian-learned":
            mean, logvar = self.split(out)
            nll, cache = gaussian_nll_forward(mean, x, logvar, reduce)
        else:
            nll, cache = squared_error_forward(out, x, reduce)
        return nll, LikelihoodCache(cache, tuple(out.shape))

    def backward(
        self, cache: LikelihoodCache, dnll: Any = 1.0, ws: Workspace | None = None
    ) -> Array:
        """dL/dout (the decoder output's shape) for dL/dnll = ``dnll``."""
        if self.kind == "bernoulli":
            return bernoulli_nll_backward(cache.loss, dnll, ws)
        if self.kind == "mse":
            return squared_error_backward(cache.loss, dnll)
        grads = gaussian_nll_backward(cache.loss, dnll)
        if self.kind == "gaussian":
            return grads.dmean
        dout = buffer(ws, "dout", cache.out_shape, grads.dmean)
        dmean, dlogvar = self.split(dout)
        dmean[...], dlogvar[...] = grads.dmean, grads.dlogvar
        return dout

    def log_prob(self, out: Array, x: Array) -> Array:
        """log p(x | z) per example from the decoder output ``out`` (..., D or 2D) -> (...).
        Logits (S, B, D) against data (B, D) give (S, B)."""
        if self.kind == "bernoulli":
            return bernoulli_log_prob(out, x)
        if self.kind == "gaussian":
            return log_normal(x, out, self.fixed_logvar)
        if self.kind == "gaussian-learned":
            return log_normal(x, *self.split(out))
        raise ValueError(
            "likelihood 'mse' is a squared error, not a density: log p(x|z) is undefined; "
            "train with likelihood 'bernoulli' or 'gaussian' to get a likelihood bound"
        )

    def mean(self, out: Array) -> Array:
        """The decoder's output in data space: probabilities (Bernoulli) or means."""
        if self.kind == "bernoulli":
            return sigmoid_forward(out)[0]
        if self.kind == "gaussian-learned":
            return self.split(out)[0]
        return out
