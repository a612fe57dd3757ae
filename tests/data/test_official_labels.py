"""A folder of IDX files given by path is MNIST's or Fashion-MNIST's by its labels' md5, not
by its name: a Fashion-MNIST folder named otherwise got digits (0..9) in the figures' legends,
and an MNIST folder named fashion-mnist got clothes."""

from __future__ import annotations

import gzip

import pytest
from idx_helpers import STEMS, md5, write

from scratchvae.data import idx, load_dataset
from scratchvae.data.labels import FASHION_MNIST_CLASSES, class_names, official_labels


@pytest.fixture
def fashion_tables(tiny, monkeypatch):
    """The tiny files are Fashion-MNIST's official ones; MNIST's table is the real one."""
    table = {name: md5(b) for name, b in {**tiny["raw"], **tiny["gz"]}.items()}
    monkeypatch.setitem(idx.CHECKSUMS, "fashion-mnist", table)
    return table


@pytest.mark.parametrize("form", ["gz", "raw", "recompressed"])
def test_a_fashion_mnist_folder_of_any_name_gets_its_class_names(
    tmp_path, tiny, fashion_tables, form
):
    files = {
        "gz": tiny["gz"],
        "raw": tiny["raw"],
        "recompressed": {
            f"{s}.gz": gzip.compress(b, compresslevel=1) for s, b in tiny["raw"].items()
        },
    }[form]
    folder = write(tmp_path / "clothes", files)
    for split in ("train", "test"):
        ds = load_dataset(str(folder), split)
        assert ds.name == "fashion-mnist" and class_names(ds.name) == FASHION_MNIST_CLASSES
        assert ds.description.startswith(f"clothes {split} (")  # the folder's name, as before


def test_an_mnist_folder_named_fashion_mnist_gets_digits(tmp_path, tiny, tiny_checksums):
    folder = write(tmp_path / "fashion-mnist", tiny["gz"])
    ds = load_dataset(str(folder), "train")
    assert ds.name == "mnist" and class_names(ds.name) is None


def test_a_users_own_labels_keep_the_folders_name(tmp_path, tiny):
    """Labels of no official file (here the tiny ones, the tables untouched): the name is the
    folder's, as before, so a folder of the user's own Fashion-MNIST subset named
    fashion-mnist still gets the class names."""
    for name in ("fashion-mnist", "mine"):
        ds = load_dataset(str(write(tmp_path / name, tiny["gz"])), "train")
        assert ds.name == name


def test_official_labels_needs_exactly_an_official_labels_file(tiny, fashion_tables):
    y = tiny["arrays"]["train"][1]
    assert official_labels(y) == "fashion-mnist"
    assert official_labels(y[:-1]) is None
    # the same labels in another integer dtype (torchvision's targets.numpy() are int64)
    assert official_labels(y.astype("int64")) == official_labels(y.astype("int16"))
    assert official_labels(y.astype("int64")) == "fashion-mnist"
    assert official_labels(y.astype("int64") + 256) is None  # values no IDX label holds
    assert official_labels(y.astype("float64")) is None
    assert official_labels(y.reshape(1, -1)) is None
    assert official_labels([0, 1, 2]) is None
    assert STEMS["train"][1] in fashion_tables


def test_an_npz_of_official_labels_gets_the_data_sets_class_names(tmp_path, tiny, fashion_tables):
    """fashion-mnist-train.npz given by path (x, y as the official files hold them) had digits
    in its legend: a file's labels tell the data set as a folder's do; its name stays the
    file's in the description, and a user's own labels keep the file's name."""
    np = pytest.importorskip("numpy")  # numpy-boundary: writing the user's file
    x, y = tiny["arrays"]["train"]
    np.savez(tmp_path / "clothes.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "clothes.npz"))
    assert ds.name == "fashion-mnist" and class_names(ds.name) == FASHION_MNIST_CLASSES
    assert ds.description.startswith("clothes.npz")
    np.savez(tmp_path / "mine.npz", x=x, y=y[::-1].copy())
    assert load_dataset(str(tmp_path / "mine.npz")).name == "mine.npz"
    np.savez(tmp_path / "unlabelled.npz", x=x)
    assert load_dataset(str(tmp_path / "unlabelled.npz")).name == "unlabelled.npz"
