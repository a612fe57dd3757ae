"""Optimizers: exact update rules, convergence on a quadratic, Adam's first step, clipping,
and state_dict round trips."""

from __future__ import annotations

import numpy as np
import pytest

from scratchvae.backend import Backend
from scratchvae.models import VAE
from scratchvae.optim import (
    SGD,
    Adam,
    build_optimizer,
    clip_by_global_norm,
    global_norm,
)
from scratchvae.params import ParamStore

SGD_VARIANTS = {
    "plain": dict(lr=0.3),
    "momentum": dict(lr=0.05, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
}


def _quadratic(seed: int = 0):
    """f(p) = 0.5 sum_i a_i (p_i - c_i)^2 over two named parameters; grad = a (p - c)."""
    bk = Backend("numpy", "float64", seed=seed)
    a = {"w": 0.5 + 2.5 * bk.uniform((3, 2)), "b": 0.5 + 2.5 * bk.uniform((4,))}
    c = {k: bk.normal(v.shape) for k, v in a.items()}
    params = {k: bk.normal(v.shape) for k, v in a.items()}
    return a, c, params


@pytest.mark.parametrize("variant", SGD_VARIANTS)
def test_sgd_converges_to_the_minimum_of_a_quadratic(variant: str) -> None:
    a, c, params = _quadratic()
    opt = SGD(**SGD_VARIANTS[variant])
    for _ in range(1000):
        grads = {k: a[k] * (params[k] - c[k]) for k in params}
        opt.step(params, grads)
    for k in params:
        np.testing.assert_allclose(params[k], c[k], atol=1e-8)


@pytest.mark.parametrize("variant", SGD_VARIANTS)
def test_sgd_update_rule_matches_the_formula(variant: str) -> None:
    """v = mu v + g;  p -= lr v  (momentum)  or  p -= lr (g + mu v)  (Nesterov)."""
    kw = SGD_VARIANTS[variant]
    lr, mu, nesterov = kw["lr"], kw.get("momentum", 0.0), kw.get("nesterov", False)
    bk = Backend("numpy", "float64", seed=1)
    p = {"w": bk.normal((5,))}
    expected, v = p["w"].copy(), np.zeros(5)
    opt = SGD(**kw)
    for _ in range(4):
        g = bk.normal((5,))
        v = mu * v + g
        expected -= lr * (g + mu * v if nesterov else v if mu else g)
        opt.step(p, {"w": g})
    np.testing.assert_allclose(p["w"], expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_adam_update_rule_matches_the_formula(fused: bool) -> None:
    bk = Backend("numpy", "float64", seed=2)
    p = {"w": bk.normal((6,))}
    expected, m, v = p["w"].copy(), np.zeros(6), np.zeros(6)
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-8
    opt = Adam(lr, betas=(b1, b2), eps=eps, fused=fused)
    for t in range(1, 6):
        g = bk.normal((6,))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        expected -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        opt.step(p, {"w": g})
    np.testing.assert_allclose(p["w"], expected, rtol=1e-12)


def test_adam_first_step_moves_every_parameter_by_lr() -> None:
    """Bias correction makes step 1 equal lr * g / (|g| + eps): magnitude lr when |g| >> eps,
    whatever the scale of g, against the sign of g."""
    bk = Backend("numpy", "float64", seed=3)
    model = VAE(6, hidden=(5,), latent=2, backend=bk)
    _, grads = model.loss_and_grads(bk.uniform((4, 6)))
    shape = grads.flat.shape  # random signs, magnitudes 1e-2 .. 1e2 (so |g| >= 1e6 eps)
    grads.flat[...] = np.sign(bk.normal(shape)) * 10.0 ** (4 * bk.uniform(shape) - 2)
    before = model.params.flat.copy()
    g = grads.flat.copy()
    Adam(lr=1e-3).step(model.params, grads)
    delta = model.params.flat - before
    np.testing.assert_allclose(np.abs(delta), 1e-3, rtol=2e-6)
    assert (np.sign(delta) == -np.sign(g)).all()


def test_optimizers_work_on_param_stores_and_dicts_alike() -> None:
    bk = Backend("numpy", "float64", seed=4)
    store = ParamStore({"a": (2, 3), "b": (3,)}, bk)
    store.flat[...] = bk.normal(store.flat.shape)
    grads = store.like()
    grads.flat[...] = bk.normal(grads.flat.shape)
    as_dict = {k: v.copy() for k, v in store.items()}
    grads_dict = {k: v.copy() for k, v in grads.items()}
    for make in (lambda: Adam(0.01), lambda: SGD(0.1, momentum=0.5, nesterov=True)):
        s, d = make(), make()
        for _ in range(3):
            s.step(store, grads)
            d.step(as_dict, grads_dict)
        for k in as_dict:
            np.testing.assert_allclose(store[k], as_dict[k], rtol=1e-13)


# ------------------------------------------------------------------ clipping
def test_clip_by_global_norm_bounds_norm_and_keeps_direction() -> None:
    bk = Backend("numpy", "float64", seed=5)
    grads = [bk.normal((4, 3)) * 5, bk.normal((7,)) * 5]
    before = [g.copy() for g in grads]
    norm_before = np.sqrt(sum((g**2).sum() for g in before))
    returned = clip_by_global_norm(grads, max_norm=1.0)
    assert float(returned) == pytest.approx(norm_before, rel=1e-12)
    assert float(global_norm(grads)) <= 1.0 + 1e-12
    assert float(global_norm(grads)) == pytest.approx(1.0, rel=1e-9)
    scale = grads[0].ravel()[0] / before[0].ravel()[0]
    assert 0 < scale < 1
    for g, g0 in zip(grads, before, strict=True):
        np.testing.assert_allclose(g, scale * g0, rtol=1e-12)  # one common factor


def test_clip_leaves_small_gradients_alone() -> None:
    grads = [np.array([0.3, -0.4])]  # norm 0.5
    clip_by_global_norm(grads, max_norm=1.0)
    np.testing.assert_array_equal(grads[0], [0.3, -0.4])


def test_optimizer_clipping_records_the_norm_and_limits_the_step() -> None:
    p, g = {"w": np.zeros(4)}, {"w": np.full(4, 10.0)}  # norm 20
    opt = SGD(lr=1.0, clip_norm=2.0)
    opt.step(p, g)
    assert float(opt.last_grad_norm) == pytest.approx(20.0)
    assert np.linalg.norm(p["w"]) == pytest.approx(2.0)


# ------------------------------------------------------------------ state round trip
@pytest.mark.parametrize(
    "make",
    [lambda: Adam(0.01), lambda: SGD(0.05, momentum=0.9), lambda: SGD(0.05, 0.9, nesterov=True)],
    ids=["adam", "sgd-momentum", "sgd-nesterov"],
)
def test_state_dict_round_trip_continues_identically(make) -> None:
    """An optimizer restored from another's state_dict makes bit-identical further updates,
    also when the original keeps stepping (the exported state must not alias the live one)."""
    bk = Backend("numpy", "float64", seed=6)
    model = VAE(5, hidden=(4,), latent=2, backend=bk)
    x = bk.uniform((8, 5))
    opt = make()
    for _ in range(3):
        opt.step(model.params, model.loss_and_grads(x, model.draw_noise(8))[1])
    state = opt.state_dict()
    restored = make()
    restored.load_state_dict(state)
    assert restored.t == opt.t == 3
    twin = VAE(5, hidden=(4,), latent=2, backend=Backend("numpy", "float64", seed=0))
    twin.params.flat[...] = model.params.flat
    for _ in range(3):
        noise = model.draw_noise(8)
        opt.step(model.params, model.loss_and_grads(x, noise)[1])
        restored.step(twin.params, twin.loss_and_grads(x, noise)[1])
    np.testing.assert_array_equal(model.params.flat, twin.params.flat)


def test_params_grads_and_adam_moments_are_pairs_of_rows_of_one_allocation() -> None:
    """One allocation each (NumPy asks for huge pages from 4 MB on); the rows stay separate
    arrays, and a restored Adam pairs its moments again."""
    bk = Backend("numpy", "float32", seed=0)
    params, grads = ParamStore.with_gradients({"W": (3, 2), "b": (2,)}, bk)
    assert params.flat.base is grads.flat.base and params.flat.base.shape == (2, 8)
    assert params.flat.flags.c_contiguous and not np.shares_memory(params.flat, grads.flat)
    params.flat[...] = 1.0
    assert not grads.flat.any() and (params["W"] == 1).all()
    grads.flat[...] = bk.normal((8,))
    opt = Adam(0.1)
    opt.step(params, grads)
    m, v = opt.state["m.flat"], opt.state["v.flat"]
    assert m.base is v.base and m.base.shape == (2, 8)
    restored = Adam(0.1)
    restored.load_state_dict(opt.state_dict())
    m2, v2 = restored.state["m.flat"], restored.state["v.flat"]
    assert m2.base is v2.base and not np.shares_memory(m2, m)
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_array_equal(v2, v)
    with pytest.raises(ValueError, match=r"flat must have shape \(8,\)"):
        ParamStore({"W": (3, 2), "b": (2,)}, bk, flat=bk.zeros(7))


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        Adam(lr=0.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="clip norm must be > 0"):
        SGD(0.1, clip_norm=-1.0)
    with pytest.raises(ValueError, match="Adam betas"):
        Adam(betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="same keys"):
        SGD(0.1).step({"a": np.zeros(1)}, {"b": np.zeros(1)})
    assert isinstance(build_optimizer("adam", 0.1), Adam)
