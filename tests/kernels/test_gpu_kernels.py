"""The CuPy kernels (scratchvae.kernels.gpu) against the readable ops they replace, one VAE
training step on CuPy against the same step on NumPy, and the few other checks that need a
GPU (special functions at the extremes, the gradient checker and the generator on the device).

Every test that needs the device is marked ``gpu``: tests/conftest.py skips it cleanly without
CuPy or a CUDA device; ``pytest -m gpu tests/kernels`` runs them on a CUDA machine. Inputs are
drawn with NumPy and copied to the device, so both sides see the same numbers; results are
compared after ``to_numpy``. The table test at the top needs no device and runs everywhere.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from op_cases import cases, check_op, kernel_cases, make_inputs
from test_cpu_kernels import Recorder, assert_same, make_args, op_of

from scratchvae import backend
from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend, to_numpy
from scratchvae.kernels import gpu as gpu_kernels
from scratchvae.models import VAE
from scratchvae.ops.activations import ACTIVATIONS
from scratchvae.optim import Adam

gpu = pytest.mark.gpu
NAMES = sorted(gpu_kernels.KERNELS)
EXACT: set[str] = set()  # the products go through cuBLAS by two routes: not bit-identical


def test_every_gpu_kernel_is_an_op_with_the_same_signature() -> None:
    """(No device needed.) Each name in the table is an op, and the kernel takes the op's
    arguments by the same names and defaults."""
    assert {"dense_relu_forward", "latent_forward", "adam_update"} <= set(NAMES)
    for name, kernel in gpu_kernels.KERNELS.items():
        op = op_of(name)
        assert op.op_name == name and callable(op.reference)
        want = inspect.signature(op.reference).parameters
        got = inspect.signature(kernel).parameters
        assert list(got) == list(want), name
        assert [p.default for p in got.values()] == [p.default for p in want.values()], name


def device(value):
    """Copies of the NumPy arrays in ``value`` (lists, dicts, caches) on the GPU."""
    if isinstance(value, dict):
        return {k: device(v) for k, v in value.items()}
    if isinstance(value, list):
        return [device(v) for v in value]
    if isinstance(value, tuple):
        items = [device(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, np.ndarray):
        return backend.import_cupy().asarray(value)
    return value


def host(value):
    """``value`` with every device array copied back to NumPy (the Workspace dropped)."""
    if isinstance(value, dict):
        return {k: host(v) for k, v in value.items() if k != "ws"}
    if isinstance(value, list | tuple):
        return [host(v) for v in value]
    return to_numpy(value) if hasattr(value, "dtype") else value


def run_on_device(name, spec, on):
    args, kwargs = device(make_args(*spec))
    with backend.kernels(on), backend.tracing(Recorder()) as tracer:
        result = op_of(name)(*args, **kwargs)
    return host([result, args, kwargs]), tracer


# ------------------------------------------------------------------ every kernel against its op
@gpu
@pytest.mark.parametrize("name", NAMES)
@kernel_cases
def test_gpu_kernel_equals_its_op(name, B, D, H, variant, dtype, scale, seed) -> None:
    """Same CuPy inputs: the kernel (one launch per elementwise chain) and the op's body
    (kernels off) give the same results and in-place writes, dtypes and shapes."""
    spec = (name, dtype, B, D, H, variant, scale, seed)
    want, off = run_on_device(name, spec, on=False)
    got, on = run_on_device(name, spec, on=True)
    assert off.calls[0][1:] == ("cupy", op_of(name).reference)
    assert on.calls[0][1:] == ("cuda", gpu_kernels.KERNELS[name])
    assert_same(got, want, dtype, name in EXACT, name)


# ------------------------------------------------------------------ one training step
STEP_MODELS = {
    "vae-dropout": lambda bk: VAE(30, hidden=(16, 12), latent=4, dropout=0.2, backend=bk),
    "iwae-dreg": lambda bk: VAE(
        30, hidden=(16,), latent=3, objective="iwae", k=3, estimator="dreg", backend=bk
    ),
    "vae-k2-gaussian": lambda bk: VAE(
        30, hidden=(16,), latent=3, k=2, likelihood="gaussian", decoder_std=0.3, backend=bk
    ),
    "dae-mask": lambda bk: DenoisingAE(30, hidden=[16], latent=3, noise="mask", backend=bk),
    "sae": lambda bk: SparseAE(30, hidden=[], latent=6, backend=bk),
}


@gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(STEP_MODELS))
def test_training_step_on_cupy_equals_numpy(kind: str, dtype: str) -> None:
    """Same weights, data and noise (dropout masks, eps, corruption): two steps of
    loss_and_grads + Adam on CuPy give NumPy's losses, gradients, parameters and moments
    (float64 to 1e-9, float32 to 1e-4 of the largest), for each model kind; the VAE's CuPy
    step ran the CUDA kernels of every fused op."""
    cp, rtol = backend.import_cupy(), 1e-9 if dtype == "float64" else 1e-4
    bk_np, bk_cp = Backend("numpy", dtype, seed=9), Backend("cupy", dtype, seed=9)
    m_np, m_cp = STEP_MODELS[kind](bk_np), STEP_MODELS[kind](bk_cp)
    m_cp.params.flat[...] = cp.asarray(m_np.params.flat)
    opt_np, opt_cp, tracer = Adam(1e-2), Adam(1e-2), Recorder()

    def close(got, want, what):  # to rtol of the largest: float32 sums cancel
        atol = rtol * float(np.abs(want).max(initial=0.0))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)

    def close_each(got_flat, want_flat, what):  # parameter by parameter: a small one's
        offset = 0  # error shows beside a large one's values (the flat buffer holds them in
        for name in m_np.params:  # the store's order)
            n = m_np.params[name].size
            close(got_flat[offset : offset + n], want_flat[offset : offset + n], f"{what} {name}")
            offset += n
        assert offset == len(want_flat) == len(got_flat), what  # every element compared

    for step in range(2):
        x, noise = bk_np.uniform((8, 30)), m_np.draw_noise(8)
        t_np, g_np = m_np.loss_and_grads(x, noise)
        g_np = g_np.flat.copy()
        opt_np.step(m_np.params, m_np.grads)
        with backend.tracing(tracer):
            t_cp, g_cp = m_cp.loss_and_grads(cp.asarray(x), device(noise))
            g_cp = to_numpy(g_cp.flat)
            opt_cp.step(m_cp.params, m_cp.grads)
        assert t_cp.keys() == t_np.keys()
        for term in t_np:
            close(to_numpy(t_cp[term]), t_np[term], term)
        close_each(g_cp, g_np, f"gradients, step {step}:")
        close_each(to_numpy(m_cp.params.flat), m_np.params.flat, f"parameters, step {step}:")
    state_cp = opt_cp.state_dict()  # the step count read back from the device
    for key, value in opt_np.state_dict().items():
        got = to_numpy(state_cp[key])
        close_each(got, value, key) if np.ndim(value) else close(got, value, key)
    ran = {name for name, label, _ in tracer.calls if label == "cuda"}
    if kind == "vae-dropout":  # accumulate: the trainer's, not the step's
        assert ran == set(NAMES) - {"accumulate"}, ran


# ------------------------------------------------------------------ other device checks
@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_limits_on_the_device(name: str, dtype: str) -> None:
    """Finite, dtype-preserving and NumPy's values at +-1000 and +-89 (CuPy's softplus is
    logaddexp, not NumPy's max + log1p). CUDA flushes subnormal results to zero
    (softplus(-89) = 2e-39 in float32): below the smallest normal number the two may differ."""
    cp, act = backend.import_cupy(), ACTIVATIONS[name]
    x = np.array([-1000.0, -89.0, -1.0, 0.5, 89.0, 1000.0], dtype=dtype)
    y_ref, cache_ref = act.forward(x)
    y, cache = act.forward(cp.asarray(x))
    dx = act.backward(cache, cp.ones_like(y))
    assert y.dtype == dx.dtype == x.dtype and isinstance(dx, cp.ndarray)
    assert bool(cp.isfinite(y).all() and cp.isfinite(dx).all())
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(to_numpy(y), y_ref, rtol=1e-6, atol=tiny)
    want_dx = act.backward(cache_ref, np.ones_like(x))
    np.testing.assert_allclose(to_numpy(dx), want_dx, rtol=1e-6, atol=tiny)


DEVICE_CASES = [c for c in cases() if c.name in ("dense_relu", "latent", "bernoulli_nll", "elu")]


@gpu
@pytest.mark.parametrize("case", DEVICE_CASES, ids=[c.name for c in DEVICE_CASES])
def test_gradient_check_runs_on_device_arrays(case) -> None:
    """gradcheck itself (in-place perturbation of device arrays, host comparisons) works on
    CuPy arrays, here through the CUDA kernels of the fused ops."""
    inputs, douts = make_inputs(case, seed=4, B=2, D=3, scale=1.0, dtype="float64")
    check_op(case, device(inputs), device(douts))


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_draws_and_generator_state_on_the_device(dtype: str) -> None:
    """Draws are device arrays of the backend's dtype; the same seed gives the same draws; a
    saved state (the seed and the draw counter of the counter-based generator) continues the
    stream exactly; a state of the old format (the seed alone) reseeds with seed + offset."""
    cp = backend.import_cupy()
    bk = Backend("cupy", dtype, seed=5)
    for a in (bk.normal((3, 2)), bk.uniform((3, 2)), bk.bernoulli(0.5, (3, 2)), bk.zeros(2)):
        assert isinstance(a, cp.ndarray) and a.dtype == np.dtype(dtype)
    assert sorted(to_numpy(bk.permutation(7)).tolist()) == list(range(7))
    first, again = (to_numpy(Backend("cupy", dtype, seed=5).normal((3, 2))) for _ in "ab")
    np.testing.assert_array_equal(first, again)
    bk = Backend("cupy", dtype, seed=5)
    state = bk.rng_state()  # taken before any draw
    first = to_numpy(bk.normal((4,)))
    bk.set_rng_state(state)
    np.testing.assert_array_equal(to_numpy(bk.normal((4,))), first)
    bk.set_rng_state(state, reseed_offset=3)  # the offset only matters for the old format
    np.testing.assert_array_equal(to_numpy(bk.normal((4,))), first)
    bk.set_rng_state('{"cupy_seed": 5}', reseed_offset=3)
    np.testing.assert_array_equal(
        to_numpy(bk.normal((4,))), to_numpy(Backend("cupy", dtype, seed=8).normal((4,)))
    )
    on_numpy = Backend("numpy", dtype, seed=5)  # a GPU run resumed on NumPy: reseeded
    on_numpy.set_rng_state(state, reseed_offset=3)
    np.testing.assert_array_equal(on_numpy.normal((4,)), Backend("numpy", dtype, 8).normal((4,)))
