"""Optional compiled CPU kernels (Numba) for the elementwise work of the training step.

NumPy runs each ufunc as its own pass over memory: Adam is ten passes over the parameters
(:func:`scratchvae.optim.adam_chunk`), the bias add and ReLU two, and so on. The kernels below do
the same arithmetic per element in one loop that LLVM vectorises:

* :func:`adam`: about five times faster for float32 (0.19 vs 1.0 ms for the 650k parameters of
  the MNIST VAE, one core);
* :func:`bias_relu` and :func:`relu_backward_bias_grad`: a dense layer's bias with its ReLU,
  forward and backward; :func:`column_sum`, the bias gradient of a layer without ReLU;
* :func:`bernoulli_nll_and_grad`: the Bernoulli loss and its gradient. In float32 the whole
  loss is one pass, ``exp`` and ``log1p`` included, written out as textbook series (see
  :func:`_exp_minus`, :func:`_log1p_unit`): Numba has no vectorised ``exp``/``log1p`` of its
  own (it calls a scalar libm function per element, 4x slower than NumPy's), but these are
  plain multiply-adds, which LLVM vectorises (0.067 vs 0.13 ms at 128 x 784, and no scratch
  memory). In float64 NumPy computes ``exp`` and ``log1p`` first and the kernel does the rest;
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

import numpy as np  # numpy-boundary: Numba's kernels take NumPy arrays only

from .backend import Backend, get_xp, is_numpy

Array = Any

try:  # an optional dependency: everything works without it
    import numba
    from llvmlite import ir as llvm_ir
    from numba.extending import intrinsic
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
    for a in arrays:  # a loop, not all(...): called a dozen times a training step
        if not (is_numpy(a) and a.flags.c_contiguous):
            return False
    return True


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

    # ------------------------------------------------------------ exp and log1p in float32
    # Constants of the two series below, as float32 (numbers of the arrays' dtype keep the
    # arithmetic float32). ln 2 = LN2_HI + LN2_LO with LN2_HI = 0.693359375 (nine significant
    # bits): n * LN2_HI is exact for every n used here (Cody & Waite's range reduction).
    _F32 = numba.float32
    _LOG2E = _F32(1 / math.log(2))
    _LN2_HI = _F32(0.693359375)
    _LN2_LO = _F32(math.log(2) - 0.693359375)
    # exp(-87) = 1.6e-38 is the last normal result; beyond it exp(-a) is taken as 0
    _EXP_ARG_MAX = _F32(87.0)
    # Taylor: exp(y) = sum_k y^k / k!  for |y| <= ln2 / 2, truncation < 0.35^8 / 8! = 5e-9
    _EXP_TAYLOR = tuple(_F32(1 / math.factorial(k)) for k in range(8))
    # atanh(s) / s - 1 = s^2 / 3 + s^4 / 5 + ...  for s <= 1/3, truncation < 9^-7 / 15 = 1.4e-8
    _ATANH_TAIL = tuple(_F32(1 / (2 * k + 1)) for k in range(1, 7))

    # "contract": a multiply and an add may become one fused multiply-add (one rounding
    # instead of two; Horner's rule is a chain of them)
    _series_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

    @intrinsic
    def _pow2(typingctx, n):  # noqa: ANN001, ANN202 - compiled
        """2^n for a whole float32 n in [-126, 127], from its IEEE 754 bit pattern: the biased
        exponent n + 127 in bits 23-30, a zero mantissa. (Plain integer and bit operations,
        so the loop around it still vectorises; ``math.ldexp`` would be a libm call.)"""

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            int32 = llvm_ir.IntType(32)
            biased = builder.add(builder.fptosi(args[0], int32), llvm_ir.Constant(int32, 127))
            bits = builder.shl(biased, llvm_ir.Constant(int32, 23))
            return builder.bitcast(bits, llvm_ir.FloatType())

        return numba.float32(numba.float32), codegen

    @_series_jit
    def _horner(coeffs, y):  # noqa: ANN001, ANN202 - compiled
        # coeffs[0] + y (coeffs[1] + y (coeffs[2] + ...))
        acc = coeffs[-1]
        for k in range(len(coeffs) - 2, -1, -1):
            acc = coeffs[k] + y * acc
        return acc

    @_series_jit
    def _exp_minus(a):  # noqa: ANN001, ANN202 - compiled
        # exp(-a) for float32 a in [0, 87]. Write a = n ln2 - y with n = round(a / ln2), so
        # |y| <= ln2 / 2, and exp(-a) = 2^-n exp(y): a power of two times a short Taylor series.
        n = np.floor(a * _LOG2E + _F32(0.5))
        y = (n * _LN2_HI - a) + n * _LN2_LO  # n ln2 - a, the large part cancelling exactly
        return _horner(_EXP_TAYLOR, y) * _pow2(-n)

    @_series_jit
    def _log1p_unit(e):  # noqa: ANN001, ANN202 - compiled
        # log(1 + e) for float32 e in [0, 1]: 1 + e = (1 + s) / (1 - s) with s = e / (2 + e)
        # in [0, 1/3], and log((1 + s) / (1 - s)) = 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + ...).
        # The leading 2s is added last, so the series' rounding is that of a small correction.
        s = e / (_F32(2) + e)
        s2 = s * s
        return _F32(2) * s + _F32(2) * s * (s2 * _horner(_ATANH_TAIL, s2))

    # fast-math flags: "reassoc" lets LLVM reorder the float sum (and so vectorise the loop),
    # "contract" fuses multiply-adds; they apply to this function's own arithmetic, while the
    # series it calls keep only "contract" (their range reduction must not be reordered)
    @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
    def _bernoulli_nll_and_grad_f32(logits, x, dlogits, inv_b):  # noqa: ANN001, ANN202
        # the float32 loss in one pass. Per element, with a = |l| and e = exp(-a) in (0, 1]:
        #   softplus(l) = max(l, 0) + log1p(e)          loss += softplus(l) - x l
        #   dL/dl = (sigmoid(l) - x) / B,  sigmoid(l) = 1 / (1 + e) if l >= 0, else e / (1 + e)
        zero, one = _F32(0), _F32(1)
        total = 0.0  # float64 over rows; each row's D terms summed in float32
        for r in range(logits.shape[0]):
            row = zero
            for c in range(logits.shape[1]):
                li, xi = logits[r, c], x[r, c]
                a = abs(li)
                e = _exp_minus(a if a <= _EXP_ARG_MAX else _EXP_ARG_MAX)  # NaN: the max
                if not a <= _EXP_ARG_MAX:
                    e = zero if a > _EXP_ARG_MAX else a  # underflow to 0; NaN stays NaN
                row += max(li, zero) + _log1p_unit(e) - xi * li
                dlogits[r, c] = ((one if li >= zero else e) / (one + e) - xi) * inv_b
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


def fuses_bernoulli(dtype: Any) -> bool:
    """Whether the Bernoulli kernel does the whole loss itself (float32: ``exp`` and ``log1p``
    in the loop) and so needs no ``work`` buffer; in float64 NumPy computes those two first."""
    return np.dtype(dtype) == np.float32


def bernoulli_nll_and_grad(
    logits: Array, x: Array, dlogits: Array, work: Array | None = None
) -> Array:
    """The Bernoulli loss (sum over D, mean over B), with its gradient written into ``dlogits``
    (B, D): the arithmetic of :func:`scratchvae.losses.bernoulli_nll_and_grad` in one pass.

    float32: one kernel, ``exp(-|l|)`` and ``log1p`` computed in it (:func:`_exp_minus`,
    :func:`_log1p_unit`; within 0.93 and 1.9 units in the last place of the exact values, where
    NumPy's float32 ``exp`` and ``log1p`` are within 2.4 and 2.0). Other dtypes: NumPy's
    vectorised ``exp`` and ``log1p`` into ``work`` (2, B, D; allocated when None), then the rest
    in one pass. ``dlogits`` may not be one of
    the inputs, nor ``work`` (it would still be right, but unvectorised: when two arguments
    may overlap LLVM cannot reorder their reads and writes; measured 4x slower). Returns a 0-d
    array of the logits' dtype.
    """
    xp = get_xp(logits)
    t = logits.dtype.type
    x = x.astype(logits.dtype, copy=False)
    inv_b = t(1.0 / logits.shape[0])
    if fuses_bernoulli(logits.dtype):
        total = _bernoulli_nll_and_grad_f32(logits, x, dlogits, inv_b)
        return xp.asarray(total, dtype=logits.dtype)
    work = xp.empty((2, *logits.shape), dtype=logits.dtype) if work is None else work
    e = xp.abs(logits, out=work[0])
    xp.negative(e, out=e)
    xp.exp(e, out=e)  # e^{-|l|}, in (0, 1]
    log1p_e = xp.log1p(e, out=work[1])  # softplus(l) - max(l, 0)
    total = _bernoulli_nll_and_grad(logits, x, e, log1p_e, dlogits, inv_b)
    return xp.asarray(total, dtype=logits.dtype)


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
    bernoulli_nll_and_grad(a, a.copy(), a.copy())
    h, eps = bk.zeros((2, 4)), bk.zeros((2, 2))
    latent_forward(h, eps, eps.copy(), eps.copy())
    latent_backward(eps, eps.copy(), eps.copy(), h, 1.0, h.copy())
