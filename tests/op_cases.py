"""The table of differentiable ops under test, the gradient check, and the shared strategies.

* :data:`OP_CASES` lists every differentiable op once: how to make its inputs, its forward (the
  output, or the tuple of outputs), its hand-written backward handed one upstream gradient per
  output, the inputs it is differentiated with respect to, and how far the inputs are from a
  kink. tests/ops/ (float64 and float32) and tests/test_gradcheck.py read it.
* :func:`check_op` is the gradient check: central differences of the scalar
  s = sum_k sum(y_k * dy_k) (one random cotangent dy_k per output y_k) against the backward
  handed the same cotangents, with tolerances chosen by the inputs' dtype.

Test code may use NumPy directly; the package itself may not (see test_source_rules.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from scratchvae.backend import Backend, get_xp, to_numpy
from scratchvae.gradcheck import assert_close, numerical_gradient
from scratchvae.ops import layers, losses, reparam, sparsity
from scratchvae.ops.activations import get_activation

Array = Any
Inputs = dict[str, Array]

ACTIVATION_NAMES = ("identity", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus")
KINKED = frozenset({"relu", "leaky_relu", "elu"})  # f or f' not smooth at x = 0

# Gradient-check settings. float64: tight (a wrong factor of 2, or of 1.001, fails).
H64, RTOL64, ATOL64 = 1e-6, 1e-6, 1e-8
# float32: ~7 significant digits, so a larger step and a loose-but-meaningful tolerance; atol
# is relative to the largest gradient entry (measured worst need: 3e-4 of it, at rtol 1e-2).
H32, RTOL32, ATOL32 = 1e-2, 1e-2, 2e-3
# How far from a kink the inputs must be, in units of the largest step of an input entry.
MARGIN64, MARGIN32 = 1e-3, 2 * H32

seeds = st.integers(0, 2**32 - 1)
batch_sizes = st.integers(1, 5)
widths = st.integers(1, 6)
scales = st.sampled_from([0.1, 0.5, 1.0, 2.0, 4.0])  # bounded input magnitudes


def _smooth(inputs: Inputs) -> float:
    return math.inf


def _min_abs(a: Array) -> float:
    return float(np.min(np.abs(to_numpy(a)))) if a.size else math.inf


# ================================================================================ the op table
@dataclass(frozen=True)
class OpCase:
    """One op: ``make(bk, B, D, scale) -> inputs``; ``forward(**inputs) -> y or (y_1, y_2)``;
    ``backward(inputs, *douts) -> {name: dL/d(name)}`` for each name in ``wrt``, with one
    upstream gradient per output; ``kink(inputs)``: the distance of the inputs to the nearest
    non-smooth point, in units of an input step (inf if none)."""

    name: str
    module: str
    make: Callable[[Backend, int, int, float], Inputs]
    forward: Callable[..., Any]
    backward: Callable[..., dict[str, Array]]
    wrt: tuple[str, ...]
    kink: Callable[[Inputs], float] = field(default=_smooth)

    def __repr__(self) -> str:
        return f"OpCase({self.name})"


def outputs(y: Any) -> tuple[Array, ...]:
    """An op's output(s) as a tuple."""
    return y if isinstance(y, tuple) else (y,)


# ------------------------------------------------------------------ activations
def _x_only(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"x": scale * bk.normal((B, D))}


def _activation_case(name: str) -> OpCase:
    act = get_activation(name)

    def backward(i: Inputs, dy: Array) -> dict[str, Array]:
        return {"x": act.backward(act.forward(i["x"])[1], dy)}

    kink = (lambda i: _min_abs(i["x"])) if name in KINKED else _smooth
    return OpCase(name, "activations", _x_only, lambda x: act.forward(x)[0], backward, ("x",), kink)


# ------------------------------------------------------------------ layers
def _make_dense(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    n_out = 1 + (D * 7 + B) % 5  # a second width, different from D most of the time
    return {"x": scale * bk.normal((B, D)), "W": bk.normal((D, n_out)), "b": bk.normal((n_out,))}


def _pre_activation_kink(i: Inputs) -> float:
    """min |x W + b|, in units of the largest change one input step can make to it."""
    step = max(1.0, _max_abs(i["x"]), _max_abs(i["W"]))
    return _min_abs(i["x"] @ i["W"] + i["b"]) / step


def _max_abs(a: Array) -> float:
    return float(np.max(np.abs(to_numpy(a)))) if a.size else 0.0


def _dense_case(name: str, forward: Callable, backward: Callable, kinked: bool) -> OpCase:
    def grads(i: Inputs, dy: Array) -> dict[str, Array]:
        _, cache = forward(i["x"], i["W"], i["b"])
        g = backward(cache, dy)
        return {"x": g.dx, "W": g.dW, "b": g.db}

    def value(x: Array, W: Array, b: Array) -> Array:
        return forward(x, W, b)[0]

    kink = _pre_activation_kink if kinked else _smooth
    return OpCase(name, "layers", _make_dense, value, grads, ("x", "W", "b"), kink)


def _dense_act_case(activation: str) -> OpCase:
    act = get_activation(activation)
    forward = partial(layers.dense_act_forward, act=act)
    backward = partial(layers.dense_act_backward, act=act)
    return _dense_case(f"dense_act-{activation}", forward, backward, activation in KINKED)


def _make_dropout(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"x": scale * bk.normal((B, D)), "mask": layers.dropout_mask(bk, (B, D), 0.4)}


def _dropout_backward(i: Inputs, dy: Array) -> dict[str, Array]:
    return {"x": layers.dropout_backward(layers.dropout_forward(i["x"], i["mask"])[1], dy)}


# ------------------------------------------------------------------ reparam and latent
def _make_reparam(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"mu": scale * bk.normal((B, D)), "logvar": bk.normal((B, D)), "eps": bk.normal((B, D))}


def _reparam_backward(i: Inputs, dz: Array) -> dict[str, Array]:
    _, cache = reparam.reparam_forward(i["mu"], i["logvar"], i["eps"])
    g = reparam.reparam_backward(cache, dz)
    return {"mu": g.dmu, "logvar": g.dlogvar}


def _make_latent(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    h = bk.normal((B, 2 * D))  # [mu | logvar], one C-contiguous array (the kernels' input)
    h[:, :D] *= scale
    return {"h": h, "eps": bk.normal((B, D))}


def _latent_backward(i: Inputs, dz: Array, dkl: Array) -> dict[str, Array]:
    _, cache = reparam.latent_forward(i["h"], i["eps"])
    return {"h": reparam.latent_backward(cache, dz, dkl).dh}


def _make_repeat(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"a": scale * bk.normal((B, D)), "k": 1 + (B + D) % 3}  # k = 1 passes a through


def _repeat_backward(i: Inputs, dtiled: Array) -> dict[str, Array]:
    return {"a": reparam.repeat_backward(reparam.repeat_forward(i["a"], i["k"])[1], dtiled)}


# ------------------------------------------------------------------ losses and densities
def _make_bernoulli(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"logits": scale * bk.normal((B, D)), "x": bk.uniform((B, D))}  # grey levels


def _bernoulli_case(reduce: str) -> OpCase:
    def backward(i: Inputs, dloss: Array) -> dict[str, Array]:
        _, cache = losses.bernoulli_nll_forward(i["logits"], i["x"], reduce)
        return {"logits": losses.bernoulli_nll_backward(cache, dloss)}

    return OpCase(
        "bernoulli_nll" + ("" if reduce == "mean" else "-" + reduce),
        "losses",
        _make_bernoulli,
        lambda logits, x: losses.bernoulli_nll_forward(logits, x, reduce)[0],
        backward,
        ("logits",),
    )


def _make_gaussian(bk: Backend, B: int, D: int, scale: float, learned: bool = True) -> Inputs:
    inputs = {"mean": scale * bk.normal((B, D)), "x": bk.normal((B, D))}
    # learned: an array of log-variances; fixed: a Python float (keeps float32 arrays float32)
    inputs["logvar"] = bk.normal((B, D)) if learned else 2.0 * math.log(0.5 + scale)
    return inputs


def _gaussian_case(learned: bool, reduce: str) -> OpCase:
    def backward(i: Inputs, dloss: Array) -> dict[str, Array]:
        _, cache = losses.gaussian_nll_forward(i["mean"], i["x"], i["logvar"], reduce)
        g = losses.gaussian_nll_backward(cache, dloss)
        assert (g.dlogvar is None) == (not learned)
        return {"mean": g.dmean, "logvar": g.dlogvar} if learned else {"mean": g.dmean}

    return OpCase(
        f"gaussian_nll_{'learned' if learned else 'fixed'}" + ("-none" if reduce == "none" else ""),
        "losses",
        partial(_make_gaussian, learned=learned),
        lambda mean, x, logvar: losses.gaussian_nll_forward(mean, x, logvar, reduce)[0],
        backward,
        ("mean", "logvar") if learned else ("mean",),
    )


def _make_pair(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"y": scale * bk.normal((B, D)), "x": bk.normal((B, D))}


def _squared_error_case(reduce: str) -> OpCase:
    def backward(i: Inputs, dloss: Array) -> dict[str, Array]:
        _, cache = losses.squared_error_forward(i["y"], i["x"], reduce)
        return {"y": losses.squared_error_backward(cache, dloss)}

    return OpCase(
        "squared_error" + ("-none" if reduce == "none" else ""),
        "losses",
        _make_pair,
        lambda y, x: losses.squared_error_forward(y, x, reduce)[0],
        backward,
        ("y",),
    )


def _make_kl(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"mu": scale * bk.normal((B, D)), "logvar": bk.normal((B, D))}


def _gaussian_kl_backward(i: Inputs, dkl: Array) -> dict[str, Array]:
    g = losses.gaussian_kl_backward(losses.gaussian_kl_forward(i["mu"], i["logvar"])[1], dkl)
    return {"mu": g.dmu, "logvar": g.dlogvar}


def _make_sparsity(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    # the code's logits: sigmoid(a) from near 0 to near 1 at the larger scales
    return {"a": scale * bk.normal((B, D)), "rho": 0.02 + 0.3 * min(scale, 1.0)}


def _sparsity_backward(i: Inputs, dloss: Array) -> dict[str, Array]:
    cache = sparsity.sparsity_kl_forward(i["a"], i["rho"])[1]
    return {"a": sparsity.sparsity_kl_backward(cache, dloss)}


def _bernoulli_log_prob_backward(i: Inputs, d: Array) -> dict[str, Array]:
    """log p(x | l) = -(the per-example Bernoulli NLL): its gradient is minus the loss's."""
    _, cache = losses.bernoulli_nll_forward(i["logits"], i["x"], "none")
    return {"logits": -losses.bernoulli_nll_backward(cache, d)}


def _make_log_normal(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"z": bk.normal((B, D)), "mu": scale * bk.normal((B, D)), "logvar": bk.normal((B, D))}


def _log_normal_backward(i: Inputs, d: Array) -> dict[str, Array]:
    """log N(z; mu, e^lv) = -(the per-example Gaussian NLL of z around the mean mu):
    d/dmu = -dNLL/dmean, d/dz = +dNLL/dmean (it depends on z - mu), d/dlv = -dNLL/dlogvar."""
    _, cache = losses.gaussian_nll_forward(i["mu"], i["z"], i["logvar"], "none")
    g = losses.gaussian_nll_backward(cache, d)
    return {"z": g.dmean, "mu": -g.dmean, "logvar": -g.dlogvar}


def _likelihood_case(kind: str, reduce: str = "none") -> OpCase:
    lik = losses.Likelihood(kind, std=0.7)

    def make(bk: Backend, B: int, D: int, scale: float) -> Inputs:
        x = bk.uniform((B, D)) if kind == "bernoulli" else bk.normal((B, D))
        return {"out": scale * bk.normal((B, lik.n_out(D))), "x": x}

    def backward(i: Inputs, dnll: Array) -> dict[str, Array]:
        return {"out": lik.backward(lik.forward(i["out"], i["x"], reduce)[1], dnll)}

    return OpCase(
        f"likelihood-{kind}",
        "losses",
        make,
        lambda out, x: lik.forward(out, x, reduce)[0],
        backward,
        ("out",),
    )


OP_CASES: tuple[OpCase, ...] = (
    *(_activation_case(name) for name in ACTIVATION_NAMES),
    _dense_case("dense", layers.dense_forward, layers.dense_backward, kinked=False),
    _dense_case("dense_relu", layers.dense_relu_forward, layers.dense_relu_backward, kinked=True),
    *(_dense_act_case(name) for name in ACTIVATION_NAMES),  # the MLP's hidden layer but ReLU's
    OpCase(
        "dropout",
        "layers",
        _make_dropout,
        lambda x, mask: layers.dropout_forward(x, mask)[0],
        _dropout_backward,
        ("x",),
    ),
    OpCase(
        "reparam",
        "reparam",
        _make_reparam,
        lambda mu, logvar, eps: reparam.reparam_forward(mu, logvar, eps)[0],
        _reparam_backward,
        ("mu", "logvar"),
    ),
    OpCase(  # two outputs (z, kl), two upstream gradients (dz, dkl)
        "latent",
        "reparam",
        _make_latent,
        lambda h, eps: reparam.latent_forward(h, eps)[0],
        _latent_backward,
        ("h",),
    ),
    OpCase(  # k copies of each example (the ELBO with k samples)
        "repeat",
        "reparam",
        _make_repeat,
        lambda a, k: reparam.repeat_forward(a, k)[0],
        _repeat_backward,
        ("a",),
    ),
    _bernoulli_case("mean"),
    _bernoulli_case("none"),
    _gaussian_case(learned=False, reduce="mean"),
    _gaussian_case(learned=False, reduce="none"),
    _gaussian_case(learned=True, reduce="mean"),
    _gaussian_case(learned=True, reduce="none"),
    _squared_error_case("mean"),
    _squared_error_case("none"),
    OpCase(
        "gaussian_kl",
        "losses",
        _make_kl,
        lambda mu, logvar: losses.gaussian_kl_forward(mu, logvar)[0],
        _gaussian_kl_backward,
        ("mu", "logvar"),
    ),
    OpCase(
        "sparsity_kl",
        "sparsity",
        _make_sparsity,
        lambda a, rho: sparsity.sparsity_kl_forward(a, rho)[0],
        _sparsity_backward,
        ("a",),
    ),
    OpCase(
        "bernoulli_log_prob",
        "losses",
        _make_bernoulli,
        losses.bernoulli_log_prob,
        _bernoulli_log_prob_backward,
        ("logits",),
    ),
    OpCase(
        "log_normal",
        "losses",
        _make_log_normal,
        losses.log_normal,
        _log_normal_backward,
        ("z", "mu", "logvar"),
    ),
    *(_likelihood_case(kind) for kind in losses.LIKELIHOODS),
)


def cases(module: str | None = None) -> list[OpCase]:
    """The op cases of one package module (all of them for None)."""
    return [c for c in OP_CASES if module is None or c.module == module]


def case_ids(module: str | None = None) -> list[str]:
    return [c.name for c in cases(module)]


# ================================================================================ the check
def make_inputs(case: OpCase, seed: int, B: int, D: int, scale: float, dtype: str):
    """(inputs, douts) for ``case``, drawn from a seeded backend of ``dtype``: one random
    upstream gradient per output, of that output's shape (0-d for a mean, (B,) per example)."""
    bk = Backend("numpy", dtype, seed=seed)
    inputs = case.make(bk, B, D, scale)
    douts = tuple(bk.normal(np.shape(y)) for y in outputs(case.forward(**inputs)))
    return inputs, douts


def pairing(ys: tuple[Array, ...], douts: tuple[Array, ...]) -> Array:
    """s = sum_k sum(y_k * dy_k): its gradient is what the backward returns for ``douts``."""
    xp = get_xp(*ys)
    return sum(xp.sum(y * d) for y, d in zip(ys, douts, strict=True))


def check_op(case: OpCase, inputs: Inputs, douts: tuple[Array, ...]) -> None:
    """Assert the hand-written backward equals central differences for every input in ``wrt``,
    and that outputs and gradients keep the inputs' dtype.

    float64: h = 1e-6, rtol 1e-6, atol 1e-8 * max(1, |s|) (central differences of s carry a
    roundoff ~ machine eps * |s| / h: the atol is 100x that). float32: h = 1e-2, rtol 1e-2,
    atol 2e-3 * max(1, max |numerical gradient|)."""
    dtype = inputs[case.wrt[0]].dtype
    single = dtype == np.float32
    h, rtol, atol = (H32, RTOL32, ATOL32) if single else (H64, RTOL64, ATOL64)
    ys = outputs(case.forward(**inputs))
    for k, y in enumerate(ys):
        assert np.asarray(to_numpy(y)).dtype == dtype, f"{case.name} output {k}: dtype changed"
    analytic = case.backward(inputs, *douts)
    s = abs(float(to_numpy(pairing(ys, douts))))
    for name in case.wrt:
        x = inputs[name].copy()

        def f(name: str = name, x: Array = x) -> Array:
            return pairing(outputs(case.forward(**{**inputs, name: x})), douts)

        numerical = numerical_gradient(f, x, h)
        assert analytic[name].dtype == dtype, f"{case.name} d{name}: dtype changed"
        tol = atol * max(1.0, _max_abs(numerical) if single else s)
        assert_close(analytic[name], numerical, rtol, tol, f"{case.name} d{name}")


@st.composite
def op_inputs(draw: st.DrawFn, case: OpCase, dtype: str = "float64"):
    """(inputs, douts) for ``case`` with random shape, seed and scale, kinks assumed away."""
    inputs, douts = make_inputs(
        case, draw(seeds), draw(batch_sizes), draw(widths), draw(scales), dtype
    )
    assume(case.kink(inputs) > (MARGIN32 if dtype == "float32" else MARGIN64))
    return inputs, douts


# The inputs every compiled kernel is checked on against its op's body, on the CPU
# (tests/kernels/test_cpu_kernels.py) and on the GPU (tests/kernels/test_gpu_kernels.py).
kernel_cases = given(
    B=st.integers(1, 40),
    D=st.integers(1, 60),
    H=st.integers(1, 30),
    variant=st.integers(0, 15),
    dtype=st.sampled_from(["float32", "float64"]),
    scale=st.sampled_from([0.1, 3.0, 10.0]),
    seed=st.integers(0, 2**16),
)
