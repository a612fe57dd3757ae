"""A file name longer than the file system allows (ENAMETOOLONG): the library's own one-line
error, not Path.exists()/is_dir()'s bare OSError, from the Python API and from the CLI. Other
errors of the lookup (a folder one may not search) are still told as what they are."""

import errno
from pathlib import Path

import pytest

from scratchvae.atomic import path_exists, path_is_dir
from scratchvae.checkpoint import CheckpointError, load_checkpoint
from scratchvae.cli import main
from scratchvae.data import DataError, load_dataset

LONG = "a" * 300  # over the 255 bytes a name may have on Linux, macOS and Windows file systems


def test_a_checkpoint_name_too_long_is_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="^no checkpoint at .*; train first"):
        load_checkpoint(tmp_path / LONG)


def test_a_data_name_too_long_is_no_such_file(tmp_path):
    with pytest.raises(DataError, match="and no such file or folder; choose digits"):
        load_dataset(str(tmp_path / f"{LONG}.npy"))


@pytest.mark.parametrize("command", ["sample", "evaluate", "plot"])
def test_a_run_folder_name_too_long_is_no_run_folder(tmp_path, capsys, command):
    assert main([command, str(tmp_path / LONG)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("scratchvae: error: no run folder or checkpoint at ") and "Errno" not in err
    )


def test_a_folder_one_may_not_search_is_not_called_missing(tmp_path, monkeypatch):
    """os.path.exists would say False for it: "no such file" for a permission problem."""

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", denied)
    for check in (path_exists, path_is_dir):
        with pytest.raises(PermissionError):
            check(tmp_path / "x.npy")
    with pytest.raises(PermissionError):
        load_dataset(str(tmp_path / "x.npy"))
