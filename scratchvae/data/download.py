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
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..atomic import atomic_write, remove_stale_temp_files
from ..progress import Progress, duration, is_terminal
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
#: A download slower than _SPEED_LIMIT bytes/s over _SPEED_TIME seconds fails (curl's
#: --speed-limit / --speed-time): each read's timeout alone lets a server that sends a byte
#: every few seconds hold a download for days. 1 kB/s brings MNIST's largest file (9.9 MB)
#: in under three hours; a link slower than that is better served by a manual download.
_SPEED_LIMIT = 1000
_SPEED_TIME = 60.0
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


def _size(n: int) -> str:
    """'9.9 MB', '28.9 kB', '512 bytes'."""
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} bytes"


def _too_slow(got: int, seconds: float) -> urllib.error.URLError:
    return urllib.error.URLError(
        f"too slow: {_size(got)} in the last {seconds:.0f} s, under the "
        f"{_size(_SPEED_LIMIT)}/s a download needs"
    )


def _stream(url: str, out: Any, desc: str, progress: bool | None) -> str:
    """Copy ``url`` into the open file ``out``; return the md5 of the bytes.

    ``progress``: True, a progress bar; False, nothing; None (the default), a bar when stderr is
    a terminal, else plain lines on stderr (a log file gets no carriage-return updates, and
    still says what is downloaded): 'downloading URL (9.9 MB) ...', a status line now and then
    (:meth:`~scratchvae.progress.Progress.status`), 'downloaded NAME (9.9 MB in 12 s)'.
    Fewer bytes than the Content-Length announced, or fewer than ``_SPEED_LIMIT`` bytes/s over
    ``_SPEED_TIME`` seconds, is a failed download (URLError)."""
    show = is_terminal(sys.stderr) if progress is None else progress
    lines = progress is None and not show and sys.stderr is not None  # None: pythonw
    digest, received = hashlib.md5(usedforsecurity=False), 0
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
        window, in_window = time.monotonic(), 0  # the speed's: bytes received since ``window``
        length = response.headers.get("Content-Length", "")
        # "abc", "-5", "\xb2" (a digit to isdigit, not to int): no size, as http.client reads them
        total = int(length) if length.isascii() and length.isdigit() else None
        if lines:
            size = "" if total is None else f" ({_size(total)})"
            print(f"downloading {url}{size} ...", file=sys.stderr, flush=True)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not show, leave=False)
        status = Progress(total or 0, bar=False, stream=sys.stderr)
        with bar, status:
            read = getattr(response, "read1", response.read)  # what came, without waiting
            while chunk := read(1 << 16):  # for more: a live download's temp file stays fresh
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                received += len(chunk)
                in_window += len(chunk)
                if (now := time.monotonic()) - window >= _SPEED_TIME:
                    if in_window < _SPEED_LIMIT * (now - window):
                        raise _too_slow(in_window, now - window)
                    window, in_window = now, 0
                if lines:
                    status.update(len(chunk))
                    status.status(f"downloading {desc}")
    if total is not None and received < total:  # read1 ends quietly at a closed connection
        raise urllib.error.URLError(f"the connection closed after {received:,} of {total:,} bytes")
    if lines:
        took = duration(time.monotonic() - start)
        print(f"downloaded {desc} ({_size(received)} in {took})", file=sys.stderr, flush=True)
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
    ``progress``: show a progress bar (True), nothing (False), or by default a bar when stderr
    is a terminal and plain lines when it is not (:func:`_stream`). The file is written
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
        if http_error:  # it holds the server's reply and its socket: closed now, not by the GC
            exc.close()  # type: ignore[union-attr]
        reason = exc if http_error else getattr(exc, "reason", None) or exc
        reason = " ".join(str(reason).split())  # one line: a redirect loop's reason has three
        raise DataError(f"could not download {url} ({reason}); {advice}") from None
    return dest
