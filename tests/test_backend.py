"""The backend: defaults, dtypes, seeded draws, generator state, one-line errors when CuPy is
missing or cannot reach a device (both simulated, so these run on any machine), and the op
dispatch (@op, kernels(), tracing(), SCRATCHVAE_KERNELS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections import Counter

import numpy as np
import pytest

from scratchvae.backend import (
    Backend,
    BackendError,
    dispatch,
    get_backend,
    get_special,
    get_xp,
    kernels,
    kernels_enabled,
    op,
    to_numpy,
    tracing,
)
from scratchvae.backend import arrays as backend_module
from scratchvae.kernels import cpu
from scratchvae.mlp import MLP
from scratchvae.ops import layers
from scratchvae.ops.activations import relu_forward
from scratchvae.params import ParamStore


def test_default_backend_is_numpy_float32() -> None:
    bk = Backend()
    assert bk.name == "numpy" and bk.xp is np and bk.dtype == np.float32
    assert get_backend().dtype == np.float32
    assert repr(Backend("numpy", "float64", seed=3)) == "Backend('numpy', dtype='float64', seed=3)"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_draws_honour_the_dtype(dtype: str) -> None:
    bk = Backend("numpy", dtype, seed=0)
    draws = {
        "normal": bk.normal((3, 4)),
        "uniform": bk.uniform((3, 4)),
        "bernoulli": bk.bernoulli(0.3, (3, 4)),
        "zeros": bk.zeros(5),
        "asarray": bk.asarray([1, 2, 3]),
    }
    for name, a in draws.items():
        assert a.dtype == np.dtype(dtype), name
    assert set(np.unique(draws["bernoulli"])) <= {0.0, 1.0}
    u = draws["uniform"]
    assert ((u >= 0) & (u < 1)).all()


def test_bernoulli_probability_and_array_p() -> None:
    bk = Backend("numpy", "float64", seed=1)
    n, p = 100_000, 0.3
    assert abs(bk.bernoulli(p, (n,)).mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
    p_arr = np.array([0.0, 1.0, 0.5])
    draws = bk.bernoulli(p_arr)  # shape taken from p
    assert draws.shape == (3,) and draws[0] == 0.0 and draws[1] == 1.0


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    def draws(seed: int) -> list:
        bk = Backend("numpy", "float64", seed=seed)
        return [bk.normal((5,)), bk.uniform((5,)), bk.permutation(10)]

    a, b, c = draws(7), draws(7), draws(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert sorted(a[2].tolist()) == list(range(10))


def test_rng_state_round_trip_continues_the_same_stream() -> None:
    bk = Backend("numpy", "float32", seed=5)
    bk.normal((3,))
    state = bk.rng_state()
    json.loads(state)  # a JSON string, for checkpoints
    expected = [bk.normal((4,)), bk.uniform((2,)), bk.permutation(6)]
    other = Backend("numpy", "float32", seed=123)
    other.set_rng_state(state)
    bk.set_rng_state(state)
    for restored in (bk, other):
        got = [restored.normal((4,)), restored.uniform((2,)), restored.permutation(6)]
        assert all(np.array_equal(x, y) for x, y in zip(expected, got, strict=True))


@pytest.mark.parametrize("state", [{"cupy_seed": 3}, {"cupy": {"seed": 3, "counter": 7}}])
def test_a_cupy_generator_state_reseeds_the_numpy_backend(state) -> None:
    """A GPU run resumed on NumPy: its CuPy stream cannot continue here, so NumPy's generator
    starts from seed + offset (the epochs done), as CuPy's does from an old-format state."""
    bk = Backend("numpy", seed=2)
    bk.set_rng_state(json.dumps(state), reseed_offset=4)
    np.testing.assert_array_equal(bk.normal((5,)), Backend("numpy", seed=6).normal((5,)))
    with pytest.raises(BackendError, match="cannot be restored"):
        bk.set_rng_state(json.dumps({"neither": 1}))  # not a state of either generator


def test_unknown_backend_and_dtype_errors() -> None:
    with pytest.raises(BackendError, match="unknown backend 'torch'; choose 'numpy' or 'cupy'"):
        Backend("torch")
    with pytest.raises(BackendError, match="unknown dtype 'float16'"):
        Backend("numpy", dtype="float16")


def test_numpy_arrays_use_numpy_and_scipy_special() -> None:
    x = np.array([-1000.0, 0.0, 1000.0])
    assert get_xp(x) is np and get_xp(1.0, x) is np
    sp = get_special(x)
    np.testing.assert_allclose(sp.expit(x), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(sp.softplus(x), [0.0, np.log(2.0), 1000.0])
    assert isinstance(to_numpy(x), np.ndarray) and to_numpy(np.float64(2.0)) == 2.0
    assert Backend().is_finite(x) and not Backend().is_finite(np.array([np.nan]))


# ------------------------------------------------------------------ CuPy missing / no device
@pytest.fixture
def fresh_cupy_import(monkeypatch: pytest.MonkeyPatch):
    """Forget any CuPy the backend already imported (restored after the test)."""
    monkeypatch.setattr(backend_module, "_cupy", None)
    monkeypatch.setattr(backend_module, "_CUPY_SPECIAL", None)
    for name in ("cupy", "cupyx", "cupyx.scipy", "cupyx.scipy.special"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return monkeypatch


def _assert_one_line(message: str) -> None:
    assert message and "\n" not in message, repr(message)


def test_cupy_absent_gives_one_line_error_naming_the_extras(fresh_cupy_import) -> None:
    fresh_cupy_import.setitem(sys.modules, "cupy", None)  # `import cupy` -> ImportError
    with pytest.raises(BackendError) as info:
        Backend("cupy")
    message = str(info.value)
    _assert_one_line(message)
    assert "scratchvae[cuda12]" in message and "not installed" in message
    assert not backend_module.cupy_available()


def _fake_cupy(get_device_count) -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count)
    )
    return cupy


def _install_fake_cupy(monkeypatch: pytest.MonkeyPatch, cupy: types.ModuleType) -> None:
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = types.ModuleType("cupyx.scipy.special")
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", cupyx.scipy.special)


def test_cupy_without_device_gives_one_line_error(fresh_cupy_import) -> None:
    def no_device() -> int:
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\nmore detail")

    _install_fake_cupy(fresh_cupy_import, _fake_cupy(no_device))
    with pytest.raises(BackendError) as info:
        Backend("cupy")
    message = str(info.value)
    _assert_one_line(message)
    assert "cannot reach a CUDA device" in message and "cudaErrorNoDevice" in message
    assert "--backend numpy" in message


def test_cupy_with_zero_devices_gives_one_line_error(fresh_cupy_import) -> None:
    _install_fake_cupy(fresh_cupy_import, _fake_cupy(lambda: 0))
    with pytest.raises(BackendError) as info:
        Backend("cupy")
    _assert_one_line(str(info.value))
    assert "no CUDA device" in str(info.value)


def test_dtype_may_be_given_as_a_numpy_type() -> None:
    assert Backend("numpy", np.float64).dtype == np.float64
    assert Backend("numpy", np.dtype("float32")).dtype == np.float32
    with pytest.raises(BackendError, match="unknown dtype 'int32'"):
        Backend("numpy", np.int32)
    # None was float64 (NumPy's reading of it): a silent double-width run where the default
    # is float32; refused as any other non-dtype (a number) is
    for bad in (None, 3):
        with pytest.raises(BackendError, match=f"unknown dtype '{bad}'; choose 'float32' or"):
            Backend("numpy", bad)


# ------------------------------------------------------------------ op dispatch
needs_numba = pytest.mark.skipif(cpu.numba is None, reason="the CPU kernels need numba")


@op
def double(x, cache=()):  # noqa: ANN001, ANN201 - a test op: a kernel is registered below
    """Twice x."""
    return 2 * x


@pytest.fixture
def double_kernel(monkeypatch: pytest.MonkeyPatch):
    """A CPU kernel for the op `double` that says it ran (removed after the test)."""
    monkeypatch.setitem(dispatch._table("numpy"), "double", lambda x, cache=(): "kernel")


class Recorder:
    """A tracer: records (op name, label, impl) of every call, then runs it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    def call(self, fn, impl, label, args, kwargs):  # noqa: ANN001, ANN201
        self.calls.append((fn.op_name, label, impl))
        return impl(*args, **kwargs)


def test_an_op_keeps_its_name_doc_and_body() -> None:
    assert double.op_name == "double" and double.__name__ == "double"
    assert double.__doc__ == "Twice x." and double.reference.__name__ == "double"
    assert layers.dense_relu_forward.op_name == "dense_relu_forward"
    assert layers.dense_relu_forward.reference is not layers.dense_relu_forward


def test_op_runs_the_kernel_for_c_contiguous_float_numpy_arrays(double_kernel) -> None:
    x = np.ones((3, 4))
    with kernels(True):
        assert double(x) == "kernel" and double(x.astype(np.float32)) == "kernel"
        assert double(x, (x[0], x[1])) == "kernel"
        assert double.reference(x).tolist() == (2 * x).tolist()  # reference: always the body


@pytest.mark.parametrize(
    "make",
    [
        lambda x, tmp: x.T,  # Fortran order
        lambda x, tmp: x[:, ::2],  # a strided view
        lambda x, tmp: x.astype(np.complex128),  # not a real number (ints and bools are fine)
        lambda x, tmp: np.memmap(tmp / "m.dat", np.float64, "w+", shape=x.shape),  # a subclass
        lambda x, tmp: x.astype(np.float16),  # the kernels are compiled for float32, float64
        lambda x, tmp: x.astype(np.float32),  # next to x (float64): two float dtypes
        lambda x, tmp: x[:0],  # empty: the kernels divide by the rows, the body gives nan
    ],
    ids=["transposed", "strided", "complex", "memmap", "float16", "mixed", "empty"],
)
def test_op_runs_the_body_for_arrays_a_kernel_cannot_take(double_kernel, tmp_path, make) -> None:
    x = np.ones((3, 4))
    other = make(x, tmp_path)
    with kernels(True):
        if other.dtype != np.float32:  # float32 alone is a kernel's
            assert isinstance(double(other), np.ndarray)
        assert isinstance(double(x, (x, other)), np.ndarray)  # also inside a cache
        assert double(x) == "kernel"


def test_op_runs_the_body_with_kernels_off(double_kernel) -> None:
    with kernels(False):
        assert not kernels_enabled()
        np.testing.assert_array_equal(double(np.ones(3)), [2.0, 2.0, 2.0])


def test_kernels_restores_the_previous_state() -> None:
    before = kernels_enabled()
    with kernels(False):
        with kernels(True):
            assert kernels_enabled()
        assert not kernels_enabled()
        with pytest.raises(ZeroDivisionError), kernels(True):
            1 / 0  # noqa: B018 - an error inside the block
        assert not kernels_enabled()
    assert kernels_enabled() == before


@needs_numba
def test_real_ops_pick_numba_kernels_when_on_and_bodies_when_off() -> None:
    bk = Backend("numpy", "float64", seed=0)
    x, W, b = bk.normal((4, 3)), bk.normal((3, 2)), bk.normal((2,))
    results = {}
    for on in (True, False):
        recorder = Recorder()
        with kernels(on), tracing(recorder):
            results[on], _ = layers.dense_relu_forward(x, W, b)
            relu_forward(x)  # an op without a kernel: its body either way
        assert [(name, label) for name, label, _ in recorder.calls] == [
            ("dense_relu_forward", "numba" if on else "numpy"),
            ("relu_forward", "numpy"),
        ]
        impl = recorder.calls[0][2]
        assert impl is (cpu.dense_relu_forward if on else layers.dense_relu_forward.reference)
    np.testing.assert_allclose(results[True], results[False], rtol=1e-15)


def test_tracing_reports_every_op_call_with_its_label() -> None:
    """An MLP with two tanh hidden layers: each hidden layer is dense_act_forward, which calls
    dense_forward and tanh_forward; the output layer is one dense_forward."""
    bk = Backend("numpy", "float64", seed=1)
    mlp = MLP("enc", (3, 4, 4, 2), "tanh")
    params = ParamStore(mlp.shapes(), bk)
    mlp.init_params(params, bk)
    x = bk.normal((5, 3))
    recorder = Recorder()
    with kernels(False), tracing(recorder) as active:
        assert active is recorder
        out, _ = mlp.forward(params, x)
    assert Counter(name for name, _, _ in recorder.calls) == {
        "dense_act_forward": 2,
        "dense_forward": 3,
        "tanh_forward": 2,
    }
    assert {label for _, label, _ in recorder.calls} == {"numpy"}
    np.testing.assert_array_equal(out, mlp.forward(params, x)[0])  # the tracer ran the ops
    mlp.forward(params, x)
    assert len(recorder.calls) == 7  # nothing reported after the block


def test_tracing_restores_the_outer_tracer() -> None:
    outer, inner = Recorder(), Recorder()
    with tracing(outer):
        with tracing(inner):
            double(np.ones(2))
        double(np.ones(2))
    assert len(inner.calls) == 1 and len(outer.calls) == 1


def _kernels_in_subprocess(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHVAE_KERNELS"}
    if value is not None:
        env["SCRATCHVAE_KERNELS"] = value
    code = (
        "from scratchvae.backend.dispatch import kernels_enabled, _select\n"
        "import numpy as np\n"
        "print(kernels_enabled(), _select('dense_relu_forward', (np.ones((2, 2)),))[1])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_environment_variable_turns_kernels_off() -> None:
    assert _kernels_in_subprocess("0") == "False numpy"
    kernel_label = "numba" if cpu.numba is not None else "numpy"
    assert _kernels_in_subprocess(None) == f"True {kernel_label}"
    assert _kernels_in_subprocess("1") == f"True {kernel_label}"


@pytest.mark.gpu
def test_cupy_arrays_pick_the_cuda_kernels() -> None:
    bk = Backend("cupy", "float64", seed=0)
    x, W, b = bk.normal((4, 3)), bk.normal((3, 2)), bk.normal((2,))
    for on, label in ((True, "cuda"), (False, "cupy")):
        recorder = Recorder()
        with kernels(on), tracing(recorder):
            layers.dense_relu_forward(x, W, b)
            relu_forward(x)
        assert [c[1] for c in recorder.calls] == [label, "cupy"]


class _FakeDeviceArray:
    """Looks like a CuPy array to the dispatch (module cupy..., __cuda_array_interface__)."""

    __module__ = "cupy._fake"
    __cuda_array_interface__: dict = {}

    def __init__(self, dtype: str, shape: tuple[int, ...] = ()) -> None:
        self.dtype, self.shape = np.dtype(dtype), shape
        self.size = int(np.prod(shape))
        self.flags = np.empty(shape).flags


def test_a_cuda_kernel_takes_the_float32_loss_and_float64_sum_it_was_written_for():
    """The trainer's epoch sums: a float64 total and a float32 loss term (0-d device arrays).
    The one-float-dtype rule is the Numba kernels'; applied to CuPy it sent every float32
    training step's sums to the body (not the one-launch kernel inside the CUDA graph)."""
    from scratchvae.kernels import gpu

    total, value = _FakeDeviceArray("float64"), _FakeDeviceArray("float32")
    with kernels(True):
        assert dispatch._select("accumulate", (total, value, 128.0)) == (gpu.accumulate, "cuda")
        assert dispatch._select("accumulate", (_FakeDeviceArray("float64", (0,)), value, 1.0)) == (
            None,
            "cupy",
        )
