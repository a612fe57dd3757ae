"""Gradient estimators for the ELBO: the reparameterization (pathwise) estimator against the
score-function (REINFORCE) estimator, and a study of their bias and variance as S grows.

The question: how does the gradient of an expectation E_{z ~ q(z|x)}[f(z)] reach the
parameters (mu, logvar) of q = N(mu, diag(exp(logvar)))?

pathwise        z = mu + sigma * eps, eps ~ N(0, I), sigma = exp(logvar / 2):
                    d/dmu E[f] = E[ f'(z) ],   d/dlogvar E[f] = E[ f'(z) * eps * sigma / 2 ]
                (the backward pass of ``reparam.py``; needs f'(z), i.e. a differentiable f)
score function  d/dphi E[f] = E[ f(z) * d/dphi log q(z|x) ]     (the log-derivative trick)
                    d/dmu     log N(z; mu, e^lv) = (z - mu) e^-lv = eps / sigma
                    d/dlogvar log N(z; mu, e^lv) = 0.5 ((z - mu)^2 e^-lv - 1) = 0.5 (eps^2 - 1)
                (needs only values of f; E[score] = 0, so f may be shifted by a baseline c that
                does not depend on z: E[(f - c) * score] is the same gradient, with less variance
                when c is close to f)

Both are unbiased; the pathwise one uses f's slope, the score function only f's value, and its
variance is typically orders of magnitude higher. Two test beds:

* :class:`LinearGaussianToy`: f(z) = -(x - a z - b)^2 / 2 elementwise, whose expectation and
  gradient are known exactly (the bias of an estimator is measured against them);
* a :class:`~scratchvae.models.VAE` and a batch x: per-sample estimates of dL/dmu, dL/dlogvar
  (L = -ELBO, the model's loss) and of the encoder weights' gradients.

Per-sample estimates have a leading axis S (one row per draw of eps); an estimate from S samples
is their mean over that axis. :func:`scratchvae.lab.study.estimator_study` measures, for each
S, the mean and the variance of such S-sample estimates over independent repeats.

Dropout is off throughout (eps is the only noise), so for a model without dropout a pathwise
sample equals ``model.loss_and_grads(x, {"eps": eps})`` for the same eps (B, L): the
one-sample ELBO step, whatever the model's objective, k or estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend import Backend, get_xp
from ..mlp import MLPCache
from ..models import VAE
from ..ops.losses import (
    GaussianKLCache,
    Likelihood,
    gaussian_kl_backward,
    log_normal_draw,
    log_standard_normal,
    root_precision,
    standardized,
)
from ..ops.reparam import ReparamCache, reparam_backward, reparam_forward, split_latent
from .baselines import (
    BASELINES,
    RunningBaseline,
    TooFewSamples,
    baseline_for,
    check_samples,
    leave_one_out,
)

Array = Any
Estimate = Callable[[int], dict[str, Array]]

__all__ = [
    "BASELINES",
    "GradSamples",
    "LinearGaussianToy",
    "RunningBaseline",
    "TooFewSamples",
    "encoder_grads",
    "leave_one_out",
    "log_likelihood_per_example",
    "pathwise_grads",
    "score_function_grads",
    "toy_estimators",
    "toy_samples",
    "vae_estimators",
    "vae_gradient_samples",
]


# ============================================================================ the two kernels
def pathwise_grads(df_dz: Array, eps: Array, sigma: Array) -> tuple[Array, Array]:
    """Per-sample pathwise gradients of f at z = mu + sigma * eps.  df_dz, eps: (S, ...);
    sigma: (...), the same for every sample (broadcast over S).

    dz/dmu = 1, dz/dlogvar = eps * sigma / 2: exactly
    :func:`~scratchvae.ops.reparam.reparam_backward` with the upstream gradient df/dz.
    Returns (d/dmu, d/dlogvar).
    """
    return tuple(reparam_backward(ReparamCache(eps, sigma), df_dz))


def score_function_grads(
    f: Array, z: Array, mu: Array, logvar: Array, c: Array | float = 0.0, eps: Array | None = None
) -> tuple[Array, Array]:
    """Per-sample score-function gradients (f - c) * d/dphi log q(z), phi = (mu, logvar).

    f, c: (S, *batch) values of f (c a baseline independent of this sample);
    z, eps: (S, *batch, L), the draws z = mu + sigma eps and their noise (give it if you have
    it);  mu, logvar: (*batch, L).  Returns (d/dmu, d/dlogvar), each like z.

        d/dmu     log N(z; mu, e^lv) = (z - mu) e^-lv           = eps / sigma
        d/dlogvar log N(z; mu, e^lv) = 0.5 ((z - mu)^2 e^-lv - 1) = 0.5 (eps^2 - 1)

    From eps, not z - mu: that difference keeps only the digits of sigma eps that mu's rounding
    leaves (float32, mu 3, logvar -40: z == mu, a score of 0 where eps / sigma is 5e8).

    Either way e^(-lv/2) is never formed (it overflows below lv = -177.4 in float32, -1419.6
    in float64, and z == mu or eps == 0 then gave 0 * inf = NaN where the score is 0 and -1/2):
    as ops/losses.py's Gaussian does (its ``standardized`` and ``root_precision``), with
    t = e^(-lv/4) capped at e^C (C = 88 float32, 709 float64), r = ((z - mu) t) t (or
    r = eps), d/dmu = (r t) t and d/dlogvar = 0.5 (r^2 - 1).
    Below lv = -4C, where the cap binds, both overflow for any nonzero z - mu (and any eps
    above about 1.1 times the smallest normal number), as the true values do.
    """
    if eps is None:  # r = ((z - mu) t) t = (z - mu) e^(-lv/2): eps, as rounded in z
        r, t = standardized(z, mu, logvar)  # (S, *batch, L), t (*batch, L) e^(-lv/4) finite
    else:
        r, t = eps, root_precision(logvar, eps)
    score_mu = (r * t) * t  # (z - mu) e^-lv = eps / sigma
    score_lv = 0.5 * (r * r - 1)
    w = (f - c)[..., None]  # (S, *batch, 1): the same weight for every latent unit
    return w * score_mu, w * score_lv


# ============================================================================ the toy problem
@dataclass
class LinearGaussianToy:
    """f(z) = -(x - a z - b)^2 / 2 per coordinate, z ~ N(mu, e^lv); K independent coordinates.

        E[f]          = -((x - a mu - b)^2 + a^2 e^lv) / 2     (E[z^2] = mu^2 + e^lv)
        d E[f] / d mu = a (x - a mu - b)
        d E[f] / d lv = -a^2 e^lv / 2
        f'(z)         = a (x - a z - b)                         (for the pathwise estimator)

    x, a, b: arrays of shape (K,) (or broadcastable). Gradients are of E[f] (to be maximised).
    """

    x: Array
    a: Array
    b: Array

    def f(self, z: Array) -> Array:
        r = self.x - self.a * z - self.b
        return -0.5 * r * r

    def df_dz(self, z: Array) -> Array:
        return self.a * (self.x - self.a * z - self.b)

    def expectation(self, mu: Array, logvar: Array) -> Array:
        xp = get_xp(mu)
        r = self.x - self.a * mu - self.b
        return -0.5 * (r * r + self.a * self.a * xp.exp(logvar))

    def exact_grad(self, mu: Array, logvar: Array) -> dict[str, Array]:
        """{"mu": dE[f]/dmu, "logvar": dE[f]/dlogvar}, each shaped like mu."""
        xp = get_xp(mu)
        return {
            "mu": self.a * (self.x - self.a * mu - self.b),
            "logvar": -0.5 * self.a * self.a * xp.exp(logvar),
        }


def toy_samples(
    toy: LinearGaussianToy,
    mu: Array,
    logvar: Array,
    eps: Array,
    estimator: str = "pathwise",
    baseline: str = "none",
    running: RunningBaseline | None = None,
) -> dict[str, Array]:
    """Per-sample estimates of dE[f]/dmu, dE[f]/dlogvar on the toy: each (S, K).

    eps: (S, K) standard normal draws; z = mu + exp(lv/2) eps for both estimators.
    """
    check_samples(eps.shape[0], baseline if estimator == "score" else "none")
    z, (eps, sigma) = reparam_forward(mu, logvar, eps)  # (S, K)
    if estimator == "pathwise":
        gmu, glv = pathwise_grads(toy.df_dz(z), eps, sigma)
    elif estimator == "score":
        f = toy.f(z)  # (S, K): one "example" per coordinate, L = 1 latent unit each
        c = baseline_for(f, baseline, running)
        gmu, glv = score_function_grads(
            f, z[..., None], mu[..., None], logvar[..., None], c, eps[..., None]
        )
        gmu, glv = gmu[..., 0], glv[..., 0]
    else:
        raise ValueError(f"unknown estimator {estimator!r}; choose 'pathwise' or 'score'")
    return {"mu": gmu, "logvar": glv}


def toy_estimators(
    toy: LinearGaussianToy, mu: Array, logvar: Array, backend: Backend
) -> dict[str, Estimate]:
    """S -> S-sample mean estimate, for pathwise, score, score+loo, score+running."""

    def make(estimator: str, baseline: str) -> Estimate:
        running = RunningBaseline() if baseline == "running" else None

        def estimate(S: int) -> dict[str, Array]:
            eps = backend.normal((S, *mu.shape))
            g = toy_samples(toy, mu, logvar, eps, estimator, baseline, running)
            return {k: v.mean(axis=0) for k, v in g.items()}

        return estimate

    return _named_estimators(make)


def _named_estimators(make: Callable[[str, str], Estimate]) -> dict[str, Estimate]:
    return {
        "pathwise": make("pathwise", "none"),
        "score": make("score", "none"),
        "score+loo": make("score", "loo"),
        "score+running": make("score", "running"),
    }


# ============================================================================ the VAE
def log_likelihood_per_example(lik: Likelihood, out: Array, x: Array) -> Array:
    """log p(x_b | z_b) for each row b: (N,), the likelihood's loss per example with its sign
    flipped (for ``mse``: minus the squared error, the objective's term, not a density)."""
    return -lik.forward(out, x, reduce="none")[0]


@dataclass
class GradSamples:
    """Per-sample gradient estimates of the VAE loss L = -ELBO (batch mean, nats per example).

    mu, logvar: (S, B, L) estimates of dL/dmu, dL/dlogvar; weights: name -> (S, *shape) for
    the encoder's parameters (when asked for); f: (S, B) the values f(z) of the draws,
    log p(x|z) (plus beta (log p(z) - log q(z|x)) for the score function with ``kl="mc"``).
    """

    mu: Array
    logvar: Array
    weights: dict[str, Array] | None = None
    f: Array | None = None


def _encode(model: VAE, x: Array) -> tuple[Array, Array, Array, MLPCache]:
    if not isinstance(model, VAE):
        raise TypeError(f"gradient estimators need a VAE, got {type(model).__name__}")
    x = model.prepare(x)
    h, enc_cache = model.encoder.forward(model.params, x)  # (B, 2L), dropout off
    return (x, *split_latent(h), enc_cache)


def _decode_samples(model: VAE, x: Array, z: Array, need_grad: bool) -> tuple[Array, Array]:
    """f_s(b) = log p(x_b | z_sb) (S, B) and, if asked, dL/dz (S, B, L) of the recon term.

    All S * B rows go through the decoder as one batch; the lik's gradient is divided by S * B,
    so multiplying by S gives each sample's gradient of the B-example loss.
    """
    S, B, L = z.shape
    zf = z.reshape(S * B, L)
    xf = model.xp.broadcast_to(x, (S, *x.shape)).reshape(S * B, -1)
    out, dec_cache = model.decoder.forward(model.params, zf)  # (S*B, D')
    f = log_likelihood_per_example(model.lik, out, xf).reshape(S, B)
    if not need_grad:
        return f, None
    _, lik_cache = model.lik.forward(out, xf)  # the mean over S * B rows
    dout = model.lik.backward(lik_cache, S)  # d recon_s / d out  (1/B each)
    dz = model.decoder.input_grad(model.params, dec_cache, dout)  # (S*B, L)
    return f, dz.reshape(S, B, L)


def vae_gradient_samples(
    model: VAE,
    x: Array,
    n_samples: int,
    estimator: str = "pathwise",
    baseline: str = "none",
    kl: str = "analytic",
    running: RunningBaseline | None = None,
    weights: bool = False,
    eps: Array | None = None,
) -> GradSamples:
    """S per-sample estimates of dL/dmu, dL/dlogvar (and of the encoder weights' gradients).

    pathwise  what VAE.backward computes: the decoder's backward to dz, then reparam_backward,
              plus beta * dKL.
    score     -(f - c) * score / B, with f = log p(x|z) and the KL's exact gradient added
              (``kl="analytic"``), or f = log p(x|z) + beta (log p(z) - log q(z|x)) and no
              separate KL term (``kl="mc"``). Baseline c: none, leave-one-out or running.
    ``eps`` (S, B, L) may be given (then n_samples is ignored); otherwise drawn from the backend.
    """
    if estimator not in ("pathwise", "score"):
        raise ValueError(f"unknown estimator {estimator!r}; choose 'pathwise' or 'score'")
    if kl not in ("analytic", "mc"):
        raise ValueError(f"unknown kl {kl!r}; choose 'analytic' or 'mc'")
    x, mu, logvar, enc_cache = _encode(model, x)
    B = x.shape[0]
    if eps is None:
        eps = model.backend.normal((int(n_samples), B, model.latent))
    check_samples(eps.shape[0], baseline if estimator == "score" else "none")
    z, (eps, sigma) = reparam_forward(mu, logvar, eps)  # (S, B, L)
    f, dz = _decode_samples(model, x, z, need_grad=estimator == "pathwise")
    dmu_kl, dlv_kl = gaussian_kl_backward(GaussianKLCache(mu, logvar), 1.0)  # (B, L), / B
    beta = model.beta
    if estimator == "pathwise":
        gmu, glv = pathwise_grads(dz, eps, sigma)
        gmu, glv = gmu + beta * dmu_kl, glv + beta * dlv_kl
    else:
        if kl == "mc":
            f = f + beta * (log_standard_normal(z) - log_normal_draw(eps, logvar))
        c = baseline_for(f, baseline, running)
        gmu, glv = score_function_grads(f, z, mu, logvar, c, eps)  # gradients of E[f]
        gmu, glv = -gmu / B, -glv / B  # of L = -(1/B) sum_b E[f_b]
        if kl == "analytic":
            gmu, glv = gmu + beta * dmu_kl, glv + beta * dlv_kl
    w = None
    if weights:
        per = [encoder_grads(model, enc_cache, gmu[s], glv[s]) for s in range(gmu.shape[0])]
        w = {name: model.xp.stack([p[name] for p in per]) for name in per[0]}
    return GradSamples(mu=gmu, logvar=glv, weights=w, f=f)


def encoder_grads(model: VAE, enc_cache: MLPCache, dmu: Array, dlogvar: Array) -> dict[str, Array]:
    """The encoder weights' gradients for given dL/dmu, dL/dlogvar (B, L): a linear map.

    Because the map is linear, the gradient of a mean of estimates is the mean of their
    gradients: S-sample estimates need one call, not S.
    """
    grads = model.params.like()
    dh = model.xp.concatenate([dmu, dlogvar], axis=1)  # (B, 2L)
    model.encoder.backward(model.params, grads, enc_cache, dh, need_dx=False)
    return {name: grads[name].copy() for name in grads if name.startswith("encoder.")}


def vae_estimators(
    model: VAE, x: Array, kl: str = "analytic", weights: bool = True
) -> dict[str, Estimate]:
    """S -> S-sample mean estimate {"mu", "logvar"[, "weights"]} for the four estimators.

    "weights" is the encoder's gradient flattened to one vector (all encoder parameters).
    """
    _, _, _, enc_cache = _encode(model, x)

    def make(estimator: str, baseline: str) -> Estimate:
        running = RunningBaseline() if baseline == "running" else None

        def estimate(S: int) -> dict[str, Array]:
            g = vae_gradient_samples(model, x, S, estimator, baseline, kl, running)
            out = {"mu": g.mu.mean(axis=0), "logvar": g.logvar.mean(axis=0)}
            if weights:
                w = encoder_grads(model, enc_cache, out["mu"], out["logvar"])
                out["weights"] = model.xp.concatenate([v.ravel() for v in w.values()])
            return out

        return estimate

    return _named_estimators(make)
