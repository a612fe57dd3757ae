"""Optional compiled CPU kernels (Numba) for the elementwise work of the training step.

NumPy runs each ufunc as its own pass over memory: Adam is ten passes over the parameters
(:func:`scratchvae.optim.adam_chunk`), the bias add and ReLU two, and so on. The kernels below do
the same arithmetic per element in one loop that LLVM vectorises:

* :func:`adam`: about five times faster for float32 (0.19 vs 1.0 ms for the 650k parameters of
  the MNIST VAE, one core);
* :func:`bias_relu` and :func:`relu_backward_bias_grad`: a dense layer's bias with its ReLU,
  forward and backward; :func:`column_sum`, the bias gradient of a layer without ReLU;
* :func:`bernoulli_nll_and_grad`: the Bernoulli loss and its gradient in one pass, ``exp`` and
  ``log1p`` included, written out as textbook series (:func:`_exp_minus`, :func:`_log1p_unit`):
  Numba has no vectorised ``exp``/``log1p`` of its own (it calls a scalar libm function per
  element, 4x slower than NumPy's), but the series are plain multiply-adds, which LLVM
  vectorises. At 128 x 784: 0.07 ms in float32 and 0.21 ms in float64, against 0.13 and 0.27
  ms with NumPy's exp and log1p followed by a kernel, and no scratch memory;
* :func:`bernoulli_log_prob`: the evaluation's Bernoulli log-likelihood per row (the
  importance-weighted bound computes it for every sample of every example), with the same
  series: 0.43 vs 1.56 ms for 2 x 500 x 784 float32 logits;
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
from typing import Any, NamedTuple

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


class SeriesConstants(NamedTuple):
    """The numbers of the Bernoulli kernel's ``exp`` and ``log1p`` (:func:`_exp_minus`,
    :func:`_log1p_unit`), all of the arrays' dtype so that float32 arithmetic stays float32."""

    inv_ln2: Any
    ln2_hi: Any  # ln 2 = ln2_hi + ln2_lo (Cody & Waite): ln2_hi has trailing zero bits, so
    ln2_lo: Any  # n * ln2_hi is exact for every n used, and n ln2 - a cancels exactly
    arg_max: Any  # exp(-arg_max) is still a normal number; beyond it exp(-a) is taken as 0
    zero: Any
    half: Any
    two: Any
    exp_taylor: tuple  # 1 / k!:  exp(y) = sum_k y^k / k!  for |y| <= ln2 / 2
    atanh_tail: tuple  # 1 / (2k + 1), k >= 1:  atanh(s) / s - 1 = s^2 / 3 + s^4 / 5 + ...


def _series_constants(
    dtype: Any, ln2_hi: float, ln2_lo: float, arg_max: float, n_exp: int, n_atanh: int
) -> SeriesConstants:
    t = np.dtype(dtype).type
    return SeriesConstants(
        t(1 / math.log(2)),
        t(ln2_hi),
        t(ln2_lo),
        t(arg_max),
        t(0),
        t(0.5),
        t(2),
        tuple(t(1 / math.factorial(k)) for k in range(n_exp)),
        tuple(t(1 / (2 * k + 1)) for k in range(1, n_atanh + 1)),
    )


# Terms kept: truncation errors below the dtype's rounding. float32: Taylor to y^7 leaves
# < 0.347^8 / 8! = 5e-9, the atanh series to s^12 leaves < 9^-7 / 15 = 1.4e-8 (s <= 1/3).
# float64: to y^13, < 0.347^14 / 14! = 4e-18; to s^30, < 9^-16 / 33 = 2e-17. The ln 2 splits
# are Cephes' (float32) and fdlibm's (float64).
SERIES = {
    "float32": _series_constants("float32", 0.693359375, -2.12194440e-4, 87.0, 8, 6),
    "float64": _series_constants(
        "float64", 6.93147180369123816490e-01, 1.90821492927058770002e-10, 708.0, 14, 15
    ),
}


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

    # ------------------------------------------------------------ exp and log1p, as series
    # "contract": a multiply and an add may become one fused multiply-add (one rounding
    # instead of two; Horner's rule is a chain of them)
    _series_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

    @intrinsic
    def _pow2(typingctx, n):  # noqa: ANN001, ANN202 - compiled
        """2^n for a whole float n in the normal range, from its IEEE 754 bit pattern: the
        biased exponent (n + 127 in bits 23-30 of a float32, n + 1023 in bits 52-62 of a
        float64) over a zero mantissa. Plain integer and bit operations, so the loop around it
        still vectorises; ``math.ldexp`` would be a libm call per element."""
        bits, bias, shift = (32, 127, 23) if n == numba.float32 else (64, 1023, 52)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            int_t = llvm_ir.IntType(bits)
            biased = builder.add(builder.fptosi(args[0], int_t), llvm_ir.Constant(int_t, bias))
            pattern = builder.shl(biased, llvm_ir.Constant(int_t, shift))
            return builder.bitcast(pattern, context.get_value_type(n))

        return n(n), codegen

    @_series_jit
    def _horner(coeffs, y):  # noqa: ANN001, ANN202 - compiled
        # coeffs[0] + y (coeffs[1] + y (coeffs[2] + ...))
        acc = coeffs[-1]
        for k in range(len(coeffs) - 2, -1, -1):
            acc = coeffs[k] + y * acc
        return acc

    @_series_jit
    def _exp_minus(a, c):  # noqa: ANN001, ANN202 - compiled
        # exp(-a) for a in [0, c.arg_max]. Write a = n ln2 - y with n = round(a / ln2), so
        # |y| <= ln2 / 2, and exp(-a) = 2^-n exp(y): a power of two times a short Taylor series.
        n = np.floor(a * c.inv_ln2 + c.half)
        y = (n * c.ln2_hi - a) + n * c.ln2_lo  # n ln2 - a, the large part cancelling exactly
        return _horner(c.exp_taylor, y) * _pow2(-n)

    @_series_jit
    def _exp_minus_abs(x, c):  # noqa: ANN001, ANN202 - compiled
        # exp(-|x|) for any x: 0 past c.arg_max (the exact value is below the smallest normal
        # number there), NaN for NaN. NaN and the far tail take arg_max into _exp_minus, so its
        # float-to-integer conversion always has a defined result.
        a = abs(x)
        e = _exp_minus(a if a <= c.arg_max else c.arg_max, c)
        if not a <= c.arg_max:
            e = c.zero if a > c.arg_max else a  # 0, or the NaN itself
        return e

    @_series_jit
    def _log1p_unit(e, c):  # noqa: ANN001, ANN202 - compiled
        # log(1 + e) for e in [0, 1]: 1 + e = (1 + s) / (1 - s) with s = e / (2 + e) in
        # [0, 1/3], and log((1 + s) / (1 - s)) = 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + ...).
        # The leading 2s is added last, so the series' rounding is that of a small correction.
        s = e / (c.two + e)
        s2 = s * s
        return c.two * s + c.two * s * (s2 * _horner(c.atanh_tail, s2))

    # fast-math flags: "reassoc" lets LLVM reorder the float sum (and so vectorise the loop),
    # "contract" fuses multiply-adds; they apply to this function's own arithmetic, while the
    # series it calls keep only "contract" (their range reduction must not be reordered)
    @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
    def _bernoulli_nll_and_grad(logits, x, dlogits, inv_b, series):  # noqa: ANN001, ANN202
        # the loss in one pass. Per element, with a = |l| and e = exp(-a) in (0, 1]:
        #   softplus(l) = max(l, 0) + log1p(e)          loss += softplus(l) - x l
        #   dL/dl = (sigmoid(l) - x) / B,  sigmoid(l) = 1 / (1 + e) if l >= 0, else e / (1 + e)
        # (no overflow either way, and a small sigmoid keeps its relative precision)
        zero, one = logits.dtype.type(0), logits.dtype.type(1)
        total = 0.0  # float64 over rows; each row's D terms summed in the array dtype
        for r in range(logits.shape[0]):
            row = zero
            for c in range(logits.shape[1]):
                li, xi = logits[r, c], x[r, c]
                e = _exp_minus_abs(li, series)
                row += max(li, zero) + _log1p_unit(e, series) - xi * li
                dlogits[r, c] = ((one if li >= zero else e) / (one + e) - xi) * inv_b
            total += row
        return total * inv_b

    @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
    def _bernoulli_log_prob(logits, x, out, series):  # noqa: ANN001, ANN202 - compiled
        # log p(x | l) = -sum_D [softplus(l) - x l] per row, for logits (S, B, D) and the data
        # x (B, D) they are all compared with: out (S, B). Per element as in the loss above.
        zero = logits.dtype.type(0)
        for i in range(logits.shape[0]):
            for b in range(logits.shape[1]):
                row = zero
                for d in range(logits.shape[2]):
                    li, xi = logits[i, b, d], x[b, d]
                    e = _exp_minus_abs(li, series)
                    row += max(li, zero) + _log1p_unit(e, series) - xi * li
                out[i, b] = -row

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


def _require(ok: bool, kernel: str, arrays: tuple[Array, ...]) -> None:
    """Refuse to call a compiled kernel on arrays it would index out of bounds: the kernels
    index without bounds checks (vectorised loops), so a wrong shape would read or write
    memory outside the arrays instead of raising."""
    if not ok:
        shapes = ", ".join(f"{a.dtype.name}{list(a.shape)}" for a in arrays)
        raise ValueError(f"{kernel}: arrays of mismatched shapes or dtypes ({shapes})")


def _same(*arrays: Array) -> bool:
    """Every array has the first one's shape and dtype."""
    first = arrays[0]
    return all(a.shape == first.shape and a.dtype == first.dtype for a in arrays)


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
    _require(p.ndim == 1 and _same(p, g, m, v), "adam", (p, g, m, v))
    t = p.dtype.type  # scalars of the arrays' dtype: float32 arithmetic stays float32
    tiny = t(get_xp(p).finfo(p.dtype).tiny)
    _adam(p, g, m, v, t(1 - b1), t(1 - b2), t(step), t(eps), tiny)


def bias_relu(a: Array, b: Array, out: Array) -> Array:
    """``relu(a + b)`` into ``out`` (B, H), one pass: :func:`~scratchvae.layers.dense_forward`'s
    bias and :func:`~scratchvae.activations.relu_forward` on ``a = x @ W``."""
    _require(a.ndim == 2 and _same(a, out) and b.shape == a.shape[1:], "bias_relu", (a, b, out))
    _bias_relu(a, b, out)
    return out


def relu_backward_bias_grad(y: Array, dy: Array, out: Array, out_db: Array) -> Array:
    """:func:`~scratchvae.activations.relu_backward` into ``out`` (B, H) and the dense bias
    gradient ``sum_B`` of it into ``out_db`` (H,), one pass."""
    arrays = (y, dy, out, out_db)
    ok = y.ndim == 2 and _same(y, dy, out) and out_db.shape == y.shape[1:]
    _require(ok, "relu_backward_bias_grad", arrays)
    _relu_backward_bias_grad(y, dy, out, out_db)
    return out


def column_sum(a: Array, out: Array) -> Array:
    """``a.sum(axis=0)`` into ``out`` (a dense layer's bias gradient): the same additions in the
    same order as NumPy's, without its reduction machinery (5.7 vs 12.4 us at 128 x 784)."""
    _require(a.ndim == 2 and out.shape == a.shape[1:], "column_sum", (a, out))
    _column_sum(a, out)
    return out


def bernoulli_applies(logits: Array, *arrays: Array) -> bool:
    """:func:`applies`, and the logits are float32 or float64 (the dtypes of :data:`SERIES`)."""
    return applies(logits, *arrays) and logits.dtype.name in SERIES


def bernoulli_nll_and_grad(logits: Array, x: Array, dlogits: Array) -> Array:
    """The Bernoulli loss (sum over D, mean over B), with its gradient written into ``dlogits``
    (B, D): the arithmetic of :func:`scratchvae.losses.bernoulli_nll_and_grad` in one pass,
    ``exp(-|l|)`` and ``log1p`` included (:func:`_exp_minus`, :func:`_log1p_unit`: within 0.93
    and 1.9 units in the last place of the exact values in float32, where NumPy's are within 2.4
    and 1.8; in float64 within 0.85 and 1.9, NumPy's within 0.7 and 0.6).
    ``dlogits`` may not be one of the inputs (it would still be right, but unvectorised: when
    two arguments may overlap LLVM cannot reorder their reads and writes; measured 4x slower).
    Returns a 0-d array of the logits' dtype.
    """
    t = logits.dtype.type
    x = x.astype(logits.dtype, copy=False)
    ok = logits.ndim == 2 and _same(logits, x, dlogits)
    _require(ok, "bernoulli_nll_and_grad", (logits, x, dlogits))
    constants = SERIES[logits.dtype.name]
    total = _bernoulli_nll_and_grad(logits, x, dlogits, t(1.0 / logits.shape[0]), constants)
    return get_xp(logits).asarray(total, dtype=logits.dtype)


def bernoulli_log_prob(logits: Array, x: Array) -> Array:
    """log p(x | logits) = -sum_D [softplus(l) - x l] for each row of ``logits`` (..., B, D)
    against data x (B, D), shape (..., B): the evaluation's Bernoulli log-likelihood
    (:func:`scratchvae.evaluate.log_px_given_z`) in one pass, with the loss's series for exp
    and log1p. Each row is summed in the logits' dtype."""
    _require(x.ndim == 2 and logits.shape[-2:] == x.shape, "bernoulli_log_prob", (logits, x))
    B, D = x.shape
    logits3 = logits.reshape(-1, B, D)
    out = get_xp(logits).empty(logits3.shape[:2], dtype=logits.dtype)
    _bernoulli_log_prob(logits3, x.astype(logits.dtype, copy=False), out, SERIES[logits.dtype.name])
    return out.reshape(logits.shape[:-1])


def latent_forward(h: Array, eps: Array, z: Array, sigma: Array) -> Array:
    """:func:`~scratchvae.reparam.reparam_forward` and :func:`~scratchvae.losses.gaussian_kl`
    in one pass over ``h = [mu | logvar]`` (B, 2L): writes z and sigma (B, L) and returns the
    KL (sum over L, mean over B) as a 0-d array of h's dtype."""
    ok = eps.ndim == 2 and _same(eps, z, sigma) and h.shape == (eps.shape[0], 2 * eps.shape[1])
    _require(ok and h.dtype == eps.dtype, "latent_forward", (h, eps, z, sigma))
    total = _latent_forward(h, eps, z, sigma)
    return get_xp(h).asarray(0.5 * total / h.shape[0], dtype=h.dtype)


def latent_backward(
    dz: Array, eps: Array, sigma: Array, h: Array, kl_weight: float, out: Array
) -> Array:
    """:func:`~scratchvae.reparam.reparam_backward` plus ``kl_weight`` times
    :func:`~scratchvae.losses.gaussian_kl_backward`, written into ``out`` = dL/d[mu | logvar]
    (B, 2L), one pass."""
    ok = dz.ndim == 2 and _same(dz, eps, sigma) and _same(h, out)
    ok = ok and h.shape == (dz.shape[0], 2 * dz.shape[1]) and h.dtype == dz.dtype
    _require(ok, "latent_backward", (dz, h, out))
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
    bernoulli_log_prob(a, a.copy())
    h, eps = bk.zeros((2, 4)), bk.zeros((2, 2))
    latent_forward(h, eps, eps.copy(), eps.copy())
    latent_backward(eps, eps.copy(), eps.copy(), h, 1.0, h.copy())
