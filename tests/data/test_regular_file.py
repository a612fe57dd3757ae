"""One condition for "a named pipe or a device" (opening one for reading waits for a writer, for
ever): :func:`scratchvae.atomic.special_file`, one stat of the path."""

from __future__ import annotations

import os

import pytest

from scratchvae.atomic import special_file
from scratchvae.data import DataError
from scratchvae.data.dataset import check_regular_file
from scratchvae.data.idx import read_idx
from scratchvae.data.images import read_gray

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


def test_only_pipes_sockets_and_devices_are_special(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_bytes(b"x")
    os.symlink(tmp_path / "pipe", tmp_path / "to-pipe")
    assert special_file(tmp_path / "pipe") and special_file(tmp_path / "to-pipe")
    assert special_file(os.devnull)
    for plain in ("file", "missing", "."):
        assert not special_file(tmp_path / plain)
    with pytest.raises(DataError, match=r"pipe is not a regular file \(a pipe or a device\)"):
        check_regular_file(tmp_path / "pipe")


@pytest.mark.parametrize("reader", [read_idx, read_gray])
def test_a_name_the_system_cannot_look_up_is_one_data_error(tmp_path, reader):
    """Path.exists() raised the OSError of a name too long (ENAMETOOLONG is not among the errors
    it reads as "missing"), a traceback out of read_idx instead of its one-line DataError."""
    with pytest.raises(DataError, match="File name too long"):
        reader(tmp_path / ("a" * 300))
