"""CuPy against NumPy: same inputs, same noise, same parameters -> same numbers (float64).

Inputs and noise are drawn with NumPy, copied to the device with ``xp.asarray``, and results
are compared after ``to_numpy`` at rtol 1e-10. Run on a CUDA machine with ``pytest -m gpu``;
the ``cupy`` cases are marked ``gpu`` and skip cleanly elsewhere.

Every test also runs with the NumPy backend standing in for CuPy (the ``numpy-harness`` ids,
not marked gpu): that exercises this file's copying and comparing code on any machine, so the
GPU tests cannot rot unseen between GPU runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from strategies import FAMILIES, OP_CASES, build_family, case_ids, check_op, make_inputs

from scratchvae.activations import ACTIVATIONS
from scratchvae.backend import Backend, get_xp, to_numpy
from scratchvae.models import VAE, build_model
from scratchvae.optim import SGD, Adam, clip_by_global_norm

RTOL, ATOL = 1e-10, 1e-12

DEVICES = [
    pytest.param("numpy", id="numpy-harness"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
]


def _move(value, bk: Backend):
    """Copies of arrays on ``bk`` (dtype kept); dicts recursively; Python numbers unchanged.
    (A copy even for the NumPy harness, so in-place ops cannot touch the reference inputs.)"""
    if isinstance(value, dict):
        return {k: _move(v, bk) for k, v in value.items()}
    if hasattr(value, "shape"):
        return bk.xp.array(value, copy=True)
    return value


def _same(got, want, what: str = "") -> None:
    """``got`` lives on the device under test (no silent host copy) and equals ``want``."""
    np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=RTOL, atol=ATOL, err_msg=what)


def _on(bk: Backend, a) -> None:
    assert get_xp(a) is bk.xp, f"result is a {type(a).__module__} array, not {bk.name}"


# ------------------------------------------------------------------ every op
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 4), (1, 1), (6, 2)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", OP_CASES, ids=case_ids())
def test_op_forward_and_backward_match_numpy(case, shape, device: str) -> None:
    bk = Backend(device, "float64", seed=0)
    inputs, dout = make_inputs(
        case, seed=sum(shape), B=shape[0], D=shape[1], scale=2.0, dtype="float64"
    )
    y_ref, grads_ref = case.forward(**inputs), case.backward(inputs, dout)
    dev_inputs, dev_dout = _move(inputs, bk), _move(dout, bk)
    y = case.forward(**dev_inputs)
    grads = case.backward(dev_inputs, dev_dout)
    _on(bk, y)
    _same(y, y_ref, f"{case.name} forward")
    for name in case.wrt:
        _on(bk, grads[name])
        _same(grads[name], grads_ref[name], f"{case.name} d{name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_limits_match_numpy(name: str, device: str) -> None:
    bk = Backend(device, "float32", seed=0)
    act = ACTIVATIONS[name]
    for dtype in ("float32", "float64"):
        x = np.array([-1000.0, -89.0, -1.0, 0.5, 89.0, 1000.0], dtype=dtype)
        y_ref, cache_ref = act.forward(x)
        y, cache = act.forward(bk.xp.asarray(x))
        dx = act.backward(cache, bk.xp.ones_like(y))
        assert bk.is_finite(y) and bk.is_finite(dx) and y.dtype == dx.dtype == x.dtype
        # CUDA flushes subnormal results to zero (softplus(-89) = 2e-39 in float32): below the
        # smallest normal number the two may differ.
        tiny = np.finfo(dtype).tiny
        np.testing.assert_allclose(to_numpy(y), y_ref, rtol=1e-6, atol=tiny)
        np.testing.assert_allclose(
            to_numpy(dx), act.backward(cache_ref, np.ones_like(x)), rtol=1e-6, atol=tiny
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case",
    [c for c in OP_CASES if c.name in ("reparam", "dense", "bernoulli_nll", "elu")],
    ids=lambda c: c.name,
)
def test_gradient_check_runs_on_the_device(case, device: str) -> None:
    """gradcheck itself (in-place perturbation, to_numpy comparisons) works on device arrays."""
    bk = Backend(device, "float64", seed=0)
    inputs, dout = make_inputs(case, seed=4, B=2, D=3, scale=1.0, dtype="float64")
    check_op(case, _move(inputs, bk), _move(dout, bk))


# ------------------------------------------------------------------ whole models
def _twins(family: str, device: str, seed: int = 0):
    """The same model on NumPy and on ``device``, identical parameters (copied NumPy -> device)."""
    ref = build_family(family, 6, (5, 4), 3, "elu", 0.25, Backend("numpy", "float64", seed=seed))
    bk = Backend(device, "float64", seed=seed + 100)
    dev = build_model(ref.config, bk)
    dev.params.flat[...] = bk.xp.asarray(ref.params.flat)
    _same(dev.params.flat, ref.params.flat)
    return ref, dev, bk


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", FAMILIES)
def test_model_loss_and_grads_match_numpy(family: str, device: str) -> None:
    ref, dev, bk = _twins(family, device)
    data = Backend("numpy", "float64", seed=7)
    x = data.uniform((5, 6)) if "bernoulli" in family or family[0] in "ds" else data.normal((5, 6))
    noise = ref.draw_noise(5)
    terms_ref, grads_ref = ref.loss_and_grads(x, noise)
    grads_ref = grads_ref.copy()
    terms, grads = dev.loss_and_grads(bk.xp.asarray(x), _move(noise, bk))
    assert set(terms) == set(terms_ref)
    for k in terms:
        _on(bk, terms[k])
        _same(terms[k], terms_ref[k], k)
    assert list(grads) == list(grads_ref)
    for k in grads:
        _on(bk, grads[k])
        _same(grads[k], grads_ref[k], k)
    eval_loss = dev.loss(bk.xp.asarray(x), _move(noise, bk))["loss"]  # VAE: same eps
    _same(eval_loss, ref.loss(x, noise)["loss"], "eval loss")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["adam", "adam-clipped", "sgd-nesterov"])
def test_vae_training_steps_match_numpy(optimizer: str, device: str) -> None:
    """loss_and_grads + optimizer step, three times: parameters agree after every step."""
    ref, dev, bk = _twins("vae-bernoulli", device, seed=3)

    def make():
        if optimizer == "sgd-nesterov":
            return SGD(0.05, momentum=0.9, nesterov=True)
        return Adam(1e-2, clip_norm=0.5 if optimizer == "adam-clipped" else None)

    opt_ref, opt_dev = make(), make()
    data = Backend("numpy", "float64", seed=8)
    for step in range(3):
        x, noise = data.uniform((8, 6)), ref.draw_noise(8)
        terms_ref, grads_ref = ref.loss_and_grads(x, noise)
        terms, grads = dev.loss_and_grads(bk.xp.asarray(x), _move(noise, bk))
        _same(terms["loss"], terms_ref["loss"], f"loss at step {step}")
        opt_ref.step(ref.params, grads_ref)
        opt_dev.step(dev.params, grads)
        _on(bk, dev.params.flat)
        _same(dev.params.flat, ref.params.flat, f"params after step {step}")
    for k, v in opt_dev.state_dict().items():
        if k != "t":
            _same(v, opt_ref.state_dict()[k], f"optimizer state {k}")


@pytest.mark.parametrize("device", DEVICES)
def test_clipping_matches_numpy(device: str) -> None:
    bk = Backend(device, "float64", seed=0)
    ref = [Backend("numpy", "float64", seed=1).normal((4, 5)) * 3, np.full(3, 2.0)]
    dev = [_move(g, bk) for g in ref]
    _same(clip_by_global_norm(dev, 1.5), clip_by_global_norm(ref, 1.5), "norm")
    for g, g_ref in zip(dev, ref, strict=True):
        _same(g, g_ref, "clipped")


@pytest.mark.parametrize("device", DEVICES)
def test_model_api_on_the_device(device: str) -> None:
    ref, dev, bk = _twins("vae-bernoulli", device)
    z = Backend("numpy", "float64", seed=2).normal((4, 3))
    _same(dev.decode(bk.xp.asarray(z)), ref.decode(z), "decode")
    x = Backend("numpy", "float64", seed=3).uniform((4, 6))
    for got, want in zip(dev.encode(bk.xp.asarray(x)), ref.encode(x), strict=True):
        _same(got, want, "encode")
    samples = dev.sample(5)  # device draws: a different stream, so shape and range only
    _on(bk, samples)
    assert samples.shape == (5, 6) and bool(((samples >= 0) & (samples <= 1)).all())


@pytest.mark.parametrize("device", DEVICES)
def test_backend_draws_on_the_device(device: str) -> None:
    for dtype in ("float32", "float64"):
        bk = Backend(device, dtype, seed=5)
        for a in (bk.normal((3, 2)), bk.uniform((3, 2)), bk.bernoulli(0.5, (3, 2)), bk.zeros(2)):
            _on(bk, a)
            assert a.dtype == np.dtype(dtype)
        perm = to_numpy(bk.permutation(7))
        assert sorted(perm.tolist()) == list(range(7))
        first, again = (to_numpy(Backend(device, dtype, seed=5).normal((3, 2))) for _ in "ab")
        np.testing.assert_array_equal(first, again)  # same seed, same draws
    bk = Backend(device, "float32", seed=5)
    state = bk.rng_state()  # taken before any draw
    first = to_numpy(bk.normal((4,)))
    bk.set_rng_state(state)  # NumPy: the saved stream; CuPy: reseeded with seed + 0
    np.testing.assert_array_equal(to_numpy(bk.normal((4,))), first)  # either way: replayed
    model = VAE(6, hidden=(4,), latent=2, backend=bk)
    _on(bk, model.params.flat)
