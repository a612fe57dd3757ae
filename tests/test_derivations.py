"""docs/derivations.md names real functions, and names every op of the library; the claims it
makes that no gradient check sees hold for the code it names."""

import importlib
import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest

from scratchvae.lab.estimators import pathwise_grads, score_function_grads
from scratchvae.ops.losses import (
    gaussian_kl_backward,
    gaussian_kl_forward,
    gaussian_nll_forward,
    squared_error_forward,
)
from scratchvae.optim import SGD, Adam

DOC = Path(__file__).resolve().parents[1] / "docs" / "derivations.md"
REF = re.compile(r"`((?:scratchvae|examples)/[\w/]+\.py)::([\w.]+)`")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _refs() -> set[tuple[str, str]]:
    return set(REF.findall(_doc()))


def _resolve(path: str, name: str):
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part)  # AttributeError names what is missing
    return obj


def test_the_document_references_functions():
    assert len(_refs()) > 40


@pytest.mark.parametrize("path,name", sorted(r for r in _refs() if r[0].startswith("scratchvae")))
def test_every_reference_exists(path, name):
    try:
        obj = _resolve(path, name)
    except ModuleNotFoundError as exc:  # scratchvae/kernels/series.py: Numba's alone
        if exc.name != "numba":
            raise
        pytest.skip(f"{path} needs numba (scratchvae[fast])")
    assert callable(obj), f"{path}::{name} is not a function or class"


def _public_ops() -> list[tuple[str, str]]:
    ops = []
    for mod in ("activations", "layers", "reparam", "losses", "sparsity", "iwae"):
        module = importlib.import_module(f"scratchvae.ops.{mod}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_"):
                continue
            if name.endswith(("_forward", "_backward", "_prob", "_normal")):
                ops.append((f"scratchvae/ops/{mod}.py", name))
    return ops


def test_every_op_is_found():
    names = {n for _, n in _public_ops()}
    assert {"dense_backward", "reparam_backward", "elu_backward", "gaussian_kl_forward"} <= names
    assert {"latent_backward", "dense_relu_backward", "bernoulli_log_prob", "log_normal"} <= names
    assert "get_activation" not in names  # a lookup, not an op


@pytest.mark.parametrize("path,name", _public_ops())
def test_every_public_op_is_derived_in_the_document(path, name):
    assert (path, name) in _refs(), f"docs/derivations.md does not reference `{path}::{name}`"


@pytest.mark.parametrize("name", ["SGD", "Adam", "adam_update", "clip_by_global_norm"])
def test_optimizer_updates_are_derived(name):
    assert ("scratchvae/optim.py", name) in _refs()


def test_math_blocks_are_balanced():
    """$$ blocks open and close; inline $...$ opens and closes on one line (GitHub renders
    math that is split over two source lines as text)."""
    text = _doc()
    assert text.count("$$") % 2 == 0
    for line in re.sub(r"\$\$.*?\$\$", "", text, flags=re.S).splitlines():
        assert line.count("$") % 2 == 0, line


# ------------------------------------------------------------------ the document's own claims
# Statements of docs/derivations.md that no gradient check sees (the gradients themselves are
# checked in tests/ops, tests/lab and tests/test_optim.py), each against the code it names.
def test_score_function_variance_grows_with_an_offset_the_pathwise_one_ignores():
    """Section 4: f(z) = z + c, q = N(0, 1): the pathwise estimate of d/dmu E[f] is f'(z) = 1
    with zero variance; the score-function estimate (z + c) z has variance 2 + c^2."""
    z = np.random.default_rng(0).standard_normal((400_000, 1, 1))  # (S, batch, L), eps = z
    mu, logvar = np.zeros((1, 1)), np.zeros((1, 1))
    for c in (0.0, 3.0, 10.0):
        score_mu, _ = score_function_grads(z[..., 0] + c, z, mu, logvar)
        assert score_mu.mean() == pytest.approx(1.0, abs=0.05)  # unbiased: dE[f]/dmu = 1
        assert score_mu.var() == pytest.approx(2 + c * c, rel=0.03)
        h = 1e-3  # f'(z) of f(z) = z + c, by central differences: the offset cancels
        dfdz = ((z + h + c) - (z - h + c)) / (2 * h)
        path_mu, _ = pathwise_grads(dfdz, z, np.exp(0.5 * logvar))
        assert path_mu.var() < 1e-18 and path_mu.mean() == pytest.approx(1.0, abs=1e-9)


def test_the_kl_and_both_its_gradients_vanish_exactly_at_the_prior():
    """Section 2: KL(q || N(0, I)) and its gradients mu / B, (e^lambda - 1) / (2B) are all
    zero at mu = 0, lambda = 0, and only there."""
    kl, cache = gaussian_kl_forward(np.zeros((3, 4)), np.zeros((3, 4)))
    grads = gaussian_kl_backward(cache, 1.0)
    assert float(kl) == 0.0 and not grads.dmu.any() and not grads.dlogvar.any()
    mu, logvar = np.array([[0.0, 0.5]]), np.array([[-0.5, 0.0]])
    grads = gaussian_kl_backward(gaussian_kl_forward(mu, logvar)[1], 1.0)
    assert grads.dmu[0, 1] == 0.5 and grads.dlogvar[0, 0] == pytest.approx(np.expm1(-0.5) / 2)


def test_squared_error_is_the_gaussian_nll_with_variance_one_half():
    """Section 3: the AE's squared error equals the fixed-variance Gaussian NLL with
    e^v = 1/2, up to a constant: NLL = SE + (D/2) log pi per example."""
    rng = np.random.default_rng(1)
    y, x = rng.standard_normal((5, 7)), rng.uniform(size=(5, 7))
    se, nll = squared_error_forward(y, x)[0], gaussian_nll_forward(y, x, math.log(0.5))[0]
    assert float(nll) == pytest.approx(float(se) + 7 / 2 * math.log(math.pi), rel=1e-14)


def test_momentum_under_a_constant_gradient_multiplies_the_step_by_1_over_1_minus_mu():
    """Section 9: under a constant gradient g the velocity tends to g / (1 - mu_m)."""
    g, params = np.array([1.0, -2.0, 0.5]), {"w": np.zeros(3)}
    opt = SGD(lr=0.1, momentum=0.9)
    for _ in range(400):
        opt.step(params, {"w": g.copy()})
    np.testing.assert_allclose(opt.state["v.w"], g / (1 - 0.9), rtol=1e-12)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_adams_moment_is_biased_towards_zero_by_exactly_1_minus_beta1_to_the_t(fused):
    """Section 9: with m_0 = 0 and a constant gradient g, m_t = (1 - b1^t) g (and v_t =
    (1 - b2^t) g^2), so the corrected moments are g and g^2 and every step moves each parameter
    by lr g / (|g| + eps)."""
    g, params = np.array([3.0, -0.25, 1e-3]), {"w": np.zeros(3)}
    b1, b2, lr, eps = 0.9, 0.99, 1e-2, 1e-8
    opt = Adam(lr, betas=(b1, b2), eps=eps, fused=fused)
    for t in range(1, 8):
        before = params["w"].copy()
        opt.step(params, {"w": g.copy()})
        np.testing.assert_allclose(opt.state["m.w"], (1 - b1**t) * g, rtol=1e-12)
        np.testing.assert_allclose(opt.state["v.w"], (1 - b2**t) * g * g, rtol=1e-12)
        np.testing.assert_allclose(before - params["w"], lr * g / (np.abs(g) + eps), rtol=1e-10)
