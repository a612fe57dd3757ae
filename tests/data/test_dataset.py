"""Tests of scratchvae.data.dataset: the Dataset type, validation of arrays, splits,
binarization."""

from __future__ import annotations

import numpy as np
import pytest

from scratchvae import inputs
from scratchvae.backend import Backend
from scratchvae.data import DataError, load_dataset
from scratchvae.data.dataset import (
    BINARIZE_MODES,
    LIKELIHOODS,
    LazyScaled,
    check_likelihood,
    check_n_features,
    check_split,
    dataset_from_array,
    validate_values,
)
from scratchvae.data.splits import binarize, holdout, train_val_split

# --------------------------------------------------------------------------------------------
# The Dataset and LazyScaled
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "npy-uint8"])
def test_get_batch_into_a_reused_buffer_equals_a_fresh_batch(name, tmp_path):
    if name == "digits":
        ds = load_dataset("digits")
    else:
        np.save(tmp_path / "x.npy", np.arange(200, dtype=np.uint8).reshape(8, 25))
        ds = load_dataset(str(tmp_path / "x.npy"))
    buf = ds.batch_buffer(3)
    assert buf.shape == (3, ds.n_features) and buf.dtype == np.float32
    for idx in (np.array([5, 0, 2]), slice(1, 4)):
        got = ds.get_batch(idx, out=buf)
        assert got is buf
        np.testing.assert_array_equal(got, ds.get_batch(idx))


def test_lazy_scaled_reads_rows_as_float32(tmp_path):
    raw = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.save(tmp_path / "x.npy", raw)
    lazy = LazyScaled(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert (len(lazy), lazy.shape, lazy.ndim, lazy.dtype) == (3, (3, 4), 2, np.float32)
    np.testing.assert_array_equal(lazy[1], raw[1] / np.float32(255))
    whole = np.asarray(lazy)
    assert whole.dtype == np.float32 and whole.shape == (3, 4)
    assert np.asarray(lazy, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(LazyScaled(raw, divisor=20)[2], [8, 9, 10, 11])


def test_in_memory_arrays(tmp_path):
    x = np.array([[0, 255], [51, 102]], np.uint8)
    ds = dataset_from_array(x, y=np.array([[1], [0]]), name="pairs")
    assert ds.x.dtype == np.float32 and not ds.memmapped and ds.image_shape is None
    np.testing.assert_array_equal(ds.x, x / np.float32(255))
    assert ds.y.tolist() == [1, 0] and ds.y.dtype == np.int64
    assert ds.description == "pairs (2 x 2), grey levels in [0, 1] (uint8 scaled by 1/255)"
    assert dataset_from_array(x, description="mine").description == "mine"
    np.save(tmp_path / "x.npy", x)
    memmapped = dataset_from_array(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert memmapped.memmapped and memmapped.description.endswith(", memory-mapped")


# --------------------------------------------------------------------------------------------
# Validation errors
# --------------------------------------------------------------------------------------------


def test_nan_and_inf_found_in_chunks(tmp_path, monkeypatch):
    x = np.full((50, 4), 0.5, np.float32)
    x[37, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(inputs, "SCAN_ELEMENTS", 12)  # 3 rows a chunk
    with pytest.raises(DataError, match="contains NaN or Inf \\(first in row 37\\)"):
        load_dataset(str(tmp_path / "x.npy"))
    x[37, 2], x[3, 0] = 0.5, np.inf
    with pytest.raises(DataError, match="row 3"):
        dataset_from_array(x, likelihood="gaussian")


def test_validation_reads_rows_in_chunks(monkeypatch):
    class Spy:
        shape = (1000, 10)
        rows_read: list[int] = []

        def __getitem__(self, idx):
            self.rows_read.append(idx.stop - idx.start)
            return np.zeros((min(idx.stop, 1000) - idx.start, 10), np.float32)

    monkeypatch.setattr(inputs, "SCAN_ELEMENTS", 1000)
    assert validate_values(Spy()) == (0.0, 0.0)
    assert max(Spy.rows_read) == 100 and len(Spy.rows_read) == 10


def test_wrong_rank_and_empty():
    with pytest.raises(DataError, match=r"shape \(2, 3, 4, 1\) \(rank 4\); expected \(N, D\)"):
        dataset_from_array(np.zeros((2, 3, 4, 1)))
    with pytest.raises(DataError, match="rank 1"):
        dataset_from_array(np.zeros(5))
    with pytest.raises(DataError, match="is empty"):
        dataset_from_array(np.zeros((0, 784)))
    with pytest.raises(DataError, match="has dtype <U1; expected numbers"):
        dataset_from_array(np.array([["a", "b"]]))


def test_values_outside_unit_interval():
    with pytest.raises(DataError, match=r"values in \[0, 255\] .*Bernoulli.*divide 8-bit grey le"):
        dataset_from_array(np.array([[0.0, 255.0]]))
    with pytest.raises(DataError, match=r"\[-1, 1\].*min-max scale to \[0, 1\]") as err:
        dataset_from_array(np.array([[-1.0, 1.0]]))
    assert "divide" not in str(err.value)
    # the advice fits the command line and the Python API alike
    assert str(err.value).endswith(
        "or use a Gaussian likelihood (--likelihood gaussian, likelihood='gaussian')"
    )
    ds = dataset_from_array(np.array([[-1.0, 1.0]]), likelihood="gaussian")
    assert "values in [-1, 1]" in ds.description


def test_feature_count_mismatch():
    ds = load_dataset("digits")
    with pytest.raises(DataError) as err:
        check_n_features(ds, 784)
    assert str(err.value) == (  # the data named: `evaluate RUN --data FILE` said "data has"
        "UCI digits train has 64 features but the checkpoint's model expects 784; "
        "pass the data it was trained on"
    )
    with pytest.raises(DataError, match="64 features but the model expects 784"):
        load_dataset("digits", expected_features=784)
    check_n_features(ds, 64)
    named = dataset_from_array(np.zeros((3, 5), np.float32), name="rows (v2).npy")
    with pytest.raises(DataError, match=r"^rows \(v2\).npy has 5 features"):  # not "rows has"
        check_n_features(named, 7)


def test_label_count_and_likelihood_checked():
    with pytest.raises(DataError, match="3 examples but 2 labels"):
        dataset_from_array(np.zeros((3, 4)), y=[0, 1])
    with pytest.raises(DataError, match="unknown likelihood 'poisson'"):
        load_dataset("digits", likelihood="poisson")


def test_check_likelihood_and_split():
    for likelihood in LIKELIHOODS:
        check_likelihood(likelihood)
    with pytest.raises(DataError, match="unknown likelihood 'Bernoulli'; choose 'bernoulli'"):
        check_likelihood("Bernoulli")
    check_split("test", ("train", "test"), "MNIST")
    with pytest.raises(DataError, match="^MNIST has no split 'val'; choose one of train, test$"):
        check_split("val", ("train", "test"), "MNIST")


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def test_holdout_partitions_and_is_seeded():
    rest, held = holdout(10, 3, seed=1)
    assert len(held) == 3 and (np.diff(rest) > 0).all() and (np.diff(held) > 0).all()
    np.testing.assert_array_equal(np.sort(np.concatenate([rest, held])), np.arange(10))
    np.testing.assert_array_equal(holdout(10, 3, seed=1)[1], held)
    assert holdout(4, 0, seed=0)[1].size == 0


def test_train_val_split():
    train, val = train_val_split(100, 0.2, seed=3)
    assert (len(train), len(val)) == (80, 20) and train.dtype.kind == "i"
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    again = train_val_split(100, 0.2, seed=3)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(train_val_split(100, 0.2, seed=4)[1], val)
    assert len(train_val_split(5, 0.01)[1]) == 1 and len(train_val_split(5, 0)[1]) == 0
    with pytest.raises(DataError, match="val_fraction"):
        train_val_split(10, 1.0)
    assert [len(part) for part in train_val_split(2, 0)] == [2, 0]
    assert [len(part) for part in train_val_split(3, 0.1)] == [2, 1]


@pytest.mark.parametrize(
    "n, fraction, message",
    [
        (1, 0, "the data has 1 example, but training needs at least 2 (the figures compare two); "
         "use a data set of more examples"),
        (1, 0.5, "the data has 1 example, but training needs at least 2"),
        (0, 0, "the data has 0 examples, but training needs at least 2"),
        (2, 0.1, "2 examples with a validation fraction of 0.1 leave 1 for training, but training "
         "needs at least 2 (the figures compare two); lower the fraction (--val-fraction, "
         "val_fraction; 0 for none) or use more data"),
        (10, 0.9, "10 examples with a validation fraction of 0.9 leave 1 for training"),
    ],
)  # fmt: skip
def test_a_training_part_of_fewer_than_two_examples_is_refused(n, fraction, message):
    # one example: nothing to learn, and the figures (interpolation, latent space) compare two
    with pytest.raises(DataError) as err:
        train_val_split(n, fraction)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------------------------


def test_binarize_none_and_threshold():
    bk = Backend("numpy", "float32", seed=0)
    x = bk.asarray([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert all(binarize(x, mode, bk).shape == x.shape for mode in BINARIZE_MODES)
    assert binarize(x, "none", bk) is x
    t = binarize(x, "threshold", bk)
    assert t.dtype == np.float32 and set(np.unique(t)) <= {0.0, 1.0}
    np.testing.assert_array_equal(t, [[0, 0, 0, 1, 1]])
    with pytest.raises(DataError, match="unknown binarization 'otsu'"):
        binarize(x, "otsu", bk)


def test_binarize_dynamic_is_a_fresh_bernoulli_draw():
    bk = Backend("numpy", "float32", seed=0)
    x = bk.asarray(load_dataset("digits").get_batch(slice(0, 100)))
    first, second = binarize(x, "dynamic", bk), binarize(x, "dynamic", bk)
    assert set(np.unique(first)) <= {0.0, 1.0} and not np.array_equal(first, second)
    draws = np.mean([binarize(x, "dynamic", bk) for _ in range(100)], axis=0)
    # each entry: mean of 100 Bernoulli(p) draws; the whole-array mean has sd < 0.001
    assert abs(draws.mean() - x.mean()) < 0.004
    assert np.abs(draws - x).max() < 0.3
    assert (draws[x == 0] == 0).all() and (draws[x == 1] == 1).all()
