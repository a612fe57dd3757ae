"""Numba kernels: the CPU fast path of the ops named in :data:`KERNELS`.

NumPy runs each ufunc as its own pass over memory: Adam is ten passes over the parameters, the
bias add and ReLU two, the Bernoulli loss a dozen. Each kernel below does the same arithmetic
per element in one loop that LLVM vectorises, on one core (``benchmarks/README.md`` has the
measurements, and what was tried and dropped). Each replaces exactly one readable op, takes
that op's arguments and returns what it returns; ``tests/kernels/test_cpu_kernels.py`` checks
every pair on the same input. :func:`scratchvae.backend.op` picks them for C-contiguous float
NumPy arrays; nothing else calls them.

The loops index without bounds checks (that is what lets them vectorise), so every wrapper
first checks the shapes and dtypes of the arrays it indexes (:func:`_require`) and raises
instead of reading or writing outside them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np  # numpy-boundary: Numba's kernels take NumPy arrays only

from ..backend.threads import cpu_threads, run_parallel
from ..ops.layers import DenseCache, DenseGrads, DenseReluCache
from ..ops.losses import BernoulliCache, _per_example_scale, _reduce
from ..ops.reparam import LatentCache, LatentGrads
from ..params import buffer

Array = Any

try:  # an optional dependency: every op works without it
    import numba

    from .compiling import defer_interrupts_while_compiling
    from .series import SERIES, exp_minus_abs, log1p_unit

    defer_interrupts_while_compiling()  # a Ctrl-C during a compile is not lost (compiling.py)
except ImportError:  # pragma: no cover - depends on the environment
    numba = None  # type: ignore[assignment, unused-ignore]  # no Numba: the name is None

KERNELS: dict[str, Any] = {}  # op name -> kernel; empty without Numba
# the fewest elements per thread for which an elementwise pass (Adam, the gradient sum) is
# split across the step's threads (measured: benchmarks/README.md, "CPU threads")
PARALLEL_MIN = 1 << 18


def _require(ok: bool, kernel: str, arrays: tuple[Array, ...]) -> None:
    """Refuse arrays a kernel would index out of bounds (one line naming their shapes)."""
    if not ok:
        shapes = ", ".join(f"{a.dtype.name}{list(a.shape)}" for a in arrays)
        raise ValueError(f"{kernel}: arrays of mismatched shapes or dtypes ({shapes})")


def _same(*arrays: Array) -> bool:
    """Every array has the first one's shape and dtype."""
    first = arrays[0]
    return all(a.shape == first.shape and a.dtype == first.dtype for a in arrays)


if numba is not None:
    # error_model="numpy": a division by zero gives inf/nan as in NumPy instead of a Python
    # exception; without it every division carries a zero test and the loop cannot vectorise.
    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    # "reassoc" lets LLVM reorder a float sum (and so vectorise it), "contract" fuses
    # multiply-adds; the series called keep only "contract" (their range reduction must not be
    # reordered)
    _sum_jit = numba.njit(
        cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"}
    )

    @_jit
    def _adam(p, g, m, v, b1, b2, one_minus_b1, one_minus_b2, step, eps, tiny, lo, hi):  # noqa: ANN001, ANN202
        # per element i in [lo, hi), as optim.adam_update:
        #     m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= step * m / (sqrt(v) + eps)
        # and moments below ``tiny`` (the smallest normal number) set to zero, NaN kept: see
        # optim.adam_update
        zero = p.dtype.type(0)
        for i in range(lo, hi):
            gi = g[i]
            mi = b1 * m[i] + one_minus_b1 * gi
            vi = b2 * v[i] + one_minus_b2 * (gi * gi)
            mi = zero if abs(mi) < tiny else mi
            vi = zero if vi < tiny else vi
            m[i] = mi
            v[i] = vi
            p[i] -= step * mi / (math.sqrt(vi) + eps)

    @_jit
    def _weighted_sum(out, parts, w, lo, hi):  # noqa: ANN001, ANN202 - compiled
        # out = w[0] parts[0] + w[1] parts[1] + ...  for i in [lo, hi), summed in that order
        for i in range(lo, hi):
            out[i] = w[0] * parts[0, i]
        for c in range(1, parts.shape[0]):
            for i in range(lo, hi):
                out[i] += w[c] * parts[c, i]

    @_jit
    def _bias_add(y, b):  # noqa: ANN001, ANN202 - compiled
        # y += b in place      y: (B, H) = x @ W,  b: (H,)      (the dense layer's bias)
        for r in range(y.shape[0]):
            for c in range(y.shape[1]):
                y[r, c] += b[c]

    @_jit
    def _bias_relu(h, b):  # noqa: ANN001, ANN202 - compiled
        # h = max(h + b, 0) in place      h: (B, H) = x @ W,  b: (H,)     (bias, then ReLU)
        zero = h.dtype.type(0)
        for r in range(h.shape[0]):
            for c in range(h.shape[1]):
                v = h[r, c] + b[c]
                h[r, c] = zero if v <= zero else v  # NaN stays NaN, as in np.maximum

    @_jit
    def _relu_backward_bias_grad(h, dh, da, db):  # noqa: ANN001, ANN202 - compiled
        # da = dh * 1[h > 0]  (B, H)      db = sum_B da  (H,)      (ReLU, then the dense bias)
        zero, one = h.dtype.type(0), h.dtype.type(1)
        db[:] = zero
        for r in range(h.shape[0]):
            for c in range(h.shape[1]):
                d = dh[r, c] * (one if h[r, c] > zero else zero)  # NaN * 0 = NaN, as NumPy
                da[r, c] = d
                db[c] += d

    @_jit
    def _column_sum(a, out):  # noqa: ANN001, ANN202 - compiled
        # out = sum_B a   (B, H) -> (H,): row after row, in NumPy's order for axis=0
        out[:] = a.dtype.type(0)
        for r in range(a.shape[0]):
            for c in range(a.shape[1]):
                out[c] += a[r, c]

    @_sum_jit
    def _bernoulli_rows(logits, x, dlogits, rows, scale, series):  # noqa: ANN001, ANN202
        # logits, dlogits (S, B, D), x (B, D), rows (S, B). Per element, a = |l|, e = exp(-a):
        #   softplus(l) = max(l, 0) + log1p(e)           rows[s, b] = sum_D softplus(l) - x l
        #   dL/dl = (sigmoid(l) - x) scale, sigmoid(l) = 1/(1 + e) if l >= 0, else e/(1 + e)
        # (no overflow either way, and a small sigmoid keeps its relative precision)
        # returns the sum of the rows in float64, each row summed in the arrays' dtype
        zero, one = logits.dtype.type(0), logits.dtype.type(1)
        total = 0.0
        for s in range(logits.shape[0]):
            for b in range(logits.shape[1]):
                row = zero
                for d in range(logits.shape[2]):
                    li, xi = logits[s, b, d], x[b, d]
                    e = exp_minus_abs(li, series)
                    row += max(li, zero) + log1p_unit(e, series) - xi * li
                    dlogits[s, b, d] = ((one if li >= zero else e) / (one + e) - xi) * scale
                rows[s, b] = row
                total += row
        return total

    @_sum_jit
    def _bernoulli_log_prob(logits, x, out, series):  # noqa: ANN001, ANN202 - compiled
        # out[s, b] = -sum_D [softplus(l) - x l] for logits (S, B, D), x (B, D), as above
        zero = logits.dtype.type(0)
        for s in range(logits.shape[0]):
            for b in range(logits.shape[1]):
                row = zero
                for d in range(logits.shape[2]):
                    li, xi = logits[s, b, d], x[b, d]
                    row += max(li, zero) + log1p_unit(exp_minus_abs(li, series), series) - xi * li
                out[s, b] = -row

    @_jit
    def _latent_forward(h, eps, z, sigma):  # noqa: ANN001, ANN202 - compiled
        # h = [mu | logvar] (B, 2L); eps, z, sigma: (B, L). Per element:
        #   sigma = exp(logvar / 2),   z = mu + sigma eps                     (reparam_forward)
        #   kl   += mu^2 + sigma^2 - logvar - 1      (gaussian_kl, with exp(logvar) = sigma^2)
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
        # dL/d[mu | logvar] into dh (B, 2L), through the sample and dkl * KL (c = dkl / B):
        #   dL/dmu     = dz + c mu                                  (dz/dmu = 1, dKL/dmu = mu)
        #   dL/dlogvar = dz eps sigma / 2 + c (sigma^2 - 1) / 2     (dKL/dlogvar = (e^lv - 1)/2)
        # each term halved before the sum, as the op's body: no overflow where it has none
        half, one = dz.dtype.type(0.5), dz.dtype.type(1)
        half_c, L = half * c, dz.shape[1]
        for r in range(dz.shape[0]):
            for j in range(L):
                s = sigma[r, j]
                dh[r, j] = dz[r, j] + c * h[r, j]
                dh[r, L + j] = dz[r, j] * eps[r, j] * (half * s) + half_c * (s * s - one)


# ------------------------------------------------------------------ the ops' kernels
def _dense_grads(
    x: Array, W: Array, da: Array, ws: Any, need_dx: bool, out_dW: Array | None, db: Array
) -> DenseGrads:
    """dW = x^T da and dx = da W^T (BLAS), with db already summed: the end of both backwards."""
    dW = np.matmul(x.T, da, out=out_dW)
    dx = np.matmul(da, W.T, out=buffer(ws, "dx", x.shape, da)) if need_dx else None
    return DenseGrads(dx, dW, db)


def dense_backward(cache, dy, ws=None, need_dx=True, out_dW=None, out_db=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_backward`, the bias gradient in one compiled pass
    (row after row: the order of NumPy's sum over axis 0 for more than one column, so the same
    bits; a single column NumPy sums pairwise, which may differ in the last bit)."""
    db = np.empty(dy.shape[1], dy.dtype) if out_db is None else out_db
    _require(dy.ndim == 2 and db.shape == dy.shape[1:], "dense_backward", (dy, db))
    _column_sum(dy, db)
    return _dense_grads(cache.x, cache.W, dy, ws, need_dx, out_dW, db)


def dense_forward(x, W, b, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_forward`: x @ W by BLAS, then the bias in one pass,
    in place (NumPy's broadcast ``y += b`` on a (128, 784) batch costs several times more)."""
    y = np.matmul(x, W, out=buffer(ws, "y", (x.shape[0], W.shape[1]), x))
    _require(b.shape == y.shape[1:] and b.dtype == y.dtype, "dense_forward", (y, b))
    _bias_add(y, b)
    return y, DenseCache(x, W)


def dense_relu_forward(x, W, b, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_relu_forward`: x @ W by BLAS, then the bias and the
    ReLU in one pass, in place."""
    h = np.matmul(x, W, out=buffer(ws, "h", (x.shape[0], W.shape[1]), x))
    _require(b.shape == h.shape[1:] and b.dtype == h.dtype, "dense_relu_forward", (h, b))
    _bias_relu(h, b)
    return h, DenseReluCache(x, W, h)


def dense_relu_backward(cache, dh, ws=None, need_dx=True, out_dW=None, out_db=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_relu_backward`: ReLU's backward and the bias gradient
    in one pass, then the two products by BLAS."""
    da = buffer(ws, "da", dh.shape, dh)
    db = np.empty(dh.shape[1], dh.dtype) if out_db is None else out_db
    ok = dh.ndim == 2 and _same(cache.h, dh, da) and db.shape == dh.shape[1:]
    _require(ok, "dense_relu_backward", (cache.h, dh, da, db))
    _relu_backward_bias_grad(cache.h, dh, da, db)
    return _dense_grads(cache.x, cache.W, da, ws, need_dx, out_dW, db)


def _as_3d(logits: Array, x: Array, kernel: str) -> tuple[Array, Array]:
    """logits (..., B, D) as (S, B, D) against data x (B, D) in the logits' dtype."""
    _require(x.ndim == 2 and logits.shape[-2:] == x.shape, kernel, (logits, x))
    return logits.reshape(-1, *x.shape), x.astype(logits.dtype, copy=False)


def bernoulli_nll_forward(logits, x, reduce="mean", ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.losses.bernoulli_nll_forward` in one pass, exp and log1p as series
    (:mod:`scratchvae.kernels.series`); logits (..., B, D) against x (B, D) or (..., B, D)."""
    if x.shape != logits.shape:  # data shared by several samples' logits
        logits3, x2 = _as_3d(logits, x, "bernoulli_nll_forward")
    else:
        logits3, x2 = logits.reshape(1, -1, logits.shape[-1]), x.reshape(-1, x.shape[-1])
        x2 = x2.astype(logits.dtype, copy=False)
    dlogits = buffer(ws, "dlogits", logits.shape, logits)
    rows = buffer(ws, "rows", logits3.shape[:2], logits)  # sum_D per example
    scale = logits.dtype.type(_per_example_scale(reduce, logits.shape[:-1]))
    series = SERIES[x2.dtype.name]
    total = _bernoulli_rows(logits3, x2, dlogits.reshape(logits3.shape), rows, scale, series)
    cache = BernoulliCache(dlogits)
    if reduce == "mean":  # the rows' sum, times 1/B
        return np.asarray(total * scale, logits.dtype), cache
    return _reduce(rows.reshape(logits.shape[:-1]), reduce), cache


def bernoulli_log_prob(logits, x):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.losses.bernoulli_log_prob` in one pass (logits (..., B, D)
    against x (B, D) or (..., B, D)), with the loss's series."""
    shape = logits.shape[:-1]  # one value per row, whatever the leading axes
    if x.shape == logits.shape:
        logits, x = logits.reshape(1, -1, logits.shape[-1]), x.reshape(-1, x.shape[-1])
    logits3, x2 = _as_3d(logits, x, "bernoulli_log_prob")
    out = np.empty(logits3.shape[:2], dtype=logits.dtype)
    _bernoulli_log_prob(logits3, x2, out, SERIES[logits.dtype.name])
    return out.reshape(shape)


def latent_forward(h, eps, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.reparam.latent_forward`: the sample and the KL in one pass."""
    z, sigma = buffer(ws, "z", eps.shape, h), buffer(ws, "sigma", eps.shape, h)
    ok = eps.ndim == 2 and _same(eps, z, sigma) and h.shape == (eps.shape[0], 2 * eps.shape[1])
    _require(ok, "latent_forward", (h, eps, z, sigma))
    kl = np.asarray(0.5 * _latent_forward(h, eps, z, sigma) / h.shape[0], dtype=h.dtype)
    return (z, kl), LatentCache(h, eps, sigma)


def latent_backward(cache, dz, dkl, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.reparam.latent_backward` in one pass."""
    h, eps, sigma = cache
    dh = buffer(ws, "dh", h.shape, dz)
    ok = dz.ndim == 2 and _same(dz, eps, sigma) and _same(h, dh)
    _require(ok and h.shape == (dz.shape[0], 2 * dz.shape[1]), "latent_backward", (dz, h, dh))
    _latent_backward(dz, eps, sigma, h, dz.dtype.type(float(dkl) / dz.shape[0]), dh)
    return LatentGrads(dh)


def _each_slice(kernel: Any, n: int, *args: Any, per_element: float = 1.0) -> None:
    """``kernel(*args, lo, hi)`` for [lo, hi) covering [0, n): one slice per thread of the
    step (:func:`~scratchvae.backend.cpu_threads`) when each gets at least PARALLEL_MIN
    elements' work (``per_element``: an element's work relative to Adam's, for which the
    threshold was measured), run on as many threads; otherwise one call. Per element as in
    one call."""
    parts = max(1, min(cpu_threads(), int(n * per_element) // PARALLEL_MIN))
    bounds = [n * i // parts for i in range(parts + 1)]
    slices = zip(bounds[:-1], bounds[1:], strict=True)
    # unsigned bounds: Numba then drops the negative-index check that blocks vectorising
    # (mypy cannot infer the type of a lambda with default arguments)
    run_parallel([lambda a=a, b=b: kernel(*args, np.uint64(a), np.uint64(b)) for a, b in slices])  # type: ignore[misc]


def weighted_sum(out, parts, weights):  # noqa: ANN001, ANN201
    """:func:`scratchvae.parallel.weighted_sum` in one pass, on the step's threads."""
    ok = out.ndim == 1 and parts.ndim == 2 and parts.shape[1] == out.size
    ok = ok and parts.dtype == out.dtype and weights.shape == (parts.shape[0],)
    _require(ok, "weighted_sum", (out, parts, weights))
    # the pass reads every part: its work grows with their number (C chunks of a split
    # batch, one per thread). Counted as Adam's at two parts, where the threshold was
    # measured; at 16 parts it takes 16 threads where the parameters' count alone gave 2
    per_element = parts.shape[0] / 2
    w = weights.astype(out.dtype)
    _each_slice(_weighted_sum, out.size, out, parts, w, per_element=per_element)


def adam_update(p, g, m, v, t, lr, b1, b2, eps, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.optim.adam_update` in one pass, a moment below the smallest normal
    number stored as 0 as the op's body does (subnormal arithmetic is the CPU's slow path)."""
    _require(_same(p, g, m, v), "adam_update", (p, g, m, v))
    c2 = math.sqrt(1 - b2 ** int(t))  # the bias corrections, as in the op's body
    step, eps_hat = lr * c2 / (1 - b1 ** int(t)), eps * c2
    f = p.dtype.type  # scalars of the arrays' dtype: float32 arithmetic stays float32
    flat = [a.reshape(-1) for a in (p, g, m, v)]  # views: the dispatch passes C-contiguous arrays
    scalars = (f(b1), f(b2), f(1 - b1), f(1 - b2), f(step), f(eps_hat), f(np.finfo(p.dtype).tiny))
    _each_slice(_adam, p.size, *flat, *scalars)


def warm_up(dtype: str = "float32") -> None:
    """Compile (or load from Numba's disk cache) every kernel for ``dtype`` now, instead of in
    the first training step. A no-op without Numba."""
    from ..ops.layers import DenseCache  # noqa: PLC0415

    if numba is None:
        return
    a, b, v = np.zeros((2, 3), dtype), np.zeros(3, dtype), np.zeros(6, dtype)
    adam_update(v, v.copy(), v.copy(), v.copy(), np.asarray(1), 1e-3, 0.9, 0.999, 1e-8)
    weighted_sum(v, np.zeros((2, 6), dtype), np.ones(2, dtype))
    dense_forward(a, np.zeros((3, 3), dtype), b)
    h, cache = dense_relu_forward(a, np.zeros((3, 3), dtype), b)
    dense_relu_backward(cache, h.copy())
    dense_backward(DenseCache(a, np.zeros((3, 3), dtype)), a.copy())
    bernoulli_nll_forward(a, a.copy())
    bernoulli_log_prob(a, a.copy())
    (z, _), lc = latent_forward(np.zeros((2, 4), dtype), np.zeros((2, 2), dtype))
    latent_backward(lc, z.copy(), 1.0)


if numba is not None:
    KERNELS.update(
        {
            f.__name__: f
            for f in (
                dense_forward,
                dense_backward,
                dense_relu_forward,
                dense_relu_backward,
                bernoulli_nll_forward,
                bernoulli_log_prob,
                latent_forward,
                latent_backward,
                adam_update,
                weighted_sum,
            )
        }
    )
