"""The backend: defaults, dtypes, seeded draws, generator state, and one-line errors when
CuPy is missing or cannot reach a device (both simulated, so these run on any machine)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from scratchvae import backend as backend_module
from scratchvae.backend import Backend, BackendError, get_backend, get_special, get_xp, to_numpy


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


def test_numpy_backend_rejects_a_cupy_generator_state() -> None:
    bk = Backend("numpy")
    with pytest.raises(BackendError, match="resume it on cupy"):
        bk.set_rng_state(json.dumps({"cupy_seed": 3}))


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
    np.testing.assert_allclose(sp.log_expit(x), [-1000.0, -np.log(2.0), 0.0])
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


def test_dtype_may_be_given_as_a_numpy_type():
    import numpy as np

    assert Backend("numpy", np.float64).dtype == np.float64
    assert Backend("numpy", np.dtype("float32")).dtype == np.float32
    with pytest.raises(BackendError, match="unknown dtype 'int32'"):
        Backend("numpy", np.int32)
