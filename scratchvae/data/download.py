"""Downloads into the data folder: :func:`download_file`.

A file is written through :func:`~scratchvae.atomic.atomic_write` and kept only when its md5
matches; a failed or refused download leaves no file behind and removes the folders it
created.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..atomic import atomic_write
from .dataset import DataError

__all__ = ["download_file"]


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; never anything else."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (someone else's file), or already gone
            if folder.exists():
                return


def _stream(url: str, out: Any, desc: str, progress: bool | None) -> str:
    """Copy ``url`` into the open file ``out`` with a progress bar (``None``: only when stderr is
    a terminal, so a log file gets no carriage-return updates); return the md5 of the bytes."""
    show = sys.stderr.isatty() if progress is None else progress
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not show, leave=False)
        with bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def download_file(
    url: str,
    dest: Path,
    md5: str | None = None,
    progress: bool | None = None,
    *,
    advice: str | None = None,
) -> Path:
    """Download ``url`` to ``dest``, through a temporary file renamed only once md5 matches.

    On a mismatch or a failed download nothing is left behind (``dest`` is as it was, and the
    folders created for it are removed again) and :class:`DataError` is raised, its message
    ending with ``advice`` (what to do; default: try again, or put the file there yourself).
    ``progress``: show a progress bar (default: when stderr is a terminal). The file is written
    by :func:`~scratchvae.atomic.atomic_write`.
    """
    advice = advice or f"try again, or put the file in {dest.parent} yourself"
    created = _missing_folders(dest.parent)
    opened = False  # an OSError before the block is the folder's, inside or after it the download's
    try:
        with atomic_write(dest, "wb") as out:
            opened = True
            got = _stream(url, out, dest.name, progress)
            if md5 is not None and got != md5:  # raised inside the block: the temp file goes
                raise DataError(
                    f"downloaded {dest.name} from {url} has md5 {got}, expected {md5}, so it was "
                    f"not kept; {advice}"
                )
    except BaseException as exc:
        _remove_empty(created)  # on Ctrl-C too
        if isinstance(exc, DataError) or not isinstance(
            exc, (urllib.error.URLError, http.client.HTTPException, OSError)
        ):
            raise
        if not opened:
            raise DataError(
                f"cannot write to {dest.parent} ({getattr(exc, 'strerror', None) or exc}); pick "
                "a writable folder with --data-dir or $SCRATCHVAE_DATA"
            ) from None
        http_error = isinstance(exc, urllib.error.HTTPError)
        reason = exc if http_error else getattr(exc, "reason", None) or exc
        raise DataError(f"could not download {url} ({reason}); {advice}") from None
    return dest
