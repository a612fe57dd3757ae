"""One way to write a file so that readers see the old contents or the new, never a mixture.

:func:`atomic_write` opens a temporary file in the destination's folder; when the ``with``
block ends without an exception the file is flushed, fsync'ed and renamed over the destination
(``os.replace``, atomic on POSIX and Windows), then the folder is fsync'ed so the rename
survives a power cut. An exception (or Ctrl-C) inside the block removes the temporary file and
leaves the destination as it was. Checkpoints, the metrics file, downloads and benchmark
results are all written this way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["FILE_MODE", "atomic_write", "temp_files"]

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's files are owner-only


def temp_files(path: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_write` makes for ``path`` (left behind only by a
    process killed while writing)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"))


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` atomically: ``with atomic_write(p) as f: f.write(...)``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8). The folder is created if needed."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # still there only when something failed
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not possible on every platform: then skipped)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
