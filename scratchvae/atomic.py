"""One way to write a file so that readers see the old contents or the new, never a mixture.

:func:`atomic_write` opens a temporary file in the destination's folder; when the ``with``
block ends without an exception the file is flushed, fsync'ed and renamed over the destination
(``os.replace``, atomic on POSIX and Windows), then the folder is fsync'ed so the rename
survives a power cut. An exception (or Ctrl-C) inside the block removes the temporary file and
leaves the destination as it was. Checkpoints, the metrics file, downloads and benchmark
results are all written this way.

:func:`folder_lock` keeps two processes from writing one run folder at once: an exclusive lock
on the file ``.lock`` in it, dropped by the operating system when the holder exits, however it
exits. :func:`remove_temp_files` clears what a process killed while writing left behind.
:func:`special_file` tells a pipe or a device, which a reader must not open, from a file.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: the lock is a file created with O_EXCL that holds the pid
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FILE_MODE",
    "LOCK_NAME",
    "FolderLocked",
    "atomic_write",
    "folder_lock",
    "process_running",
    "remove_stale_temp_files",
    "path_exists",
    "path_is_dir",
    "path_is_file",
    "remove_temp_files",
    "special_file",
    "temp_files",
]

TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"


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
        # (mypy: the str in **kwargs could reach fdopen's int buffering; it goes to encoding)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:  # type: ignore[call-overload]
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # a write failed (a full disk): name
            kept = "what was there before is intact" if os.path.lexists(path) else None
            msg = f"{exc.strerror}; {kept or 'nothing was written'}"  # (nothing was there)
            raise OSError(exc.errno, msg, str(path)) from exc  # the file it was for
        raise
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


def remove_temp_files(folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left for ``folder/<name>`` (a process
    killed while writing); returns those removed. Only ours: ``.<name>.*.tmp`` for the given
    names (regular files: a folder or a link of such a name is left alone); call it while
    holding :func:`folder_lock`, so no live writer's file is removed."""
    removed = []
    for name in names:
        for tmp in temp_files(Path(folder) / name):
            if _regular_or_absent(tmp):  # a folder or a link of that name is not one we left
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def remove_stale_temp_files(path: str | os.PathLike, older_than: float) -> None:
    """Remove the temporary files :func:`atomic_write` left for ``path`` that nothing has
    written for ``older_than`` seconds: a process killed while writing left them. Where no lock
    is held, a live writer's file is younger than that and is kept."""
    now = time.time()
    for tmp in temp_files(path):
        try:
            if _regular_or_absent(tmp) and now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
        except OSError:  # removed meanwhile by another process, or not ours to remove
            pass


# ------------------------------------------------------------------------------ the run lock
class FolderLocked(OSError):
    """Another process holds the lock on a folder (a one-line message naming it and the pid)."""


def _locked(folder: Path, pid: int | None) -> FolderLocked:
    holder = f"process {pid}" if pid else "another process"
    return FolderLocked(
        f"{folder} is in use by {holder} (it holds {folder / LOCK_NAME}); wait for it to "
        "finish, or use another --out folder"
    )


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def folder_lock(folder: str | os.PathLike, clean: Sequence[str] = ()) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the ``with`` block (the folder is created if
    needed); another process asking for it meanwhile gets :class:`FolderLocked`, naming the
    holder's pid. Once locked, the temporary files :func:`atomic_write` left for
    ``folder/<name>``, for each name in ``clean``, are removed (:func:`remove_temp_files`).

    The lock is ``fcntl.flock`` on ``folder/.lock`` (which holds the pid while locked): the
    operating system drops it when the holder exits, also on a crash or kill -9. Without
    fcntl, or on a file system that has no flock, the lock file is created with O_EXCL and
    removed at the end; one left by a process that no longer runs is taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _flock(folder, folder / LOCK_NAME) as path:
        remove_temp_files(folder, clean)
        yield path


@contextmanager
def _flock(folder: Path, path: Path) -> Iterator[Path]:
    if fcntl is None:
        with _pid_file_lock(folder, path):
            yield path
        return
    fd: int | None  # None: no flock on this file system
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _locked(folder, _read_pid(path)) from None
    except OSError:  # no flock on this file system (some network ones)
        os.close(fd)
        fd = None
    if fd is None:
        with _pid_file_lock(folder, path):
            yield path
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.ftruncate(fd, 0)  # an empty lock file: nobody holds it
        os.close(fd)  # drops the lock (so does the process's end, however it ends)


# never through a link (opened for writing, the file it points to was emptied, then given a
# pid), never waiting on a pipe
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _not_a_lock(path: Path) -> OSError:
    return OSError(
        f"{path} is not a lock file scratchvae made (a link, hard or symbolic, a folder or a "
        "pipe); remove it, or use another --out folder"
    )


def _regular_or_absent(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True


def _open_lock(path: Path) -> int:
    """The lock file ``path`` opened for reading and writing (created if missing), refused
    (:func:`_not_a_lock`) when it is a link (symbolic, or a hard link to another file), a
    folder or a pipe."""
    try:
        fd = os.open(path, _LOCK_FLAGS, FILE_MODE)
    except OSError:
        if not _regular_or_absent(path):
            raise _not_a_lock(path) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # a hard link: another file's bytes
        os.close(fd)  # (a copy made with cp -al; emptied, then given a pid, with the lock)
        raise _not_a_lock(path)
    return fd


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists (on Windows, where signal 0 would be Ctrl-C, assume
    so: the message says which file to remove)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


@contextmanager
def _pid_file_lock(folder: Path, path: Path) -> Iterator[None]:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            break
        except FileExistsError:
            if not _regular_or_absent(path):  # not ours to read (a pipe waits) or remove
                raise _not_a_lock(path) from None
            pid = _read_pid(path)
            if pid is not None and process_running(pid):
                raise _locked(folder, pid) from None
            path.unlink(missing_ok=True)  # empty, or its holder is gone: stale
    else:
        raise _locked(folder, None)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def special_file(path: str | os.PathLike) -> bool:
    """True when ``path`` (after symbolic links) is a named pipe, a socket or a device: opening
    one for reading may wait for a writer, for ever. False for a regular file, a folder, and a
    path that cannot be looked up (missing, a name too long, no permission): open() reports
    those in its own words. One ``stat``, where exists(), is_file() and is_dir() made three
    (and exists() raised on the errors it does not read as "missing")."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def path_exists(path: str | os.PathLike) -> bool:
    """``Path(path).exists()``, False also for a name longer than the file system allows
    (ENAMETOOLONG, which Path.exists raises: nothing can be there). Other errors, a folder on
    the way that one may not search among them, are raised, to be told as what they are."""
    return _looked_up(Path(path).exists)


def path_is_dir(path: str | os.PathLike) -> bool:
    """``Path(path).is_dir()``, False for a name too long (see :func:`path_exists`)."""
    return _looked_up(Path(path).is_dir)


def path_is_file(path: str | os.PathLike) -> bool:
    """``Path(path).is_file()``, False for a name too long (see :func:`path_exists`)."""
    return _looked_up(Path(path).is_file)


def _looked_up(check: Any) -> bool:
    try:
        return bool(check())
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise
