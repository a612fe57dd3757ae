"""The data layer: every data set becomes a :class:`Dataset` of flattened images in [0, 1].

One entry point, :func:`load_dataset`, takes

* ``"digits"``          the UCI handwritten digits (1,797 images of 8x8), embedded in the package;
* ``"mnist"``           MNIST, from the official IDX files (downloaded when absent);
* ``"fashion-mnist"``   Fashion-MNIST, the same way;
* a path                a ``.npy`` file (memory-mapped), a ``.npz`` file, a folder of IDX files,
                        or a folder of images.

Trainers read a data set through :meth:`Dataset.get_batch`, one batch of rows at a time, so a
memory-mapped ``.npy`` larger than RAM trains too. uint8 data is scaled by 1/255 (per batch when
memory-mapped); the digits' grey levels 0..16 are scaled by 1/16.

Where MNIST and Fashion-MNIST live: ``<root>/mnist/`` and ``<root>/fashion-mnist/``, where
``<root>`` is the ``data_dir`` argument, else ``$SCRATCHVAE_DATA``, else
``$XDG_CACHE_HOME/scratchvae``, else ``~/.cache/scratchvae``. Each folder holds the four
official files (``train-images-idx3-ubyte.gz`` ... ``t10k-labels-idx1-ubyte.gz``, gzipped or
raw), or instead
``<name>-train.npz`` / ``<name>-test.npz`` with arrays ``x`` (N x 28 x 28 uint8) and ``y``.
Missing IDX files are downloaded from the public mirrors (or ``base_url``, or
``$SCRATCHVAE_MNIST_MIRROR`` / ``$SCRATCHVAE_FASHION_MNIST_MIRROR``) and kept only when their md5
matches :data:`CHECKSUMS`.

This module is an I/O boundary, so it uses NumPy directly; the arrays it returns are NumPy arrays
on the host. :func:`binarize` is the exception: it works on backend arrays through ``backend.xp``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np  # numpy-boundary: file I/O
from tqdm import tqdm

if TYPE_CHECKING:
    from scratchvae.backend import Backend

__all__ = [
    "CHECKSUMS",
    "DataError",
    "Dataset",
    "LazyScaled",
    "binarize",
    "check_n_features",
    "data_root",
    "dataset_from_array",
    "download_file",
    "fetch_idx",
    "load_dataset",
    "read_idx",
    "train_val_split",
    "validate_values",
]


class DataError(ValueError):
    """Data that cannot be used as given (a one-line message: what is wrong, what to do)."""


LIKELIHOODS = ("bernoulli", "gaussian")
BINARIZE_MODES = ("none", "threshold", "dynamic")

# Rows are validated this many elements at a time, so a memory-mapped array is never read whole.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# The Dataset
# --------------------------------------------------------------------------------------------


class LazyScaled:
    """A memory-mapped uint8 array of shape (N, D) that reads as float32 in [0, 1].

    ``lazy[idx]`` reads only the rows asked for and divides them by ``divisor`` (255);
    nothing is loaded whole. ``raw`` is the underlying ``np.memmap``.
    """

    def __init__(self, raw: np.ndarray, divisor: float = 255) -> None:
        self.raw = raw
        self.divisor = divisor
        self.shape: tuple[int, ...] = raw.shape
        self.ndim = raw.ndim
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.divide(self.raw[idx], self.divisor, dtype=np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]  # reads everything: for small data only
        return out if dtype is None else out.astype(dtype)


@dataclass(eq=False)
class Dataset:
    """N examples of D features in [0, 1] (flattened images), with optional labels.

    ``x`` is an (N, D) float32 array in [0, 1], or, for a memory-mapped file, an ``np.memmap``
    (float data) or a :class:`LazyScaled` (uint8 data, scaled per read) that stays on disk.
    Read it through :meth:`get_batch`. ``image_shape`` is (H, W) when the rows are images
    (given, or guessed for a square D), else None.
    """

    x: Any
    y: np.ndarray | None
    image_shape: tuple[int, int] | None
    name: str
    description: str

    @property
    def n(self) -> int:
        """Number of examples N."""
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features D per example."""
        return int(self.x.shape[1])

    @property
    def memmapped(self) -> bool:
        """True when ``x`` stays on disk and is read batch by batch."""
        return isinstance(self.x, (np.memmap, LazyScaled))

    def batch_buffer(self, rows: int) -> np.ndarray:
        """An uninitialised float32 (rows, D) array for :meth:`get_batch`'s ``out``."""
        return np.empty((rows, self.n_features), dtype=np.float32)

    def get_batch(self, idx: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``idx`` (a slice or a NumPy integer array) as a float32 (B, D) array: a fresh one,
        or ``out`` (float32, (B, D)) overwritten, which a training loop reuses batch to batch."""
        if out is None:
            return np.array(self.x[idx], dtype=np.float32)
        out[...] = self.x[idx]
        return out


def check_n_features(dataset: Dataset, expected: int, what: str = "the checkpoint's model") -> None:
    """Raise :class:`DataError` unless the data has ``expected`` features per example."""
    if dataset.n_features != expected:
        raise DataError(
            f"data has {dataset.n_features} features but {what} expects {expected}; "
            "pass the data it was trained on"
        )


# --------------------------------------------------------------------------------------------
# Validation and wrapping of arrays
# --------------------------------------------------------------------------------------------


def _check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise DataError(f"unknown likelihood {likelihood!r}; choose 'bernoulli' or 'gaussian'")


def _flatten(x: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Check rank and size; (N, H, W) -> (N, H*W) (a memmap stays a memmap); guess image shape."""
    if x.ndim not in (2, 3):
        raise DataError(
            f"{name} has shape {x.shape} (rank {x.ndim}); expected (N, D) vectors or "
            "(N, H, W) grayscale images"
        )
    if x.size == 0:
        raise DataError(f"{name} is empty (shape {x.shape}); it needs at least one example")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name} has dtype {x.dtype}; expected numbers (uint8 or float)")
    if x.ndim == 3:
        return x.reshape(x.shape[0], -1), (int(x.shape[1]), int(x.shape[2]))
    side = math.isqrt(x.shape[1])
    return x, ((side, side) if side * side == x.shape[1] else None)


def _scan(x: np.ndarray, name: str) -> tuple[float, float]:
    """(min, max) of ``x``, read in chunks of rows; DataError at the first NaN or Inf."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, x.shape[1]))
    lo, hi = math.inf, -math.inf
    for start in range(0, x.shape[0], rows):
        chunk = np.asarray(x[start : start + rows])
        if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            row = start + int(np.argwhere(~np.isfinite(chunk))[0, 0])
            raise DataError(
                f"{name} contains NaN or Inf (first in row {row}); remove or replace it"
            )
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    return lo, hi


def validate_values(
    x: np.ndarray, likelihood: str = "bernoulli", name: str = "data"
) -> tuple[float, float]:
    """Check ``x`` is finite and, for a Bernoulli likelihood, in [0, 1]; return (min, max).

    Works in chunks of rows, so a memory-mapped array is never loaded whole.
    """
    lo, hi = _scan(x, name)
    if likelihood == "bernoulli" and (lo < 0 or hi > 1):
        how = "divide by 255 if they are 8-bit grey levels, else " if lo >= 0 and hi <= 255 else ""
        raise DataError(
            f"{name} has values in [{lo:g}, {hi:g}] but the Bernoulli likelihood needs [0, 1]; "
            f"{how}min-max scale to [0, 1], or use likelihood='gaussian'"
        )
    return lo, hi


def _check_labels(y: Any, n: int, name: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise DataError(f"{name} has {n} examples but {len(y)} labels; pass matching x and y")
    return y.astype(np.int64)


def dataset_from_array(
    x: np.ndarray,
    y: Any = None,
    name: str = "data",
    likelihood: str = "bernoulli",
    description: str | None = None,
) -> Dataset:
    """Validate an (N, D) or (N, H, W) array and wrap it as a :class:`Dataset`.

    uint8 values are scaled by 1/255. An ``np.memmap`` stays on disk (uint8 through
    :class:`LazyScaled`); any other array becomes float32 in memory.
    """
    _check_likelihood(likelihood)
    x, image_shape = _flatten(x, name)
    y = _check_labels(y, x.shape[0], name)
    lazy = isinstance(x, np.memmap)
    if x.dtype == np.uint8:
        data = LazyScaled(x) if lazy else np.divide(x, 255, dtype=np.float32)
        values = "grey levels in [0, 1] (uint8 scaled by 1/255)"
    else:
        lo, hi = validate_values(x, likelihood, name)
        data = x if lazy else x.astype(np.float32, copy=False)
        values = "grey levels in [0, 1]" if 0 <= lo and hi <= 1 else f"values in [{lo:g}, {hi:g}]"
    if description is None:
        description = f"{name} ({x.shape[0]} x {x.shape[1]}), {values}"
        description += ", memory-mapped" if lazy else ""
    return Dataset(data, y, image_shape, name, description)


# --------------------------------------------------------------------------------------------
# Splits and binarization
# --------------------------------------------------------------------------------------------


def _holdout(n: int, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held): the last ``n_held`` of a seeded permutation of 0..n-1, each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n - n_held]), np.sort(perm[n - n_held :])


def train_val_split(
    n: int, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): sorted int arrays partitioning 0..n-1, the same for the same seed.

    The validation part has round(n * val_fraction) examples (at least one if the fraction > 0).
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val < 1:
        raise DataError(
            f"cannot split {n} examples with val_fraction={val_fraction}: no train part"
        )
    return _holdout(n, n_val, seed)


def binarize(x: Any, mode: str, backend: Backend) -> Any:
    """Bernoulli targets from grey levels ``x`` in [0, 1] (a backend array).

    * ``none``       the grey levels themselves (x is returned as is);
    * ``threshold``  1 where x > 0.5, else 0;
    * ``dynamic``    a fresh draw with P(1) = x from ``backend.rng`` (call it again each epoch).
    """
    if mode == "none":
        return x
    if mode == "threshold":
        return backend.xp.greater(x, 0.5).astype(backend.dtype)
    if mode == "dynamic":
        return backend.bernoulli(x)
    raise DataError(f"unknown binarization {mode!r}; choose 'none', 'threshold' or 'dynamic'")


# --------------------------------------------------------------------------------------------
# The embedded digits
# --------------------------------------------------------------------------------------------

DIGITS_TEST_SIZE = 297
DIGITS_SPLIT_SEED = 0


def _load_digits(split: str, likelihood: str) -> Dataset:
    """The UCI digits: 1,797 images of 8x8, grey levels 0..16 scaled by 1/16.

    There is no official test set: ``test`` is a fixed held-out part, the last 297 of the
    permutation of seed 0 (:func:`_holdout`), ``train`` the other 1,500, ``all`` all 1,797.
    """
    _check_split(split, ("train", "test", "all"), "digits")
    with (resources.files("scratchvae") / "_data" / "digits.npz").open("rb") as f:
        with np.load(f) as z:
            x, y = z["x"], z["y"]
    if split != "all":
        train, test = _holdout(len(x), DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
        keep = train if split == "train" else test
        x, y = x[keep], y[keep]
    ds = dataset_from_array(np.divide(x, 16, dtype=np.float32), y, "digits", likelihood)
    ds.description = f"UCI digits {split} ({ds.n} x 64), grey levels in [0, 1] (0..16 / 16)"
    return ds


def _check_split(split: str, allowed: tuple[str, ...], what: str) -> None:
    if split not in allowed:
        raise DataError(f"{what} has no split {split!r}; choose one of {', '.join(allowed)}")


# --------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_STANDARD = {
    "mnist": ("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/", "SCRATCHVAE_MNIST_MIRROR"),
    "fashion-mnist": (
        "Fashion-MNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "SCRATCHVAE_FASHION_MNIST_MIRROR",
    ),
}

#: md5 of the official files, gzipped (as published) and raw (decompressed). Tests replace it.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped (told by its first two bytes)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if not gzipped:
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path} is a damaged gzip file ({exc}); delete it and fetch it again"
        ) from None


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzipped or raw) into a read-only array of its declared shape.

    Header: a big-endian uint32 magic (0, 0, dtype code, ndim), then ndim big-endian uint32
    sizes, then the data. ``magic`` (2051 images, 2049 labels) is required when given.
    """
    path = Path(path)
    data = _read_bytes(path)
    code = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    dtype_code, ndim = (code >> 8) & 0xFF, code & 0xFF
    valid = code >> 16 == 0 and dtype_code in _IDX_DTYPES and ndim > 0
    if not valid or (magic is not None and code != magic):
        want = magic if magic is not None else "2051 (images) or 2049 (labels)"
        raise DataError(
            f"{path} is not an IDX file of the expected kind: magic number {code}, expected "
            f"{want}; delete it and fetch it again"
        )
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else None
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    need = header + math.prod(dims or ()) * dtype.itemsize
    if dims is None or len(data) != need:
        announced = (
            f"its header announces shape {dims} ({need} bytes)" if dims else "no full header"
        )
        raise DataError(
            f"{path} is truncated or damaged: {len(data)} bytes, {announced}; "
            "delete it and fetch it again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_local(path: Path, checksums: Mapping[str, str]) -> None:
    """DataError unless ``path`` matches its md5 in ``checksums`` (no entry: not checked).

    A ``.gz`` passes when its own md5 matches, or when its decompressed bytes match the raw
    file's md5 (a re-compressed copy holds the same data).
    """
    expected = checksums.get(path.name)
    got = _md5(path) if expected else None
    if expected and got == expected:
        return
    raw_name = path.name.removesuffix(".gz")
    if raw_name != path.name and checksums.get(raw_name):
        expected = checksums[raw_name]
        got = hashlib.md5(_read_bytes(path), usedforsecurity=False).hexdigest()
    if expected and got != expected:
        raise DataError(
            f"{path} is not the official file (md5 {got}, expected {expected}); "
            "delete it so it is downloaded again"
        )


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir``, else $SCRATCHVAE_DATA, else the user cache folder.

    The cache folder is $XDG_CACHE_HOME/scratchvae, or ~/.cache/scratchvae.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("SCRATCHVAE_DATA"):
        return Path(os.environ["SCRATCHVAE_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "scratchvae"


def _local_idx(folder: Path, stem: str) -> Path | None:
    """The raw or gzipped IDX file ``stem`` in ``folder``, raw first; None when neither is there."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _stream(url: str, out: Any, desc: str, progress: bool) -> str:
    """Copy ``url`` into the open file ``out`` with a progress bar; return the md5 of the bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, through a temporary file renamed only once md5 matches.

    On a mismatch or a failed download nothing is left behind and :class:`DataError` is raised.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(
            f"cannot write to {dest.parent} ({exc.strerror}); pass data_dir= or set "
            "SCRATCHVAE_DATA to a writable folder"
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(url, out, dest.name, progress)
        if md5 is not None and got != md5:
            raise DataError(
                f"downloaded {dest.name} from {url} has md5 {got}, expected {md5}; the mirror "
                "may be damaged, try again or use another (base_url=...)"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        http_error = isinstance(exc, urllib.error.HTTPError)
        reason = exc if http_error else getattr(exc, "reason", None) or exc
        raise DataError(
            f"could not download {url} ({reason}); check the network, use another mirror "
            f"(base_url=...), or put the file in {dest.parent}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch_idx(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    base_url: str | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
) -> tuple[Path, Path]:
    """(images, labels) IDX paths of ``name`` (mnist, fashion-mnist) and ``split`` (train, test).

    Files already in ``<data_root>/<name>/`` are checked against ``checksums`` (default
    :data:`CHECKSUMS` [name]); missing ones are downloaded from ``base_url``, else the
    mirror's environment variable, else the public mirror.
    """
    if name not in _STANDARD:
        raise DataError(f"no IDX download for {name!r}; choose 'mnist' or 'fashion-mnist'")
    title, default_url, env = _STANDARD[name]
    _check_split(split, ("train", "test"), title)
    folder = data_root(data_dir) / name
    table = CHECKSUMS[name] if checksums is None else checksums
    url = (base_url or os.environ.get(env) or default_url).rstrip("/") + "/"
    paths = []
    for stem in _IDX_STEMS[split]:
        path = _local_idx(folder, stem)
        if path is not None:
            _verify_local(path, table)
        elif not download:
            raise DataError(
                f"{title} file {stem}.gz not found in {folder}; put the official IDX files "
                "there, or allow downloading"
            )
        else:
            path = download_file(
                url + f"{stem}.gz", folder / f"{stem}.gz", table.get(f"{stem}.gz"), progress
            )
        paths.append(path)
    return paths[0], paths[1]


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y) from an .npz: key ``x`` (else its single array) and optional ``y``; loaded whole."""
    try:
        with np.load(path) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"could not read {path} as a NumPy .npz file ({exc})") from None
    key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise DataError(f"{path} holds arrays {list(arrays)}; name the data array 'x' (labels 'y')")
    return arrays[key], (arrays.get("y") if key == "x" else None)


def _load_standard(
    name: str, split: str, data_dir: Any, download: bool, likelihood: str, base_url: str | None
) -> Dataset:
    """MNIST or Fashion-MNIST: local IDX files, else a local <name>-<split>.npz, else download."""
    title = _STANDARD[name][0]
    _check_split(split, ("train", "test"), title)
    root = data_root(data_dir)
    if not all(_local_idx(root / name, stem) for stem in _IDX_STEMS[split]):
        for npz in (root / name / f"{name}-{split}.npz", root / f"{name}-{split}.npz"):
            if npz.is_file():
                x, y = _read_npz(npz)
                return _standard_dataset(x, y, name, title, split, likelihood)
    images, labels = fetch_idx(name, split, data_dir, download, base_url)
    x, y = read_idx(images, IDX_IMAGES_MAGIC), read_idx(labels, IDX_LABELS_MAGIC)
    return _standard_dataset(x, y, name, title, split, likelihood)


def _standard_dataset(
    x: np.ndarray, y: Any, name: str, title: str, split: str, likelihood: str
) -> Dataset:
    if y is not None and len(y) != len(x):
        raise DataError(f"{title} {split}: {len(x)} images but {len(y)} labels; fetch it again")
    ds = dataset_from_array(x, y, f"{title} {split}", likelihood)
    ds.name = name
    ds.description = f"{title} {split} ({ds.n} x {ds.n_features}), grey levels in [0, 1]"
    return ds


# --------------------------------------------------------------------------------------------
# The user's own files
# --------------------------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff")


def _read_gray(path: Path) -> np.ndarray:
    """One image as a uint8 (H, W) grayscale array (Pillow, which matplotlib depends on)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"could not read image {path} ({exc})") from None


def _load_image_folder(folder: Path, likelihood: str) -> Dataset:
    """Every image in ``folder`` (sorted by name), grayscale, all the same size, loaded whole."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"{folder} holds no IDX files and no images ({', '.join(_IMAGE_SUFFIXES)}); "
            "point at a .npy/.npz file or a folder of images"
        )
    images = [_read_gray(p) for p in files]
    for path, image in zip(files, images, strict=True):
        if image.shape != images[0].shape:
            raise DataError(
                f"images in {folder} differ in size: {files[0].name} is {images[0].shape} but "
                f"{path.name} is {image.shape}; resize them to one size"
            )
    return dataset_from_array(np.stack(images), None, folder.name, likelihood)


def _load_path(path: Path, split: str, likelihood: str) -> Dataset:
    """A .npy (memory-mapped), .npz, a folder of IDX files, or a folder of images."""
    stems = _IDX_STEMS.get(split)
    if path.is_dir() and stems and all(_local_idx(path, stem) for stem in stems):
        images, labels = (_local_idx(path, stem) for stem in stems)
        x, y = read_idx(images, IDX_IMAGES_MAGIC), read_idx(labels, IDX_LABELS_MAGIC)
        return _standard_dataset(x, y, path.name, path.name, split, likelihood)
    if split not in ("train", "all"):
        raise DataError(
            f"{path} is one data set with no {split!r} split; load it with split='train' and "
            "pass the other part as its own file"
        )
    if path.is_dir():
        return _load_image_folder(path, likelihood)
    if path.suffix == ".npz":
        x, y = _read_npz(path)
        return dataset_from_array(x, y, path.name, likelihood)
    if path.suffix != ".npy":
        raise DataError(f"cannot read {path}: expected a .npy or .npz file or a folder of images")
    try:
        x = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"could not read {path} as a NumPy .npy file ({exc})") from None
    return dataset_from_array(x, None, path.name, likelihood)


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def load_dataset(
    spec: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    likelihood: str = "bernoulli",
    *,
    base_url: str | None = None,
    expected_features: int | None = None,
) -> Dataset:
    """Load ``spec``: ``digits``, ``mnist``, ``fashion-mnist``, or a path (file or folder).

    ``split``: ``train`` or ``test`` (digits: a fixed held-out 297 of the 1,797, see
    :func:`_load_digits`; also ``all``). A single file or image folder has no test split.
    ``.npy`` files are memory-mapped (``np.load(mmap_mode="r")``) and read batch by batch;
    ``.npz`` files cannot be memory-mapped when compressed, so they are loaded whole (key ``x``,
    else the single array; optional ``y``). uint8 data is scaled by 1/255. With the Bernoulli
    likelihood, values must lie in [0, 1]. ``expected_features``, when given, must match D.
    """
    _check_likelihood(likelihood)
    key = spec.strip().lower().replace("_", "-")
    if key == "digits":
        ds = _load_digits(split, likelihood)
    elif key in _STANDARD:
        ds = _load_standard(key, split, data_dir, download, likelihood, base_url)
    elif Path(spec).expanduser().exists():
        ds = _load_path(Path(spec).expanduser(), split, likelihood)
    else:
        raise DataError(
            f"unknown data set {spec!r} and no such file or folder; choose digits, mnist, "
            "fashion-mnist, or a path to a .npy/.npz file or a folder of images"
        )
    if expected_features is not None:
        check_n_features(ds, expected_features, "the model")
    return ds
