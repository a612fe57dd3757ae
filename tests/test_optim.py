"""Optimizers: exact update rules, convergence on a quadratic, Adam's first step, the fused
Adam (the op adam_update, kernels on and off) against the paper's readable update, clipping,
state_dict round trips and the checks on a state before it is loaded."""

from __future__ import annotations

import numpy as np
import pytest

from scratchvae.backend import Backend, tracing
from scratchvae.kernels import cpu
from scratchvae.models import VAE
from scratchvae.optim import (
    SGD,
    Adam,
    Optimizer,
    adam_update,
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
def test_adam_update_rule_matches_the_formula(fused: bool, kernels: bool) -> None:
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


def test_adam_first_step_moves_every_parameter_by_lr(kernels: bool) -> None:
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


def test_adam_without_momentum_keeps_the_gradient_exactly(kernels: bool) -> None:
    """betas=(0, b2) (common for GANs): m is the gradient itself, as PyTorch's b1 m +
    (1 - b1) g gives. m + (1 - b1)(g - m) gave 1 + (1e-6 - 1) = 1.013e-6 in float32 after a
    gradient of 1: a step 1.3% too long."""
    opt = Adam(0.1, betas=(0.0, 0.99))
    p = {"w": np.zeros(2, np.float32)}
    opt.step(p, {"w": np.array([1.0, -3.0], np.float32)})
    g = np.array([1e-6, 2e-7], np.float32)
    opt.step(p, {"w": g})
    np.testing.assert_array_equal(opt.state["m.w"], g)


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


# ------------------------------------------------------------------ the fused update
def test_adam_update_op_first_step_moves_each_parameter_by_lr(kernels: bool) -> None:
    """The op computes the bias corrections from the step number t = 1: each parameter moves
    by lr (times the sign of its gradient)."""
    g = np.array([1e-3, -2.0, 50.0])
    p, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    b1, b2, lr = 0.9, 0.999, 0.1
    adam_update(p, g, m, v, np.asarray(1), lr, b1, b2, 1e-12)
    np.testing.assert_allclose(p, -lr * np.sign(g), rtol=1e-6)
    np.testing.assert_allclose(m, (1 - b1) * g, rtol=1e-15)
    np.testing.assert_allclose(v, (1 - b2) * g * g, rtol=1e-15)


def test_fused_adam_on_dicts_matches_the_reference_mid_run(kernels: bool) -> None:
    """Odd sizes, a 2-d array, mid-run bias corrections (t = 4 .. 7)."""
    rng = np.random.default_rng(5)
    shapes = {"w": (10_003,), "W": (37, 5)}
    p0 = {k: rng.standard_normal(s) for k, s in shapes.items()}
    m0 = {k: 0.1 * rng.standard_normal(s) for k, s in shapes.items()}
    v0 = {k: 0.01 * rng.random(s) for k, s in shapes.items()}
    results = []
    for fused in (True, False):
        opt = Adam(3e-3, betas=(0.8, 0.99), eps=1e-6, fused=fused)
        opt.t = 4
        opt.state = {**{f"m.{k}": m0[k].copy() for k in p0}, **{f"v.{k}": v0[k].copy() for k in p0}}
        p = {k: a.copy() for k, a in p0.items()}
        for k in range(3):
            opt.step(p, {name: np.sin(a * (k + 1)) for name, a in p0.items()})
        results.append({**p, **opt.state})
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-12, atol=1e-15)


def test_fused_adam_on_a_param_store_matches_the_reference(kernels: bool) -> None:
    bk = Backend("numpy", "float64", seed=6)
    model = VAE(30, hidden=(20,), latent=4, backend=bk)
    x = bk.uniform((16, 30))
    grads = [model.loss_and_grads(x, model.draw_noise(16))[1].flat.copy() for _ in range(3)]
    start = model.params.flat.copy()
    finals = []
    for fused in (True, False):
        model.params.flat[...] = start
        opt = Adam(1e-2, fused=fused)
        for g in grads:
            model.grads.flat[...] = g
            opt.step(model.params, model.grads)
        finals.append(model.params.flat.copy())
        assert set(opt.state_dict()) == {"t", "m.flat", "v.flat"}  # scratch: not state
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-12, atol=1e-15)
    assert not np.allclose(finals[0], start)


def test_fused_adam_runs_the_op_once_per_step_in_its_workspace(kernels: bool) -> None:
    """One adam_update call for a whole ParamStore; its scratch reused from step to step."""

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def call(self, fn, impl, label, args, kwargs):  # noqa: ANN001, ANN201
            self.calls.append((fn.op_name, label))
            return impl(*args, **kwargs)

    bk = Backend("numpy", "float32", seed=7)
    params, grads = ParamStore.with_gradients({"W": (40, 30), "b": (30,)}, bk)
    grads.flat[...] = bk.normal(grads.flat.shape)
    opt, recorder = Adam(1e-3), Recorder()
    with tracing(recorder):
        opt.step(params, grads)
        scratch = {k: id(a) for k, a in opt.workspace._arrays.items()}
        opt.step(params, grads)
    assert [c[0] for c in recorder.calls] == ["adam_update"] * 2
    label = "numba" if kernels and cpu.numba is not None else "numpy"
    assert {c[1] for c in recorder.calls} == {label}
    assert {k: id(a) for k, a in opt.workspace._arrays.items()} == scratch
    assert opt.workspace.names() == ({"flat.tmp"} if label == "numpy" else set())  # kernel: none


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


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Adam(clip_norm=float("nan")), "clip norm must be > 0"),
        (lambda: SGD(0.1, clip_norm=float("nan")), "clip norm must be > 0"),
        (lambda: Adam(eps=-1e-8), "Adam eps must be > 0 and finite"),
        (lambda: Adam(eps=float("nan")), "Adam eps must be > 0 and finite"),
        (lambda: Adam(eps=float("inf")), "Adam eps must be > 0 and finite"),
        (lambda: Adam(betas=(0.9, 0.99, 0.5)), r"Adam betas must be two numbers in \[0, 1\)"),
        (lambda: Adam(betas=(0.9, float("nan"))), r"Adam betas must be two numbers in \[0, 1\)"),
        # eps 0: a subnormal v flushed to 0 (m not) was a step of -inf (review)
        (lambda: Adam(eps=0.0), "Adam eps must be > 0 and finite"),
        (lambda: Adam(betas=0.9), r"Adam betas must be two numbers in \[0, 1\)"),
    ],
)
def test_hyperparameters_that_would_make_every_step_nan_are_refused(make, message) -> None:
    """A NaN clip norm scales every gradient by NaN, a NaN or negative eps divides by NaN or
    by zero: each refused in one line where it is given (PyTorch refuses eps < 0 too), not
    reported later as a diverged training run."""
    with pytest.raises(ValueError, match=message):
        make()


def test_a_subclass_must_define_its_update_and_its_state() -> None:
    """The base class counts steps, clips and checks states; the update of one parameter and
    the state arrays it keeps are a subclass's to define, and a subclass that forgets either
    is told which one at the first call that needs it."""

    class Bare(Optimizer):
        pass

    params, grads = {"w": np.zeros(2)}, {"w": np.ones(2)}
    with pytest.raises(NotImplementedError, match=r"Bare must define _update\(key, p, g\)"):
        Bare(0.1).step(params, grads)
    with pytest.raises(NotImplementedError, match=r"Bare must define state_shapes\(params\)"):
        Bare(0.1).check_state({"t": 0}, params)
    for defined in (SGD(0.1), SGD(0.1, momentum=0.9), Adam(0.1)):
        defined.step(params, grads)
        defined.check_state(defined.state_dict(), params)


# ------------------------------------------------------------------ checking a state
def _adam_state(n: int = 8, dtype=np.float32) -> tuple[dict, dict]:
    """(params, a valid Adam state for them after 3 steps) on plain dicts."""
    params = {"w": np.zeros(n, dtype)}
    return params, {"t": 3, "m.w": np.zeros(n, dtype), "v.w": np.full(n, 0.5, dtype)}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"t": -1}, "step count must be a whole number >= 0"),
        ({"t": 2.5}, "step count must be a whole number >= 0"),
        ({"t": np.array([1, 2])}, "step count must be a whole number >= 0"),
        ({"t": np.array("x")}, "step count must be a whole number >= 0"),
        ({"t": None}, "step count must be a whole number >= 0"),
        ({"v.w": None}, r"keys differ: missing \['v.w'\], unexpected \[\]"),
        ({"extra": np.zeros(8, np.float32)}, r"missing \[\], unexpected \['extra'\]"),
        ({"m.w": np.zeros(7, np.float32)}, r"m.w is float32\[7\], expected float32\[8\]"),
        ({"m.w": np.zeros(8, np.float64)}, r"m.w is float64\[8\], expected float32\[8\]"),
        ({"m.w": np.full(8, np.inf, np.float32)}, "m.w holds NaN or infinite values"),
        ({"v.w": np.full(8, -1.0, np.float32)}, "v.w .second moment. has negative values"),
    ],
)
def test_check_state_refuses_a_state_the_optimizer_could_not_have_made(change, message) -> None:
    params, state = _adam_state()
    state = {k: v for k, v in {**state, **change}.items() if v is not None or k == "t"}
    opt = Adam(0.1)
    with pytest.raises(ValueError, match=message):
        opt.check_state(state, params)
    with pytest.raises(ValueError, match=message):  # load_state_dict checks first ...
        opt.load_state_dict(state, params)
    assert opt.t == 0 and opt.state == {}  # ... and loads nothing


def test_check_state_accepts_valid_states() -> None:
    params, state = _adam_state()
    opt = Adam(0.1)
    opt.check_state(state, params)
    opt.check_state({"t": 0}, params)  # before the first step: no arrays yet
    opt.check_state({**state, "t": np.array(3)}, params)  # a 0-d array, as read from a file
    assert opt.state_shapes(params) == {"m.w": (8,), "v.w": (8,)}
    store = ParamStore({"W": (2, 3), "b": (3,)}, Backend("numpy", "float32"))
    assert opt.state_shapes(store) == {"m.flat": (9,), "v.flat": (9,)}
    assert SGD(0.1).state_shapes(store) == {}
    assert SGD(0.1, momentum=0.9).state_shapes(store) == {"v.flat": (9,)}
    with pytest.raises(ValueError, match="keys differ"):
        SGD(0.1).check_state({"t": 2, "v.flat": np.zeros(9, np.float32)}, store)
    opt.load_state_dict(state, params)
    assert opt.t == 3 and opt.state["v.w"] is not state["v.w"]  # copies: its own buffers
    np.testing.assert_array_equal(opt.state["v.w"], state["v.w"])
