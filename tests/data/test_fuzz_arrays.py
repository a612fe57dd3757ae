"""The user's own arrays, property-tested: every dtype NumPy has for numbers (and some it has
for other things), NaN/Inf, negative, beyond 255, beyond float32, 0 rows, 1 row, ranks 0 to 4,
C and Fortran order, non-contiguous views, memory-mapped .npy files, labels of every kind.
Each ends in a Dataset holding exactly the values it should (uint8 / 255, anything else as
it is, in float32) or in one DataError line; never a NumPy warning or error, never silently
different data."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scratchvae.data import DataError, dataset_from_array, load_dataset
from scratchvae.data.dataset import host_rows

F32_MAX = float(np.finfo(np.float32).max)
NUMBERS = ["u1", "i1", "u2", "i8", "u8", "f2", "f4", "f8", ">f4", "?"]
OTHERS = ["c8", "U3", "M8[s]", "O"]


def _values(dtype: np.dtype) -> st.SearchStrategy:
    """Elements of ``dtype``: 0 and 1 only, values in [0, 1], or anything the dtype holds."""
    if dtype.kind == "O":
        return st.sampled_from([0, 1.5, None, "a"])
    if dtype.kind in "iuf":
        unit = st.floats(0, 1, width=16) if dtype.kind == "f" else st.integers(0, 1)
        return st.one_of(st.sampled_from([0, 1]).map(dtype.type), unit, hnp.from_dtype(dtype))
    return hnp.from_dtype(dtype)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(NUMBERS * 3 + OTHERS)))
    usual = hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4)
    any_shape = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
    shape = draw(st.one_of(usual, usual, any_shape))
    return draw(hnp.arrays(dtype, shape, elements=_values(dtype)))


def _layout(x: np.ndarray, how: str, folder: Path) -> np.ndarray:
    if how == "fortran":
        return np.asfortranarray(x)
    if how == "strided" and x.ndim:
        return np.repeat(x, 2, axis=0)[::2]
    if how == "memmap" and x.dtype.kind != "O":
        np.save(folder / "x.npy", x)
        return np.load(folder / "x.npy", mmap_mode="r")
    return x


def _expected(x: np.ndarray, likelihood: str) -> np.ndarray | None:
    """The rows a correct reader makes of ``x``, or None where it must refuse it."""
    if x.ndim not in (2, 3) or x.size == 0 or x.dtype.kind not in "biuf":
        return None
    rows = x.reshape(len(x), -1)
    if x.dtype == np.uint8:
        return None if rows.max() == 1 else rows / np.float32(255)
    values = rows.astype(np.float64)
    if not np.isfinite(values).all() or np.abs(values).max() > F32_MAX:
        return None
    if likelihood == "bernoulli" and (values.min() < 0 or values.max() > 1):
        return None
    return rows.astype(np.float32)


@st.composite
def labels(draw: st.DrawFn, n: int) -> np.ndarray | None:
    if draw(st.booleans()):
        return None
    dtype = np.dtype(draw(st.sampled_from(["i1", "i8", "u8", "f2", "f8", "?", "U1"])))
    size = draw(st.sampled_from([n, n, n + 1]))
    return draw(hnp.arrays(dtype, size))


def _labels_ok(y: np.ndarray | None, n: int) -> bool:
    if y is None:
        return True
    if len(y) != n or y.dtype.kind not in "biuf":
        return False
    as_float = y.astype(np.float64)
    whole = np.isfinite(as_float).all() and (as_float == np.round(as_float)).all()
    return bool(whole and (not y.size or np.abs(as_float).max() <= 2**62))


@pytest.mark.filterwarnings("error")
@example(xy=(np.array([[0, 1]], np.uint8), None), how="c", likelihood="bernoulli")
@example(xy=(np.array([[0, 1e39]]), None), how="memmap", likelihood="gaussian")
@example(xy=(np.ones((2, 2)), np.array([1, 2], np.float16)), how="fortran", likelihood="gaussian")
@given(
    xy=arrays().flatmap(lambda x: st.tuples(st.just(x), labels(len(x) if x.ndim else 0))),
    how=st.sampled_from(["c", "fortran", "strided", "memmap"]),
    likelihood=st.sampled_from(["bernoulli", "gaussian"]),
)
def test_an_array_becomes_exactly_its_values_or_one_data_error(xy, how, likelihood):
    x, y = xy
    n = len(x) if x.ndim else 0
    with tempfile.TemporaryDirectory() as folder:
        given_x = _layout(x, how, Path(folder))
        expected = _expected(x, likelihood)
        try:
            ds = dataset_from_array(given_x, y, "x.npy", likelihood)
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith("x.npy"), message
            assert expected is None or not _labels_ok(y, n), message  # a good array refused
            event(f"refused ({how})")
            return
        assert expected is not None and _labels_ok(y, n), (x, y)
        event(f"loaded ({how})")
        batch = ds.get_batch(slice(None))
        assert batch.dtype == np.float32
        np.testing.assert_array_equal(batch, expected)
        if y is not None:
            assert ds.y.dtype == np.int64
            np.testing.assert_array_equal(ds.y, y.astype(np.int64))
        del ds, batch, given_x  # the memory map, before its folder goes


@pytest.mark.filterwarnings("error")
@given(x=arrays())
def test_evaluate_reads_an_array_as_fit_does(x):
    """host_rows (evaluate's reader) refuses what dataset_from_array refuses for its shape,
    dtype or uint8 values, and scales uint8 alike."""
    try:
        rows = host_rows(x)
    except DataError as exc:
        assert "\n" not in str(exc)
        assert _expected(x, "gaussian") is None or x.dtype == np.uint8 and x.max() == 1
        return
    assert x.ndim in (2, 3) and x.size and x.dtype.kind in "biuf"
    if x.dtype == np.uint8:
        np.testing.assert_array_equal(rows, x.reshape(len(x), -1) / np.float32(255))


@pytest.mark.parametrize("reader", ["dataset_from_array", "host_rows", "npy"])
def test_uint8_holding_only_0_and_1_is_refused_not_divided_by_255(tmp_path, reader):
    """Binary images saved as uint8 0/1 became 0 and 1/255: a data set of blank images,
    trained on without a word."""
    x = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    np.save(tmp_path / "binary.npy", x)
    read = {
        "dataset_from_array": lambda: dataset_from_array(x, name="binary.npy"),
        "host_rows": lambda: host_rows(x, "binary.npy"),
        "npy": lambda: load_dataset(str(tmp_path / "binary.npy")),
    }[reader]
    with pytest.raises(DataError) as err:
        read()
    assert str(err.value) == (
        "binary.npy is uint8 holding only 0 and 1, but uint8 is read as grey levels 0..255 "
        "and divided by 255 (1 would become 0.0039); save binary images as bool or float32 "
        "(x.astype(np.float32)), or grey levels as 0..255"
    )
    # the same values as bool or float32 are 0 and 1; grey levels 0 and 255 are too
    for ok in (x.astype(bool), x.astype(np.float32), x * np.uint8(255)):
        np.testing.assert_array_equal(dataset_from_array(ok).get_batch(slice(None)), x)


@pytest.mark.filterwarnings("error")
def test_values_beyond_float32_are_refused_not_made_infinite():
    """float64 1e39 is finite, but the data set holds float32: it became Inf, and training
    "diverged" with advice about the learning rate."""
    x = np.array([[0.0, 1e39], [2.0, 3.0]])
    with pytest.raises(DataError, match=r"data has values in \[0, 1e\+39\], beyond float32's "):
        dataset_from_array(x, likelihood="gaussian")
    assert dataset_from_array(x / 1e10, likelihood="gaussian").get_batch(slice(None)).max() == 1e29


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "y, fragment",
    [
        ([[1], [2, 3]], "labels (y) are not one array of numbers"),
        (np.array([1, 2], np.float16), None),
        (np.array([np.inf, 2], np.float16), "are not whole numbers"),
    ],
    ids=["ragged", "float16", "float16-inf"],
)
def test_labels_of_odd_kinds(y, fragment):
    """Ragged labels were NumPy's "inhomogeneous shape" ValueError; float16 labels printed
    an overflow RuntimeWarning (compared with 2**62 in float16)."""
    x = np.zeros((2, 3))
    if fragment is None:
        assert dataset_from_array(x, y).y.tolist() == [1, 2]
        return
    with pytest.raises(DataError) as err:
        dataset_from_array(x, y)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_an_npz_member_larger_than_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from scratchvae.data import dataset

    monkeypatch.setattr(dataset, "host_available_memory", lambda: 1000)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros((100, 10)))
    path = tmp_path / "x.npz"
    path.write_bytes(buf.getvalue())
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("x.npy").compress_size < 1000
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    assert str(err.value).startswith(
        f"{path}: member 'x.npy' announces shape (100, 10) (7.45e-06 GiB) but 9.31e-07 GiB of "
        "memory is available; "
    )


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_long_npy_header_is_refused_without_numpys_pickle_advice(tmp_path, suffix):
    """NumPy refuses a header over 10,000 bytes with advice to "fully trust the .npy file using
    allow_pickle=True", which was relayed (cut at 200 characters) to the user."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }" + " " * 20000 + "\n"
    npy = b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode() + bytes(16)
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        path.write_bytes(npy)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.npy", npy)
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert "its .npy header is longer than NumPy reads safely (10,000 bytes)" in message
    assert "allow_pickle" not in message and "\n" not in message


@pytest.mark.parametrize("shape", [(6, 4), (6, 2, 2)], ids=["2-D", "3-D"])
def test_a_fortran_order_npy_is_read_into_memory_or_refused(tmp_path, monkeypatch, shape):
    """A Fortran-order file's rows are scattered over the file: a 3-D one was copied whole into
    memory while the data set called itself memory-mapped, a 2-D one read every batch from all
    over the file. It is read into memory in C order, or refused when memory cannot hold it."""
    from scratchvae.data import dataset

    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(shape) / 24)
    np.save(tmp_path / "f.npy", x)
    ds = load_dataset(str(tmp_path / "f.npy"))
    assert not ds.memmapped and "memory-mapped" not in ds.description
    np.testing.assert_array_equal(ds.get_batch(slice(None)), x.reshape(6, -1))
    monkeypatch.setattr(dataset, "host_available_memory", lambda: 50)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "f.npy"))
    assert str(err.value).startswith(
        f"{tmp_path / 'f.npy'} is stored in Fortran order, so it is read into memory ("
    )
    assert str(err.value).endswith(
        "save it in C order (np.save(path, np.ascontiguousarray(x))) to read it from disk batch "
        "by batch"
    )


def test_a_masked_array_with_masked_values_is_refused_not_read_under_its_mask():
    """The values under a mask (a missing pixel stored as 0.9) were trained on as data."""
    x = np.ma.masked_array([[0.5, 0.9], [0.25, 1.0]], mask=[[False, True], [False, False]])
    with pytest.raises(DataError) as err:
        dataset_from_array(x)
    assert str(err.value) == (
        "data is a masked array with 1 masked value; fill them first (x.filled(0)) or drop "
        "those examples"
    )
    unmasked = dataset_from_array(np.ma.masked_array(x.data, mask=False))  # nothing masked
    np.testing.assert_array_equal(unmasked.get_batch(slice(None)), x.data.astype(np.float32))
