"""A run folder whose ``.lock`` is not the lock file scratchvae makes: a symbolic link (to a
file of the user's), a hard link to one, a folder, a named pipe. Taking the lock opened it
following the link and emptied the file it points to, then wrote a pid into it; a folder or a
pipe was an OS error that did not say which file or what to do. Each is now refused in one line
naming the file, the link's target untouched, nothing of the run changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from run_files import cli_run

from scratchvae.atomic import LOCK_NAME, folder_lock
from scratchvae.cli import main

T = ["--hidden", "32", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]
RESUME = ["--resume", "--epochs", "3", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return cli_run(tmp_path_factory, "lock-file", T)


def _make(lock: Path, kind: str, target: Path) -> None:
    lock.unlink(missing_ok=True)
    if kind == "link":
        lock.symlink_to(target)
    elif kind == "hard link":  # (a run folder copied with cp -al, or someone's doing)
        os.link(target, lock)
    elif kind == "folder":
        lock.mkdir()
    else:
        os.mkfifo(lock)


KINDS = ["link", "hard link", "folder"] + (["pipe"] if hasattr(os, "mkfifo") else [])


@pytest.mark.parametrize("kind", KINDS)
def test_a_lock_that_is_no_regular_file_is_refused_and_its_target_kept(
    trained, tmp_path, capsys, kind
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's own words\n")
    _make(run / LOCK_NAME, kind, precious)
    before = (run / "checkpoint.npz").read_bytes()
    assert main(["train", "--out", str(run), *RESUME]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("scratchvae: error: ") and str(run / LOCK_NAME) in line, line
    assert "not a lock file" in line and "remove it" in line
    assert precious.read_text() == "the user's own words\n"  # was emptied, then held the pid
    assert (run / "checkpoint.npz").read_bytes() == before


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "pid-file"])
def test_folder_lock_does_not_write_through_a_link(tmp_path, monkeypatch, flock):
    # without flock (no fcntl, or a file system without it), the pid-file lock took the link
    # for a stale lock and removed it; a pipe there was read for its pid, waiting for ever
    if not flock:
        monkeypatch.setattr("scratchvae.atomic.fcntl", None)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).symlink_to(precious)
    with pytest.raises(OSError, match="not a lock file"):
        with folder_lock(folder):
            pass
    assert (folder / LOCK_NAME).is_symlink() and precious.read_text() == "keep\n"
    with folder_lock(tmp_path / "fresh") as lock:  # a lock of its own is taken as before
        assert lock.read_text().strip() == str(os.getpid())
