"""Tests of scratchvae.data.load: load_dataset on the embedded digits, MNIST archives and IDX
folders, and the user's own files (.npy memory-mapped, .npz, image folders)."""

from __future__ import annotations

import numpy as np
import pytest
from idx_helpers import write

from scratchvae.data import DataError, load_dataset
from scratchvae.data.dataset import LazyScaled
from scratchvae.data.load import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, NoSuchSplit
from scratchvae.data.splits import holdout

# --------------------------------------------------------------------------------------------
# Embedded digits and splits
# --------------------------------------------------------------------------------------------


def test_digits_embedded():
    ds = load_dataset("digits", split="all")
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32 and ds.image_shape == (8, 8)
    assert ds.x.min() == 0 and ds.x.max() == 1
    assert set(ds.y) == set(range(10)) and len(ds.y) == 1797


def test_digits_split_is_fixed_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (train.n, test.n) == (1500, DIGITS_TEST_SIZE) == (1500, 297)
    rest, held = holdout(1797, 297, DIGITS_SPLIT_SEED)
    assert len(np.union1d(rest, held)) == 1797
    everything = load_dataset("digits", "all")
    np.testing.assert_array_equal(test.x, everything.x[held])
    np.testing.assert_array_equal(load_dataset("digits", "test").x, test.x)
    # pinned, so a change of NumPy's permutation (which would move the test set) is noticed
    assert held[:5].tolist() == [1, 3, 4, 6, 7]
    assert test.description == "UCI digits test (297 x 64), grey levels in [0, 1] (0..16 / 16)"


def test_spec_is_case_and_underscore_insensitive(tmp_path, tiny):
    assert load_dataset(" Digits ", "test").n == 297
    x, y = tiny["arrays"]["test"]
    np.savez(tmp_path / "fashion-mnist-test.npz", x=x, y=y)  # directly under the root
    ds = load_dataset("Fashion_MNIST", "test", data_dir=tmp_path, download=False)
    assert (ds.name, ds.n) == ("fashion-mnist", 3)


def test_split_errors(tmp_path):
    with pytest.raises(DataError, match="digits has no split 'valid'; choose one of train"):
        load_dataset("digits", split="valid")
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "a.npy"), split="test")
    assert str(err.value) == (
        f"{tmp_path / 'a.npy'} is one data set with no 'test' split; use the split train "
        "(--split train, split='train'), and pass a held-out part as a file of its own"
    )
    with pytest.raises(DataError, match="unknown data set 'mnsit'"):
        load_dataset("mnsit")


# --------------------------------------------------------------------------------------------
# MNIST archives and folders of IDX files
# --------------------------------------------------------------------------------------------


def test_npz_folder_format(tmp_path, tiny):
    x, y = tiny["arrays"]["test"]
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "mnist-test.npz", x=x, y=y)
    ds = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.get_batch(slice(None)), x.reshape(3, -1) / np.float32(255))
    assert ds.description.startswith("MNIST test (3 x 784)")


def test_npz_archive_with_wrong_label_count(tmp_path, tiny):
    x, _ = tiny["arrays"]["test"]
    np.savez(tmp_path / "mnist-test.npz", x=x, y=np.arange(2))
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert str(err.value) == (
        f"MNIST test in {tmp_path / 'mnist-test.npz'}: 3 images but 2 labels; replace it, or "
        "delete it so the official IDX files are downloaded instead"
    )


def test_idx_files_with_different_counts(tmp_path, tiny, tiny_checksums):
    # the user's own folder: nothing to fetch, the two files disagree
    files = {**tiny["gz"], "t10k-labels-idx1-ubyte.gz": tiny["gz"]["train-labels-idx1-ubyte.gz"]}
    mine = write(tmp_path / "mine", files)
    with pytest.raises(DataError) as err:
        load_dataset(str(mine), "test")
    assert str(err.value) == (
        f"the IDX files in {mine} (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz): 3 "
        "images but 5 labels; they disagree: replace them with the images and labels of one "
        "data set"
    )
    assert "fetch" not in str(err.value)
    # the data folder's files (md5 checks off): downloaded once, so they can be again
    folder = write(tmp_path / "root" / "mnist", files)
    tiny_checksums.clear()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test", data_dir=folder.parent, download=False)
    assert str(err.value) == (
        f"the MNIST test files in {folder}: 3 images but 5 labels; they disagree: delete them "
        "so they are downloaded again, or replace them with the official files"
    )


def test_folder_of_idx_files_as_path(tmp_path, tiny):
    folder = write(tmp_path / "mine", tiny["gz"])
    assert load_dataset(str(folder), split="test").n == 3


def test_a_folder_of_idx_files_missing_one_names_it(tmp_path, tiny):
    """It said the folder "holds no IDX files and no images" when one file of a pair was
    missing, and that a folder of the train files was "one data set with no 'test' split"."""
    gz = tiny["gz"]
    folder = write(
        tmp_path / "nolabels", {"train-images-idx3-ubyte.gz": gz["train-images-idx3-ubyte.gz"]}
    )
    with pytest.raises(DataError) as err:
        load_dataset(str(folder))
    assert str(err.value) == (
        f"{folder} holds train-images-idx3-ubyte.gz but not train-labels-idx1-ubyte(.gz), which "
        "the train split needs; put the train images and labels there"
    )
    train_only = {name: b for name, b in gz.items() if name.startswith("train")}
    folder = write(tmp_path / "trainonly", train_only)
    assert load_dataset(str(folder)).n == 5
    with pytest.raises(NoSuchSplit) as err:  # a data set without one (examples hold out 10%)
        load_dataset(str(folder), split="test")
    assert str(err.value) == (
        f"{folder} holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz but not "
        "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz), which the test split "
        "needs; put the test images and labels there, or use the split train (--split train, "
        "split='train')"
    )
    assert load_dataset(str(folder), split="all").n == 5  # all of a folder of one split


# --------------------------------------------------------------------------------------------
# The user's own files
# --------------------------------------------------------------------------------------------


def test_npy_float_is_memory_mapped(tmp_path):
    x = np.random.default_rng(0).random((6, 5, 5), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert isinstance(ds.x, np.memmap) and ds.memmapped
    assert ds.x.shape == (6, 25) and ds.image_shape == (5, 5)
    batch = ds.get_batch(np.array([4, 1]))
    assert type(batch) is np.ndarray and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, x.reshape(6, -1)[[4, 1]])


def test_npy_uint8_is_scaled_per_batch(tmp_path):
    x = np.arange(60, dtype=np.uint8).reshape(2, 30) * 4
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert isinstance(ds.x, LazyScaled) and isinstance(ds.x.raw, np.memmap)
    assert ds.image_shape is None and "uint8 scaled by 1/255" in ds.description
    np.testing.assert_allclose(ds.get_batch(slice(1, 2)), x[1:] / np.float32(255), rtol=0)
    np.testing.assert_allclose(ds.x[0], x[0] / np.float32(255), rtol=0)


def test_npz(tmp_path):
    x, y = np.full((4, 9), 0.5, np.float64), np.array([1, 2, 3, 4])
    np.savez_compressed(tmp_path / "xy.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "xy.npz"))
    assert ds.x.dtype == np.float32 and not ds.memmapped and ds.image_shape == (3, 3)
    np.testing.assert_array_equal(ds.y, y)
    np.savez(tmp_path / "single.npz", pixels=np.zeros((3, 4), np.uint8))
    assert load_dataset(str(tmp_path / "single.npz")).y is None
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; name the data array 'x'"):
        load_dataset(str(tmp_path / "two.npz"))


def test_unreadable_files(tmp_path):
    write(tmp_path, {"bad.npy": b"not numpy", "bad.npz": b"not a zip", "x.csv": b"1,2"})
    with pytest.raises(DataError, match=r"could not read .*bad.npy as a NumPy .npy file"):
        load_dataset(str(tmp_path / "bad.npy"))
    with pytest.raises(
        DataError, match=r"bad.npz is not an .npz archive \(it is not a zip file\); replace it"
    ):
        load_dataset(str(tmp_path / "bad.npz"))
    with pytest.raises(DataError, match=r"cannot read .*x.csv: expected a .npy or .npz file"):
        load_dataset(str(tmp_path / "x.csv"))


def test_files_the_user_cannot_read_or_hold(tmp_path, monkeypatch):
    """Permissions (simulated: the tests may run as root, who reads anything), a folder where
    an IDX file should be, an archive too large for memory: one DataError line each."""
    from scratchvae.data import load
    from scratchvae.data.idx import read_idx

    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3), np.float32))

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(load, "_head", denied)
    for name in ("x.npy", "x.npz"):
        with pytest.raises(DataError, match=rf"cannot read .*{name} \(Permission denied\); check"):
            load_dataset(str(tmp_path / name))
    monkeypatch.undo()

    def too_large(path, advice):
        raise MemoryError

    monkeypatch.setattr(load, "_npz_arrays", too_large)
    with pytest.raises(DataError, match="x.npz holds arrays too large for this machine's memory"):
        load_dataset(str(tmp_path / "x.npz"))
    (tmp_path / "train-images-idx3-ubyte").mkdir()
    with pytest.raises(DataError, match=r"cannot read .*train-images-idx3-ubyte \(Is a direc"):
        read_idx(tmp_path / "train-images-idx3-ubyte")


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2, 7, 5), dtype=np.uint8)
    for i, g in enumerate(grey):
        Image.fromarray(g).save(tmp_path / f"img{i}.png")
    Image.fromarray(np.stack([grey[0]] * 3, axis=-1)).save(tmp_path / "img2.png")  # RGB
    ds = load_dataset(str(tmp_path))
    assert (ds.n, ds.n_features, ds.image_shape) == (3, 35, (7, 5))
    np.testing.assert_allclose(ds.x[:2], grey.reshape(2, -1) / np.float32(255), rtol=0)
    np.testing.assert_allclose(ds.x[2], ds.x[0], atol=1 / 255)
    Image.fromarray(np.zeros((8, 5), np.uint8)).save(tmp_path / "img3.png")
    with pytest.raises(DataError, match="differ in size: img0.png is .* img3.png is"):
        load_dataset(str(tmp_path))


def test_image_folder_errors(tmp_path):
    write(tmp_path / "empty", {"notes.txt": b"no images here"})
    with pytest.raises(DataError, match="holds no IDX files and no images"):
        load_dataset(str(tmp_path / "empty"))
    write(tmp_path / "broken", {"a.png": b"not a png"})
    with pytest.raises(DataError, match=r"could not read image .*a.png"):
        load_dataset(str(tmp_path / "broken"))
