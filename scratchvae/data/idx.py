"""IDX files (MNIST, Fashion-MNIST): parsing, md5 checks, where they live, what to download.

:func:`read_idx` parses an IDX file, gzipped or raw. :func:`fetch_idx` finds the official files of
MNIST or Fashion-MNIST in :func:`idx_folder` (``<data_root>/<name>/``, or the data root itself
when it holds them directly) and downloads the missing ones from the public mirrors (or
``base_url``, or ``$SCRATCHVAE_MNIST_MIRROR`` / ``$SCRATCHVAE_FASHION_MNIST_MIRROR``) with
:func:`~scratchvae.data.download.download_file`, which keeps a file only when its md5 matches
:data:`CHECKSUMS` and removes the folders it created when it keeps nothing.

This module is an I/O boundary, so it uses NumPy directly; the arrays it returns are NumPy arrays
on the host.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: parsing IDX files

from .dataset import DataError, MissingFiles, check_memory, check_regular_file, check_split
from .download import check_url, download_file, remove_stale_temps

__all__ = [
    "CHECKSUMS",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "IDX_SETS",
    "IDX_STEMS",
    "data_root",
    "download_file",
    "fetch_idx",
    "idx_folder",
    "local_idx",
    "read_idx",
]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: The two official files of each split, (images, labels), without ``.gz``.
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: The IDX data sets: name -> (title, public mirror, environment variable naming another).
IDX_SETS = {
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

#: Sizes of the official raw files, by name (the same shapes in both sets): no file under an
#: official name holds more, whatever table it is checked against.
_OFFICIAL_SIZES = {
    "train-images-idx3-ubyte": 16 + 60000 * 784,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 784,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
#: ... and by their md5: a gzipped file whose IDX header announces another size cannot hold the
#: official data.
_RAW_SIZES = {
    CHECKSUMS[name][stem]: size for name in CHECKSUMS for stem, size in _OFFICIAL_SIZES.items()
}

#: What to do about a damaged or wrong file in the data folder.
REFETCH = "delete it so it is downloaded again, or replace it with the official file"


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (its type when it has none)."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


@contextmanager
def _opened(path: Path, advice: str) -> Iterator[tuple[Any, int, bool]]:
    """(source, size on disk, gzipped): the file open for reading, decompressed when it is
    gzipped (told by its first two bytes). A failure to read it, in the ``with`` block too, is
    one :class:`DataError` line ending with ``advice`` where the file is damaged."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            with gzip.open(f, "rb") if gzipped else f as source:
                yield source, size, gzipped
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # damage inside the gzip stream
        raise DataError(
            f"{path} is a truncated or damaged gzip file ({_reason(exc)}); {advice}"
        ) from None
    except OSError as exc:  # the file itself: permissions, a folder, a disk error
        raise DataError(f"cannot read {path} ({exc.strerror or _reason(exc)})") from None


#: Deflate expands its input at most 1032 to 1, so a gzipped file that announces more bytes
#: than that is truncated or crafted, whatever its stream holds.
_MAX_GZIP_RATIO = 1032


def _fill(source: Any, buffer: memoryview) -> int:
    """Read from ``source`` into ``buffer`` until it is full or the data ends; bytes read."""
    done = 0
    while done < len(buffer) and (n := source.readinto(buffer[done : done + (1 << 20)])):
        done += n
    return done


def read_idx(
    path: str | os.PathLike,
    magic: int | None = None,
    *,
    advice: str = "replace it with an intact copy",
) -> np.ndarray:
    """Parse an IDX file (gzipped or raw) into a read-only array of its declared shape.

    Header: a big-endian uint32 magic (0, 0, dtype code, ndim), then ndim big-endian uint32
    sizes, then the data. ``magic`` (2051 images, 2049 labels) is required when given. A damaged
    file raises :class:`DataError`, whose message ends with ``advice`` (what to do).

    The header is read first, and the data only up to the size it announces: a size the file
    cannot hold (a raw file of another size, a gzipped one beyond deflate's 1032:1, more than
    the memory available) is refused before anything is allocated, and a gzip stream that
    holds more is refused without decompressing the rest.
    """
    path = Path(path)
    check_regular_file(path)
    with _opened(path, advice) as (source, size, gzipped):
        return _parse_idx(path, source, size, gzipped, magic, advice)


def _parse_idx(
    path: Path, source: Any, size: int, gzipped: bool, magic: int | None, advice: str
) -> np.ndarray:
    """:func:`read_idx` on the open (decompressing) ``source`` of the file ``path`` of ``size``
    bytes on disk."""
    head = source.read(4)
    code = int.from_bytes(head, "big") if len(head) == 4 else -1
    dtype_code, ndim = (code >> 8) & 0xFF, code & 0xFF
    valid = code >> 16 == 0 and dtype_code in _IDX_DTYPES and ndim > 0
    if not valid or (magic is not None and code != magic):
        want = magic if magic is not None else "2051 (images) or 2049 (labels)"
        raise DataError(
            f"{path} is not an IDX file of the expected kind: magic number {code}, expected "
            f"{want}; {advice}"
        )
    header, sizes = 4 + 4 * ndim, source.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(
            f"{path} is truncated or damaged: {4 + len(sizes)} bytes, no full header; {advice}"
        )
    dims = struct.unpack(f">{ndim}I", sizes)
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    nbytes = math.prod(dims) * dtype.itemsize
    need, held = header + nbytes, f"{size} bytes gzipped" if gzipped else f"{size} bytes"
    announced = f"its header announces shape {dims} ({need} bytes)"
    if need > size * _MAX_GZIP_RATIO if gzipped else need != size:
        raise DataError(f"{path} is truncated or damaged: {held}, {announced}; {advice}")
    check_memory(nbytes, f"{path} announces shape {dims}", advice)
    data = bytearray(nbytes)
    got = _fill(source, memoryview(data))
    if got < nbytes:
        raise DataError(
            f"{path} is truncated or damaged: {header + got} bytes, {announced}; {advice}"
        )
    if source.read(1):  # to the end: the gzip stream's CRC and length are checked there
        raise DataError(
            f"{path} is damaged: it holds more than the {need} bytes its header announces "
            f"(shape {dims}); {advice}"
        )
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    arr.flags.writeable = False
    return arr


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _identify(md5: str) -> str | None:
    """Which official file has this ``md5`` ("MNIST's t10k-...-ubyte.gz"); None if none."""
    for name, table in CHECKSUMS.items():
        for file, official in table.items():
            if official == md5:
                return f"{IDX_SETS[name][0]}'s {file}"
    return None


def _verify_local(path: Path, checksums: Mapping[str, str], title: str) -> None:
    """DataError unless ``path`` matches its md5 in ``checksums`` (no entry: not checked).

    Either name may hold either form: the raw file named ``.gz`` is read as raw, and the
    official ``.gz`` saved without its suffix (a browser that strips it) is read as gzip. A
    gzipped file also passes when what it holds matches the raw file's md5 (a re-compressed
    copy holds the same data).
    """
    stem = path.name.removesuffix(".gz")
    raw_expected, gz_expected = checksums.get(stem), checksums.get(f"{stem}.gz")
    if not raw_expected and not gz_expected:
        return
    expected = checksums.get(path.name) or raw_expected or gz_expected
    got = _md5(path)
    if got in (raw_expected, gz_expected):
        return
    other = _identify(got)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    what = f"it is {other}" if other else f"md5 {got}, expected {expected}"
    if other is None and raw_expected and gzipped:  # a re-compressed copy: compare what it holds
        held, unlike = _held_md5(path, _RAW_SIZES.get(raw_expected), _OFFICIAL_SIZES.get(stem))
        if held == raw_expected:
            return
        other = _identify(held) if held else None
        what = f"it is {other}" if other else f"{what}, and {unlike or f'it holds md5 {held}'}"
    raise DataError(f"{path} is not the official {title} file ({what}); {REFETCH}")


def _held_md5(
    path: Path, size: int | None, most: int | None = None
) -> tuple[str | None, str | None]:
    """(md5, None) of what the gzipped file ``path`` holds, or (None, why it cannot hold the
    file of the table) as soon as that is known: no IDX header, a header announcing another
    size than ``size`` (an official file's: known), more than ``most`` (the official file of
    its name: a caller's table gives no sizes, but no copy holds more) or than deflate's 1032:1
    can hold, more bytes than the header announces. Only the announced bytes are decompressed,
    and those only when the header allows them, so a gzip bomb is refused at once."""
    digest = hashlib.md5(usedforsecurity=False)
    with _opened(path, REFETCH) as (source, on_disk, _):
        head = source.read(4)
        code = int.from_bytes(head, "big") if len(head) == 4 else -1
        ndim = code & 0xFF
        if code >> 16 or (code >> 8) & 0xFF not in _IDX_DTYPES or not ndim:
            return None, "what it holds is no IDX file"
        sizes = source.read(4 * ndim)
        if len(sizes) < 4 * ndim:
            return None, "what it holds is no IDX file"
        dims = struct.unpack(f">{ndim}I", sizes)
        need = 4 + 4 * ndim + math.prod(dims) * np.dtype(_IDX_DTYPES[(code >> 8) & 0xFF]).itemsize
        if size is not None and need != size:
            return None, f"it announces shape {dims} ({need:,} bytes), not {size:,}"
        if most is not None and need > most:
            return None, (
                f"it announces shape {dims} ({need:,} bytes), more than the official file's "
                f"{most:,}"
            )
        if need > on_disk * _MAX_GZIP_RATIO:  # more than its deflate stream can hold
            return None, f"it announces shape {dims} ({need:,} bytes), more than it can hold"
        digest.update(head + sizes)
        left = need - len(head) - len(sizes)
        while left > 0 and (chunk := source.read(min(left, 1 << 20))):  # memory stays flat
            digest.update(chunk)
            left -= len(chunk)
        if source.read(1):  # more than announced: not the official file, whatever follows
            return None, f"it holds more than the {need:,} bytes its header announces"
    return digest.hexdigest(), None


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


def local_idx(folder: Path, stem: str) -> Path | None:
    """The raw or gzipped IDX file ``stem`` in ``folder``, raw first; None when neither is there."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _another_sets(path: Path, name: str) -> bool:
    """True when ``path`` is an official file of a data set other than ``name`` (by md5)."""
    got = _md5(path)
    return any(got in table.values() for other, table in CHECKSUMS.items() if other != name)


def idx_folder(root: Path, name: str) -> Path:
    """The folder of ``name``'s IDX files under the data root ``root``.

    ``root/name`` when it holds any of them; else ``root`` itself when it holds them directly
    (a folder of the four official files passed as the data folder), unless they are another
    data set's (MNIST and Fashion-MNIST files have the same names, so they are told apart by
    md5); else ``root/name``, where downloads go.
    """
    nested = root / name
    stems = [stem for pair in IDX_STEMS.values() for stem in pair]
    if any(local_idx(nested, stem) for stem in stems):
        return nested
    flat = [path for stem in stems if (path := local_idx(root, stem))]
    if flat and not _another_sets(min(flat, key=lambda p: p.stat().st_size), name):
        return root
    return nested


def fetch_idx(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    base_url: str | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> tuple[Path, Path]:
    """(images, labels) IDX paths of ``name`` (mnist, fashion-mnist) and ``split`` (train, test).

    Files already in :func:`idx_folder` (``<data_root>/<name>/``, or the data root itself) are
    checked against ``checksums`` (default :data:`CHECKSUMS` [name]); missing ones are
    downloaded there from ``base_url``, else the mirror's environment variable, else the
    public mirror.
    """
    if name not in IDX_SETS:
        raise DataError(f"no IDX download for {name!r}; choose 'mnist' or 'fashion-mnist'")
    title, default_url, env = IDX_SETS[name]
    check_split(split, ("train", "test"), title)
    folder = idx_folder(data_root(data_dir), name)
    table = CHECKSUMS[name] if checksums is None else checksums
    url = (base_url or os.environ.get(env) or default_url).rstrip("/") + "/"
    source = "base_url" if base_url else f"${env}"  # where a URL that is not one came from
    files = " and ".join(f"{stem}.gz" for stem in IDX_STEMS[split])
    advice = (
        f"check the network and try again, set ${env} to another mirror, or put the official "
        f"{files} (gzipped or raw) in {folder}"
    )
    paths = []
    for stem in IDX_STEMS[split]:
        remove_stale_temps(folder / f"{stem}.gz")  # also when it is there: it is downloaded once
        path = local_idx(folder, stem)
        if path is not None:
            _verify_local(path, table, title)
        elif not download:
            raise MissingFiles(
                f"{title} file {stem}.gz not found in {folder}; put the official {files} "
                "(gzipped or raw) there, or pass download=True",
                folder, files,
            )  # fmt: skip
        else:
            dest = folder / f"{stem}.gz"
            check_url(url, source)
            path = download_file(
                url + dest.name, dest, table.get(dest.name), progress, advice=advice
            )
        paths.append(path)
    return paths[0], paths[1]
