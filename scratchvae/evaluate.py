"""Evaluating a trained model: per-example log-densities, the test ELBO, the importance-weighted
bound on log p(x), active units and bits per dimension.

Every figure is in NATS PER EXAMPLE (sum over the D features, mean over the examples), like the
training terms, unless its name says otherwise (``bits_per_dim``).

For a VAE with encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))), prior p(z) = N(0, I) and decoder
p(x|z), and k draws z_i ~ q(z|x):

    log w_i  = log p(x|z_i) + log p(z) - log q(z_i|x)            (an importance weight, in logs)
    ELBO     = E_q[log p(x|z)] - KL(q(z|x) || p(z))              (k = 1: E[log w_1])
    L_k      = E[ log (1/k) sum_i w_i ]                (Burda, Grosse & Salakhutdinov 2016)
    ELBO = L_1 <= L_k <= L_{k+1} <= log p(x),    L_k -> log p(x) as k -> infinity.

``iw_nll`` = -L_k (an upper bound on the negative log-likelihood); ``bits_per_dim`` =
iw_nll / (D ln 2). The bound is computed in chunks of examples x samples whose size is set by a
budget of floats, so k = 5000 on MNIST never allocates an (N, k, D) array; each chunk's
logsumexp joins a running one as it comes (in float64), so memory stays flat however large k.
:func:`evaluate` reports its progress (stage, units done, units in the stage) to a callback:
the command line shows it as a bar in a terminal, as a line now and then otherwise, and prints
the results with :func:`format_report` (or, with ``--json``, :func:`json_numbers`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from .backend import Backend, get_special, get_xp, to_numpy
from .data import Dataset
from .data.dataset import check_float32_range, host_rows
from .inputs import check_range, check_targets, whole
from .models import AE, VAE, Model
from .ops.iwae import iw_latent_forward, why_not_finite
from .ops.losses import kl_standard_normal
from .ops.reparam import reparam_forward
from .progress import quiet_float_warnings

Array = Any
Report = Callable[[str, int, int], None]  # (stage, units of work done, units in the stage)

__all__ = [
    "elbo_terms",
    "iw_bound",
    "active_units",
    "bits_per_dim",
    "evaluate",
    "format_report",
    "json_numbers",
]

ACTIVE_THRESHOLD = 0.01  # Burda et al.: unit u is active when Cov_x(E_q[z_u]) > 0.01
DEFAULT_BUDGET = 1 << 22  # floats per chunk of the importance-weighted bound (16 MiB in float32)
GPU_BUDGET = 1 << 26  # on CuPy (256 MiB in float32): fewer, larger chunks, since every chunk
# costs a dozen kernel launches from the host whatever its size


# ============================================================================ helpers
def _decoder_out(model: VAE, z: Array) -> Array:
    """The decoder's raw output (logits / means), evaluation mode.   z: (R, L) -> (R, D_out)"""
    return model.decoder.forward(model.params, z)[0]


def _noise_backend(model: Model, seed: int | None) -> Backend:
    """The model's own backend, or a fresh one seeded ``seed`` (same array module and dtype)."""
    if seed is None:
        return model.backend
    return Backend(model.backend.name, model.backend.dtype.name, seed=seed)


def _batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` rows covering 0..n-1."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _require_vae(model: Model, what: str) -> None:
    if not isinstance(model, VAE):
        raise ValueError(f"{what} needs a VAE (an encoder q(z|x)); got a {type(model).__name__}")


# ============================================================================ the test ELBO
def elbo_terms(
    model: VAE,
    x: Array,
    batch_size: int = 500,
    n_samples: int = 1,
    backend: Backend | None = None,
) -> dict[str, Array]:
    """Per-example ELBO terms over a data set, in batches, each (N,) on the model's backend.

    recon = -log p(x|z), z ~ q(z|x), averaged over ``n_samples`` draws of eps per example;
    kl    = KL(q(z|x) || N(0, I)) in closed form;   neg_elbo = recon + kl.
    These are the training terms (``model.loss``) without the mean over the batch.
    """
    _require_vae(model, "the ELBO")
    bk = backend or model.backend
    xp = bk.xp
    recon, kl = [], []
    for sl in _batches(x.shape[0], batch_size):
        xb = model.prepare(x[sl])  # (B, D)
        mu, logvar = model.encode(xb)  # (B, L) each
        r = 0.0
        for _ in range(n_samples):
            z, _ = reparam_forward(mu, logvar, bk.normal(mu.shape))  # (B, L)
            r = r - model.lik.log_prob(_decoder_out(model, z), xb)
        recon.append(r / n_samples)
        kl.append(kl_standard_normal(mu, logvar))
    recon_all, kl_all = xp.concatenate(recon), xp.concatenate(kl)
    return {"recon": recon_all, "kl": kl_all, "neg_elbo": recon_all + kl_all}


# ============================================================================ the IWAE bound
def _chunk_sizes(model: VAE, batch_size: int, k: int, budget: int) -> tuple[int, int]:
    """(examples, samples) per chunk so that examples * samples * width <= budget (>= 1 each).

    width: the floats one (example, sample) row occupies: the decoder's activations, the data
    broadcast against them and the per-pixel log terms."""
    width = sum(model.decoder.sizes[1:]) + 2 * model.n_features + 4 * model.latent
    rows = max(1, budget // width)
    b = max(1, min(batch_size, rows))
    return b, max(1, min(k, rows // b))


def _log_weights(model: VAE, xb: Array, h: Array, eps: Array) -> Array:
    """log w = log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps, the training
    step's log-weights (``VAE.forward`` with objective "iwae", at beta = 1): the draws and
    log p(z) - log q(z|x) from the same op, :func:`~scratchvae.ops.iwae.iw_latent_forward`.

    xb: (b, D); h = [mu | logvar]: (b, 2L); eps: (s, b, L) -> log w: (s, b)."""
    s, b, L = eps.shape
    (z, log_ratio), _ = iw_latent_forward(h, eps)  # z (s, b, L), log p(z) - log q(z|x) (s, b)
    out = _decoder_out(model, z.reshape(s * b, L)).reshape(s, b, -1)  # (s, b, D_out)
    return model.lik.log_prob(out, xb) + log_ratio


def iw_bound(
    model: VAE,
    x: Array,
    k: int = 1000,
    batch_size: int = 500,
    budget: int | None = None,
    backend: Backend | None = None,
    eps: Array | None = None,
    progress: Callable[[int], None] | None = None,
) -> Array:
    """Per-example importance-weighted lower bound on log p(x) with k samples, (N,), float64.

    L_k(x) = log (1/k) sum_{i=1..k} w_i = logsumexp_i(log w_i) - log k,   z_i ~ q(z|x)

    Work is split into chunks of (examples, samples) of at most ``budget`` floats (None:
    :data:`DEFAULT_BUDGET`, or :data:`GPU_BUDGET` on CuPy). For each block
    of examples the samples are drawn chunk by chunk, sample-major (so for a given block of
    examples the draws do not depend on how the samples are chunked); each chunk's logsumexp
    over its samples joins a running total as it comes: logsumexp is associative,
    lse(a ++ b) = logaddexp(lse(a), lse(b)), and each step subtracts its maximum, so nothing
    overflows and memory does not grow with k. ``eps`` (k, N, L), when given, is used instead
    of fresh draws (for tests). ``progress(n)`` is called after each chunk with the number of
    (example, sample) pairs done so far (of N * k). k = 1 is the one-sample ELBO estimator
    log p(x|z) + log p(z) - log q(z|x).

    It is the training step's L_K (:func:`~scratchvae.ops.iwae.iw_bound_forward` on the
    log-weights of ``VAE.forward``, objective "iwae", beta 1), equal on the same draws in
    float64; here the log-weights, computed in the model's dtype, are combined in float64 (in
    float32 the two differ by float32's rounding). An example whose log-weights are all -inf
    gets -inf, one with a +inf (and no NaN) +inf, one with a NaN NaN (:func:`evaluate` says
    why in its ``iw_note``: :func:`~scratchvae.ops.iwae.why_not_finite`).
    """
    _require_vae(model, "the importance-weighted bound")
    if int(k) < 1:
        raise ValueError(f"the number of importance samples k must be >= 1, got {k}")
    k = int(k)
    bk = backend or model.backend
    xp, lse = bk.xp, get_special(model.params.flat).logsumexp
    if budget is None:
        budget = GPU_BUDGET if model.backend.name == "cupy" else DEFAULT_BUDGET
    b_size, s_size = _chunk_sizes(model, batch_size, k, budget)
    bounds, done = [], 0
    for sl in _batches(x.shape[0], b_size):
        xb = model.prepare(x[sl])  # (b, D)
        h = model.encoder.forward(model.params, xb)[0]  # [mu | logvar] (b, 2L), as in encode
        total = None  # logsumexp over the samples so far, (b,) float64
        for ss in _batches(k, s_size):
            n_s = ss.stop - ss.start
            e = bk.normal((n_s, xb.shape[0], model.latent)) if eps is None else eps[ss, sl]
            log_w = _log_weights(model, xb, h, bk.asarray(e)).astype(xp.float64)
            part = lse(log_w, axis=0)  # (b,)
            total = part if total is None else xp.logaddexp(total, part)
            done += (sl.stop - sl.start) * n_s
            if progress is not None:
                progress(done)
        bounds.append(total - math.log(k))  # type: ignore[operator]  # (b,); set: k >= 1
    return xp.concatenate(bounds)


# ============================================================================ other summaries
def active_units(
    model: VAE, x: Array, batch_size: int = 500, threshold: float = ACTIVE_THRESHOLD
) -> tuple[int, Array]:
    """Burda et al.'s active units: A_u = Cov_x(E_q[z_u]) = Var over the data of mu_u(x).

    Returns (number of units with A_u > threshold, A: (L,) variances). A unit whose mean does
    not move with x carries no information about x (its q(z_u|x) is the prior)."""
    _require_vae(model, "active units")
    mus = [model.encode(x[sl])[0] for sl in _batches(x.shape[0], batch_size)]
    mu = model.xp.concatenate(mus).astype(model.xp.float64)  # (N, L)
    var = ((mu - mu.mean(axis=0)) ** 2).mean(axis=0)  # (L,)
    return int((var > threshold).sum()), var


def bits_per_dim(nll_nats: float, n_features: int) -> float:
    """nats per example -> bits per dimension: nll / (D ln 2)."""
    return float(nll_nats) / (n_features * math.log(2.0))


def _mean(a: Array) -> float:
    """Host-side mean of a backend array (evaluation is outside the training step)."""
    return float(to_numpy(a.mean()))


def _recon_only(model: Model, x: Array, batch_size: int) -> dict[str, Any]:
    """A non-VAE: the reconstruction term only, as a mean over the data."""
    total = 0.0
    for sl in _batches(x.shape[0], batch_size):
        total += _mean(model.loss(x[sl])["recon"]) * (sl.stop - sl.start)
    unit = "squared error" if model.lik.kind == "mse" else "nats"
    note = (
        f"{type(model).__name__} has no prior or encoder distribution: only the reconstruction "
        f"term ({unit} per example) is defined"
    )
    return {"recon": total / x.shape[0], "n": int(x.shape[0]), "note": note}


@quiet_float_warnings  # numbers that overflow are reported in the results, not as warnings
def evaluate(
    model: Model,
    x: Array,
    iw_samples: int = 1000,
    batch_size: int = 500,
    elbo_samples: int = 1,
    seed: int | None = 0,
    budget: int | None = None,
    progress: Report | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on data ``x``; every figure in nats per example.

    ``x``: a :class:`Dataset`, or (N, D) vectors or (N, H, W) images as an array or list,
    read as :func:`~scratchvae.train.fit` reads them (uint8 grey levels divided by 255), and
    checked once (NaN/Inf, and values outside [0, 1] for a Bernoulli decoder, refused).

    VAE: ``neg_elbo``, ``recon``, ``kl`` (test ELBO, ``elbo_samples`` eps draws per example),
    ``iw_bound`` (L_k, the lower bound on log p(x): negative), ``iw_nll`` (= -iw_bound),
    ``iw_samples`` (k), ``active_units`` (of ``latent``), ``bits_per_dim`` (from iw_nll),
    ``n``. ``iw_samples=0`` skips the bound (its entries are None). When the bound of some
    example is not finite (extreme parameters: every log-weight -inf, one +inf or NaN), the
    mean is too, and ``iw_note`` says how many examples and why (else None). Other models:
    ``recon``, ``n`` and a ``note``. Noise comes from a backend seeded ``seed`` (None: the
    model's own).
    ``progress(stage, done, total)`` is told each stage's start and the bound's progress in
    (example, sample) pairs.
    """
    # NaN, or outside [0, 1] for a Bernoulli decoder, refused (one scan of the values)
    if isinstance(x, Dataset):  # checked when made, but perhaps for another likelihood
        x = x.get_batch(slice(None))
        check_targets(x, model.lik.kind, "the data")
    elif get_xp(x).__name__ == "numpy":  # a host array or list, read as fit reads it
        x = host_rows(x)  # checked before a cast could make 1e39 Inf
        check_range(*check_float32_range(x, "the data"), model.lik.kind, "the data")
    else:  # a device array, checked where it is
        check_targets(x, model.lik.kind, "the data")
    x = model.backend.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected data of shape (N, D) with N >= 1, got {tuple(x.shape)}")
    iw_samples = whole(iw_samples, "iw_samples (0: skip the bound)", 0)  # 2.5 refused
    elbo_samples, batch_size = whole(elbo_samples, "elbo_samples"), whole(batch_size, "batch size")
    if not isinstance(model, VAE):
        return _recon_only(model, x, batch_size)
    if model.lik.kind == "mse":
        raise ValueError("a VAE trained with likelihood 'mse' has no likelihood to evaluate")
    bk = _noise_backend(model, seed)
    say = progress or (lambda stage, done, total: None)
    n = int(x.shape[0])
    say("ELBO", 0, n)  # of whatever x is: a test split, the training rows, a file
    terms = elbo_terms(model, x, batch_size, elbo_samples, bk)
    say("ELBO", n, n)
    out: dict[str, Any] = {k: _mean(v) for k, v in terms.items()}
    out.update(iw_bound=None, iw_nll=None, iw_samples=int(iw_samples), bits_per_dim=None)
    out["iw_note"] = None  # why the bound is not finite, when it is not
    if iw_samples > 0:
        stage, pairs = f"importance-weighted bound, k={iw_samples:,}", n * int(iw_samples)
        say(stage, 0, pairs)

        def report(done: int) -> None:
            say(stage, done, pairs)  # positional, as a Report is called

        bounds = iw_bound(model, x, iw_samples, batch_size, budget, bk, progress=report)
        bound = _mean(bounds)  # in float64, as the bounds are
        out.update(iw_bound=bound, iw_nll=-bound, bits_per_dim=bits_per_dim(-bound, x.shape[1]))
        if not bool(bk.xp.isfinite(bounds).all()):  # the mean is -inf, inf or nan: say why
            out["iw_note"] = why_not_finite(bounds, iw_samples)
    out["active_units"], _ = active_units(model, x, batch_size)
    out.update(latent=model.latent, n=int(x.shape[0]))
    return out


# ============================================================================ the report
def json_numbers(results: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities as null: JSON has no such numbers (a bare NaN is not valid JSON)."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in results.items()
    }


BINARIZE_TEXT = {
    "none": "none (grey levels in [0, 1] used as Bernoulli targets)",
    "threshold": "threshold (x > 0.5)",
    "dynamic": "dynamic (one seeded Bernoulli draw with P(1) = grey level)",
}


def _binarize_text(mode: str, model: AE) -> str:
    """What the data were scored as: binarized, or as they are (Bernoulli targets in [0, 1],
    or the values a Gaussian or squared-error decoder is scored against)."""
    if mode == "none" and model.lik.kind != "bernoulli":
        return f"none (values used as they are, {model.lik.kind} decoder)"
    return BINARIZE_TEXT.get(mode, mode)


def format_report(r: dict[str, Any], model: AE, epoch: int, n_features: int) -> str:
    """The ``scratchvae evaluate`` report of :func:`evaluate`'s results ``r``, one line each."""
    lines = [
        f"checkpoint    {r['checkpoint']} ({type(model).__name__}, epoch {epoch})",
        f"data          {r['data']}",
        f"binarization  {_binarize_text(r['binarize'], model)}",
        f"units         nats per example (sum over {n_features} features, mean over "
        f"{r['n']} examples)",
    ]
    if not isinstance(model, VAE):
        lines.append(f"recon         {r['recon']:.3f}")
        lines.append(f"note          {r.get('note', '')}")
        return "\n".join(lines)
    lines.append(f"-ELBO         {r['neg_elbo']:.3f}  (recon {r['recon']:.3f} + KL {r['kl']:.3f})")
    if r.get("iw_note"):  # a bound that is not finite: its value, then why
        lines.append(f"IW bound      {r['iw_bound']}  (k={r['iw_samples']}): {r['iw_note']}")
        lines.append("bits/dim      none (the IW bound is not finite)")
    elif r.get("iw_bound") is not None:
        lines.append(
            f"IW bound      log p(x) >= {r['iw_bound']:.3f}  (k={r['iw_samples']}; "
            f"ELBO {-r['neg_elbo']:.3f}): -log p(x) <= {r['iw_nll']:.3f}"
        )
        lines.append(f"bits/dim      {r['bits_per_dim']:.4f}  (from the IW bound)")
    lines.append(f"active units  {r['active_units']} of {r['latent']}")
    return "\n".join(lines)
