"""The checkpoint file as a container: a ``.npz`` read safely, its format marker and version.

What a checkpoint holds and how it is checked is :mod:`scratchvae.checkpoint`; this module
reads the file's arrays without trusting it (no pickle, no zip bomb, a foreign file named for
what it is) and raises :class:`CheckpointError` (one line: what is wrong, what to do).

This module is an I/O boundary: it uses NumPy to read the file.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np  # numpy-boundary: checkpoint file I/O

from .atomic import path_exists, special_file
from .zip_members import check_directory

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_EXPANSION",
    "CheckpointError",
    "damaged",
    "one_line",
    "read_entries",
]

FORMAT = "scratchvae-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used (a one-line message: what is wrong, what to do)."""


MAX_EXPANSION = 100  # an entry stored more than 100 times smaller than it unpacks to is refused


def one_line(exc: Exception, limit: int = 200) -> str:
    """An exception's message on one line, shortened (it may show a whole array)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged: {what}; use another checkpoint or train again")


def _read_all(path: Path) -> dict[str, Any]:
    """Every array of the .npz, read eagerly (a damaged member fails here, not later)."""
    if not path_exists(path):
        raise CheckpointError(
            f"no checkpoint at {path}; train first (scratchvae train --out DIR) or pass the "
            "run folder that holds checkpoint.npz"
        )
    if special_file(path):  # opening a pipe waits for a writer
        raise CheckpointError(
            f"{path} is not a regular file (a pipe or a device); pass the run folder or the "
            "checkpoint.npz that scratchvae train wrote"
        )
    _refuse_foreign(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            _check_members(z.zip, path.stat().st_size)  # before NumPy unpacks or allocates
            return {key: _native(z[key]) for key in z.files}
    except Exception as exc:  # noqa: BLE001 - whatever a hostile zip raises (BadZipFile,
        # zlib.error, EOFError, NotImplementedError, MemoryError, ...) means the same here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in reason:  # NumPy's advice to load it unsafely is no advice to give
            reason = "it holds pickled Python objects, which scratchvae never writes"
        raise CheckpointError(
            f"{path} is not a readable scratchvae checkpoint (truncated or not an .npz: "
            f"{reason}); use another checkpoint or train again"
        ) from None


def _check_members(archive: zipfile.ZipFile, size: int) -> None:
    """Raise ValueError (one line) for a member that would unpack or allocate far more than
    the file (``size`` bytes) holds: packed sizes the file does not hold (the zip claims
    them), a compression NumPy never writes, more than MAX_EXPANSION times its packed size
    (alone, or all members together: each may pass with a few kB), or an .npy header whose
    shape needs more bytes than the member unpacks to (NumPy allocates the header's shape
    before it reads); or that is no .npy at all (NumPy returns its bytes)."""
    infos = archive.infolist()
    check_directory(infos, size)
    for info in infos:
        if info.file_size > MAX_EXPANSION * max(info.compress_size, 1 << 16):
            raise ValueError(f"entry {info.filename} unpacks {info.file_size} bytes")
    unpacked, packed = (sum(getattr(i, k) for i in infos) for k in ("file_size", "compress_size"))
    if unpacked > MAX_EXPANSION * max(packed, 1 << 16):
        raise ValueError(f"its entries unpack {unpacked} bytes from {packed}")
    for info in infos:
        with archive.open(info) as member:
            need = _npy_bytes(member)
        if need is None:
            raise ValueError(f"entry {info.filename} is not a NumPy array")
        if need > info.file_size:
            raise ValueError(
                f"entry {info.filename}'s header asks for {need} bytes, it holds {info.file_size}"
            )


def _npy_bytes(member: IO[bytes]) -> int | None:
    """The bytes an .npy's header says its array takes (an item of a size-0 type counted as
    one byte: NumPy would make any number of them from nothing); None: not an .npy."""
    try:
        major, _ = np.lib.format.read_magic(member)
    except ValueError:
        return None
    read = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, _, dtype = read(member)
    if any(n < 0 for n in shape):
        raise ValueError(f"an .npy header holds the shape {shape}")
    return math.prod(shape) * max(dtype.itemsize, 1)


def _native(a: Any) -> Any:
    """``a`` in this machine's byte order (a file written on a big-endian machine holds '>f4':
    the same numbers, refused where a dtype is compared, unusable on a GPU)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or an empty zip


def _refuse_foreign(path: Path) -> None:
    """A file that is no zip archive at all (metrics.jsonl, a .npy) is not a checkpoint: said
    so before NumPy takes it for a pickle and suggests loading it unsafely."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return  # np.load meets the same error and reports it
    if head[:4] in _ZIP_MAGICS:
        return
    what = "not an .npz archive"
    if not head:
        what = "an empty file"
    elif head == b"\x93NUMPY":
        what = "a .npy array, not an .npz archive"
    raise CheckpointError(
        f"{path} is not a scratchvae checkpoint ({what}); pass the run folder or the "
        "checkpoint.npz that scratchvae train wrote"
    )


def _text(arrays: dict[str, Any], key: str, path: Path) -> str:
    if key not in arrays:
        raise damaged(path, f"entry {key!r} is missing")
    a = arrays[key]
    if a.ndim != 0 or a.dtype.kind != "U":
        raise damaged(path, f"entry {key!r} is {a.dtype.name}{list(a.shape)}, not text")
    text = _str(a)
    if text is None:
        raise damaged(path, f"entry {key!r} holds code points beyond U+10FFFF, not Unicode")
    return text


def _str(a: Any) -> str | None:
    """A 0-d text array's string; None when a code point is beyond U+10FFFF (no str holds
    one: NumPy's conversion raises SystemError, or makes a str from garbage)."""
    if a.dtype.itemsize and int(np.frombuffer(a.tobytes(), "=u4").max()) > 0x10FFFF:
        return None
    return str(a[()])


def _json(arrays: dict[str, Any], key: str, path: Path) -> Any:
    text = _text(arrays, key, path)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        raise damaged(path, f"entry {key!r} is not valid JSON") from None


def _version(arrays: dict[str, Any], path: Path) -> None:
    a = arrays.get("__format__")
    if a is None or a.ndim != 0 or a.dtype.kind != "U" or _str(a) != FORMAT:
        raise CheckpointError(
            f"{path} is not a scratchvae checkpoint (no format marker); pass a checkpoint.npz "
            "written by scratchvae train"
        )
    v = arrays.get("__version__", np.array(-1))
    whole = v.ndim == 0 and v.dtype.kind in "iu"  # else described, its values never read
    version = int(v[()]) if whole else f"(an entry of {v.dtype.name}{list(v.shape)})"
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, this scratchvae reads version "
            f"{FORMAT_VERSION}; use the scratchvae version that wrote it"
        )


def read_entries(path: Path) -> tuple[dict[str, Any], Any, str]:
    """The file's arrays by name, its ``meta`` entry parsed from JSON and its ``rng_state``
    text, once it is known to be a scratchvae checkpoint of this format version."""
    arrays = _read_all(path)
    _version(arrays, path)
    return arrays, _json(arrays, "meta", path), _text(arrays, "rng_state", path)
