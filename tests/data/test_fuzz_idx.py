"""Hostile IDX files, property-tested: a valid file (images or labels, raw or gzipped) cut at
every length class, its header bytes flipped (magic, dtype code, number of dimensions, sizes,
huge ones included), bytes appended, images and labels of different counts. Each read ends in
the array its header declares or in one DataError line naming the file; never an error from
inside gzip or NumPy, never an allocation the file cannot back."""

from __future__ import annotations

import gzip
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from idx_helpers import STEMS, idx_bytes, write

from scratchvae.data import DataError, load_dataset
from scratchvae.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx

IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
LABELS = np.array([7, 1], dtype=np.uint8)
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _declared(blob: bytes) -> np.ndarray | None:
    """What a correct reader returns for the raw IDX bytes ``blob``: the array its header
    declares, when the header is valid and the data has exactly the declared size; else None."""
    if len(blob) < 4 or blob[:2] != b"\0\0" or blob[2] not in _DTYPES or blob[3] == 0:
        return None
    ndim, dtype = blob[3], np.dtype(_DTYPES[blob[2]])
    header = 4 + 4 * ndim
    if len(blob) < header:
        return None
    dims = struct.unpack(f">{ndim}I", blob[4:header])
    if len(blob) != header + int(np.prod(dims, dtype=object)) * dtype.itemsize:
        return None
    return np.frombuffer(blob, dtype, offset=header).reshape(dims)


def _check_one(blob: bytes, gzipped: bool, magic: int | None) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f-idx-ubyte"
        path.write_bytes(gzip.compress(blob, mtime=0) if gzipped else blob)
        expected = _declared(blob)
        if expected is not None and magic is not None and blob[:4] != struct.pack(">I", magic):
            expected = None
        try:
            got = read_idx(path, magic, advice="do this")
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message, message
            assert expected is None, message  # a good file refused
            return "refused"
        assert expected is not None, f"accepted {blob[:16]!r}..."
        return "read"
        assert got.shape == expected.shape and got.dtype == expected.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, expected)


def _mutations() -> st.SearchStrategy:
    """(kind, raw IDX bytes, magic the reader is asked for) with a few header fields changed."""
    field = st.sampled_from(["magic0", "magic1", "dtype", "ndim", "dim", "append", "cut"])
    return st.tuples(
        st.sampled_from(["images", "labels"]),
        st.lists(st.tuples(field, st.integers(0, 2**32 - 1)), max_size=3),
        st.sampled_from(["magic", "none"]),
    )


def _mutate(kind: str, changes: list[tuple[str, int]]) -> bytes:
    blob = bytearray(idx_bytes(IMAGES if kind == "images" else LABELS))
    for what, value in changes:
        ndim = blob[3] if len(blob) >= 4 else 0
        if what in ("magic0", "magic1", "dtype", "ndim") and len(blob) >= 4:
            blob[["magic0", "magic1", "dtype", "ndim"].index(what)] = value % 256
        elif what == "dim" and ndim and len(blob) >= 4 + 4 * ndim:
            at = 4 + 4 * (value % ndim)
            # a size near the top (terabytes), a small one, or any
            size = [2**32 - 1 - value % 7, value % 5, value][value % 3]
            blob[at : at + 4] = struct.pack(">I", size)
        elif what == "append":
            blob += bytes(value % 9)
        elif what == "cut":  # every length class: empty, inside the magic, the sizes, the data
            blob = blob[: value % (len(blob) + 1)]
    return bytes(blob)


@given(mutation=_mutations(), gzipped=st.booleans())
def test_mutated_idx_reads_as_declared_or_is_one_data_error(mutation, gzipped):
    kind, changes, ask = mutation
    magic = None if ask == "none" else (IDX_IMAGES_MAGIC if kind == "images" else IDX_LABELS_MAGIC)
    event(_check_one(_mutate(kind, changes), gzipped, magic))


@pytest.mark.parametrize("gzipped", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("kind", ["images", "labels"])
def test_every_truncation_of_an_idx_file(kind, gzipped):
    blob = idx_bytes(IMAGES if kind == "images" else LABELS)
    for cut in range(len(blob) + 1):
        _check_one(blob[:cut], gzipped, IDX_IMAGES_MAGIC if kind == "images" else IDX_LABELS_MAGIC)


def _refused_within(path, match: str, peak_bytes: int) -> None:
    """read_idx(path) refuses the file (``match``), its memory peak under ``peak_bytes``."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=match):
            read_idx(path, IDX_IMAGES_MAGIC)
        assert tracemalloc.get_traced_memory()[1] < peak_bytes
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dims", [(2**32 - 1,) * 3, (60000, 2**31, 28), (1, 1, 2**32 - 1)])
@pytest.mark.parametrize("gzipped", [False, True], ids=["raw", "gz"])
def test_huge_announced_sizes_are_refused_without_allocating(tmp_path, dims, gzipped):
    blob = struct.pack(">I3I", IDX_IMAGES_MAGIC, *dims) + bytes(100)
    path = write(tmp_path, {"x": gzip.compress(blob) if gzipped else blob}) / "x"
    _refused_within(path, r"x is truncated or damaged: .*announces shape", 1 << 20)


def _gzip_bomb(header: bytes, zeros: int) -> bytes:
    """A gzip stream of ``header`` then ``zeros`` zero bytes (about 1,000 to 1 compressed)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts, chunk = [comp.compress(header)], bytes(1 << 20)
    parts += [comp.compress(chunk) for _ in range(zeros >> 20)]
    return b"".join([*parts, comp.flush()])


def test_a_gzip_bomb_is_read_no_further_than_its_header_announces(tmp_path):
    """The header announces one 28x28 image, the stream holds 64 MiB more: the reader stops
    after the announced bytes (it read the whole stream into memory, twice over: a 10 MB file
    could take 20 GB)."""
    header = struct.pack(">I3I", IDX_IMAGES_MAGIC, 1, 28, 28)
    path = write(tmp_path, {"bomb.gz": _gzip_bomb(header, 64 << 20)}) / "bomb.gz"
    _refused_within(path, r"bomb.gz is damaged: it holds more than the 800 ", 8 << 20)


def test_a_gzip_stream_announcing_more_than_deflate_can_hold_is_refused_unread(tmp_path):
    """Deflate expands at most 1032 to 1: a 40 kB file announcing 400 MB is damaged, whatever
    its stream holds, and is refused before anything is allocated or decompressed."""
    header = struct.pack(">I3I", IDX_IMAGES_MAGIC, 500_000, 28, 28)
    path = write(tmp_path, {"x.gz": _gzip_bomb(header, 40 << 20)}) / "x.gz"
    _refused_within(path, r"x.gz is truncated or damaged: .* gzipped", 1 << 20)


def test_more_than_memory_holds_is_refused_up_front(tmp_path, monkeypatch):
    from scratchvae.data import dataset

    monkeypatch.setattr(dataset, "host_available_memory", lambda: 1000)
    path = write(tmp_path, {"x": idx_bytes(np.zeros((2, 28, 28), np.uint8))}) / "x"
    with pytest.raises(DataError, match=r"x announces shape \(2, 28, 28\) .* of memory is avail"):
        read_idx(path, IDX_IMAGES_MAGIC)


@given(
    n_images=st.integers(0, 3),
    n_labels=st.integers(0, 3),
    gz=st.tuples(st.booleans(), st.booleans()),
)
def test_an_idx_folder_loads_or_names_the_disagreement(n_images, n_labels, gz):
    x = np.full((n_images, 4, 4), 51, np.uint8)
    y = np.arange(n_labels, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for stem, arr, zipped in zip(STEMS["train"], (x, y), gz, strict=True):
            blob = idx_bytes(arr)
            files[stem + (".gz" if zipped else "")] = gzip.compress(blob) if zipped else blob
        write(Path(folder), files)
        try:
            ds = load_dataset(folder)
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message
            assert ("0 images" in message or "is empty" in message) or n_images != n_labels
            return
        assert ds.n == n_images == n_labels
        np.testing.assert_allclose(ds.get_batch(slice(None)), 0.2)
        assert ds.y.tolist() == list(range(n_labels))
