"""Optional compiled CPU kernels (Numba) for the elementwise work of the training step.

NumPy runs each ufunc as its own pass over memory: Adam is ten passes over the parameters
(:func:`scratchvae.optim.adam_chunk`), the bias add and ReLU two, and so on. The kernels below do
the same arithmetic per element in one loop that LLVM vectorises:

* :func:`adam`: about five times faster for float32 (0.19 vs 1.0 ms for the 650k parameters of
  the MNIST VAE, one core);
* :func:`bias_relu` and :func:`relu_backward_bias_grad`: a dense layer's bias with its ReLU,
  forward and backward; :func:`column_sum`, the bias gradient of a layer without ReLU;
* :func:`bernoulli_nll_and_grad`: the Bernoulli loss and its gradient, after NumPy has computed
  the ``exp`` and ``log1p`` (NumPy's are vectorised; Numba calls a scalar libm function per
  element, and a kernel doing those itself was 4x slower than NumPy);
* :func:`latent_forward` and :func:`latent_backward`: the VAE's latent layer (the
  reparameterised sample and the Gaussian KL, forward and backward), a dozen small NumPy calls
  each, whose cost at (B, L) = (128, 20) is mostly the calls themselves.

They are used only when Numba is installed (``pip install 'scratchvae[fast]'``), the arrays are
C-contiguous NumPy arrays, and ``SCRATCHVAE_NUMBA`` is not ``0``; otherwise the NumPy ops they
replace run. ``tests/test_compiled.py`` checks that both give the same numbers.

One core on purpose. ``parallel=True`` versions were measured: waking Numba's threads costs about
0.1 ms a call, and inside the training step they compete with OpenBLAS's threads, so they were
no faster there (``benchmarks/README.md`` has the figures). The kernels compile on first use
(about a second each; :func:`warm_up` does it ahead) and are cached on disk.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .backend import Backend, get_xp, is_numpy

Array = Any

try:  # an optional dependency: everything works without it
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

# Numba present and not switched off with SCRATCHVAE_NUMBA=0. Tests flip it to run both paths.
ENABLED: bool = numba is not None and os.environ.get("SCRATCHVAE_NUMBA", "1") != "0"


def enabled() -> bool:
    """Whether the compiled kernels are used (Numba installed, not disabled)."""
    return ENABLED


def applies(*arrays: Array) -> bool:
    """True when the kernels are on and every array is a C-contiguous NumPy array."""
    if not ENABLED:
        return False
    return all(is_numpy(a) and a.flags.c_contiguous for a in arrays)


if numba is not None:
    # error_model="numpy": a division by zero gives inf/nan as in NumPy instead of a Python
    # exception; without it every division carries a zero test and the loop cannot be
    # vectorised (measured: 2.5 ms instead of 0.19 ms for 650k float32 parameters).
    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")

    @_jit
    def _adam(p, g, m, v, one_minus_b1, one_minus_b2, step, eps, tiny):  # noqa: ANN001, ANN202
        # per element, as adam_chunk:  m += (1-b1)(g - m);  v += (1-b2)(g^2 - v);
        #                              p -= step * m / (sqrt(v) + eps)
        # and moments below ``tiny`` (the smallest normal number) set to zero: see adam()
        zero = p.dtype.type(0)
        for i in range(p.size):
            gi = g[i]
            mi = m[i] + one_minus_b1 * (gi - m[i])
            vi = v[i] + one_minus_b2 * (gi * gi - v[i])
            mi = mi if abs(mi) >= tiny else zero
            vi = vi if vi >= tiny else zero
            m[i] = mi
            v[i] = vi
            p[i] -= step * mi / (math.sqrt(vi) + eps)

    @_jit
    def _bias_relu(a, b, h):  # noqa: ANN001, ANN202 - compiled
        # h = max(a + b, 0)       a: (B, H) = x @ W,  b: (H,)      (dense bias, then ReLU)
        zero = a.dtype.type(0)
        for r in range(a.shape[0]):
            for c in range(a.shape[1]):
                v = a[r, c] + b[c]
                h[r, c] = zero if v <= zero else v  # NaN stays NaN, as in np.maximum

    @_jit
    def _relu_backward_bias_grad(y, dy, da, db):  # noqa: ANN001, ANN202 - compiled
        # da = dy * 1[y > 0]  (B, H)      db = sum_B da  (H,)      (ReLU, then the dense bias)
        zero, one = y.dtype.type(0), y.dtype.type(1)
        db[:] = zero
        for r in range(y.shape[0]):
            for c in range(y.shape[1]):
                d = dy[r, c] * (one if y[r, c] > zero else zero)  # NaN * 0 = NaN, as NumPy
                da[r, c] = d
                db[c] += d

    @_jit
    def _column_sum(a, out):  # noqa: ANN001, ANN202 - compiled
        # out = sum_B a   (B, H) -> (H,): row after row, in NumPy's order for axis=0
        out[:] = a.dtype.type(0)
        for r in range(a.shape[0]):
            for c in range(a.shape[1]):
                out[c] += a[r, c]

    # reassociating the float sum (its only fast-math flag) lets LLVM vectorise the loop
    @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
    def _bernoulli_nll_and_grad(logits, x, e, log1p_e, dlogits, inv_b):  # noqa: ANN001, ANN202
        # from e = exp(-|l|) and log1p(e) (NumPy's vectorised transcendentals), per element:
        #   softplus(l) = max(l, 0) + log1p(e)          loss += softplus(l) - x l
        #   sigmoid(l)  = 1 / (1 + e) if l >= 0, else e / (1 + e)     (no overflow; a small
        #   dL/dl       = (sigmoid(l) - x) / B           sigmoid keeps its relative precision)
        zero, one = logits.dtype.type(0), logits.dtype.type(1)
        total = 0.0  # float64 over rows; each row's D terms summed in the array dtype
        for r in range(logits.shape[0]):
            row = zero
            for c in range(logits.shape[1]):
                li, ei, xi = logits[r, c], e[r, c], x[r, c]
                row += max(li, zero) + log1p_e[r, c] - xi * li
                dlogits[r, c] = ((one if li >= zero else ei) / (one + ei) - xi) * inv_b
            total += row
        return total * inv_b

    @_jit
    def _latent_forward(h, eps, z, sigma):  # noqa: ANN001, ANN202 - compiled
        # h = [mu | logvar] (B, 2L), the encoder's output; eps, z, sigma: (B, L). Per element:
        #   sigma = exp(logvar / 2),   z = mu + sigma eps                 (reparam_forward)
        #   kl   += mu^2 + sigma^2 - logvar - 1       (gaussian_kl, with exp(logvar) = sigma^2)
        half, one = h.dtype.type(0.5), h.dtype.type(1)
        L = eps.shape[1]
        total = 0.0  # float64
        for r in range(eps.shape[0]):
            for c in range(L):
                mu, lv = h[r, c], h[r, L + c]
                s = math.exp(half * lv)
                sigma[r, c] = s
                z[r, c] = mu + s * eps[r, c]
                total += mu * mu + s * s - lv - one
        return total

    @_jit
    def _latent_backward(dz, eps, sigma, h, c, dh):  # noqa: ANN001, ANN202 - compiled
        # dL/d[mu | logvar] into dh (B, 2L), through the sample and beta * KL (c = beta / B):
        #   dL/dmu     = dz + c mu                                  (dz/dmu = 1, dKL/dmu = mu)
        #   dL/dlogvar = dz eps sigma / 2 + c (sigma^2 - 1) / 2     (dKL/dlogvar = (e^lv - 1)/2)
        half, one = dz.dtype.type(0.5), dz.dtype.type(1)
        L = dz.shape[1]
        for r in range(dz.shape[0]):
            for j in range(L):
                s = sigma[r, j]
                dh[r, j] = dz[r, j] + c * h[r, j]
                dh[r, L + j] = half * (dz[r, j] * eps[r, j] * s + c * (s * s - one))


def adam(
    p: Array, g: Array, m: Array, v: Array, b1: float, b2: float, step: float, eps: float
) -> None:
    """:func:`scratchvae.optim.adam_chunk` in one vectorised pass (1-d arrays, in place).

    One difference: a moment that falls below the smallest normal number (``finfo.tiny``,
    1.2e-38 in float32) becomes zero. A weight whose gradient is always zero (a pixel that is
    never on, a dead ReLU unit) has m = 0.9^t m_0, subnormal after about 800 steps in float32,
    and arithmetic on subnormal numbers takes a slow path in the CPU: with 28% of m subnormal,
    as in the benchmark's step, this loop took 0.30 ms instead of 0.19 ms. The parameter
    moves by less than ``step * tiny / eps`` either way, far below its rounding.
    """
    t = p.dtype.type  # scalars of the arrays' dtype: float32 arithmetic stays float32
    tiny = t(get_xp(p).finfo(p.dtype).tiny)
    _adam(p, g, m, v, t(1 - b1), t(1 - b2), t(step), t(eps), tiny)


def bias_relu(a: Array, b: Array, out: Array) -> Array:
    """``relu(a + b)`` into ``out`` (B, H), one pass: :func:`~scratchvae.layers.dense_forward`'s
    bias and :func:`~scratchvae.activations.relu_forward` on ``a = x @ W``."""
    _bias_relu(a, b, out)
    return out


def relu_backward_bias_grad(y: Array, dy: Array, out: Array, out_db: Array) -> Array:
    """:func:`~scratchvae.activations.relu_backward` into ``out`` (B, H) and the dense bias
    gradient ``sum_B`` of it into ``out_db`` (H,), one pass."""
    _relu_backward_bias_grad(y, dy, out, out_db)
    return out


def column_sum(a: Array, out: Array) -> Array:
    """``a.sum(axis=0)`` into ``out`` (a dense layer's bias gradient): the same additions in the
    same order as NumPy's, without its reduction machinery (5.7 vs 12.4 us at 128 x 784)."""
    _column_sum(a, out)
    return out


def bernoulli_nll_and_grad(
    logits: Array, x: Array, e: Array, log1p_e: Array, dlogits: Array
) -> Array:
    """The Bernoulli loss (sum over D, mean over B), with its gradient written into ``dlogits``
    (B, D), given ``e = exp(-|logits|)`` and ``log1p(e)``: the arithmetic of
    :func:`scratchvae.losses.bernoulli_nll_and_grad` in one pass. ``dlogits`` may not be one of
    the inputs (it would still be right, but unvectorised: 4x slower). Returns a 0-d array of
    the logits' dtype."""
    t = logits.dtype.type
    x = x.astype(logits.dtype, copy=False)
    total = _bernoulli_nll_and_grad(logits, x, e, log1p_e, dlogits, t(1.0 / logits.shape[0]))
    return get_xp(logits).asarray(total, dtype=logits.dtype)


def latent_forward(h: Array, eps: Array, z: Array, sigma: Array) -> Array:
    """:func:`~scratchvae.reparam.reparam_forward` and :func:`~scratchvae.losses.gaussian_kl`
    in one pass over ``h = [mu | logvar]`` (B, 2L): writes z and sigma (B, L) and returns the
    KL (sum over L, mean over B) as a 0-d array of h's dtype."""
    total = _latent_forward(h, eps, z, sigma)
    return get_xp(h).asarray(0.5 * total / h.shape[0], dtype=h.dtype)


def latent_backward(
    dz: Array, eps: Array, sigma: Array, h: Array, kl_weight: float, out: Array
) -> Array:
    """:func:`~scratchvae.reparam.reparam_backward` plus ``kl_weight`` times
    :func:`~scratchvae.losses.gaussian_kl_backward`, written into ``out`` = dL/d[mu | logvar]
    (B, 2L), one pass."""
    _latent_backward(dz, eps, sigma, h, dz.dtype.type(kl_weight / dz.shape[0]), out)
    return out


def warm_up(dtype: str = "float32") -> None:
    """Compile (or load from the disk cache) every kernel for ``dtype`` now, instead of in the
    first training step. A no-op without Numba."""
    if not ENABLED:
        return
    bk = Backend("numpy", dtype)
    a, b, v = bk.zeros((2, 3)), bk.zeros(3), bk.zeros(6)
    adam(v, v.copy(), v.copy(), v.copy(), 0.9, 0.999, 1e-3, 1e-8)
    bias_relu(a, b, out=a.copy())
    relu_backward_bias_grad(a, a.copy(), a.copy(), b.copy())
    column_sum(a, b.copy())
    bernoulli_nll_and_grad(a, a.copy(), a.copy(), a.copy(), a.copy())
    h, eps = bk.zeros((2, 4)), bk.zeros((2, 2))
    latent_forward(h, eps, eps.copy(), eps.copy())
    latent_backward(eps, eps.copy(), eps.copy(), h, 1.0, h.copy())
