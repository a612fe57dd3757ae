"""Downloads into the data folder: :func:`download_file`.

A file is written through :func:`~scratchvae.atomic.atomic_write` and kept only when its md5
matches; a failed or refused download leaves no file behind and removes the folders it
created. The temporary files of downloads killed mid-way (nothing of theirs ran to remove
them) are removed by the next download of the same file, or the next use of it
(:func:`remove_stale_temps`).
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..atomic import atomic_write, remove_stale_temp_files
from .dataset import DataError

__all__ = ["STALE_AFTER", "check_url", "download_file", "remove_stale_temps"]


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


#: Seconds a download waits for the server (to connect, for each read) before it fails.
_TIMEOUT = 60
#: A download's temporary file not modified for this long was left by one that was killed.
STALE_AFTER = 10 * _TIMEOUT


def remove_stale_temps(dest: Path) -> None:
    """Remove the temporary files that downloads of ``dest`` killed mid-way left in its folder
    (SIGKILL, a power cut: nothing of theirs ran to remove them).

    Only those not modified for :data:`STALE_AFTER` seconds, so that the live temporary file
    of a download of the same file by another process is kept: a live download writes what
    each read brings as it comes (:func:`_stream`) and each read waits at most ``_TIMEOUT``,
    so its file is never that old. Simpler than a lock around every download, which would
    leave a lock file in the data folder (and a folder it created) and make a second process
    fail or wait. A download stopped (not killed) for longer loses its temporary file and
    fails at the rename, leaving nothing half-written.
    """
    remove_stale_temp_files(dest, STALE_AFTER)


def check_url(url: str, source: str) -> None:
    """DataError unless ``url`` (from ``source``: "$SCRATCHVAE_MNIST_MIRROR", "base_url") has
    a scheme urllib downloads from (without one urllib says "unknown url type")."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "ftp", "file"):
        fix = f"not {scheme}://" if "://" in url else f"such as 'http://{url}'"
        raise DataError(
            f"{source} is {url!r}, which cannot be downloaded from: it needs http:// or "
            f"https:// in front (file:// for a local folder), {fix}"
        )


def _stream(url: str, out: Any, desc: str, progress: bool | None) -> str:
    """Copy ``url`` into the open file ``out`` with a progress bar (``None``: only when stderr is
    a terminal, so a log file gets no carriage-return updates); return the md5 of the bytes.
    Fewer bytes than the Content-Length announced is a failed download (URLError)."""
    show = sys.stderr.isatty() if progress is None else progress
    digest, received = hashlib.md5(usedforsecurity=False), 0
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
        length = response.headers.get("Content-Length", "")
        # "abc", "-5", "\xb2" (a digit to isdigit, not to int): no size, as http.client reads them
        total = int(length) if length.isascii() and length.isdigit() else None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not show, leave=False)
        with bar:
            read = getattr(response, "read1", response.read)  # what came, without waiting
            while chunk := read(1 << 16):  # for more: a live download's temp file stays fresh
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                received += len(chunk)
    if total is not None and received < total:  # read1 ends quietly at a closed connection
        raise urllib.error.URLError(f"the connection closed after {received:,} of {total:,} bytes")
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
    by :func:`~scratchvae.atomic.atomic_write`; the temporary files that killed downloads of
    ``dest`` left are removed first (:func:`remove_stale_temps`).
    """
    advice = advice or f"try again, or put the file in {dest.parent} yourself"
    check_url(url, "the URL to download")
    remove_stale_temps(dest)
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
        reason = " ".join(str(reason).split())  # one line: a redirect loop's reason has three
        raise DataError(f"could not download {url} ({reason}); {advice}") from None
    return dest
