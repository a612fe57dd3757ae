"""Damaged and crafted data files: each is refused with one DataError line naming the file, what
is wrong and what to do, and read whole at load time (never a zipfile/zlib/EOF error later, never
a huge allocation, never silently different data)."""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from idx_helpers import STEMS, write

from scratchvae.data import DataError, load_dataset
from scratchvae.data.idx import read_idx

X = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20  # scaled by 1/255 when loaded
Y = np.arange(3)


def _npz_bytes(compressed: bool, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **(arrays or {"x": X, "y": Y}))
    return buf.getvalue()


def _member(blob: bytes, name: str = "x.npy") -> tuple[int, int, int]:
    """(offset of the member's data, its compressed size, offset of its central-directory entry)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        info = zf.getinfo(name)
    name_len, extra_len = struct.unpack_from("<HH", blob, info.header_offset + 26)
    data = info.header_offset + 30 + name_len + extra_len
    eocd = blob.rindex(b"PK\x05\x06")
    central = struct.unpack_from("<I", blob, eocd + 16)[0]  # the first entry
    while blob[central + 46 : central + 46 + len(name)] != name.encode():
        n, m, k = struct.unpack_from("<HHH", blob, central + 28)
        central += 46 + n + m + k
    return data, info.compress_size, central


def _flip(blob: bytes, at: int, n: int = 2) -> bytes:
    b = bytearray(blob)
    for i in range(at, at + n):
        b[i] ^= 0xFF
    return bytes(b)


def _patch(blob: bytes, at: int, fmt: str, value: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


def _crafted_member(header: dict, body: bytes = b"\0" * 64) -> bytes:
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("x.npy", npy.getvalue() + body)
    return out.getvalue()


def _object_array_npz() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open("x.npy", "w") as member:
        np.lib.format.write_array(member, np.array([{}, []], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _npy_format_3() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open("x.npy", "w") as member:
        np.lib.format.write_array(member, X, version=(3, 0))
    return buf.getvalue()


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    return buf.getvalue()


def _text_member() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", b"not an array at all")
    return buf.getvalue()


STORED, DEFLATED = _npz_bytes(False), _npz_bytes(True)
_DATA, _SIZE, _CENTRAL = _member(STORED)
_DATA_Z, _SIZE_Z, _ = _member(DEFLATED)

# name -> (bytes of a file named x.npz, a fragment of the message)
DAMAGED = {
    "truncated-half": (STORED[: len(STORED) // 2], "truncated or damaged (File is not a zip file)"),
    "truncated-member": (STORED[: _DATA + 10], "truncated or damaged"),
    "truncated-last-byte": (DEFLATED[:-1], "truncated or damaged"),
    "empty": (b"", "is empty"),
    "bad-crc-stored": (_flip(STORED, _DATA + _SIZE // 2), "Bad CRC-32 for file 'x.npy'"),
    "bad-crc-deflated": (_flip(DEFLATED, _DATA_Z + _SIZE_Z // 2), "truncated or damaged"),
    "encrypted": (_patch(STORED, _CENTRAL + 8, "<H", 1), "encrypted"),
    "unknown-method": (_patch(STORED, _CENTRAL + 10, "<H", 99), "compressed with method 99"),
    "member-larger-than-file": (
        _patch(STORED, _CENTRAL + 20, "<I", 2**31),
        "claim 2147483800 packed bytes, the file holds",
    ),
    "huge-shape": (
        _crafted_member({"descr": "<f8", "fortran_order": False, "shape": (10**12,)}),
        "announces shape (1000000000000,) (8000000000000 bytes) but holds 64 bytes",
    ),
    "negative-shape": (
        _crafted_member({"descr": "<f8", "fortran_order": False, "shape": (-8,)}),
        "announces shape (-8,)",
    ),
    "object-array": (_object_array_npz(), "holds Python objects"),
    "npy-format-3": (_npy_format_3(), "member 'x.npy' is .npy format (3, 0), not 1.0 or 2.0"),
    "not-an-array": (_text_member(), "truncated or damaged"),
    "no-arrays": (_empty_zip(), "holds no arrays"),
    "not-a-zip": (b"x,y\n1,2\n", "is not an .npz archive (it is not a zip file)"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_npz_is_one_data_error(tmp_path, case):
    blob, fragment = DAMAGED[case]
    path = write(tmp_path, {"x.npz": blob}) / "x.npz"
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message
    assert path.read_bytes() == blob  # never touched


def test_npz_and_npy_under_each_others_name(tmp_path):
    np.save(tmp_path / "a.npy", X)
    write(tmp_path, {"a.npz": (tmp_path / "a.npy").read_bytes(), "b.npy": STORED})
    with pytest.raises(DataError, match=r"a.npz is a .npy file, not an .npz archive; rename it"):
        load_dataset(str(tmp_path / "a.npz"))
    with pytest.raises(DataError, match=r"b.npy is an .npz archive, not a .npy file; rename it"):
        load_dataset(str(tmp_path / "b.npy"))


def test_a_file_that_is_not_npy_under_the_name_is_refused_without_numpys_pickle_advice(tmp_path):
    """A text file named x.npy: NumPy took it for a pickle and its message, relayed, advised
    loading it with allow_pickle (unsafe)."""
    write(tmp_path, {"x.npy": b"hello, this is not an array\n"})
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "x.npy"))
    assert str(err.value) == (
        f"could not read {tmp_path / 'x.npy'} as a NumPy .npy file (it does not begin with the "
        ".npy header); replace it with an intact copy (np.save writes one)"
    )


@pytest.mark.parametrize("cut", [0, 3, 60, 127, 128, 140])
def test_truncated_npy(tmp_path, cut):
    np.save(tmp_path / "whole.npy", np.zeros((4, 8), np.float32))
    write(tmp_path, {"cut.npy": (tmp_path / "whole.npy").read_bytes()[:cut]})
    with pytest.raises(DataError, match=r"could not read .*cut.npy as a NumPy .npy file .*np.save"):
        load_dataset(str(tmp_path / "cut.npy"))


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_every_truncation_and_every_flipped_byte(tmp_path, compressed):
    """Cut the archive at every length, flip every one of its bytes: each load is refused with a
    DataError or, where the byte is one nothing reads (a time stamp), gives the same data."""
    blob, path = _npz_bytes(compressed), tmp_path / "x.npz"
    expected = X.reshape(3, -1) / np.float32(255)
    variants = [blob[:cut] for cut in range(len(blob))]
    variants += [_flip(blob, at, 1) for at in range(len(blob))]
    refused = 0
    for variant in variants:
        path.write_bytes(variant)
        try:
            ds = load_dataset(str(path))
        except DataError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        np.testing.assert_array_equal(ds.x, expected)
    assert refused > len(blob)  # every truncation, and most flips


@given(
    compressed=st.booleans(),
    cut=st.integers(0, 600),
    flips=st.lists(st.tuples(st.integers(0, 599), st.integers(1, 255)), max_size=6),
)
def test_fuzzed_npz_loads_or_is_refused(compressed, cut, flips):
    blob = bytearray(_npz_bytes(compressed))
    for at, value in flips:
        if at < len(blob):
            blob[at] ^= value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npz"
        path.write_bytes(bytes(blob[:cut]) if cut < len(blob) else bytes(blob))
        try:
            ds = load_dataset(str(path))
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            assert ds.x.shape == (3, 4)


def test_arrays_are_read_at_load_time(tmp_path):
    """A damaged last member (the labels) fails in load_dataset, not later when y is used."""
    blob = _npz_bytes(False)
    data, size, _ = _member(blob, "y.npy")
    path = write(tmp_path, {"x.npz": _flip(blob, data + size - 1, 1)}) / "x.npz"
    with pytest.raises(DataError, match="Bad CRC-32 for file 'y.npy'"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    "y",
    [np.array([0.0, np.nan, 1.0]), np.array([0.5, 1, 2]), np.array(["a", "b", "c"]), [2**63, 0, 1]],
    ids=["nan", "fraction", "text", "too-large"],
)
def test_labels_that_are_not_classes(tmp_path, y):
    np.savez(tmp_path / "x.npz", x=X, y=np.asarray(y))
    with pytest.raises(DataError, match=r"labels \(y, dtype .*\) are not whole numbers"):
        load_dataset(str(tmp_path / "x.npz"))


def test_whole_float_and_bool_labels_are_classes(tmp_path):
    np.savez(tmp_path / "f.npz", x=X, y=np.array([0.0, 1.0, 2.0]))
    np.savez(tmp_path / "b.npz", x=X, y=np.array([True, False, True]))
    assert load_dataset(str(tmp_path / "f.npz")).y.tolist() == [0, 1, 2]
    assert load_dataset(str(tmp_path / "b.npz")).y.tolist() == [1, 0, 1]


# --------------------------------------------------------------------------------------------
# IDX files: truncated or corrupted gzip, truncated raw files
# --------------------------------------------------------------------------------------------


def test_damaged_idx_gz(tmp_path, tiny):
    stem = STEMS["train"][0]
    gz = tiny["gz"][f"{stem}.gz"]
    crc = bytearray(gz)
    crc[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    deflate = _flip(gz, len(gz) // 2, 4)
    write(tmp_path, {"cut.gz": gz[: len(gz) // 2], "crc.gz": bytes(crc), "deflate.gz": deflate})
    for name in ("cut.gz", "crc.gz", "deflate.gz"):
        with pytest.raises(DataError, match=f"{name} is a truncated or damaged gzip file") as err:
            read_idx(tmp_path / name, advice="do this")
        assert str(err.value).endswith("; do this")


def test_damaged_idx_in_the_data_folder_says_it_is_downloaded_again(tmp_path, tiny, tiny_checksums):
    folder = write(tmp_path / "mnist", tiny["gz"])
    name = f"{STEMS['train'][0]}.gz"
    (folder / name).write_bytes(tiny["gz"][name][:-30])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert f"{name} is a truncated or damaged gzip file" in message
    assert message.endswith(
        "delete it so it is downloaded again, or replace it with the official file"
    )
    # without an md5 table the same file fails when it is parsed, with the same advice
    folder2 = write(tmp_path / "raw" / "mnist", {name: gzip.compress(b"\0\0\x08\x03" + b"\0" * 9)})
    write(folder2, {f"{STEMS['train'][1]}.gz": tiny["gz"][f"{STEMS['train'][1]}.gz"]})
    tiny_checksums.clear()
    with pytest.raises(DataError, match="truncated or damaged: 13 bytes.*delete it so it is"):
        load_dataset("mnist", data_dir=tmp_path / "raw", download=False)


def test_damaged_mnist_archive_in_the_data_folder(tmp_path, tiny):
    x, y = tiny["arrays"]["train"]
    np.savez(tmp_path / "mnist-train.npz", x=x, y=y)
    whole = (tmp_path / "mnist-train.npz").read_bytes()
    (tmp_path / "mnist-train.npz").write_bytes(whole[: len(whole) - 100])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert "mnist-train.npz is truncated or damaged (File is not a zip file)" in message
    assert message.endswith(
        "replace it, or delete it so the official IDX files are downloaded instead"
    )


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_an_array_of_python_objects_is_not_called_damaged(tmp_path, suffix):
    """Was, for a .npy: "could not read x.npy as a NumPy .npy file (Array can't be
    memory-mapped: Python objects in dtype.); replace it with an intact copy", and for a
    .npz "is truncated or damaged": the file is intact, it holds objects, not numbers."""
    path = tmp_path / f"x{suffix}"
    ragged = np.array([[1.0, 2.0], [3.0]], dtype=object)
    if suffix == ".npy":
        np.save(path, ragged, allow_pickle=True)
    else:
        np.savez(path, x=ragged)
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert (
        "holds Python objects (dtype object), not numbers; save the data as one numeric" in message
    )
    assert "its rows of one length (pad or drop ragged ones)" in message
    assert "damaged" not in message and "intact" not in message and "\n" not in message
