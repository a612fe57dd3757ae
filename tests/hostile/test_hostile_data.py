"""Hostile and damaged data files, and the data folder, through the real command in a subprocess:
each failure is one ``scratchvae: error: ...`` line on stderr, exit status 2, no traceback, the
user's files untouched and no folder left behind (issue: hostile files and everyday friction).

Offline: every download goes to 127.0.0.1 (a server started here, or a port nobody listens on)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np  # numpy-boundary: writing crafted files
import pytest
from dead_port import dead_url

T = ["train", "--hidden", "32", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]
DEAD_URL = dead_url()  # every connection refused: any download attempt fails
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")

# The command, with MNIST's md5 table optionally replaced by that of the tiny files below.
_CODE = """
import json, os, sys
from scratchvae.data import idx
from scratchvae.cli import main
table = os.environ.get("TEST_MNIST_MD5")
if table:
    idx.CHECKSUMS["mnist"] = json.loads(table)
sys.exit(main(sys.argv[1:]))
"""


def _cli(
    cwd: Path, *args: str, md5s: dict | None = None, **env: str
) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "SCRATCHVAE_DATA": str(cwd / "default-data"),  # never the user's cache
        "SCRATCHVAE_MNIST_MIRROR": DEAD_URL,  # never the network
        "SCRATCHVAE_FASHION_MNIST_MIRROR": DEAD_URL,
        "TEST_MNIST_MD5": json.dumps(md5s) if md5s else "",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", _CODE, *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=300,
    )


def _download_line(line: str) -> bool:
    return line.startswith(("downloading http://127.0.0.1:", "downloaded "))


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    # a download says what it fetches first, on lines of its own (stderr is no terminal here)
    lines = [s for s in result.stderr.strip().splitlines() if not _download_line(s)]
    assert len(lines) == 1 and lines[0].startswith("scratchvae: error: "), result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _idx(a: np.ndarray) -> bytes:
    return struct.pack(f">I{a.ndim}I", 0x0800 | a.ndim, *a.shape) + a.tobytes()


@pytest.fixture
def tiny() -> dict[str, bytes]:
    """The two MNIST train files of 20 random 28x28 images, gzipped, by name."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = (np.arange(20) % 10).astype(np.uint8)
    return {f"{STEMS[0]}.gz": gzip.compress(_idx(x)), f"{STEMS[1]}.gz": gzip.compress(_idx(y))}


def _md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(b).hexdigest() for name, b in files.items()}


def _npz(compressed: bool = False) -> bytes:
    x = (np.random.default_rng(0).random((40, 64)) > 0.5).astype(np.float32)
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, x=x)
    return buf.getvalue()


def _flip_member_data(blob: bytes) -> bytes:
    """Flip two bytes in the middle of the first member's data (the CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        info = zf.infolist()[0]
    name_len, extra_len = struct.unpack_from("<HH", blob, info.header_offset + 26)
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    b = bytearray(blob)
    b[at] ^= 0xFF
    b[at + 1] ^= 0xFF
    return bytes(b)


@pytest.fixture
def mirror(tmp_path, serve):
    """mirror(files) -> URL of a server on 127.0.0.1 serving ``files`` (name -> bytes)."""
    count = []

    def start(files: dict[str, bytes]) -> str:
        folder = tmp_path / f"mirror{len(count)}"
        folder.mkdir()
        count.append(folder)
        for name, b in files.items():
            (folder / name).write_bytes(b)
        return serve(folder)

    return start


# ------------------------------------------------------------- defect 2: damaged data files
@pytest.mark.parametrize(
    "case, needle",
    [
        ("truncated", "trunc.npz is truncated or damaged (File is not a zip file)"),
        ("bad-crc", "trunc.npz is truncated or damaged (Bad CRC-32 for file 'x.npy')"),
        ("bad-deflate", "trunc.npz is truncated or damaged ("),
    ],
    ids=["truncated", "bad-crc", "bad-deflate"],
)
def test_damaged_npz_given_with_data(tmp_path, case, needle):
    blob = {
        "truncated": _npz()[:3000],
        "bad-crc": _flip_member_data(_npz()),
        "bad-deflate": _flip_member_data(_npz(compressed=True)),
    }[case]
    (tmp_path / "trunc.npz").write_bytes(blob)
    before = _snapshot(tmp_path)
    result = _cli(tmp_path, *T, "--data", "trunc.npz", "--out", "run")
    line = _assert_one_line_error(result, needle, "replace it with an intact copy")
    assert _snapshot(tmp_path) == before, line  # no run folder, the file as it was


def test_damaged_mnist_archive_in_the_data_folder(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=np.arange(20) % 10)
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    (tmp_path / "data" / "mnist" / "mnist-train.npz").write_bytes(buf.getvalue()[:-500])
    before = _snapshot(tmp_path)
    result = _cli(tmp_path, *T, "--data", "mnist", "--data-dir", "data", "--out", "run")
    _assert_one_line_error(
        result,
        "data/mnist/mnist-train.npz is truncated or damaged (File is not a zip file)",
        "delete it so the official IDX files are downloaded instead",
    )
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("layout", ["nested", "flat", "path"])
def test_truncated_idx_gz(tmp_path, tiny, layout):
    name = f"{STEMS[0]}.gz"
    folder = tmp_path / "data" / ("mnist" if layout == "nested" else "")
    folder.mkdir(parents=True, exist_ok=True)
    for file, b in tiny.items():
        (folder / file).write_bytes(b[: len(b) // 2] if file == name else b)
    before = _snapshot(tmp_path)
    data = ["--data", "data"] if layout == "path" else ["--data", "mnist", "--data-dir", "data"]
    # the tiny files are the official ones here (raw md5s too: a file whose md5 differs is
    # read to compare what it holds), so the cut is what is wrong with it; with the real md5s
    # its header's shape, not the official one, refuses it before (tests/data/test_wrong_gz.py)
    raw = {file.removesuffix(".gz"): gzip.decompress(b) for file, b in tiny.items()}
    md5s = _md5s({**tiny, **raw})
    result = _cli(tmp_path, *T, *data, "--out", "run", md5s=md5s)
    line = _assert_one_line_error(result, f"{name} is a truncated or damaged gzip file")
    if layout != "path":  # the official file, checked by md5, comes back once deleted
        assert line.endswith(
            "delete it so it is downloaded again, or replace it with the official file"
        )
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------- the data folder's layouts
@pytest.mark.parametrize("how", ["--data-dir", "$SCRATCHVAE_DATA"])
def test_a_folder_holding_the_idx_files_directly(tmp_path, tiny, how):
    folder = tmp_path / "downloads"
    folder.mkdir()
    for file, b in tiny.items():
        (folder / file).write_bytes(b)
    where = {"SCRATCHVAE_DATA": str(folder)} if how.startswith("$") else {}
    args = ["--data-dir", "downloads"] if how == "--data-dir" else []
    result = _cli(tmp_path, *T, "--data", "mnist", *args, "--out", "run", md5s=_md5s(tiny), **where)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MNIST train (20 x 784)" in result.stderr + result.stdout
    assert sorted(p.name for p in folder.iterdir()) == sorted(tiny)  # nothing added


# ------------------------------------------------------------- failed and refused downloads
@pytest.mark.parametrize("how", ["dead-mirror", "not-found", "wrong-bytes"])
def test_failed_download_leaves_no_folder(tmp_path, tiny, mirror, how):
    (tmp_path / "keep.txt").write_bytes(b"the user's")
    url = {
        "dead-mirror": DEAD_URL,
        "not-found": mirror({}),
        "wrong-bytes": mirror({name: b"<html>a captive portal</html>" for name in tiny}),
    }[how]
    before = _snapshot(tmp_path)
    result = _cli(
        tmp_path,
        *T,
        "--data",
        "mnist",
        "--data-dir",
        "new/data",
        "--out",
        "run",
        SCRATCHVAE_MNIST_MIRROR=url,
    )
    line = _assert_one_line_error(result, "$SCRATCHVAE_MNIST_MIRROR", "new/data/mnist")
    assert "base_url" not in line and "data_dir=" not in line
    if how == "wrong-bytes":
        assert "so it was not kept" in line
    assert _snapshot(tmp_path) == before  # no new/, no new/data/mnist/, no run/


def test_unwritable_data_folder(tmp_path):
    (tmp_path / "a-file").write_bytes(b"")
    before = _snapshot(tmp_path)
    result = _cli(tmp_path, *T, "--data", "mnist", "--data-dir", "a-file", "--out", "run")
    line = _assert_one_line_error(result, "cannot write to a-file/mnist")
    assert line.endswith("pick a writable folder with --data-dir or $SCRATCHVAE_DATA")
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------- the data folder's files
def test_official_gz_saved_without_its_suffix(tmp_path, tiny):
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for name, b in tiny.items():  # a browser that strips ".gz" and keeps the compression
        (tmp_path / "data" / "mnist" / name.removesuffix(".gz")).write_bytes(b)
    # the md5s of both forms, as the official table has them: each name is checked
    raw = {name.removesuffix(".gz"): gzip.decompress(b) for name, b in tiny.items()}
    md5s = _md5s({**tiny, **raw})
    result = _cli(tmp_path, *T, "--data", "mnist", "--data-dir", "data", "--out", "run", md5s=md5s)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MNIST train (20 x 784)" in result.stderr + result.stdout


# ------------------------------------------------------------- messages in the CLI's terms
def test_mirror_without_a_scheme(tmp_path):
    before = _snapshot(tmp_path)
    result = _cli(
        tmp_path, *T, "--data", "mnist", "--data-dir", "new", "--out", "run",
        SCRATCHVAE_MNIST_MIRROR="127.0.0.1:8765/",
    )  # fmt: skip
    line = _assert_one_line_error(
        result,
        "$SCRATCHVAE_MNIST_MIRROR is '127.0.0.1:8765/', which cannot be downloaded from: it "
        "needs http:// or https:// in front (file:// for a local folder), such as "
        "'http://127.0.0.1:8765/'",
    )
    assert "unknown url type" not in line and "check the network" not in line
    assert _snapshot(tmp_path) == before  # no new/, no run/


def test_values_out_of_range_name_the_flag(tmp_path):
    np.save(tmp_path / "wide.npy", np.linspace(-1, 3, 64 * 4, dtype=np.float32).reshape(4, 64))
    before = _snapshot(tmp_path)
    result = _cli(tmp_path, *T, "--data", "wide.npy", "--out", "run")
    _assert_one_line_error(
        result, "the Bernoulli likelihood needs [0, 1]", "(--likelihood gaussian, likelihood="
    )
    assert _snapshot(tmp_path) == before


def test_own_idx_folder_with_different_counts(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / f"{STEMS[0]}.gz").write_bytes(gzip.compress(_idx(x)))
    (tmp_path / "mine" / f"{STEMS[1]}.gz").write_bytes(gzip.compress(_idx(np.zeros(7, np.uint8))))
    before = _snapshot(tmp_path)
    result = _cli(tmp_path, *T, "--data", "mine", "--out", "run")
    line = _assert_one_line_error(
        result, "the IDX files in mine (", "20 images but 7 labels; they disagree: replace them"
    )
    assert "fetch" not in line
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------- too few examples to train on
def test_one_example_is_refused_before_the_run_starts(tmp_path):
    np.save(tmp_path / "onerow.npy", np.full((1, 64), 0.5, np.float32))
    before = _snapshot(tmp_path)
    # with figures (not T): they compare two examples, which is where this used to crash
    args = ["train", "--data", "onerow.npy", "--val-fraction", "0", "--epochs", "1"]
    result = _cli(tmp_path, *args, "--no-progress", "--out", "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    # (the line "training ... on onerow.npy" comes first: the command prints it before fit)
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "scratchvae: error: the data has 1 example, but training needs at least 2 (the figures "
        "compare two); use a data set of more examples"
    )
    assert _snapshot(tmp_path) == before  # no run folder
