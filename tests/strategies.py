"""Shared test helpers: the table of ops under test, Hypothesis strategies, a reference forward.

* :data:`OP_CASES` lists every differentiable op once: how to make its inputs, its forward, its
  hand-written backward, the inputs it is differentiated with respect to, and how far the inputs
  are from a kink. The float64 property tests (test_activations/layers/reparam/losses), the
  float32 tests (test_gradcheck) and the NumPy-vs-CuPy tests (test_gpu) all read this table.
* :func:`check_op` is the gradient check: central differences on sum(forward * dout) against
  the backward handed the same random cotangent dout.
* :func:`model_cases` draws small random models, and :func:`reference_loss` recomputes a
  model's loss with plain NumPy from its named parameters (an independent forward, which also
  reports how close any ReLU-family pre-activation is to its kink).

Test code may use NumPy directly; the package itself may not (see test_source_rules.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from scratchvae import activations as A
from scratchvae import layers, losses, reparam
from scratchvae.backend import Backend, to_numpy
from scratchvae.gradcheck import assert_close, numerical_vjp
from scratchvae.models import AE, VAE, DenoisingAE, SparseAE

Array = Any
Inputs = dict[str, Array]

ACTIVATION_NAMES = ("identity", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus")
KINKED = frozenset({"relu", "leaky_relu", "elu"})  # f or f' not smooth at x = 0

# Gradient-check settings. float64: tight (a wrong factor of 2, or of 1.0001, fails).
H64, RTOL64, ATOL64 = 1e-6, 1e-6, 1e-8
# float32: ~7 significant digits, so a larger step and a loose-but-meaningful tolerance; atol
# is relative to the largest gradient entry (measured worst need: 3e-4 of it, at rtol 1e-2).
H32, RTOL32, ATOL32 = 1e-2, 1e-2, 2e-3

seeds = st.integers(0, 2**32 - 1)
batch_sizes = st.integers(1, 5)
widths = st.integers(1, 6)
scales = st.sampled_from([0.1, 0.5, 1.0, 2.0, 4.0])  # bounded input magnitudes


# ================================================================================ the op table
@dataclass(frozen=True)
class OpCase:
    """One op: ``make(bk, B, D, scale) -> inputs``; ``forward(**inputs) -> y``;
    ``backward(inputs, dout) -> {name: dL/d(name)}`` for each name in ``wrt``;
    ``kink(inputs) -> distance of the inputs to the nearest non-smooth point`` (inf if none)."""

    name: str
    module: str
    make: Callable[[Backend, int, int, float], Inputs]
    forward: Callable[..., Array]
    backward: Callable[[Inputs, Array], dict[str, Array]]
    wrt: tuple[str, ...]
    kink: Callable[[Inputs], float] = field(default=lambda inputs: math.inf)
    scalar: bool = False  # a loss: the output (and so dout) is a scalar


def _x_only(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"x": scale * bk.normal((B, D))}


def _activation_case(name: str) -> OpCase:
    act = A.get_activation(name)

    def backward(inputs: Inputs, dout: Array) -> dict[str, Array]:
        return {"x": act.backward(act.forward(inputs["x"])[1], dout)}

    def kink(inputs: Inputs) -> float:
        return float(np.min(np.abs(inputs["x"]))) if name in KINKED else math.inf

    return OpCase(name, "activations", _x_only, lambda x: act.forward(x)[0], backward, ("x",), kink)


def _make_dense(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    n_out = 1 + (D * 7 + B) % 5  # a second width, different from D most of the time
    return {
        "x": scale * bk.normal((B, D)),
        "W": bk.normal((D, n_out)),
        "b": bk.normal((n_out,)),
    }


def _dense_backward(inputs: Inputs, dout: Array) -> dict[str, Array]:
    dx, dW, db = layers.dense_backward(inputs["W"], inputs["x"], dout)
    return {"x": dx, "W": dW, "b": db}


def _make_dropout(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"x": scale * bk.normal((B, D)), "mask": layers.dropout_mask(bk, (B, D), 0.4)}


def _make_reparam(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {
        "mu": scale * bk.normal((B, D)),
        "logvar": bk.normal((B, D)),
        "eps": bk.normal((B, D)),
    }


def _reparam_backward(inputs: Inputs, dout: Array) -> dict[str, Array]:
    _, cache = reparam.reparam_forward(inputs["mu"], inputs["logvar"], inputs["eps"])
    dmu, dlogvar = reparam.reparam_backward(cache, dout)
    return {"mu": dmu, "logvar": dlogvar}


def _make_bernoulli(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"logits": scale * bk.normal((B, D)), "x": bk.uniform((B, D))}  # grey levels


def _make_gaussian(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {
        "mean": scale * bk.normal((B, D)),
        "x": bk.normal((B, D)),
        "logvar": bk.normal((B, D)),
    }


def _make_gaussian_fixed(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    inputs = _make_gaussian(bk, B, D, scale)
    inputs["logvar"] = 2.0 * math.log(0.5 + scale)  # a Python float: the fixed variance
    return inputs


def _make_kl(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    return {"mu": scale * bk.normal((B, D)), "logvar": bk.normal((B, D))}


def _make_sparsity(bk: Backend, B: int, D: int, scale: float) -> Inputs:
    # h in (0.1, 0.9): rho_hat stays away from 0 and 1, where the penalty blows up
    return {"h": 0.1 + 0.8 * bk.uniform((B, D)), "rho": 0.02 + 0.3 * min(scale, 1.0)}


def _scaled(grads: dict[str, Array], dout: Array) -> dict[str, Array]:
    """A loss's backward returns dL/dinput; the VJP of a scalar cotangent dout is dout * that."""
    return {k: dout * v for k, v in grads.items()}


OP_CASES: tuple[OpCase, ...] = (
    *(_activation_case(name) for name in ACTIVATION_NAMES),
    OpCase(
        "dense",
        "layers",
        _make_dense,
        lambda x, W, b: layers.dense_forward(W, b, x)[0],
        _dense_backward,
        ("x", "W", "b"),
    ),
    OpCase(
        "dropout",
        "layers",
        _make_dropout,
        lambda x, mask: layers.dropout_forward(x, mask)[0],
        lambda inputs, dout: {"x": layers.dropout_backward(inputs["mask"], dout)},
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
    OpCase(
        "bernoulli_nll",
        "losses",
        _make_bernoulli,
        losses.bernoulli_nll,
        lambda i, d: _scaled({"logits": losses.bernoulli_nll_backward(i["logits"], i["x"])}, d),
        ("logits",),
        scalar=True,
    ),
    OpCase(  # the fast pair the models train with: one softplus pass shared with the gradient
        "bernoulli_nll_fast",
        "losses",
        _make_bernoulli,
        lambda logits, x: losses.bernoulli_nll_with_softplus(logits, x)[0],
        lambda i, d: _scaled(
            {
                "logits": losses.bernoulli_nll_backward_from_softplus(
                    i["logits"], i["x"], losses.bernoulli_nll_with_softplus(i["logits"], i["x"])[1]
                )
            },
            d,
        ),
        ("logits",),
        scalar=True,
    ),
    OpCase(  # what the training step calls: value and gradient together (Numba / CuPy kernels)
        "bernoulli_nll_and_grad",
        "losses",
        _make_bernoulli,
        lambda logits, x: losses.bernoulli_nll_and_grad(logits, x)[0],
        lambda i, d: _scaled({"logits": losses.bernoulli_nll_and_grad(i["logits"], i["x"])[1]}, d),
        ("logits",),
        scalar=True,
    ),
    OpCase(
        "gaussian_nll_fixed",
        "losses",
        _make_gaussian_fixed,
        losses.gaussian_nll,
        lambda i, d: _scaled(
            {"mean": losses.gaussian_nll_backward(i["mean"], i["x"], i["logvar"])[0]}, d
        ),
        ("mean",),
        scalar=True,
    ),
    OpCase(
        "gaussian_nll_learned",
        "losses",
        _make_gaussian,
        losses.gaussian_nll,
        lambda i, d: _scaled(
            dict(
                zip(
                    ("mean", "logvar"),
                    losses.gaussian_nll_backward(i["mean"], i["x"], i["logvar"]),
                    strict=True,
                )
            ),
            d,
        ),
        ("mean", "logvar"),
        scalar=True,
    ),
    OpCase(
        "squared_error",
        "losses",
        _make_gaussian,
        lambda mean, x, logvar: losses.squared_error(mean, x),
        lambda i, d: _scaled({"mean": losses.squared_error_backward(i["mean"], i["x"])}, d),
        ("mean",),
        scalar=True,
    ),
    OpCase(
        "gaussian_kl",
        "losses",
        _make_kl,
        losses.gaussian_kl,
        lambda i, d: _scaled(
            dict(
                zip(
                    ("mu", "logvar"),
                    losses.gaussian_kl_backward(i["mu"], i["logvar"]),
                    strict=True,
                )
            ),
            d,
        ),
        ("mu", "logvar"),
        scalar=True,
    ),
    OpCase(
        "sparsity_kl",
        "losses",
        _make_sparsity,
        losses.sparsity_kl,
        lambda i, d: _scaled({"h": losses.sparsity_kl_backward(i["h"], i["rho"])}, d),
        ("h",),
        scalar=True,
    ),
)


def cases(module: str | None = None) -> list[OpCase]:
    """The op cases of one package module (all of them for None)."""
    return [c for c in OP_CASES if module is None or c.module == module]


def case_ids(module: str | None = None) -> list[str]:
    return [c.name for c in cases(module)]


def make_inputs(case: OpCase, seed: int, B: int, D: int, scale: float, dtype: str):
    """(inputs, dout) for ``case``, drawn from a seeded backend of ``dtype``."""
    bk = Backend("numpy", dtype, seed=seed)
    inputs = case.make(bk, B, D, scale)
    y = case.forward(**inputs)
    dout = bk.normal(()) if case.scalar else bk.normal(y.shape)
    return inputs, dout


def check_op(
    case: OpCase,
    inputs: Inputs,
    dout: Array,
    h: float = H64,
    rtol: float = RTOL64,
    atol: float = ATOL64,
    relative_atol: bool = False,
) -> None:
    """Assert the hand-written backward equals the numerical VJP for every input in ``wrt``.

    Central differences of s = sum(forward * dout) carry a roundoff error ~ machine eps * |s| / h,
    so atol is multiplied by max(1, |s|) (1e-8 |s| in float64: 100x the expected roundoff);
    with ``relative_atol`` (float32) by max(1, max |numerical gradient|) instead.
    """
    analytic = case.backward(inputs, dout)
    s = abs(float(to_numpy((case.forward(**inputs) * dout).sum())))
    for name in case.wrt:

        def f(v: Array, name: str = name) -> Array:
            return case.forward(**{**inputs, name: v})

        numerical = numerical_vjp(f, inputs[name], dout, h)
        assert analytic[name].dtype == inputs[name].dtype, f"{case.name}.{name}: dtype changed"
        scale = float(to_numpy(abs(numerical)).max()) if relative_atol else s
        tol = atol * max(1.0, scale)
        assert_close(analytic[name], numerical, rtol, tol, name=f"{case.name} d{name}")


@st.composite
def op_inputs(draw: st.DrawFn, case: OpCase, dtype: str = "float64", margin: float = 1e-3):
    """(inputs, dout) for ``case`` with random shape, seed and scale, kinks assumed away."""
    from hypothesis import assume

    inputs, dout = make_inputs(
        case, draw(seeds), draw(batch_sizes), draw(widths), draw(scales), dtype
    )
    assume(case.kink(inputs) > margin)
    return inputs, dout


# ================================================================================ models
FAMILIES = (
    "ae-bernoulli",
    "ae-mse",
    "ae-gaussian",
    "ae-gaussian-learned",
    "dae-gaussian",
    "dae-mask",
    "sae",
    "vae-bernoulli",
    "vae-gaussian",
    "vae-gaussian-learned",
)


@dataclass
class ModelCase:
    model: AE
    x: Array
    noise: dict[str, Array]
    kl_weight: float | None = None

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"ModelCase({self.model.config}, batch={self.x.shape[0]}, kl={self.kl_weight})"


def build_family(
    family: str,
    n_features: int,
    hidden: tuple[int, ...],
    latent: int,
    activation: str,
    dropout: float,
    backend: Backend,
) -> AE:
    """A model of ``family`` (see :data:`FAMILIES`)."""
    kind, _, rest = family.partition("-")
    common = dict(activation=activation, dropout=dropout, backend=backend)
    if kind == "ae":
        return AE(n_features, hidden, latent, likelihood=rest, decoder_std=0.7, **common)
    if kind == "dae":
        return DenoisingAE(n_features, hidden, latent, noise=rest, noise_level=0.3, **common)
    if kind == "sae":
        return SparseAE(n_features, hidden, latent, rho=0.1, beta=2.0, **common)
    return VAE(n_features, hidden, latent, beta=1.5, likelihood=rest, **common)


def randomize_params(model: AE, seed: int, scale: float = 0.6) -> None:
    """Non-zero biases and weights of a moderate size (every gradient entry matters)."""
    bk = Backend("numpy", model.backend.dtype.name, seed=seed)
    model.params.flat[...] = scale * bk.normal(model.params.flat.shape)


@st.composite
def model_cases(draw: st.DrawFn, family: str, dtype: str = "float64") -> ModelCase:
    """A small random model of ``family``, random parameters, a batch and its fixed noise."""
    seed = draw(seeds)
    bk = Backend("numpy", dtype, seed=seed)
    model = build_family(
        family,
        n_features=draw(st.integers(1, 5)),
        hidden=tuple(draw(st.lists(st.integers(1, 4), max_size=2))),
        latent=draw(st.integers(1, 3)),
        activation=draw(st.sampled_from(ACTIVATION_NAMES)),
        dropout=draw(st.sampled_from([0.0, 0.0, 0.3])),
        backend=bk,
    )
    randomize_params(model, seed + 1)
    B = draw(batch_sizes)
    x = bk.uniform((B, model.n_features))
    if not family.endswith("bernoulli") and family.startswith(("ae-", "vae-")):
        x = 2 * bk.normal((B, model.n_features))  # real-valued data for Gaussian / MSE
    noise = model.draw_noise(B)
    kl_weight = draw(st.sampled_from([None, 0.25])) if family.startswith("vae") else None
    return ModelCase(model, x, noise, kl_weight)


# ================================================================================ reference
_REF_ACT = {
    "identity": lambda a: a,
    "relu": lambda a: np.maximum(a, 0.0),
    "leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a),
    "elu": lambda a: np.where(a > 0, a, np.exp(np.minimum(a, 0.0)) - 1.0),
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "softplus": lambda a: np.log1p(np.exp(a)),
}


def _ref_mlp(model: AE, prefix: str, x: Array, noise: dict, train: bool, kinks: list):
    """Plain-NumPy MLP from the named parameters; collects hidden pre-activations in kinks."""
    n_layers = len(model.hidden) + 1
    h = x
    for i in range(n_layers):
        a = h @ np.asarray(model.params[f"{prefix}.{i}.W"]) + np.asarray(
            model.params[f"{prefix}.{i}.b"]
        )
        if i == n_layers - 1:
            return a
        kinks.append(a)
        h = _REF_ACT[model.activation](a)
        mask = noise.get(f"{prefix}.{i}.dropout") if train else None
        if mask is not None:
            h = h * mask
    raise AssertionError("unreachable")


def _ref_nll(model: AE, out: Array, x: Array) -> float:
    B, D = x.shape
    kind = model.lik.kind
    if kind == "bernoulli":  # -[x log s + (1-x) log(1-s)], written with log-sigmoids
        log_s, log_1ms = -np.logaddexp(0, -out), -np.logaddexp(0, out)
        return float(-(x * log_s + (1 - x) * log_1ms).sum() / B)
    if kind == "mse":
        return float(((out - x) ** 2).sum() / B)
    if kind == "gaussian":
        mean, logvar = out, np.full_like(out, 2 * math.log(model.lik.std))
    else:
        mean, logvar = out[:, :D], out[:, D:]
    var = np.exp(logvar)
    return float((0.5 * ((x - mean) ** 2 / var + logvar + math.log(2 * math.pi))).sum() / B)


def reference_loss(
    case: ModelCase, train: bool = True, kl_weight: float | None = None
) -> tuple[float, float]:
    """(loss, kink margin) of ``case`` computed independently of the package's forward.

    The margin is min |pre-activation| over hidden layers for ReLU-family models (inf otherwise):
    the gradient check assumes it is large enough that a step h never crosses a kink.
    """
    model, noise = case.model, case.noise
    x = np.asarray(case.x)
    kinks: list[Array] = []
    x_in = x
    if train and isinstance(model, DenoisingAE):
        if model.noise == "gaussian":
            x_in = x + model.noise_level * noise["input_noise"]
        else:
            x_in = x * noise["input_mask"]
    code = _ref_mlp(model, "encoder", x_in, noise, train, kinks)
    extra = 0.0
    if isinstance(model, VAE):
        L = model.latent
        mu, logvar = code[:, :L], code[:, L:]
        code = mu + np.exp(0.5 * logvar) * noise["eps"]
        kl = 0.5 * (mu**2 + np.exp(logvar) - logvar - 1).sum() / x.shape[0]
        extra = (model.beta if kl_weight is None else kl_weight) * kl
    elif isinstance(model, SparseAE):
        code = 1.0 / (1.0 + np.exp(-code))
        r, rho = code.mean(axis=0), model.rho
        extra = model.beta * (rho * np.log(rho / r) + (1 - rho) * np.log((1 - rho) / (1 - r))).sum()
    out = _ref_mlp(model, "decoder", code, noise, train, kinks)
    margin = math.inf
    if model.activation in KINKED and kinks:
        margin = min(float(np.min(np.abs(a))) for a in kinks)
    return _ref_nll(model, out, x) + float(extra), margin


def bars_dataset(seed: int, n: int = 512, side: int = 8) -> Array:
    """Binary side x side images, each the union of random horizontal and vertical bars
    (each bar on with probability 2/side), flattened to (n, side * side), float32."""
    bk = Backend("numpy", "float32", seed=seed)
    rows = bk.bernoulli(2.0 / side, (n, side, 1))
    cols = bk.bernoulli(2.0 / side, (n, 1, side))
    return np.maximum(rows, cols).reshape(n, side * side)
