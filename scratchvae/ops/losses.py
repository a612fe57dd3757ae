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
from ..inputs import real
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


def _exp_cap(a: Array) -> int:
    """C: the largest whole number with e^C finite in a's dtype (88 float32, 709 float64)."""
    return math.floor(math.log(float(get_xp(a).finfo(a.dtype).max)))


def root_precision(logvar: Array | float, like: Array) -> Array | float:
    """t = e^(-lv/4) capped at e^C (C = 88 float32, 709 float64: :func:`standardized`), in the
    dtype of ``logvar`` combined with ``like`` (what t multiplies); a Python float for a float
    ``logvar`` (a fixed variance), so float32 arrays stay float32."""
    if hasattr(logvar, "shape"):
        xp = get_xp(logvar)
        # in the result's dtype, which the cap must be that of: a float32 logvar beside
        # float64 data capped at e^88 gave finite values where the true ones are e^48 larger
        dtype = xp.result_type(like, logvar)
        t = xp.asarray(xp.multiply(logvar, -0.25, dtype=dtype))  # (a 0-d logvar: an array still)
        xp.minimum(t, _exp_cap(t), out=t)
        return xp.exp(t, out=t)
    return math.exp(min(-0.25 * logvar, _exp_cap(like)))


def standardized(z: Array, mu: Array | float, logvar: Array | float) -> tuple[Array, Any]:
    """(r, t): the residual in standard deviations r = (z - mu) e^(-lv/2), formed as
    ((z - mu) t) t with t = e^(-lv/4) capped at e^C, C = 88 (float32) or 709 (float64), the
    largest whole C with e^C finite; t is a float for a float ``logvar``. Then

        (z - mu)^2 e^-lv = r^2          (z - mu) e^-lv = (r t) t

    Why not (z - mu)^2 e^-lv: e^-lv overflows below lv = -88.7 (float32; -709.8 in float64),
    and at z == mu that is 0 * inf = NaN where the true term is 0 (log-density
    -0.5 (lv + log 2 pi), d/dmu = 0, d/dlv = 1/2). Here the only factor that multiplies z - mu
    is t, finite by the cap, so no product is 0 * inf: z == mu gives r = 0, (r t) t = 0.
    For lv >= -4C the cap is not reached and r, r^2, (r t) t are the formula's values to a few
    roundings (4-6 ulp: t's rounding enters four times), and each product moves monotonically
    toward the result (t >= 1 for lv <= 0, t < 1 above), so none overflows or underflows
    unless the result does. Past it (lv < -4C) any
    nonzero z - mu, at least the smallest subnormal (e^-103.3; e^-744.4), has r^2 >=
    e^(2 (2C - 103.3)) = e^145 (e^1347 in float64): the true r^2 and (r t) t overflow, and so
    do the capped ones. The cap changes no finite result.
    """
    d = z - mu  # a new array
    t = root_precision(logvar, d)
    if getattr(t, "shape", d.shape) == d.shape and getattr(t, "dtype", d.dtype) == d.dtype:
        d *= t  # in place (the usual case)
        r = d
    else:
        r = d * t  # logvar broadcast against z - mu, or of another dtype
    r *= t
    return r, t


def _gaussian_nll(r2: Array, logvar: Array | float) -> Array:
    """-log N per example, 0.5 sum [ r^2 + lv + log 2 pi ] over the last axis, from r^2."""
    D = r2.shape[-1]
    if getattr(logvar, "ndim", 0) and logvar.shape[-1] == D:  # type: ignore[union-attr]
        lv_sum = logvar.sum(axis=-1)  # type: ignore[union-attr]
    else:  # one log-variance for every feature (a float, 0-d, or broadcast along the last axis)
        lv_sum = D * (logvar[..., 0] if getattr(logvar, "ndim", 0) else logvar)  # type: ignore[index]
    return 0.5 * (r2.sum(axis=-1) + lv_sum + D * LOG_2PI)


def log_normal(z: Array, mu: Array | float, logvar: Array | float) -> Array:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis.   (..., L) -> (...)

    -0.5 sum [ (z - mu)^2 e^-lv + lv + log 2 pi ], with the quadratic term formed as r^2,
    r = (z - mu) e^(-lv/2) (finite at z == mu however small the variance; see standardized).
    ``logvar`` an array, or a float for a fixed variance (a Python float keeps float32 arrays
    float32)."""
    r, _ = standardized(z, mu, logvar)
    r *= r  # r^2, in place
    return -_gaussian_nll(r, logvar)


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
    r: Array  # (..., D) (x - mean) e^(-logvar/2), the residual in standard deviations
    t: Array | float  # (..., D) e^(-logvar/4), capped (see standardized); a float when fixed
    scale: float  # 1/B for reduce="mean", else 1
    mean_shape: tuple[int, ...]  # the mean's (it may enter broadcast against x)


class GaussianNLLGrads(NamedTuple):
    dmean: Array  # the mean's shape (a broadcast one summed)
    dlogvar: Array | None  # logvar's shape (a broadcast one summed); None: a fixed variance


@op
def gaussian_nll_forward(
    mean: Array, x: Array, logvar: Array | float, reduce: str = "mean"
) -> tuple[Array, GaussianNLLCache]:
    """-log N(x; mean, exp(logvar)) = 0.5 sum_D [ (x - mean)^2 / exp(logvar) + logvar + log 2pi ]
    mean, x: (..., D); logvar: (..., D) when learned, or a float for a fixed variance. The
    quadratic term is r^2 (see :func:`standardized`); r and t are all the backward needs."""
    r, t = standardized(x, mean, logvar)
    return _reduce(_gaussian_nll(r * r, logvar), reduce), GaussianNLLCache(
        r, t, _per_example_scale(reduce, r.shape[:-1]), tuple(getattr(mean, "shape", ()))
    )


@op
def gaussian_nll_backward(cache: GaussianNLLCache, dloss: Any) -> GaussianNLLGrads:
    """dL/dmean   = dloss * (mean - x) / exp(logvar)              [/ B]
    dL/dlogvar = dloss * 0.5 * (1 - (x - mean)^2 / exp(logvar))   [/ B]

    From the forward's r = (x - mean) e^(-logvar/2) and t = e^(-logvar/4):
    (mean - x) e^-logvar = -(r t) t and (x - mean)^2 e^-logvar = r^2, neither a product that
    can be 0 * inf (at x == mean: dmean = 0, dlogvar = dloss / 2 [/ B])."""
    r, t, scale, mean_shape = cache
    c = scale * _over_features(dloss)  # a number, or (..., 1) for a per-example dloss
    dmean = r * t
    dmean *= t
    dmean *= -c
    if dmean.shape != mean_shape:  # a mean broadcast against x (one for K draws): summed
        dmean = _sum_to(dmean, mean_shape)
    if not hasattr(t, "shape"):
        return GaussianNLLGrads(dmean, None)
    dlogvar = r * r
    get_xp(r).subtract(1, dlogvar, out=dlogvar)
    dlogvar *= 0.5 * c
    if dlogvar.shape != t.shape:  # a log-variance broadcast ((B, 1), 0-d): summed
        dlogvar = _sum_to(dlogvar, t.shape)
    return GaussianNLLGrads(dmean, dlogvar)


def _sum_to(a: Array, shape: tuple[int, ...]) -> Array:
    """``a`` summed over the axes that broadcasting ``shape`` to ``a.shape`` added or widened:
    the gradient of an input of ``shape`` that entered broadcast."""
    lead = a.ndim - len(shape)
    a = a.sum(axis=tuple(range(lead))) if lead else a
    widened = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=widened, keepdims=True) if widened else a


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


# ---------------------------------------------------------------------------- likelihoods
class LikelihoodCache(NamedTuple):
    loss: Any  # the loss op's cache (BernoulliCache, GaussianNLLCache, SquaredErrorCache)
    out_shape: tuple[int, ...]  # the decoder output's shape: dL/dout has it


class Likelihood:
    """One decoder likelihood (see the module docstring), with its fixed std when Gaussian."""

    def __init__(self, kind: str = "bernoulli", std: float = 1.0) -> None:
        if kind not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {kind!r}; choose one of {', '.join(LIKELIHOODS)}")
        std = real(std, "decoder_std")  # type: ignore[assignment]  # "1": not a < 0 error
        if not 0 < std < math.inf:  # NaN and inf too (a NaN or inf loss)
            raise ValueError(f"decoder std must be > 0 and finite, got {std}")
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
