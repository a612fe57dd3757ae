"""The Numba kernels (scratchvae.kernels.cpu) against the readable ops they replace.

Each kernel is run on the same input as its op's body: the reference side with the kernels
switched off, the kernel side with them on, and a tracer checks that each side really ran what
it claims. Also here: the series' accuracy in units in the last place, the shape guards, the
dispatch rule, and whole training steps with the kernels on and off. The kernel tests skip
where Numba is not installed; ``pip install -e ".[test]"`` installs it, so CI runs them.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from op_cases import kernel_cases

from scratchvae import backend, optim, parallel, train
from scratchvae.backend import Backend
from scratchvae.kernels import cpu
from scratchvae.models import VAE, build_model
from scratchvae.ops import layers, losses, reparam
from scratchvae.params import Workspace

needs_numba = pytest.mark.skipif(cpu.numba is None, reason="needs numba (scratchvae[fast])")
NAMES = sorted(cpu.KERNELS)
# the same arithmetic as the ops' bodies: bit for bit
EXACT = {"dense_forward", "dense_backward", "dense_relu_forward", "dense_relu_backward"}


def op_of(name: str):
    """The op called ``name`` (the module attribute the kernel replaces)."""
    for module in (layers, losses, reparam, optim, train, parallel):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no op named {name}")


class Recorder:
    """A tracer: records (op name, label, implementation) of every op call, then runs it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    def call(self, fn, impl, label, args, kwargs):
        self.calls.append((fn.op_name, label, impl))
        return impl(*args, **kwargs)


# ------------------------------------------------------------------ the inputs of each op
def make_args(name, dtype, B, D, H, variant, scale, seed, strided=False):
    """(args, kwargs) of op ``name``: B examples, D and H widths; ``variant`` (0..15) picks
    the optional arguments (need_dx, output buffers, a workspace, the reduction, samples).
    The same numbers give the same arrays. ``strided``: the last array argument is a
    non-contiguous view (same values), which the kernels must not be given."""
    rng = np.random.default_rng(seed)

    def normal(*shape, s=scale):
        return (s * rng.standard_normal(shape)).astype(dtype)

    ws = {"ws": Workspace()} if variant & 8 else {}
    if name in ("dense_backward", "dense_relu_backward"):
        x, W, b = normal(B, D), normal(D, H, s=1.0), normal(H)
        kwargs = {"need_dx": not variant & 1, **ws}
        kwargs |= {"out_db": np.empty(H, dtype)} if variant & 2 else {}
        kwargs |= {"out_dW": np.empty((D, H), dtype)} if variant & 4 else {}
        if name == "dense_backward":
            args = [layers.DenseCache(x, W), normal(B, H)]
        else:
            args = [layers.dense_relu_forward.reference(x, W, b)[1], normal(B, H)]
    elif name == "accumulate":  # a float64 sum, a loss term of the dtype, a batch size
        args, kwargs = [np.asarray(variant * 0.5), normal(), float(B)], {}
    elif name in ("dense_forward", "dense_relu_forward"):
        args, kwargs = [normal(B, D), normal(D, H, s=1.0), normal(H)], ws
    elif name in ("bernoulli_nll_forward", "bernoulli_log_prob"):
        samples = (1 + variant % 3,) if variant & 4 else ()
        logits = normal(*samples, B, D)
        x = rng.random((*samples, B, D) if variant & 2 else (B, D)).astype(dtype)
        x[rng.random(x.shape) < 0.3] = 0  # grey levels and zeros
        args, kwargs = [logits, x], {}
        if name == "bernoulli_nll_forward":
            kwargs = {"reduce": "mean" if variant & 1 else "none", **ws}
    elif name == "latent_forward":
        args, kwargs = [np.concatenate([normal(B, D), normal(B, D)], axis=1), normal(B, D)], ws
    elif name == "latent_backward":
        h, eps = np.concatenate([normal(B, D), normal(B, D)], axis=1), normal(B, D, s=1.0)
        cache = reparam.latent_forward.reference(h, eps)[1]
        args, kwargs = [cache, normal(B, D, s=1.0), (0.0, 0.3, 1.0, 2.5)[variant % 4]], ws
    elif name == "adam_update":
        n, t = B * D, 1 + 3 * variant
        p, g, m = normal(n, s=1.0), normal(n), normal(n, s=0.1)
        v = (0.01 * rng.random(n)).astype(dtype)
        args, kwargs = [p, g, m, v, np.asarray(t), 1e-3, 0.9, 0.999, 1e-8], ws
    elif name == "weighted_sum":  # C = 1 + variant % 4 parts of B D elements
        parts = normal(1 + variant % 4, B * D)
        weights = rng.random(parts.shape[0]).astype(dtype)
        args, kwargs = [np.empty(B * D, dtype), parts, weights], {}
    else:
        raise AssertionError(f"no inputs for {name}")
    if strided:
        i = max(k for k, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim)
        view = np.empty((*args[i].shape, 2), dtype)[..., 0]
        view[...] = args[i]
        args[i] = view
    return args, kwargs


def run(name, args, kwargs, on):
    """The op on (args, kwargs) with the kernels on/off: (result, args, kwargs, tracer)."""
    with backend.kernels(on), backend.tracing(Recorder()) as tracer:
        result = op_of(name)(*args, **kwargs)
    return result, args, kwargs, tracer


def leaves(value):
    """The arrays (and Nones) in a result, its arguments and their caches, in order."""
    if isinstance(value, dict):
        value = [v for k, v in sorted(value.items()) if k != "ws"]
    if isinstance(value, tuple | list):
        return [leaf for v in value for leaf in leaves(v)]
    return [value] if value is None or hasattr(value, "dtype") else []


def assert_same(got, want, dtype, exact, what):
    got_leaves, want_leaves = leaves(got), leaves(want)
    assert len(got_leaves) == len(want_leaves), what
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for k, (g, w) in enumerate(zip(got_leaves, want_leaves, strict=True)):
        if w is None:
            assert g is None, f"{what}[{k}]"
            continue
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}[{k}]"  # (Adam's t: int)
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=f"{what}[{k}]")
        else:
            # absolute error relative to the largest value, and at least to 1: a KL of
            # small mu and logvar cancels (e^lv - lv - 1), leaving float32 rounding of ~1
            atol = rtol * max(1.0, float(np.abs(w).max(initial=0.0)))
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what}[{k}]")


# ------------------------------------------------------------------ every kernel against its op
@needs_numba
@pytest.mark.parametrize("name", NAMES)
@kernel_cases
def test_kernel_equals_its_op(name, B, D, H, variant, dtype, scale, seed) -> None:
    """Same inputs: the same results, arrays written in place, dtypes and shapes (to the
    last bit where the kernel does the same arithmetic, else rtol 1e-12 / 1e-5)."""
    spec = (name, dtype, B, D, H, variant, scale, seed)
    *want, off = run(name, *make_args(*spec), on=False)
    *got, on = run(name, *make_args(*spec), on=True)
    assert off.calls[0][1:] == ("numpy", op_of(name).reference)
    assert on.calls[0][1:] == ("numba", cpu.KERNELS[name])
    # (B, 1): NumPy sums the one column pairwise, the kernel row after row
    assert_same(got, want, dtype, name in EXACT and H > 1, name)


@needs_numba
@pytest.mark.parametrize("name", NAMES)
def test_dispatch_picks_the_kernel_for_contiguous_float_arrays_only(name: str) -> None:
    """Kernels on + C-contiguous float NumPy arrays: the kernel. A non-contiguous view, or
    the kernels off: the op's body, and still the same numbers."""
    spec = (name, "float64", 3, 4, 5, 9, 1.0, 0)
    *fast, tracer = run(name, *make_args(*spec), on=True)
    assert tracer.calls[0] == (name, "numba", cpu.KERNELS[name])
    *strided, tracer = run(name, *make_args(*spec, strided=True), on=True)
    assert tracer.calls[0] == (name, "numpy", op_of(name).reference)
    *off, tracer = run(name, *make_args(*spec), on=False)
    assert tracer.calls[0] == (name, "numpy", op_of(name).reference)
    assert_same(fast, off, "float64", name in EXACT, name)
    assert_same(strided, off, "float64", False, name)  # the body either way


def test_every_kernel_is_an_op_with_the_same_signature() -> None:
    """Each name in the table is an op (it has .reference and .op_name), and the kernel takes
    the op's arguments, by the same names and defaults."""
    for name, kernel in cpu.KERNELS.items():
        op = op_of(name)
        assert op.op_name == name and callable(op.reference)
        want = inspect.signature(op.reference).parameters
        got = inspect.signature(kernel).parameters
        assert list(got) == list(want), name
        assert [p.default for p in got.values()] == [p.default for p in want.values()], name


def test_kernels_switch_off_with_the_context_manager() -> None:
    before = backend.kernels_enabled()
    with backend.kernels(False):
        assert not backend.kernels_enabled()
        with backend.kernels(True):
            assert backend.kernels_enabled()
        assert not backend.kernels_enabled()
    assert backend.kernels_enabled() == before


# ------------------------------------------------------------------ edges the sampler cannot reach
ONE = np.asarray(1)  # Adam's step number


@needs_numba
@pytest.mark.parametrize(
    "name, args",
    [
        ("latent_forward", lambda: (np.zeros((3, 4)), np.zeros((3, 3)))),
        ("latent_forward", lambda: (np.zeros((3, 4)), np.zeros((3, 2), np.float32))),
        ("latent_backward", lambda: (_latent_cache(), np.zeros((3, 3)), 1.0)),
        ("dense_forward", lambda: (np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(5))),
        ("dense_forward", lambda: (np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(4, np.float32))),
        ("dense_relu_forward", lambda: (np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(5))),
        ("dense_relu_backward", lambda: (_relu_cache(), np.zeros((2, 5)))),
        ("dense_backward", lambda: (layers.DenseCache(np.zeros((2, 3)), np.zeros((3, 4))),
                                    np.zeros((2, 4)), None, True, None, np.zeros(3))),
        ("bernoulli_nll_forward", lambda: (np.zeros((2, 3, 4)), np.zeros((3, 5)))),
        ("bernoulli_log_prob", lambda: (np.zeros((2, 3, 4)), np.zeros((2, 4)))),
        ("adam_update", lambda: (*[np.zeros(4)] * 3, np.zeros(5), ONE, 1e-3, 0.9, 0.999, 1e-8)),
        ("adam_update", lambda: (np.zeros(4, np.float32), *[np.zeros(4)] * 3, ONE, 1, 0.9, 0.9, 1)),
        ("weighted_sum", lambda: (np.zeros(4), np.zeros((2, 5)), np.ones(2))),
        ("weighted_sum", lambda: (np.zeros(4), np.zeros((2, 4)), np.ones(3))),
        ("weighted_sum", lambda: (np.zeros(4), np.zeros((2, 4), np.float32), np.ones(2))),
    ],
)  # fmt: skip
def test_kernels_refuse_mismatched_shapes_and_dtypes(name, args) -> None:
    """The loops index without bounds checks: a wrong shape or dtype is a ValueError naming
    the shapes (_require), not a read or write outside an array."""
    with pytest.raises(ValueError, match=f"{name}: arrays of mismatched shapes or dtypes"):
        cpu.KERNELS[name](*args())


def _latent_cache():
    return reparam.LatentCache(np.zeros((3, 4)), np.zeros((3, 2)), np.ones((3, 2)))


def _relu_cache():
    return layers.DenseReluCache(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros((2, 4)))


def test_require_names_the_kernel_and_the_shapes() -> None:
    cpu._require(True, "k", ())  # no error
    with pytest.raises(ValueError, match=r"^k: .* \(float64\[2, 3\], float32\[4\]\)$"):
        cpu._require(False, "k", (np.zeros((2, 3)), np.zeros(4, np.float32)))
    assert cpu._same(np.zeros(2), np.ones(2)) and not cpu._same(np.zeros(2), np.zeros(3))
    assert not cpu._same(np.zeros(2), np.zeros(2, np.float32))


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_kernels_send_nan_where_numpy_does(dtype: str) -> None:
    rng = np.random.default_rng(3)
    x, W, b = (rng.standard_normal(s).astype(dtype) for s in ((4, 3), (3, 5), (5,)))
    x[0, 0] = np.nan  # a whole row of NaN pre-activations
    results = []
    for on in (False, True):
        with backend.kernels(on):
            h, cache = layers.dense_relu_forward(x, W, b)
            dh = np.ones_like(h)
            dh[-1, -1] = np.nan
            results.append((h, *layers.dense_relu_backward(cache, dh)))
    for want, got in zip(*results, strict=True):
        np.testing.assert_array_equal(got, want)  # NaN in the same places, the rest equal
    assert np.isnan(results[1][0][0]).all()


@needs_numba
@pytest.mark.parametrize("dtype,arg_max", [("float32", 87.0), ("float64", 708.0)])
def test_bernoulli_kernel_at_the_edges_of_its_range(dtype, arg_max) -> None:
    """Past exp(-arg_max) the kernel's e is 0 (the exact value is below the smallest normal
    number); infinite logits give the limits of the loss and gradient; NaN stays NaN."""
    m, huge = arg_max, np.finfo(dtype).max / 2
    row = [0.0, -0.0, m - 0.1, 0.1 - m, m, -m, m + 1, -m - 1, m + 17, -m - 17, huge, -huge]
    logits = np.array([row], dtype=dtype)
    x = np.array([[0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0]], dtype=dtype)
    loss, cache = cpu.bernoulli_nll_forward(logits, x, "none")  # (1,) and dL/dl
    wide = logits.astype(np.longdouble)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(loss, [float((np.logaddexp(0, wide) - x * wide).sum())], rtol=rtol)
    with np.errstate(over="ignore"):
        exact_grad = (1 / (1 + np.exp(-wide)) - x).astype(np.float64)
    tiny = float(np.finfo(dtype).tiny)  # the cut-off's largest error: exp(-a) < tiny there
    np.testing.assert_allclose(cache.dlogits, exact_grad, rtol=rtol, atol=tiny)
    for bad, loss_limit, grad_limit in ((np.inf, np.nan, 0), (-np.inf, np.inf, -1)):
        logits[0, 3] = bad  # x = 1: softplus(l) - l is 0 - inf or inf - inf in the limit
        loss, cache = cpu.bernoulli_nll_forward(logits, x, "none")
        np.testing.assert_equal(float(loss[0]), loss_limit)
        assert cache.dlogits[0, 3] == grad_limit
    logits[0, 3] = np.nan
    loss, cache = cpu.bernoulli_nll_forward(logits, x, "none")
    grad = cache.dlogits
    assert np.isnan(loss[0]) and np.isnan(grad[0, 3]) and np.isfinite(np.delete(grad, 3)).all()


@needs_numba
def test_bernoulli_log_prob_kernel_keeps_the_leading_axes_of_same_shape_inputs() -> None:
    """Logits and data both (S, B, D) give (S, B), as the op's body does (the kernel once
    read the output shape after reshaping the logits to (1, S*B, D) and returned (S*B,))."""
    logits, x = np.zeros((2, 3, 4)), np.ones((2, 3, 4))
    assert cpu.bernoulli_log_prob(logits, x).shape == (2, 3)


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the spacing of got's dtype at the exact value."""
    spacing = np.spacing(exact.astype(got.dtype)).astype(exact.dtype)
    return np.abs(got.astype(exact.dtype) - exact) / spacing


EXTENDED = np.longdouble if np.finfo(np.longdouble).nmant > 52 else None  # x86: 64-bit mantissa


@needs_numba
@pytest.mark.parametrize(
    "dtype,exact_dtype,arg_max,max_ulps",
    [
        # measured 0.93 and 1.87 (NumPy's float32 exp and log1p: 2.37 and 1.82)
        ("float32", np.float64, 87.0, (1.5, 2.5)),
        # measured 0.85 and 1.92 (NumPy's float64 exp and log1p: 0.70 and 0.59)
        ("float64", EXTENDED, 708.0, (1.5, 2.5)),
    ],
)
def test_exp_and_log1p_series_are_within_two_and_a_half_ulps(
    dtype, exact_dtype, arg_max, max_ulps
) -> None:
    """The kernels' own exp(-a) (range reduction + Taylor) and log1p(e) (atanh series), on a
    grid of two million points, against a wider float's exp and log1p."""
    if exact_dtype is None:
        pytest.skip("no extended precision to compare float64 with on this platform")
    from scratchvae.kernels import series

    @cpu.numba.njit
    def both(a, e, lp, c):
        for i in range(a.size):
            e[i] = series.exp_minus_abs(a[i], c)
            lp[i] = series.log1p_unit(e[i], c)

    a = np.linspace(0, arg_max, 2_000_001, dtype=dtype)
    e, lp = np.empty_like(a), np.empty_like(a)
    both(a, e, lp, series.SERIES[dtype])
    assert _ulps(e, np.exp(-a.astype(exact_dtype))).max() < max_ulps[0]
    assert _ulps(lp, np.log1p(e.astype(exact_dtype))).max() < max_ulps[1]  # of the e it got
    assert e[0] == 1 and lp[0] == np.log(np.asarray(2, dtype))
    e2 = np.empty(3, dtype)
    both(
        np.array([arg_max + 1, np.inf, np.nan], dtype), e2, np.empty(3, dtype), series.SERIES[dtype]
    )
    assert e2[0] == e2[1] == 0 and np.isnan(e2[2])  # past arg_max: 0; NaN stays NaN


# ------------------------------------------------------------------ Adam
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_sets_subnormal_moments_to_zero_kernel_and_body(dtype: str) -> None:
    """A zero gradient decays m geometrically into subnormal numbers (slow arithmetic); the
    update stores zero instead, in the op's body and in its kernel alike, and keeps NaN."""
    tiny = np.finfo(dtype).tiny
    g = np.array([0, 0, 0, 1e-3, -1e-3, 0, np.nan], dtype)
    updated = []
    for update in [optim.adam_update.reference] + ([cpu.adam_update] if cpu.KERNELS else []):
        p = np.ones(7, dtype)
        m = np.array([tiny * 2, tiny / 4, -tiny / 4, 0, 0, 0.5, 0], dtype)  # 2 subnormal
        v = np.array([1e-6, tiny / 2, 1e-6, 0, 0, 1e-6, 0], dtype)  # one subnormal
        update(p, g, m, v, np.asarray(7), 1e-3, 0.9, 0.999, 1e-8)
        assert not np.any((m != 0) & (np.abs(m) < tiny)) and not np.any((v != 0) & (v < tiny))
        assert m[1] == m[2] == 0 and v[1] == 0  # were subnormal after the update
        assert m[0] >= tiny  # 0.9 * 2 tiny = 1.8 tiny: still normal, kept
        assert np.isnan(m[6]) and np.isnan(v[6]) and np.isnan(p[6])  # a NaN gradient shows
        updated.append((p, m, v))
    for body, kernel in zip(updated[0], updated[-1], strict=True):
        np.testing.assert_allclose(kernel, body, rtol=4 * np.finfo(dtype).eps, atol=0)


def test_fused_adam_matches_the_papers_update(kernels: bool) -> None:
    """Adam(fused=True) (the adam_update op: kernel or body) == Adam(fused=False) (the
    update as written in the paper), on a dict of arrays, mid-run bias corrections."""
    rng = np.random.default_rng(5)
    n = 10_003
    p0, m0, v0 = rng.standard_normal(n), rng.standard_normal(n) * 0.1, rng.random(n) * 0.01
    results = []
    for fused in (True, False):
        opt = optim.Adam(3e-3, betas=(0.8, 0.99), eps=1e-6, fused=fused)
        opt.load_state_dict({"t": 4, "m.w": m0, "v.w": v0})
        p = {"w": p0.copy()}
        for k in range(3):
            opt.step(p, {"w": np.sin(p0 * (k + 1))})
        results.append((p["w"], opt.state["m.w"], opt.state["v.w"]))
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_adam_first_step_moves_each_parameter_by_lr(kernels: bool) -> None:
    g = np.array([1e-3, -2.0, 50.0])
    p, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    b1, b2, lr = 0.9, 0.999, 0.1
    optim.adam_update(p, g, m, v, np.asarray(1), lr, b1, b2, 1e-12)
    np.testing.assert_allclose(p, -lr * np.sign(g), rtol=1e-6)


# ------------------------------------------------------------------ whole training steps
@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation, dropout", [("relu", 0.3), ("tanh", 0.0)])
def test_vae_steps_with_kernels_equal_the_readable_ops(activation, dropout, dtype) -> None:
    """The whole step (workspace, fused dense + ReLU, loss, latent layer and Adam kernels)
    against the readable ops: the same losses and parameters after a few Adam steps."""
    finals = []
    for on in (True, False):
        with backend.kernels(on):
            bk = Backend("numpy", dtype, seed=2)
            model = VAE(40, (24, 16), 4, activation=activation, dropout=dropout, backend=bk)
            opt, run_losses = optim.Adam(1e-2), []
            for _ in range(4):
                terms, grads = model.loss_and_grads(bk.uniform((9, 40)))
                opt.step(model.params, grads)
                run_losses.append(float(terms["loss"]))
            finals.append((run_losses, model.params.flat.copy()))
    (loss_on, p_on), (loss_off, p_off) = finals
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(loss_on, loss_off, rtol=rtol)
    np.testing.assert_allclose(p_on, p_off, rtol=100 * rtol, atol=100 * rtol)


@pytest.mark.parametrize(
    "kind, options",
    [
        ("vae", {"dropout": 0.2}),
        ("vae", {"activation": "elu", "likelihood": "gaussian-learned"}),
        ("ae", {"activation": "tanh", "likelihood": "mse"}),
        ("dae", {"noise": "mask", "noise_level": 0.3, "activation": "leaky_relu"}),
        ("sae", {"activation": "sigmoid"}),
    ],
)
def test_loss_and_grads_in_the_workspace_equals_fresh_arrays(kind, options, kernels) -> None:
    """The reused buffers (the ops' and the kernels' outputs) change nothing: the same terms
    and gradients as forward + backward with fresh arrays, step after step, also when the
    batch size changes (a short last batch); the buffers are the same arrays every step."""
    bk = Backend("numpy", "float64", seed=8)
    config = {"model": kind, "n_features": 10, "hidden": (7, 6), "latent": 3, **options}
    model = build_model(config, bk)
    buffers = []
    for B in (5, 5, 3, 5):
        x, noise = bk.uniform((B, 10)), model.draw_noise(B)
        want_terms, cache = model.forward(x, noise)
        want = model.backward(cache).flat.copy()
        got_terms, got = model.loss_and_grads(x, noise)
        for name in want_terms:
            assert float(got_terms[name]) == float(want_terms[name]), name
        np.testing.assert_array_equal(got.flat, want)
        buffers.append({key: id(a) for key, a in model.workspace._arrays.items()})
    assert len(buffers[0]) >= 8 and buffers[1] == buffers[0]  # the same arrays again
    names = [{name for name, _, _ in b} for b in buffers]
    assert names[2] == names[3] == names[0]  # new shapes, same names
    assert set(buffers[0]).issubset(buffers[3])  # and the first shape's arrays kept


@needs_numba
def test_warm_up_compiles_every_kernel_for_the_dtype() -> None:
    dispatchers = [
        getattr(cpu, f)
        for f in dir(cpu)
        if f.startswith("_") and hasattr(getattr(cpu, f), "signatures")
    ]
    assert len(dispatchers) >= 8
    for dtype in ("float64", "float32"):
        cpu.warm_up(dtype)
        for kernel in dispatchers:
            assert any(dtype in str(sig) for sig in kernel.signatures), kernel


@needs_numba
@pytest.mark.parametrize("dtype, logvar", [("float32", 88.5), ("float64", 709.5)])
def test_latent_backward_kernel_overflows_only_where_the_body_does(dtype, logvar):
    """dL/dlogvar = dz eps sigma / 2 + c (sigma^2 - 1) / 2 with c (sigma^2 - 1) just over the
    dtype's largest number: halving each term first (the body) stays finite; the kernel halved
    the sum and gave inf (a divergence check could then fire on one path only)."""
    h = np.array([[0.5, logvar]], dtype)
    eps = dz = np.ones((1, 1), dtype)
    grads = []
    for on in (True, False):
        with backend.kernels(on):
            _, cache = reparam.latent_forward(h, eps)
            grads.append(reparam.latent_backward(cache, dz, 2.0).dh[0, 1])
    assert np.isfinite(grads).all()
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)
