"""The MLP: parameter names and shapes, initialisation, the forward against plain NumPy, the
backward against central differences (with and without dropout, kernels on and off),
need_dx=False, input_grad, and the workspace's arrays reused from step to step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from op_cases import ACTIVATION_NAMES, KINKED

from scratchvae.autoencoders import SparseAE
from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_gradient
from scratchvae.mlp import MLP, LayerNames
from scratchvae.models import AE
from scratchvae.params import ParamStore, Workspace

H, RTOL, ATOL = 1e-6, 1e-6, 1e-8

_ACT = {  # written again here, from the formulas: the forward must not check itself
    "identity": lambda a: a,
    "relu": lambda a: np.maximum(a, 0.0),
    "leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a),
    "elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0.0))),
    "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "softplus": lambda a: np.logaddexp(0, a),
}


def _net(activation: str = "tanh", dropout: float = 0.0, sizes=(5, 4, 3, 2), seed: int = 0):
    """(mlp, params, backend) with random non-zero weights and biases, float64."""
    bk = Backend("numpy", "float64", seed=seed)
    mlp = MLP("enc", sizes, activation, dropout)
    params = ParamStore(mlp.shapes(), bk)
    params.flat[...] = 0.8 * bk.normal(params.flat.shape)
    return mlp, params, bk


def _reference(mlp: MLP, params, x, masks, activation: str):
    """(out, pre-activations of the hidden layers) by plain NumPy."""
    h, pre = x, []
    for i in range(mlp.n_layers):
        a = h @ params[f"enc.{i}.W"] + params[f"enc.{i}.b"]
        if i == mlp.n_layers - 1:
            return a, pre
        pre.append(a)
        h = _ACT[activation](a)
        if masks:
            h = h * masks[f"enc.{i}.dropout"]
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ names, shapes, init
def test_names_and_shapes() -> None:
    mlp = MLP("enc", (5, 4, 3, 2))
    assert mlp.n_layers == 3 and mlp.sizes == (5, 4, 3, 2)
    assert mlp.shapes() == {
        "enc.0.W": (5, 4),
        "enc.0.b": (4,),
        "enc.1.W": (4, 3),
        "enc.1.b": (3,),
        "enc.2.W": (3, 2),
        "enc.2.b": (2,),
    }
    assert list(mlp.shapes()) == [n for names in mlp.names for n in (names.W, names.b)]
    assert mlp.names[1] == LayerNames("enc.1.W", "enc.1.b", "enc.1.dropout", "enc.1")
    assert MLP("dec", (2, 7)).shapes() == {"dec.0.W": (2, 7), "dec.0.b": (7,)}


@pytest.mark.parametrize("sizes", [(5,), (), (5, 0, 2), (5, -1), (5, 2.5), (5, "2")])
def test_bad_sizes_and_init_raise(sizes) -> None:
    with pytest.raises(ValueError, match="enc: layer sizes must be >= 1 and at least two"):
        MLP("enc", sizes)
    with pytest.raises(ValueError, match="unknown init 'zeros'"):
        MLP("enc", (3, 2), init="zeros")


@pytest.mark.parametrize(
    "activation, hidden_init", [("relu", "he"), ("elu", "he"), ("tanh", "glorot")]
)
def test_default_init_he_or_glorot_hidden_glorot_output_zero_biases(
    activation, hidden_init
) -> None:
    n_in, n_h, n_out = 400, 300, 200
    mlp = MLP("enc", (n_in, n_h, n_out), activation)
    assert mlp.init_name == hidden_init
    params = ParamStore(mlp.shapes(), Backend("numpy", "float64", seed=1))
    mlp.init_params(params, params.backend)
    W0, W1 = params["enc.0.W"], params["enc.1.W"]
    if hidden_init == "he":  # N(0, 2 / n_in): sd of the sample variance ~ 0.4% here
        assert W0.var() == pytest.approx(2 / n_in, rel=0.03)
        assert abs(W0.mean()) < 4 * math.sqrt(2 / n_in / W0.size)
    else:  # U(-a, a), a = sqrt(6 / (n_in + n_out))
        a = math.sqrt(6 / (n_in + n_h))
        assert np.abs(W0).max() <= a and np.abs(W0).max() > 0.99 * a
    a = math.sqrt(6 / (n_h + n_out))  # the linear output layer: always Glorot
    assert np.abs(W1).max() <= a and W1.var() == pytest.approx(a * a / 3, rel=0.03)
    assert not params["enc.0.b"].any() and not params["enc.1.b"].any()


def test_uniform_init_draws_biases_too() -> None:
    mlp = MLP("enc", (100, 50), "relu", init="uniform")
    params = ParamStore(mlp.shapes(), Backend("numpy", "float64", seed=2))
    mlp.init_params(params, params.backend)
    for name in ("enc.0.W", "enc.0.b"):
        assert 0.9 * 0.1 < np.abs(params[name]).max() <= 0.1  # 1 / sqrt(100)


def test_draw_masks_for_hidden_layers_only() -> None:
    mlp, _, bk = _net(dropout=0.25)
    masks = mlp.draw_masks(bk, 6)
    assert {k: v.shape for k, v in masks.items()} == {
        "enc.0.dropout": (6, 4),
        "enc.1.dropout": (6, 3),
    }
    assert set(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) <= {0.0, 1 / 0.75}
    assert _net(dropout=0.0)[0].draw_masks(bk, 6) == {}


# ------------------------------------------------------------------ forward and backward
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_forward_and_backward_against_numpy_and_central_differences(
    activation: str, dropout: float, kernels: bool
) -> None:
    """out = the plain NumPy MLP; every dW, db and dx = the gradient of sum(out * dout) by
    central differences (float64, rtol 1e-6)."""
    mlp, params, bk = _net(activation, dropout, seed=3)
    x, dout = bk.normal((6, 5)), bk.normal((6, 2))
    masks = mlp.draw_masks(bk, 6) if dropout else None
    out, cache = mlp.forward(params, x, masks)
    want, pre = _reference(mlp, params, x, masks, activation)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-14)
    if activation in KINKED:
        assert min(np.abs(a).min() for a in pre) > 10 * H  # central differences stay on one side
    grads = params.like()
    dx = mlp.backward(params, grads, cache, dout)

    def s():
        return (mlp.forward(params, x, masks)[0] * dout).sum()

    for name in params:
        numerical = numerical_gradient(s, params[name], H)
        assert_close(grads[name], numerical, RTOL, ATOL, name=f"{activation} {name}")
    assert_close(dx, numerical_gradient(s, x, H), RTOL, ATOL, name=f"{activation} dx")
    if dropout:  # a dropped unit passes no gradient back: its masks matter
        _, cache_eval = mlp.forward(params, x, None)
        assert not np.allclose(mlp.backward(params, params.like(), cache_eval, dout), dx)


def test_need_dx_false_skips_dx_and_keeps_the_weight_gradients(kernels: bool) -> None:
    for sizes in ((5, 4, 3, 2), (5, 2)):  # with hidden layers, and one linear layer alone
        mlp, params, bk = _net("relu", sizes=sizes, seed=4)
        x, dout = bk.normal((3, 5)), bk.normal((3, 2))
        _, cache = mlp.forward(params, x)
        with_dx, without = params.like(), params.like()
        assert mlp.backward(params, with_dx, cache, dout, need_dx=True) is not None
        assert mlp.backward(params, without, cache, dout, need_dx=False) is None
        np.testing.assert_array_equal(with_dx.flat, without.flat)


def test_input_grad_is_dx_and_leaves_the_gradients_alone(kernels: bool) -> None:
    mlp, params, bk = _net("softplus", dropout=0.2, seed=5)
    x, dout = bk.normal((4, 5)), bk.normal((4, 2))
    masks = mlp.draw_masks(bk, 4)
    _, cache = mlp.forward(params, x, masks)
    grads = params.like()
    grads.flat[...] = 7.0
    dx = mlp.input_grad(params, cache, dout)
    assert (grads.flat == 7.0).all()  # nothing written into a store that was not given

    def s():
        return (mlp.forward(params, x, masks)[0] * dout).sum()

    assert_close(dx, numerical_gradient(s, x, H), RTOL, ATOL, name="input_grad")
    np.testing.assert_array_equal(dx, mlp.backward(params, params.like(), cache, dout))


# ------------------------------------------------------------------ workspace
@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_workspace_arrays_are_reused_from_step_to_step(activation: str, kernels: bool) -> None:
    """With a workspace, the second step returns the same arrays as the first (out, dx) and
    allocates none; the numbers equal a pass without one; the gradients go into the store."""
    mlp, params, bk = _net(activation, dropout=0.2, seed=6)
    ws, grads = Workspace(), params.like()
    outs, dxs, ids = [], [], []
    for step in range(3):
        x, dout = bk.normal((5, 5)), bk.normal((5, 2))
        masks = mlp.draw_masks(bk, 5)
        out, cache = mlp.forward(params, x, masks, ws)
        fresh_out, fresh_cache = mlp.forward(params, x, masks)
        np.testing.assert_array_equal(out, fresh_out)
        fresh_grads = params.like()
        fresh_dx = mlp.backward(params, fresh_grads, fresh_cache, dout)
        dx = mlp.backward(params, grads, cache, dout, ws=ws)
        np.testing.assert_array_equal(dx, fresh_dx)
        np.testing.assert_array_equal(grads.flat, fresh_grads.flat)
        outs.append(out)
        dxs.append(dx)
        ids.append({key: id(a) for key, a in ws._arrays.items()})
    assert outs[0] is outs[1] is outs[2] and dxs[0] is dxs[1] is dxs[2]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) >= 6
    assert all(name.startswith(("enc.0.", "enc.1.", "enc.2.")) for name in ws.names())
    x = bk.normal((2, 5))  # another batch size: new arrays under the same names
    out, _ = mlp.forward(params, x, None, ws)
    assert out.shape == (2, 2) and out is not outs[0]


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_training_with_dropout_needs_every_mask_of_its_layers_shape(dropout: float) -> None:
    """Masks given (training) to an MLP with dropout: a missing mask was a silent step without
    dropout in that layer, and a mask of one row was broadcast over the batch (the same units
    dropped for every example). Both are one-line ValueErrors; without dropout, or in
    evaluation (masks None), nothing is needed."""
    mlp, params, bk = _net(dropout=dropout)
    x = bk.uniform((6, 5))
    full = mlp.draw_masks(bk, 6) if dropout else {"enc.0.dropout": np.ones((6, 4))}
    mlp.forward(params, x, None)
    mlp.forward(params, x, full)
    bad = [
        ({}, "'enc.0.dropout' of shape \\(6, 4\\) for this batch, got none"),
        ({"enc.0.dropout": full["enc.0.dropout"]}, "'enc.1.dropout' of shape \\(6, 3\\).*none"),
        ({**full, "enc.0.dropout": full["enc.0.dropout"][:1]}, "got shape \\(1, 4\\)"),
        ({**full, "enc.1.dropout": np.ones((7, 3))}, "got shape \\(7, 3\\)"),
    ]
    for masks, words in bad:
        if not dropout:
            mlp.forward(params, x, masks)  # no dropout layer: no mask read
            continue
        with pytest.raises(ValueError, match=words) as info:
            mlp.forward(params, x, masks)
        assert "\n" not in str(info.value) and "draw_noise(6)" in str(info.value)


def test_a_models_training_step_without_its_dropout_masks_is_refused() -> None:
    """noise={} for an AE with dropout: every model's loss_and_grads refuses it (a VAE already
    did, for its eps; an AE trained silently without dropout)."""
    bk = Backend("numpy", "float64", seed=2)
    x = bk.uniform((4, 6))
    for model in (AE(6, (5,), 2, dropout=0.5, backend=bk), SparseAE(6, (5,), 2, dropout=0.5)):
        with pytest.raises(ValueError, match="dropout needs the mask 'encoder.0.dropout'"):
            model.loss_and_grads(x, {})
        model.loss(x, {})  # evaluation: no dropout, no mask needed


@pytest.mark.parametrize(
    "dropout, error", [(None, TypeError), ("0.1", TypeError), (1.0, ValueError)]
)
def test_dropout_must_be_a_number_in_0_1(dropout, error: type) -> None:
    """A string "0.1" was taken as 0.1, None was float()'s own TypeError."""
    with pytest.raises(error, match="dropout must be"):
        MLP("enc", (3, 2, 1), dropout=dropout)
