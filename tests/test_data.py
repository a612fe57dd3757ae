"""Tests of scratchvae.data: IDX parsing and download, embedded digits, user files, validation,
splits, binarization. Offline: downloads come from an HTTP server on 127.0.0.1 inside the test."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from scratchvae import data
from scratchvae.atomic import FILE_MODE, temp_files
from scratchvae.backend import Backend
from scratchvae.data import DataError, load_dataset

SHARED = Path(__file__).parents[1].parent / "shared"
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# --------------------------------------------------------------------------------------------
# Helpers: tiny IDX files, an HTTP server, checksum tables
# --------------------------------------------------------------------------------------------


def idx_bytes(a: np.ndarray) -> bytes:
    """Raw IDX bytes of a uint8 array (magic 0x0000_08_ndim, big-endian sizes)."""
    return struct.pack(f">I{a.ndim}I", 0x0800 | a.ndim, *a.shape) + a.astype(np.uint8).tobytes()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def tiny():
    """Random 28x28 MNIST-like sets (5 train, 3 test): arrays, and raw/gz bytes of each file."""
    rng = np.random.default_rng(0)
    arrays = {
        "train": (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8)),
        "test": (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.arange(3, dtype=np.uint8)),
    }
    raw = {}
    for split, (x, y) in arrays.items():
        raw[STEMS[split][0]], raw[STEMS[split][1]] = idx_bytes(x), idx_bytes(y)
    gz = {f"{stem}.gz": gzip.compress(b, mtime=0) for stem, b in raw.items()}
    return {"arrays": arrays, "raw": raw, "gz": gz}


@pytest.fixture
def tiny_checksums(tiny, monkeypatch):
    """Replace the official MNIST md5 table with the tiny files' md5s (gz and raw)."""
    table = {name: md5(b) for name, b in {**tiny["raw"], **tiny["gz"]}.items()}
    monkeypatch.setitem(data.CHECKSUMS, "mnist", table)
    return table


def write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, b in files.items():
        (folder / name).write_bytes(b)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


DEAD_URL = "http://127.0.0.1:9/"  # nothing listens: any download attempt fails


# --------------------------------------------------------------------------------------------
# Download, checksums, IDX parsing
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
    assert data.download_file(url, dest, md5(payload), progress=False) == dest
    assert dest.read_bytes() == payload and temp_files(dest) == []
    assert dest.stat().st_mode & 0o777 == FILE_MODE  # as open() would make it, not mkstemp's 0600
    # a wrong md5 is raised inside the write: the file already there is left as it was
    dest.write_bytes(b"old")
    with pytest.raises(DataError, match=f"f.gz from .* has md5 {md5(payload)}, expected 0+;"):
        data.download_file(url, dest, "0" * 32, progress=False)
    assert dest.read_bytes() == b"old" and temp_files(dest) == []


def test_download_file_folder_errors(tmp_path, serve):
    url = serve(write(tmp_path / "mirror", {"f.gz": b"x"})) + "f.gz"
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(DataError, match="cannot write to .*a-file .*writable folder"):
        data.download_file(url, tmp_path / "a-file" / "f.gz", progress=False)
    taken = tmp_path / "cache" / "f.gz"
    taken.mkdir(parents=True)  # the rename over it fails after the download
    with pytest.raises(DataError, match="could not download .*put the file in"):
        data.download_file(url, taken, progress=False)
    assert taken.is_dir() and files_under(tmp_path / "cache") == []


def test_mirror_env_var(tmp_path, tiny, tiny_checksums, serve, monkeypatch):
    monkeypatch.setenv("SCRATCHVAE_MNIST_MIRROR", serve(write(tmp_path / "mirror", tiny["gz"])))
    assert load_dataset("mnist", split="test", data_dir=tmp_path / "cache").n == 3


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found in .*allow"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)


def test_raw_and_gz_read_the_same(tmp_path, tiny, tiny_checksums):
    raw = load_dataset(
        "mnist", "test", data_dir=write(tmp_path / "a" / "mnist", tiny["raw"]).parent
    )
    gz = load_dataset("mnist", "test", data_dir=write(tmp_path / "b" / "mnist", tiny["gz"]).parent)
    np.testing.assert_array_equal(raw.x, gz.x)
    np.testing.assert_array_equal(raw.y, tiny["arrays"]["test"][1])
    name = STEMS["test"][0]
    np.testing.assert_array_equal(
        data.read_idx(tmp_path / "a/mnist" / name), tiny["arrays"]["test"][0]
    )


def test_local_file_checked_against_checksums(tmp_path, tiny, tiny_checksums):
    folder = write(tmp_path / "mnist", tiny["gz"])
    name = STEMS["train"][0]
    # a re-compressed copy of the same data passes through the raw file's md5
    (folder / f"{name}.gz").write_bytes(gzip.compress(tiny["raw"][name], compresslevel=1))
    assert load_dataset("mnist", data_dir=tmp_path, download=False).n == 5
    # different data does not
    (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28)))))
    with pytest.raises(DataError, match=f"{name}.gz is not the official file .*delete it"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_bad_magic(tmp_path, tiny):
    labels = write(tmp_path, {"labels": tiny["raw"][STEMS["train"][1]]}) / "labels"
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        data.read_idx(labels, magic=2051)
    junk = write(tmp_path, {"junk.gz": gzip.compress(b"<html>not found</html>")}) / "junk.gz"
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(junk)


def test_truncated_files(tmp_path, tiny):
    stem = STEMS["train"][0]
    whole = tiny["raw"][stem]
    write(
        tmp_path, {"cut": whole[:-10], "head": whole[:9], "cut.gz": tiny["gz"][f"{stem}.gz"][:-20]}
    )
    with pytest.raises(
        DataError, match=f"truncated .* {len(whole) - 10} bytes, its header announces"
    ):
        data.read_idx(tmp_path / "cut")
    with pytest.raises(DataError, match="truncated .*no full header"):
        data.read_idx(tmp_path / "head")
    with pytest.raises(DataError, match="damaged gzip file"):
        data.read_idx(tmp_path / "cut.gz")


def test_data_root_precedence(tmp_path, tiny, tiny_checksums, monkeypatch):
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    write(env_root / "mnist", tiny["gz"])
    monkeypatch.setenv("SCRATCHVAE_DATA", str(env_root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.data_root() == env_root
    assert data.data_root(arg_root) == arg_root
    assert load_dataset("mnist", download=False).n == 5  # found through SCRATCHVAE_DATA
    with pytest.raises(DataError, match=str(arg_root)):
        load_dataset("mnist", data_dir=arg_root, download=False)  # the argument wins
    monkeypatch.delenv("SCRATCHVAE_DATA")
    assert data.data_root() == tmp_path / "xdg" / "scratchvae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.data_root() == Path.home() / ".cache" / "scratchvae"


def test_npz_folder_format(tmp_path, tiny):
    x, y = tiny["arrays"]["test"]
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "mnist-test.npz", x=x, y=y)
    ds = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(ds.get_batch(slice(None)), x.reshape(3, -1) / np.float32(255))
    assert ds.description.startswith("MNIST test (3 x 784)")


def test_folder_of_idx_files_as_path(tmp_path, tiny):
    folder = write(tmp_path / "mine", tiny["gz"])
    assert load_dataset(str(folder), split="test").n == 3


# --------------------------------------------------------------------------------------------
# Embedded digits and splits
# --------------------------------------------------------------------------------------------


def test_digits_embedded():
    ds = load_dataset("digits", split="all")
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32 and ds.image_shape == (8, 8)
    assert ds.x.min() == 0 and ds.x.max() == 1
    assert set(ds.y) == set(range(10)) and len(ds.y) == 1797


def test_digits_split_is_fixed_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (train.n, test.n) == (1500, 297)
    rest, held = data.dataset.holdout(1797, 297, data.DIGITS_SPLIT_SEED)
    assert len(np.union1d(rest, held)) == 1797
    everything = load_dataset("digits", "all")
    np.testing.assert_array_equal(test.x, everything.x[held])
    np.testing.assert_array_equal(load_dataset("digits", "test").x, test.x)
    # pinned, so a change of NumPy's permutation (which would move the test set) is noticed
    assert held[:5].tolist() == [1, 3, 4, 6, 7]


def test_train_val_split():
    train, val = data.train_val_split(100, 0.2, seed=3)
    assert (len(train), len(val)) == (80, 20) and train.dtype.kind == "i"
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    again = data.train_val_split(100, 0.2, seed=3)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(data.train_val_split(100, 0.2, seed=4)[1], val)
    assert len(data.train_val_split(5, 0.01)[1]) == 1 and len(data.train_val_split(5, 0)[1]) == 0
    with pytest.raises(DataError, match="val_fraction"):
        data.train_val_split(10, 1.0)


def test_split_errors(tmp_path):
    with pytest.raises(DataError, match="digits has no split 'valid'; choose one of train"):
        load_dataset("digits", split="valid")
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match="no 'test' split"):
        load_dataset(str(tmp_path / "a.npy"), split="test")
    with pytest.raises(DataError, match="unknown data set 'mnsit'"):
        load_dataset("mnsit")


# --------------------------------------------------------------------------------------------
# The user's own files
# --------------------------------------------------------------------------------------------


def test_npy_float_is_memory_mapped(tmp_path):
    x = np.random.default_rng(0).random((6, 5, 5), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert isinstance(ds.x, np.memmap) and ds.memmapped
    assert ds.x.shape == (6, 25) and ds.image_shape == (5, 5)
    batch = ds.get_batch(np.array([4, 1]))
    assert type(batch) is np.ndarray and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, x.reshape(6, -1)[[4, 1]])


def test_npy_uint8_is_scaled_per_batch(tmp_path):
    x = np.arange(60, dtype=np.uint8).reshape(2, 30) * 4
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert isinstance(ds.x, data.LazyScaled) and isinstance(ds.x.raw, np.memmap)
    assert ds.image_shape is None and "uint8 scaled by 1/255" in ds.description
    np.testing.assert_allclose(ds.get_batch(slice(1, 2)), x[1:] / np.float32(255), rtol=0)
    np.testing.assert_allclose(ds.x[0], x[0] / np.float32(255), rtol=0)


def test_npz(tmp_path):
    x, y = np.full((4, 9), 0.5, np.float64), np.array([1, 2, 3, 4])
    np.savez_compressed(tmp_path / "xy.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "xy.npz"))
    assert ds.x.dtype == np.float32 and not ds.memmapped and ds.image_shape == (3, 3)
    np.testing.assert_array_equal(ds.y, y)
    np.savez(tmp_path / "single.npz", pixels=np.zeros((3, 4), np.uint8))
    assert load_dataset(str(tmp_path / "single.npz")).y is None
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; name the data array 'x'"):
        load_dataset(str(tmp_path / "two.npz"))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2, 7, 5), dtype=np.uint8)
    for i, g in enumerate(grey):
        Image.fromarray(g).save(tmp_path / f"img{i}.png")
    Image.fromarray(np.stack([grey[0]] * 3, axis=-1)).save(tmp_path / "img2.png")  # RGB
    ds = load_dataset(str(tmp_path))
    assert (ds.n, ds.n_features, ds.image_shape) == (3, 35, (7, 5))
    np.testing.assert_allclose(ds.x[:2], grey.reshape(2, -1) / np.float32(255), rtol=0)
    np.testing.assert_allclose(ds.x[2], ds.x[0], atol=1 / 255)
    Image.fromarray(np.zeros((8, 5), np.uint8)).save(tmp_path / "img3.png")
    with pytest.raises(DataError, match="differ in size: img0.png is .* img3.png is"):
        load_dataset(str(tmp_path))


# --------------------------------------------------------------------------------------------
# Validation errors
# --------------------------------------------------------------------------------------------


def test_nan_and_inf_found_in_chunks(tmp_path, monkeypatch):
    x = np.full((50, 4), 0.5, np.float32)
    x[37, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(data.dataset, "_CHUNK_ELEMENTS", 12)  # 3 rows a chunk
    with pytest.raises(DataError, match="contains NaN or Inf \\(first in row 37\\)"):
        load_dataset(str(tmp_path / "x.npy"))
    x[37, 2], x[3, 0] = 0.5, np.inf
    with pytest.raises(DataError, match="row 3"):
        data.dataset_from_array(x, likelihood="gaussian")


def test_validation_reads_rows_in_chunks(monkeypatch):
    class Spy:
        shape = (1000, 10)
        rows_read: list[int] = []

        def __getitem__(self, idx):
            self.rows_read.append(idx.stop - idx.start)
            return np.zeros((min(idx.stop, 1000) - idx.start, 10), np.float32)

    monkeypatch.setattr(data.dataset, "_CHUNK_ELEMENTS", 1000)
    assert data.validate_values(Spy()) == (0.0, 0.0)
    assert max(Spy.rows_read) == 100 and len(Spy.rows_read) == 10


def test_wrong_rank_and_empty():
    with pytest.raises(DataError, match=r"shape \(2, 3, 4, 1\) \(rank 4\); expected \(N, D\)"):
        data.dataset_from_array(np.zeros((2, 3, 4, 1)))
    with pytest.raises(DataError, match="rank 1"):
        data.dataset_from_array(np.zeros(5))
    with pytest.raises(DataError, match="is empty"):
        data.dataset_from_array(np.zeros((0, 784)))


def test_values_outside_unit_interval():
    with pytest.raises(DataError, match=r"values in \[0, 255\] .*Bernoulli.*divide by 255"):
        data.dataset_from_array(np.array([[0.0, 255.0]]))
    with pytest.raises(DataError, match=r"\[-1, 1\].*min-max scale to \[0, 1\]") as err:
        data.dataset_from_array(np.array([[-1.0, 1.0]]))
    assert "divide by 255" not in str(err.value)
    ds = data.dataset_from_array(np.array([[-1.0, 1.0]]), likelihood="gaussian")
    assert "values in [-1, 1]" in ds.description


def test_feature_count_mismatch():
    ds = load_dataset("digits")
    with pytest.raises(DataError) as err:
        data.check_n_features(ds, 784)
    assert str(err.value) == (
        "data has 64 features but the checkpoint's model expects 784; "
        "pass the data it was trained on"
    )
    with pytest.raises(DataError, match="64 features but the model expects 784"):
        load_dataset("digits", expected_features=784)
    data.check_n_features(ds, 64)


def test_label_count_and_likelihood_checked():
    with pytest.raises(DataError, match="3 examples but 2 labels"):
        data.dataset_from_array(np.zeros((3, 4)), y=[0, 1])
    with pytest.raises(DataError, match="unknown likelihood 'poisson'"):
        load_dataset("digits", likelihood="poisson")


# --------------------------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------------------------


def test_binarize_none_and_threshold():
    bk = Backend("numpy", "float32", seed=0)
    x = bk.asarray([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert data.binarize(x, "none", bk) is x
    t = data.binarize(x, "threshold", bk)
    assert t.dtype == np.float32 and set(np.unique(t)) <= {0.0, 1.0}
    np.testing.assert_array_equal(t, [[0, 0, 0, 1, 1]])
    with pytest.raises(DataError, match="unknown binarization 'otsu'"):
        data.binarize(x, "otsu", bk)


def test_binarize_dynamic_is_a_fresh_bernoulli_draw():
    bk = Backend("numpy", "float32", seed=0)
    x = bk.asarray(load_dataset("digits").get_batch(slice(0, 100)))
    first, second = data.binarize(x, "dynamic", bk), data.binarize(x, "dynamic", bk)
    assert set(np.unique(first)) <= {0.0, 1.0} and not np.array_equal(first, second)
    draws = np.mean([data.binarize(x, "dynamic", bk) for _ in range(100)], axis=0)
    # each entry: mean of 100 Bernoulli(p) draws; the whole-array mean has sd < 0.001
    assert abs(draws.mean() - x.mean()) < 0.004
    assert np.abs(draws - x).max() < 0.3
    assert (draws[x == 0] == 0).all() and (draws[x == 1] == 1).all()


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
    # the same arrays as the shared .npz archives
    npz = load_dataset("mnist", "test", data_dir=SHARED / "data", download=False)
    np.testing.assert_array_equal(npz.x, test.x)


@pytest.mark.parametrize("name", ["digits", "npy-uint8"])
def test_get_batch_into_a_reused_buffer_equals_a_fresh_batch(name, tmp_path):
    if name == "digits":
        ds = load_dataset("digits")
    else:
        np.save(tmp_path / "x.npy", np.arange(200, dtype=np.uint8).reshape(8, 25))
        ds = load_dataset(str(tmp_path / "x.npy"))
    buf = ds.batch_buffer(3)
    assert buf.shape == (3, ds.n_features) and buf.dtype == np.float32
    for idx in (np.array([5, 0, 2]), slice(1, 4)):
        got = ds.get_batch(idx, out=buf)
        assert got is buf
        np.testing.assert_array_equal(got, ds.get_batch(idx))
