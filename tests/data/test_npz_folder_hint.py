"""A folder holding MNIST's `.npz` archives given as --data: the error says how to read them."""

import numpy as np  # numpy-boundary: writing data files
import pytest

from scratchvae.data import DataError, load_dataset


def test_a_folder_of_mnist_archives_given_as_data_says_to_use_data_dir(tmp_path):
    """`--data /data/mnist` (holding mnist-train.npz, mnist-test.npz, as the data README lays
    them out) said "holds no IDX files and no images; point at a .npy/.npz file or a folder
    of images", naming none of the ways these files are read."""
    x = np.zeros((3, 28, 28), np.uint8)
    for split in ("train", "test"):
        np.savez(tmp_path / f"mnist-{split}.npz", x=x, y=np.zeros(3, np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path), "train")
    message = str(err.value)
    assert f"it holds mnist-test.npz, mnist-train.npz: pass --data mnist --data-dir {tmp_path}" in (
        message
    )
    assert "\n" not in message


def test_an_empty_folder_is_still_said_plainly(tmp_path):
    with pytest.raises(DataError, match="holds no IDX files and no images"):
        load_dataset(str(tmp_path), "train")
