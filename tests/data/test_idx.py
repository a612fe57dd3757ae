"""Tests of scratchvae.data.idx: IDX parsing, md5 checks, the data root, downloads.

Offline: downloads come from an HTTP server on 127.0.0.1 inside the test (conftest.serve)."""

from __future__ import annotations

import gzip
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from idx_helpers import DEAD_URL, SHARED, STEMS, files_under, idx_bytes, md5, write

from scratchvae.atomic import FILE_MODE, temp_files
from scratchvae.data import DataError, load_dataset
from scratchvae.data.download import STALE_AFTER
from scratchvae.data.idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    data_root,
    download_file,
    fetch_idx,
    local_idx,
    read_idx,
)

# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


def test_download_verifies_and_caches_then_loads_offline(tmp_path, tiny, tiny_checksums, serve):
    url = serve(write(tmp_path / "mirror", tiny["gz"]))
    cache = tmp_path / "cache"
    ds = load_dataset("mnist", data_dir=cache, base_url=url)
    x, y = tiny["arrays"]["train"]
    np.testing.assert_array_equal(ds.x, x.reshape(5, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.y, y)
    assert (ds.n, ds.n_features, ds.image_shape, ds.name) == (5, 784, (28, 28), "mnist")
    assert ds.description == "MNIST train (5 x 784), grey levels in [0, 1]"
    # only the train files were fetched, and no temporary file is left
    assert sorted(p.name for p in files_under(cache)) == sorted(f"{s}.gz" for s in STEMS["train"])
    again = load_dataset("mnist", data_dir=cache, base_url=DEAD_URL, download=False)
    np.testing.assert_array_equal(again.x, ds.x)


def test_checksum_mismatch_raises_and_leaves_no_file(tmp_path, tiny, tiny_checksums, serve):
    url = serve(write(tmp_path / "mirror", tiny["gz"]))
    name = "train-images-idx3-ubyte.gz"
    tiny_checksums[name] = "0" * 32
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=cache, base_url=url)
    message = str(err.value)
    assert name in message and "0" * 32 in message and md5(tiny["gz"][name]) in message
    assert files_under(cache) == []


def test_failed_download_raises_and_leaves_no_file(tmp_path, tiny, tiny_checksums, serve):
    url = serve(write(tmp_path / "mirror", {}))  # 404 for every file
    with pytest.raises(DataError, match="could not download .*404"):
        load_dataset("mnist", data_dir=tmp_path / "cache", base_url=url)
    with pytest.raises(DataError, match="could not download"):
        load_dataset("mnist", data_dir=tmp_path / "cache", base_url=DEAD_URL)
    assert files_under(tmp_path / "cache") == []


def test_download_file_through_atomic_write(tmp_path, serve):
    payload = b"IDX bytes" * 1000
    url = serve(write(tmp_path / "mirror", {"f.gz": payload})) + "f.gz"
    dest = tmp_path / "cache" / "new" / "f.gz"  # the folders are created
    assert download_file(url, dest, md5(payload), progress=False) == dest
    assert dest.read_bytes() == payload and temp_files(dest) == []
    assert dest.stat().st_mode & 0o777 == FILE_MODE  # as open() would make it, not mkstemp's 0600
    # a wrong md5 is raised inside the write: the file already there is left as it was
    dest.write_bytes(b"old")
    with pytest.raises(
        DataError, match=f"f.gz from .* has md5 {md5(payload)}, expected 0+, so it was not kept;"
    ):
        download_file(url, dest, "0" * 32, progress=False)
    assert dest.read_bytes() == b"old" and temp_files(dest) == []


def test_download_file_folder_errors(tmp_path, serve):
    url = serve(write(tmp_path / "mirror", {"f.gz": b"x"})) + "f.gz"
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(DataError, match="cannot write to .*a-file .*writable folder"):
        download_file(url, tmp_path / "a-file" / "f.gz", progress=False)
    taken = tmp_path / "cache" / "f.gz"
    taken.mkdir(parents=True)  # the rename over it fails after the download
    with pytest.raises(DataError, match="could not download .*put the file in"):
        download_file(url, taken, progress=False)
    assert taken.is_dir() and files_under(tmp_path / "cache") == []


# A download killed with SIGKILL: its temporary file, written up to the kill, stays behind.
_KILLED = """
import os, signal, sys
from pathlib import Path
from scratchvae.data import download

def killed(url, out, desc, progress):
    out.write(b"the first bytes")
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)

download._stream = killed
download.download_file(sys.argv[1], Path(sys.argv[2]), progress=False)
"""


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` look last modified ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
def test_download_removes_the_temp_file_a_killed_download_left(
    tmp_path, tiny, tiny_checksums, serve
):
    url = serve(write(tmp_path / "mirror", tiny["gz"]))
    folder, name = tmp_path / "cache" / "mnist", f"{STEMS['test'][0]}.gz"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED, url + name, str(folder / name)], env=env, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    [stale] = temp_files(folder / name)  # what the auditor found: .t10k-...gz.XXXX.tmp
    assert stale.read_bytes() == b"the first bytes"
    _age(stale, STALE_AFTER + 60)  # the user comes back later
    assert load_dataset("mnist", "test", data_dir=tmp_path / "cache", base_url=url).n == 3
    assert sorted(p.name for p in files_under(tmp_path / "cache")) == sorted(
        f"{stem}.gz" for stem in STEMS["test"]
    )


def test_stale_temp_files_go_and_live_ones_stay(tmp_path, tiny, tiny_checksums, serve):
    url = serve(write(tmp_path / "mirror", tiny["gz"]))
    folder, name = tmp_path / "mnist", f"{STEMS['test'][0]}.gz"
    stale = write(folder, {f".{name}.dead.tmp": b"killed"}) / f".{name}.dead.tmp"
    live = write(folder, {f".{name}.live.tmp": b"writing"}) / f".{name}.live.tmp"
    other = write(folder, {".notes.txt.x.tmp": b"not ours"}) / ".notes.txt.x.tmp"
    _age(stale, STALE_AFTER + 1)
    _age(live, STALE_AFTER - 60)  # another process's download, still writing: kept
    _age(other, STALE_AFTER * 10)  # the temporary file of another name: never touched
    fetch_idx("mnist", "test", tmp_path, base_url=url, progress=False)
    assert temp_files(folder / name) == [live] and other.exists()
    # the file is there now, so it is not downloaded again: using it clears the rest too
    _age(live, STALE_AFTER + 1)
    fetch_idx("mnist", "test", tmp_path, download=False)
    assert temp_files(folder / name) == [] and other.exists()


@pytest.mark.parametrize("mirror", ["127.0.0.1:8765/", "localhost:8765", "sftp://host/mnist/"])
def test_mirror_without_a_scheme(tmp_path, tiny, tiny_checksums, monkeypatch, mirror):
    monkeypatch.setenv("SCRATCHVAE_MNIST_MIRROR", mirror)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path / "cache")
    message = str(err.value)
    assert message.startswith(f"$SCRATCHVAE_MNIST_MIRROR is {mirror.rstrip('/') + '/'!r}, which")
    assert "needs http:// or https:// in front (file:// for a local folder)" in message
    fix = "not sftp://" if "://" in mirror else f"such as 'http://{mirror.rstrip('/')}/'"
    assert message.endswith(fix) and "check the network" not in message
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DataError, match="^base_url is '127.0.0.1/', which cannot be downloaded"):
        fetch_idx("mnist", data_dir=tmp_path / "cache", base_url="127.0.0.1")
    with pytest.raises(DataError, match="^the URL to download is '127.0.0.1/f.gz', which"):
        download_file("127.0.0.1/f.gz", tmp_path / "cache" / "f.gz")
    assert not (tmp_path / "cache").exists()
    # the mirror is asked only for missing files: with them all there it is never used
    write(tmp_path / "cache" / "mnist", tiny["gz"])
    assert load_dataset("mnist", data_dir=tmp_path / "cache").n == 5


def test_mirror_env_var(tmp_path, tiny, tiny_checksums, serve, monkeypatch):
    monkeypatch.setenv("SCRATCHVAE_MNIST_MIRROR", serve(write(tmp_path / "mirror", tiny["gz"])))
    assert load_dataset("mnist", split="test", data_dir=tmp_path / "cache").n == 3


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found in .*download=True"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)


def test_fetch_idx_returns_local_files_and_downloads_missing_ones(
    tmp_path, tiny, tiny_checksums, serve
):
    folder = write(tmp_path / "mnist", {STEMS["test"][0]: tiny["raw"][STEMS["test"][0]]})
    url = serve(write(tmp_path / "mirror", tiny["gz"]))
    images, labels = fetch_idx("mnist", "test", tmp_path, base_url=url, progress=False)
    assert images == folder / STEMS["test"][0]  # the raw file already there, checked
    assert labels == folder / f"{STEMS['test'][1]}.gz"  # downloaded
    assert labels.read_bytes() == tiny["gz"][labels.name]
    images.write_bytes(idx_bytes(np.zeros((3, 28, 28))))  # not the official file
    with pytest.raises(DataError, match="is not the official MNIST file"):
        fetch_idx("mnist", "test", tmp_path, download=False)
    assert fetch_idx("mnist", "test", tmp_path, download=False, checksums={}) == (images, labels)
    with pytest.raises(DataError, match="no IDX download for 'digits'; choose 'mnist'"):
        fetch_idx("digits")
    with pytest.raises(DataError, match="Fashion-MNIST has no split 'all'; choose one of train"):
        fetch_idx("fashion-mnist", "all", tmp_path)


# --------------------------------------------------------------------------------------------
# Local files: md5 checks, parsing
# --------------------------------------------------------------------------------------------


def test_raw_and_gz_read_the_same(tmp_path, tiny, tiny_checksums):
    raw = load_dataset(
        "mnist", "test", data_dir=write(tmp_path / "a" / "mnist", tiny["raw"]).parent
    )
    gz = load_dataset("mnist", "test", data_dir=write(tmp_path / "b" / "mnist", tiny["gz"]).parent)
    np.testing.assert_array_equal(raw.x, gz.x)
    np.testing.assert_array_equal(raw.y, tiny["arrays"]["test"][1])
    name = STEMS["test"][0]
    np.testing.assert_array_equal(read_idx(tmp_path / "a/mnist" / name), tiny["arrays"]["test"][0])


def test_local_file_checked_against_checksums(tmp_path, tiny, tiny_checksums):
    folder = write(tmp_path / "mnist", tiny["gz"])
    name = STEMS["train"][0]
    # a re-compressed copy of the same data passes through the raw file's md5
    (folder / f"{name}.gz").write_bytes(gzip.compress(tiny["raw"][name], compresslevel=1))
    assert load_dataset("mnist", data_dir=tmp_path, download=False).n == 5
    # different data does not
    (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28)))))
    with pytest.raises(DataError, match=f"{name}.gz is not the official MNIST file .*delete it"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_official_gz_saved_without_its_suffix(tmp_path, tiny, tiny_checksums):
    # a browser that strips ".gz" but keeps the compression: the bytes are the official .gz
    folder = write(tmp_path / "mnist", {stem: tiny["gz"][f"{stem}.gz"] for stem in STEMS["test"]})
    ds = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.y, tiny["arrays"]["test"][1])
    assert ds.n == 3 and sorted(p.name for p in folder.iterdir()) == sorted(STEMS["test"])
    # a re-compressed copy under that name passes through the raw file's md5, as with .gz
    name = STEMS["test"][0]
    (folder / name).write_bytes(gzip.compress(tiny["raw"][name], compresslevel=1))
    assert load_dataset("mnist", "test", data_dir=tmp_path, download=False).n == 3
    # another file's .gz under that name is still refused, naming what it is
    (folder / name).write_bytes(tiny["gz"][f"{STEMS['train'][0]}.gz"])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert str(err.value) == (
        f"{folder / name} is not the official MNIST file (it is MNIST's {STEMS['train'][0]}.gz); "
        "delete it so it is downloaded again, or replace it with the official file"
    )
    (folder / name).write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28)))))
    with pytest.raises(DataError, match=f"{name} is not the official MNIST file .*expected "):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_local_idx_prefers_the_raw_file(tmp_path):
    assert local_idx(tmp_path, "f") is None
    write(tmp_path, {"f.gz": b""})
    assert local_idx(tmp_path, "f") == tmp_path / "f.gz"
    write(tmp_path, {"f": b""})
    assert local_idx(tmp_path, "f") == tmp_path / "f"


def test_read_idx_other_dtypes_in_native_byte_order(tmp_path):
    floats = np.array([[1.5, -2.0, 3.25]], dtype=">f4")
    shorts = np.array([-2, 300], dtype=">i2")
    write(
        tmp_path,
        {
            "floats": struct.pack(">I2I", 0x0D02, 1, 3) + floats.tobytes(),
            "shorts": struct.pack(">II", 0x0B01, 2) + shorts.tobytes(),
        },
    )
    got = read_idx(tmp_path / "floats")
    assert got.dtype == np.float32 and got.dtype.isnative and got.shape == (1, 3)
    np.testing.assert_array_equal(got, floats)
    np.testing.assert_array_equal(read_idx(tmp_path / "shorts"), [-2, 300])
    assert (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC) == (0x0803, 0x0801)


def test_bad_magic(tmp_path, tiny):
    labels = write(tmp_path, {"labels": tiny["raw"][STEMS["train"][1]]}) / "labels"
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(labels, magic=2051)
    junk = write(tmp_path, {"junk.gz": gzip.compress(b"<html>not found</html>")}) / "junk.gz"
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(junk)


def test_truncated_files(tmp_path, tiny):
    stem = STEMS["train"][0]
    whole = tiny["raw"][stem]
    write(
        tmp_path, {"cut": whole[:-10], "head": whole[:9], "cut.gz": tiny["gz"][f"{stem}.gz"][:-20]}
    )
    with pytest.raises(
        DataError, match=f"truncated .* {len(whole) - 10} bytes, its header announces"
    ):
        read_idx(tmp_path / "cut")
    with pytest.raises(DataError, match="truncated .*no full header"):
        read_idx(tmp_path / "head")
    with pytest.raises(DataError, match="damaged gzip file"):
        read_idx(tmp_path / "cut.gz")


def test_data_root_precedence(tmp_path, tiny, tiny_checksums, monkeypatch):
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    write(env_root / "mnist", tiny["gz"])
    monkeypatch.setenv("SCRATCHVAE_DATA", str(env_root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == env_root
    assert data_root(arg_root) == arg_root
    assert load_dataset("mnist", download=False).n == 5  # found through SCRATCHVAE_DATA
    with pytest.raises(DataError, match=str(arg_root)):
        load_dataset("mnist", data_dir=arg_root, download=False)  # the argument wins
    monkeypatch.delenv("SCRATCHVAE_DATA")
    assert data_root() == tmp_path / "xdg" / "scratchvae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_root() == Path.home() / ".cache" / "scratchvae"


# --------------------------------------------------------------------------------------------
# The real MNIST, from /work/shared (skipped where it is absent)
# --------------------------------------------------------------------------------------------


def _real_mnist_idx(tmp_path: Path) -> Path:
    if not (SHARED / "data" / "mnist" / "mnist-train.npz").is_file():
        pytest.skip(f"real MNIST not available under {SHARED}")
    folder = tmp_path / "root" / "mnist"
    cmd = [sys.executable, str(SHARED / "tools" / "make_idx.py"), "mnist", str(folder)]
    subprocess.run(cmd, check=True, capture_output=True)
    return folder


def test_real_mnist_official_md5_and_contents(tmp_path, serve):
    folder = _real_mnist_idx(tmp_path)
    test = load_dataset("mnist", "test", data_dir=folder.parent, download=False)
    assert (test.n, test.n_features) == (10000, 784)
    assert np.bincount(test.y).tolist()[:3] == [980, 1135, 1032]
    assert abs(float(test.x.mean()) * 255 - 33.7912) < 1e-3
    # the download path with the official md5s, on the real files served locally
    cache = tmp_path / "cache"
    train = load_dataset("mnist", data_dir=cache, base_url=serve(folder))
    assert (train.n, np.bincount(train.y)[0]) == (60000, 5923)
    assert abs(float(train.x.mean()) - 0.1307) < 1e-4
    assert len(files_under(cache)) == 2
    # the official .gz saved without its suffix is accepted and read as gzip
    (folder / STEMS["test"][0]).write_bytes((folder / f"{STEMS['test'][0]}.gz").read_bytes())
    (folder / f"{STEMS['test'][0]}.gz").unlink()
    renamed = load_dataset("mnist", "test", data_dir=folder.parent, download=False)
    np.testing.assert_array_equal(renamed.x, test.x)
    # the same arrays as the shared .npz archives
    npz = load_dataset("mnist", "test", data_dir=SHARED / "data", download=False)
    np.testing.assert_array_equal(npz.x, test.x)
