"""Adam's update, property-tested over sizes, dtypes, hyperparameters and step numbers: the
Numba kernel against the op's NumPy body (what SCRATCHVAE_KERNELS=0 runs), and both against
PyTorch's documented algorithm (torch.optim.Adam, amsgrad and weight decay off) written out
here in float64:

    m_t = b1 m_{t-1} + (1 - b1) g          v_t = b2 v_{t-1} + (1 - b2) g^2
    p_t = p_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(v_t) / sqrt(1 - b2^t) + eps)

Each case starts the parameters at 0, so that the step itself is compared, not its sum with a
weight that rounds it away. The moments are kept well above the smallest normal number, where
the op stores 0 instead (its docstring; tested in tests/kernels/test_cpu_kernels.py).
"""

from __future__ import annotations

import numpy as np  # numpy-boundary: test inputs and the float64 reference on the host
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchvae.backend import kernels
from scratchvae.kernels import cpu
from scratchvae.optim import Adam, adam_update

needs_numba = pytest.mark.skipif(cpu.numba is None, reason="needs numba (scratchvae[fast])")
RTOL = {"float32": 2e-5, "float64": 1e-12}  # a dozen roundings of the dtype

hyper = st.fixed_dictionaries(
    {
        "n": st.integers(1, 3000),
        "dtype": st.sampled_from(["float32", "float64"]),
        "lr": st.floats(1e-5, 1.0),
        "b1": st.sampled_from([0.0, 0.5, 0.9, 0.99]) | st.floats(0.0, 0.999),
        "b2": st.sampled_from([0.0, 0.9, 0.999, 0.9999]) | st.floats(0.0, 0.99999),
        "eps": st.sampled_from([1e-30, 1e-12, 1e-8, 1e-3]),  # Adam refuses 0
        "t": st.integers(1, 20_000),
        "scale": st.floats(-5.0, 3.0),  # the gradient's size, 10^scale
        "seed": st.integers(0, 2**16),
    }
)


def _inputs(h: dict) -> tuple[np.ndarray, ...]:
    """(p, g, m, v) of h's size and dtype: p = 0, moments of the gradient's size, g != 0."""
    rng, dt, s = np.random.default_rng(h["seed"]), h["dtype"], 10.0 ** h["scale"]
    g = s * rng.standard_normal(h["n"]) + s * np.sign(rng.standard_normal(h["n"])) * 1e-3
    m = s * rng.standard_normal(h["n"])
    v = s * s * rng.uniform(0.1, 2.0, h["n"])
    return np.zeros(h["n"], dt), g.astype(dt), m.astype(dt), v.astype(dt)


def _torch_documented(h: dict, g: np.ndarray, m: np.ndarray, v: np.ndarray):
    """PyTorch's Adam step in float64 from the same (rounded) inputs: (p, m, v), and the size
    of the numbers each was computed from, (p, m, v) again: where b1 m and (1 - b1) g cancel,
    m (and so p) can be exact only to the rounding of those terms, in any order of
    operations. v's terms are both >= 0: exact to its own rounding."""
    g, m, v = (a.astype(np.float64) for a in (g, m, v))
    b1, b2, t = h["b1"], h["b2"], h["t"]
    m_size = b1 * np.abs(m) + (1 - b1) * np.abs(g)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step, denom = h["lr"] / (1 - b1**t), np.sqrt(v) / np.sqrt(1 - b2**t) + h["eps"]
    return (-step * m / denom, m, v), (step * m_size / denom, m_size, np.zeros_like(v))


def _close(got, want, size, dtype: str, name: str) -> None:
    """|got - want| <= rtol (|want| + size), elementwise."""
    bad = np.abs(got - want) > RTOL[dtype] * (np.abs(want) + size)
    assert not bad.any(), f"{name}: {got[bad][:3]} != {want[bad][:3]} (of sizes {size[bad][:3]})"


def _run(update, h: dict, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    p, g, m, v = (a.copy() for a in arrays)
    update(p, g, m, v, np.asarray(h["t"]), h["lr"], h["b1"], h["b2"], h["eps"])
    return p, m, v


@given(h=hyper)
def test_the_op_body_is_pytorchs_documented_adam(h: dict) -> None:
    arrays = _inputs(h)
    got = _run(adam_update.reference, h, arrays)
    want, sizes = _torch_documented(h, *arrays[1:])
    for name, a, b, size in zip("pmv", got, want, sizes, strict=True):
        assert a.dtype == np.dtype(h["dtype"]), name
        _close(a, b, size, h["dtype"], name)


@needs_numba
@given(h=hyper)
def test_the_kernel_is_the_op_body(h: dict) -> None:
    arrays = _inputs(h)
    body, kernel = _run(adam_update.reference, h, arrays), _run(cpu.adam_update, h, arrays)
    _, sizes = _torch_documented(h, *arrays[1:])
    for name, a, b, size in zip("pmv", kernel, body, sizes, strict=True):
        _close(a, b, size, h["dtype"], name)


@pytest.mark.parametrize("on", [True, False], ids=["kernels-on", "kernels-off"])
@given(h=hyper, steps=st.integers(1, 6))
def test_several_steps_of_the_optimizer_are_pytorchs_adam(on: bool, h: dict, steps: int) -> None:
    """Adam(...).step from a loaded state (step h['t'], the moments), fused and readable,
    kernels on and off, against the documented algorithm step after step."""
    _, g, m0, v0 = _inputs(h)
    for fused in (True, False):
        with kernels(on):
            _several_steps(h, steps, g, m0, v0, fused)


def _several_steps(h: dict, steps: int, g, m0, v0, fused: bool) -> None:
    opt = Adam(h["lr"], (h["b1"], h["b2"]), h["eps"], fused=fused)
    opt.load_state_dict({"t": h["t"] - 1, "m.w": m0, "v.w": v0})
    params, want_p, m, v = {"w": np.zeros_like(g)}, np.zeros(g.shape), m0, v0
    size = np.zeros(g.shape)  # of the numbers summed into p, step after step
    for k in range(steps):
        grad = (g * (k + 1) * (-1) ** k).astype(g.dtype)  # changes size and sign
        opt.step(params, {"w": grad})
        (delta, m, v), (delta_size, _, _) = _torch_documented({**h, "t": h["t"] + k}, grad, m, v)
        want_p, size = want_p + delta, size + np.abs(delta) + delta_size
    assert opt.t == h["t"] - 1 + steps
    _close(params["w"], want_p, steps * size, h["dtype"], "p")
