"""CuPy kernels: the GPU fast path of the ops named in :data:`KERNELS`.

On a GPU every array operation is a kernel launch from the host, and at the sizes of the
training step the launches, not the arithmetic, take the time. Each kernel below does one op's
elementwise chain as one launch (``xp.ElementwiseKernel``, CUDA C written next to the NumPy
expression it replaces) and its sums as one reduction over rows or columns. The matrix
products go through cuBLAS directly (:mod:`scratchvae.kernels.cublas`), which, unlike
``cupy.matmul``, works inside a CUDA graph capture; no kernel here synchronises with the host,
so the whole training step can be captured (:mod:`scratchvae.kernels.graph`). Each kernel
replaces exactly one readable op, takes that op's arguments and returns what it returns;
``tests/kernels/test_gpu_kernels.py`` (``pytest -m gpu``) checks every pair on the same input.
:func:`scratchvae.backend.op` picks them for CuPy arrays; nothing else calls them.
"""

from __future__ import annotations

from typing import Any

from ..backend import import_cupy
from ..ops.layers import DenseCache, DenseGrads, DenseReluCache
from ..ops.losses import BernoulliCache, _per_example_scale, _reduce
from ..ops.reparam import LatentCache, LatentGrads, split_latent
from ..params import buffer
from . import cublas
from .cublas import gemm

Array = Any
_COMPILED: dict[str, Any] = {}


def elementwise(name: str, in_params: str, out_params: str, operation: str) -> Any:
    """A ``xp.ElementwiseKernel``, compiled once and cached by ``name``."""
    if name not in _COMPILED:
        xp = import_cupy()
        _COMPILED[name] = xp.ElementwiseKernel(in_params, out_params, operation, name)
    return _COMPILED[name]


def row_sum(name: str, in_params: str, term: str, post: str = "a") -> Any:
    """A ``xp.ReductionKernel`` summing ``term`` over the last axis into ``T y = post`` (``a``
    the sum). Called with ``axis=-1``: one row per thread block keeps the whole GPU busy, where a
    reduction to a single value runs in one block."""
    if name not in _COMPILED:
        xp = import_cupy()
        _COMPILED[name] = xp.ReductionKernel(
            in_params, "T y", term, "a + b", f"y = {post}", "0", name
        )
    return _COMPILED[name]


def _scalar(value: Any, dtype: Any) -> Any:
    """A number of ``dtype`` (a Python number converted, a 0-d device array cast: no sync)."""
    return value.astype(dtype) if hasattr(value, "astype") else dtype.type(value)


# ------------------------------------------------------------------ sums
def column_sum(a: Array, out: Array | None = None) -> Array:
    """sum_B a for a (B, H) -> (H,), into ``out``: a bias gradient, by cuBLAS's GEMV."""
    out = import_cupy().empty(a.shape[1:], a.dtype) if out is None else out
    return cublas.column_sum(a, out)


def total(a: Array, scale: Any = 1.0) -> Array:
    """scale * (the sum of every entry of a), a 0-d array (for the B per-example values)."""
    kernel = row_sum("scratchvae_total", "T a, T scale", "a", "a * scale")
    return kernel(a, a.dtype.type(scale), axis=None)


# ------------------------------------------------------------------ layers
def _dense_grads(
    x: Array, W: Array, da: Array, ws: Any, need_dx: bool, out_dW: Array | None, db: Array
) -> DenseGrads:
    """dW = x^T da and dx = da W^T, with db already summed: the end of both backwards."""
    dW = gemm(x, da, import_cupy().empty(W.shape, W.dtype) if out_dW is None else out_dW, True)
    dx = gemm(da, W, buffer(ws, "dx", x.shape, da), trans_b=True) if need_dx else None
    return DenseGrads(dx, dW, db)


def dense_forward(x, W, b, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_forward`: the product, then the bias in one launch."""
    y = gemm(x, W, buffer(ws, "y", (x.shape[0], W.shape[1]), x))
    elementwise("scratchvae_bias_add", "T b", "T y", "y = y + b")(b, y)
    return y, DenseCache(x, W)


def dense_backward(cache, dy, ws=None, need_dx=True, out_dW=None, out_db=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_backward`: the column sums, then the two products."""
    return _dense_grads(cache.x, cache.W, dy, ws, need_dx, out_dW, column_sum(dy, out_db))


def dense_relu_forward(x, W, b, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_relu_forward`: the product, then bias + ReLU in one
    launch, in place."""
    h = gemm(x, W, buffer(ws, "h", (x.shape[0], W.shape[1]), x))
    bias_relu = elementwise(
        "scratchvae_bias_relu", "T b", "T h", "T v = h + b; h = v <= (T)0 ? (T)0 : v"
    )
    bias_relu(b, h)
    return h, DenseReluCache(x, W, h)


def dense_relu_backward(cache, dh, ws=None, need_dx=True, out_dW=None, out_db=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.layers.dense_relu_backward`: dL/da = dh * 1[h > 0] in one launch,
    its column sums and the two products."""
    relu_grad = elementwise(
        "scratchvae_relu_grad_v2", "T h, T dh", "T da", "da = dh * (h > (T)0 ? (T)1 : (T)0)"
    )
    da = relu_grad(cache.h, dh, buffer(ws, "da", dh.shape, dh))
    return _dense_grads(cache.x, cache.W, da, ws, need_dx, out_dW, column_sum(da, out_db))


# ------------------------------------------------------------------ the latent layer
def latent_forward(h, eps, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.reparam.latent_forward`: the sample in one launch, the KL as one
    row-wise reduction and the sum of its rows."""
    mu, logvar = split_latent(h)
    sample = elementwise(
        "scratchvae_reparam",
        "T mu, T lv, T eps",
        "T z, T sigma",
        "sigma = exp((T)0.5 * lv); z = mu + sigma * eps",
    )
    z, sigma = buffer(ws, "z", eps.shape, h), buffer(ws, "sigma", eps.shape, h)
    sample(mu, logvar, eps, z, sigma)
    kl_rows = row_sum(
        "scratchvae_gaussian_kl",
        "T mu, T lv, T scale",
        "mu * mu + exp(lv) - lv - (T)1",
        "a * scale",
    )
    kl = total(kl_rows(mu, logvar, h.dtype.type(0.5 / h.shape[0]), axis=-1))
    return (z, kl), LatentCache(h, eps, sigma)


def latent_backward(cache, dz, dkl, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.reparam.latent_backward` in one launch (c = dkl / B)."""
    h, eps, sigma = cache
    mu, logvar = split_latent(h)
    dh = buffer(ws, "dh", h.shape, dz)
    dmu, dlogvar = split_latent(dh)
    kernel = elementwise(
        "scratchvae_latent_bwd",
        "T dz, T eps, T sigma, T mu, T c",
        "T dmu, T dlv",
        # each term halved before the sum, as the op's body (no overflow where it has none)
        "dmu = dz + c * mu; "
        "dlv = dz * eps * ((T)0.5 * sigma) + ((T)0.5 * c) * (sigma * sigma - (T)1)",
    )
    kernel(dz, eps, sigma, mu, _scalar(dkl / dz.shape[0], dz.dtype), dmu, dlogvar)
    return LatentGrads(dh)


# ------------------------------------------------------------------ the Bernoulli loss
def bernoulli_nll_forward(logits, x, reduce="mean", ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.ops.losses.bernoulli_nll_forward`: the per-example sums as one row-wise
    reduction, the gradient in one launch. softplus(l) = max(l, 0) + log1p(exp(-|l|));
    sigmoid(l) = 1/(1 + e) or e/(1 + e) with e = exp(-|l|) (no overflow either way)."""
    xp = import_cupy()
    x = xp.broadcast_to(x.astype(logits.dtype, copy=False), logits.shape)
    scale = logits.dtype.type(_per_example_scale(reduce, logits.shape[:-1]))
    nll_rows = row_sum(
        "scratchvae_bernoulli_nll", "T l, T x", "max(l, (T)0) + log1p(exp(-fabs(l))) - x * l"
    )
    grad = elementwise(
        "scratchvae_bernoulli_grad",
        "T l, T x, T scale",
        "T d",
        "T e = exp(-fabs(l)); d = ((l >= (T)0 ? (T)1 : e) / ((T)1 + e) - x) * scale",
    )
    dlogits = grad(logits, x, scale, buffer(ws, "dlogits", logits.shape, logits))
    per_example = nll_rows(logits, x, axis=-1)
    nll = total(per_example, scale) if reduce == "mean" else _reduce(per_example, reduce)
    return nll, BernoulliCache(dlogits)


# ------------------------------------------------------------------ Adam
def adam_update(p, g, m, v, t, lr, b1, b2, eps, ws=None):  # noqa: ANN001, ANN201
    """:func:`scratchvae.optim.adam_update` as one launch over the flat parameters; the bias
    corrections computed on the device from the device's step count t. Subnormal moments are
    kept (a GPU computes them at full speed), where the op's body stores them as 0: the
    parameters differ by less than step * tiny / eps, far below their rounding."""
    kernel = elementwise(  # the scalars as the CPU forms them: in double, then rounded to T
        "scratchvae_adam_v3",
        "T g, raw int64 t, float64 lr, float64 b1, float64 b2, float64 eps, T one_minus_b1, "
        "T one_minus_b2",
        "T p, T m, T v",
        """double n = (double)t[0];
        double c2 = sqrt(1.0 - pow(b2, n));
        T step = (T)(lr * c2 / (1.0 - pow(b1, n)));
        T eps_hat = (T)(eps * c2);
        m = (T)b1 * m + one_minus_b1 * g;
        v = (T)b2 * v + one_minus_b2 * (g * g);
        p -= step * m / (sqrt(v) + eps_hat);""",
    )
    f, d = p.dtype.type, float  # (1 - b2 in float32 would be 0.00099998713, not 0.001)
    kernel(g, t, d(lr), d(b1), d(b2), d(eps), f(1 - b1), f(1 - b2), p, m, v)


# ------------------------------------------------------------------ the trainer's sums
def accumulate(total, value, weight):  # noqa: ANN001, ANN201
    """:func:`scratchvae.train.accumulate` in one launch."""
    kind = value.dtype.name  # named, not a type placeholder: with T, an H200 run raised
    kernel = elementwise(  # KeyError 'T' here (CuPy binds T from arrays, 0-d ones too: a
        # host number in `value` is the likely cause; the named types take either)
        f"scratchvae_accumulate_{kind}", f"{kind} value, float64 weight", "float64 total",
        "total += (double)value * weight",
    )  # fmt: skip
    kernel(value, float(weight), total)


KERNELS: dict[str, Any] = {
    f.__name__: f
    for f in (
        dense_forward,
        dense_backward,
        dense_relu_forward,
        dense_relu_backward,
        latent_forward,
        latent_backward,
        bernoulli_nll_forward,
        adam_update,
        accumulate,
    )
}
