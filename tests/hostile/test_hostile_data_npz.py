"""A data archive (.npz) whose zip directory lies, given to the data loader: a member compressed
with bzip2 or LZMA (which unpack all a read hands them at once, whatever the directory claims:
a few hundred bytes made the loader hold 445 MB) and packed sizes larger than the file. Each is
refused in one line (DataError) before any member is unpacked; the same as the checkpoint
reader (both call scratchvae.zip_members.check_directory)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np  # numpy-boundary: writing crafted files
import pytest

from scratchvae.data import DataError, load_dataset


def _npy(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, a, allow_pickle=False)
    return f.getvalue()


@pytest.mark.parametrize("method, name", [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")])
def test_a_member_in_a_compression_numpy_never_writes_is_refused_unread(
    tmp_path: Path, method: int, name: str
) -> None:
    """A bzip2 member that unpacks to 200 MB of zeros in a 12-byte-per-row .npy: refused before
    a byte of it is unpacked (a few MB at most traced), in one line naming the compression."""
    path = tmp_path / "bomb.npz"
    header = _npy(np.zeros((1, 4), np.float32))  # a small, valid array ...
    with zipfile.ZipFile(path, "w") as z:  # ... followed by 200 MB that no header accounts for
        z.writestr("x.npy", header + bytes(200 << 20), compress_type=method)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            load_dataset(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert "\n" not in message and name in message and "NumPy never writes" in message
    assert "damaged" not in message and "save it with np.savez" in message  # not damage
    assert peak < 16 << 20, peak


def test_packed_sizes_larger_than_the_file_are_refused(tmp_path: Path) -> None:
    """A central directory whose packed size (its 4 bytes patched) claims more than the file."""
    path = tmp_path / "claims.npz"
    np.savez(path, x=np.ones((3, 4), np.float32))
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the member's central directory entry
    struct.pack_into("<I", data, central + 20, 50 << 20)  # its compressed size: 50 MB
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="claim .* packed bytes, the file holds"):
        load_dataset(str(path))


def test_a_sound_archive_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "sound.npz"
    np.savez_compressed(path, x=np.full((5, 4), 0.5, np.float32))
    assert load_dataset(str(path)).n_features == 4
