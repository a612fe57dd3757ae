"""A wrong .gz in the data folder (a gzip bomb, a foreign file, another shape) is refused as soon
as what it holds cannot be the official file: it was decompressed whole to take its md5."""

from __future__ import annotations

import gzip
import struct
import time

import pytest
from idx_helpers import STEMS, write

from scratchvae.data import DataError, load_dataset

MEMBER = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)  # 1 MiB of zeros, ~1 kB
MEMBERS = 1000  # a gzip file of MEMBERS + 1 members (read as one stream) holds 1 GiB more


def _refused(tmp_path, split: str = "train") -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", split, data_dir=tmp_path, download=False)
    return str(err.value), time.monotonic() - start


def _refused_at_once(tmp_path, path, why: str) -> None:
    """Loading refuses ``path`` in under 0.5 s as not the official file, ``why`` ending it."""
    message, took = _refused(tmp_path)
    assert took < 0.5, took
    assert message.startswith(f"{path} is not the official MNIST file (md5 ")
    assert message.endswith(
        f"{why}); delete it so it is downloaded again, or replace it with the official file"
    )


def test_a_gzip_bomb_behind_a_valid_header_is_refused_at_once(tmp_path, tiny, tiny_checksums):
    """5 images announced, then 1 GiB of zeros: decompressed and hashed whole (seconds of
    CPU; a 10 MB bomb 10 to 20 s), now refused after the bytes its header announces."""
    name = f"{STEMS['train'][0]}.gz"
    bomb = gzip.compress(tiny["raw"][STEMS["train"][0]], mtime=0) + MEMBER * MEMBERS
    folder = write(tmp_path / "mnist", {**tiny["gz"], name: bomb})
    _refused_at_once(tmp_path, folder / name, ", and it holds more than the 3,936 bytes its "
                     "header announces")  # fmt: skip


def test_a_gzipped_file_that_is_no_idx_file_is_refused_after_its_first_bytes(
    tmp_path, tiny, tiny_checksums
):
    name = f"{STEMS['train'][1]}.gz"
    foreign = gzip.compress(b"<html>a captive portal</html>" * 1000, mtime=0) + MEMBER * MEMBERS
    write(tmp_path / "mnist", {**tiny["gz"], name: foreign})
    message, took = _refused(tmp_path)
    assert took < 0.5, took
    assert ", and what it holds is no IDX file); delete it" in message


def test_the_official_sizes_are_known_before_decompressing(tmp_path):
    """With the official md5s (no table replaced), a header announcing another shape than the
    official file's is refused before a byte of the data is read."""
    header = struct.pack(">IIII", 2051, 20000, 28, 28)  # the official test set has 10,000
    name = f"{STEMS['test'][0]}.gz"
    folder = write(tmp_path / "mnist", {name: gzip.compress(header, mtime=0) + MEMBER * MEMBERS})
    message, took = _refused(tmp_path, "test")
    assert took < 0.5, took
    assert message.startswith(f"{folder / name} is not the official MNIST file (md5 ")
    assert ", and it announces shape (20000, 28, 28) (15,680,016 bytes), not 7,840,016)" in message


def test_a_recompressed_copy_still_passes_and_a_damaged_one_is_named(
    tmp_path, tiny, tiny_checksums
):
    name = STEMS["train"][0]
    again = gzip.compress(tiny["raw"][name], compresslevel=1)  # another deflate: other bytes
    write(tmp_path / "mnist", {**tiny["gz"], f"{name}.gz": again})
    assert load_dataset("mnist", data_dir=tmp_path, download=False).n == 5
    (tmp_path / "mnist" / f"{name}.gz").write_bytes(again[:-30])  # cut short
    message, _ = _refused(tmp_path)
    assert "is a truncated or damaged gzip file" in message or "holds md5" in message
    bad = bytearray(again)
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "mnist" / f"{name}.gz").write_bytes(bytes(bad))
    with pytest.raises(DataError, match="not the official MNIST file|damaged"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_a_header_announcing_more_than_deflate_can_hold_is_refused(tmp_path, tiny, tiny_checksums):
    """Sizes of the tests' own tables are unknown: the header is bounded by the file's size."""
    name = f"{STEMS['train'][0]}.gz"
    header = struct.pack(">IIII", 2051, 60000, 28, 28)
    write(tmp_path / "mnist", {**tiny["gz"], name: gzip.compress(header, mtime=0) + MEMBER * 3})
    message, took = _refused(tmp_path)
    assert took < 0.5, took
    assert (
        ", and it announces shape (60000, 28, 28) (47,040,016 bytes), more than it can" in message
    )


def test_a_bomb_checked_against_the_callers_table_is_refused_from_its_header(
    tmp_path, tiny, tiny_checksums
):
    """The caller's table (here the tests' own) gives no file sizes, so a re-compressed copy was
    checked by decompressing what its header announced, up to deflate's 1032:1: a 1 MB file
    announcing 1 GB of images (a consistent IDX file, its md5 no match) was decompressed and
    hashed whole (seconds; a 10 MB one 10 GB) before it was refused. No file under an official
    name holds more than the official file: the header's shape is refused before any data."""
    name = f"{STEMS['train'][0]}.gz"
    n = 1_337_500  # 1,048,600,000 bytes of 28x28 images, 22 times the official 60,000
    zeros = n * 784 - MEMBERS * (1 << 20)
    bomb = gzip.compress(struct.pack(">IIII", 2051, n, 28, 28) + bytes(zeros), mtime=0)
    bomb += MEMBER * MEMBERS
    assert 900 * len(bomb) < 16 + n * 784 < 1032 * len(bomb)  # within what deflate can hold
    folder = write(tmp_path / "mnist", {**tiny["gz"], name: bomb})
    _refused_at_once(tmp_path, folder / name, ", and it announces shape (1337500, 28, 28) "
                     "(1,048,600,016 bytes), more than the official file's 47,040,016")  # fmt: skip
