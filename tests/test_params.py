"""ParamStore (named views into one flat buffer) and Workspace (named arrays reused from step
to step), with the op helpers buffer() and scope()."""

from __future__ import annotations

import numpy as np
import pytest

from scratchvae.backend import Backend, BackendError
from scratchvae.params import ParamStore, Workspace, buffer, scope

SHAPES = {"enc.0.W": (5, 4), "enc.0.b": (4,), "enc.1.W": (4, 6), "enc.1.b": (6,)}
SIZE = 20 + 4 + 24 + 6


def _store(dtype: str = "float64") -> ParamStore:
    return ParamStore(SHAPES, Backend("numpy", dtype, seed=0))


# ------------------------------------------------------------------ ParamStore
def test_params_are_named_views_into_one_flat_buffer() -> None:
    store = _store()
    assert list(store) == list(SHAPES) and len(store) == 4 and store.size == SIZE
    assert store.flat.shape == (SIZE,) and not store.flat.any()  # zero-filled
    offset = 0
    for name, shape in SHAPES.items():
        view = store[name]
        assert view.shape == shape and np.shares_memory(view, store.flat)
        view[...] = np.arange(view.size).reshape(shape) + offset  # write through the name ...
        offset += view.size
    np.testing.assert_array_equal(store.flat, np.arange(SIZE))  # ... lands in order in flat
    store.flat[20] = -1.0  # and flat writes show through the names
    assert store["enc.0.b"][0] == -1.0
    with pytest.raises(KeyError):
        store["enc.9.W"]


def test_setitem_copies_and_checks_the_shape() -> None:
    store = _store()
    new = np.arange(20.0).reshape(5, 4)
    store["enc.0.W"] = new
    np.testing.assert_array_equal(store["enc.0.W"], new)
    assert store.flat[:20].tolist() == list(range(20))
    new[0, 0] = -1.0  # assignment copied: the caller's array is not aliased
    assert store["enc.0.W"][0, 0] == 0.0
    with pytest.raises(ValueError, match=r"enc.0.W: expected shape \(5, 4\), got \(4, 5\)"):
        store["enc.0.W"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"enc.0.b: expected shape \(4,\), got \(\)"):
        store["enc.0.b"] = 0.5  # a scalar is not broadcast: a clear error instead
    store["enc.0.b"] = [1, 2, 3, 4]  # nested lists (of ints) are accepted, cast to the dtype
    assert store["enc.0.b"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert store["enc.0.b"].dtype == np.float64


def test_over_a_given_flat_buffer() -> None:
    bk = Backend("numpy", "float32")
    flat = np.arange(SIZE, dtype=np.float32)
    store = ParamStore(SHAPES, bk, flat=flat)
    assert store.flat is flat  # used as it is, not copied
    assert store["enc.1.b"].tolist() == list(range(SIZE - 6, SIZE))
    with pytest.raises(ValueError, match=rf"flat must have shape \({SIZE},\), got \(7,\)"):
        ParamStore(SHAPES, bk, flat=np.zeros(7, np.float32))


def test_with_gradients_is_one_allocation_of_two_rows() -> None:
    """One allocation (NumPy asks for huge pages from 4 MB on), two separate stores."""
    bk = Backend("numpy", "float32")
    params, grads = ParamStore.with_gradients(SHAPES, bk)
    assert params.flat.base is grads.flat.base and params.flat.base.shape == (2, SIZE)
    assert params.flat.flags.c_contiguous and grads.flat.flags.c_contiguous
    assert not np.shares_memory(params.flat, grads.flat)
    assert params.flat.dtype == grads.flat.dtype == np.float32
    assert list(params) == list(grads) == list(SHAPES)
    params.flat[...] = 1.0
    assert not grads.flat.any() and (params["enc.0.W"] == 1).all()


def test_like_is_a_zero_store_of_the_same_layout() -> None:
    store = _store("float32")
    store.flat[...] = 3.0
    other = store.like()
    assert other.shapes == store.shapes and other.backend is store.backend
    assert other.flat.dtype == np.float32 and not other.flat.any()
    assert not np.shares_memory(other.flat, store.flat)


def test_copy_is_a_dict_of_independent_arrays() -> None:
    store = _store()
    store.flat[...] = np.arange(SIZE)
    copied = store.copy()
    assert type(copied) is dict and list(copied) == list(SHAPES)
    store.flat[...] = 0.0
    assert copied["enc.1.b"].tolist() == list(range(SIZE - 6, SIZE))
    assert all(not np.shares_memory(v, store.flat) for v in copied.values())


def test_repr_names_the_size_and_shapes() -> None:
    assert repr(ParamStore({"W": (2, 3)}, Backend())) == "ParamStore(6 scalars; W: (2, 3))"


# ------------------------------------------------------------------ Workspace
def test_workspace_keeps_one_array_per_name_shape_and_dtype() -> None:
    ws = Workspace()
    x64, x32 = np.zeros((3, 2)), np.zeros((3, 2), np.float32)
    a = ws("h", (3, 4), like=x64)
    assert a.shape == (3, 4) and a.dtype == np.float64
    assert ws("h", (3, 4), like=x64) is a  # reused
    assert ws("h", [3, 4], like=x64) is a  # a list of the same shape too
    b = ws("h", (2, 4), like=x64)  # a short last batch: a new array under the same name
    assert b is not a and b.shape == (2, 4) and ws("h", (2, 4), like=x64) is b
    assert ws("h", (3, 4), like=x64) is a  # kept: a captured CUDA graph may still write to it
    c = ws("h", (2, 4), like=x32)  # another dtype: a new array
    assert c is not b and c.dtype == np.float32
    assert ws("other", (2, 4), like=x32) is not c  # another name: another array
    assert len(ws) == 4 and ws.nbytes == a.nbytes + b.nbytes + 2 * c.nbytes
    assert ws.names() == {"h", "other"}


def test_workspace_scopes_prefix_the_names_and_share_the_store() -> None:
    ws = Workspace()
    like = np.zeros(1)
    enc0 = ws.scope("encoder.0")
    assert ws.scope("encoder.0") is enc0  # made once, then looked up
    a = enc0("h", (2,), like)
    nested = enc0.scope("dropout")
    assert nested.prefix == "encoder.0.dropout." and enc0.prefix == "encoder.0."
    d = nested("y", (2,), like)
    assert ws("encoder.0.h", (2,), like) is a  # the same store, seen under a prefix
    assert ws("encoder.0.dropout.y", (2,), like) is d
    assert ws.scope("encoder.1")("h", (2,), like) is not a  # no clash between layers
    assert ws.names() == {"encoder.0.h", "encoder.0.dropout.y", "encoder.1.h"}
    assert len(enc0) == len(ws) == 3  # one store under every prefix


def test_buffer_and_scope_without_a_workspace_allocate() -> None:
    like = np.zeros((2, 2), np.float32)
    a, b = buffer(None, "y", (3, 2), like), buffer(None, "y", (3, 2), like)
    assert a.shape == (3, 2) and a.dtype == np.float32 and a is not b  # fresh every call
    assert scope(None, "encoder.0") is None
    ws = Workspace()
    assert buffer(ws, "y", (3, 2), like) is buffer(ws, "y", (3, 2), like)
    inner = scope(ws, "lik")
    assert inner is ws.scope("lik") and buffer(inner, "d", (1,), like) is ws("lik.d", (1,), like)


def test_params_and_gradients_are_refused_when_training_would_not_fit(monkeypatch) -> None:
    bk = Backend("numpy", "float64", seed=0)
    need = 4 * SIZE * 8  # parameters, gradients, Adam's m and v
    monkeypatch.setattr(Backend, "available_memory", lambda self: need)
    params, grads = ParamStore.with_gradients(SHAPES, bk)  # exactly fits
    assert params.size == grads.size == SIZE
    monkeypatch.setattr(Backend, "available_memory", lambda self: need - 1)
    with pytest.raises(BackendError, match=r"training a model of 54 parameters .* smaller model"):
        ParamStore.with_gradients(SHAPES, bk)
    monkeypatch.setattr(Backend, "available_memory", lambda self: None)  # unknown: no check
    ParamStore.with_gradients(SHAPES, bk)


def test_available_memory_reads_linux_memavailable() -> None:
    free = Backend("numpy").available_memory()
    assert free is None or 0 < free < 1 << 50


@pytest.mark.gpu
def test_available_memory_on_a_gpu_counts_the_pools_free_blocks() -> None:
    bk = Backend("cupy", "float32", seed=0)
    before = bk.available_memory()
    block = bk.zeros((1 << 20,))  # 4 MiB from CuPy's pool
    del block  # back to the pool, not to the device: still available to the next model
    assert before > 0 and bk.available_memory() >= before - (16 << 20)  # allocation rounding
    params, grads = ParamStore.with_gradients(SHAPES, bk)
    assert params.size == SIZE
