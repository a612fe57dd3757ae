"""A file name longer than the file system allows (ENAMETOOLONG): the library's own one-line
error, not Path.exists()/is_dir()'s bare OSError, from the Python API as from the CLI."""

import pytest

from scratchvae.checkpoint import CheckpointError, load_checkpoint
from scratchvae.data import DataError, load_dataset

LONG = "a" * 300  # over the 255 bytes a name may have on Linux, macOS and Windows file systems


def test_a_checkpoint_name_too_long_is_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="^no checkpoint at .*; train first"):
        load_checkpoint(tmp_path / LONG)


def test_a_data_name_too_long_is_no_such_file(tmp_path):
    with pytest.raises(DataError, match="and no such file or folder; choose digits"):
        load_dataset(str(tmp_path / f"{LONG}.npy"))
