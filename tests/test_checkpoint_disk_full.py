"""A checkpoint save that fails part way: the disk fills after N bytes of the new file. The
previous checkpoint is left as it was, no temporary file stays behind, the command says so in
one line (exit status 2), and the run resumes once there is room again. A first save that
fails says that nothing was written (there was nothing before to keep intact)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: the writer the checkpoint module calls
import pytest

from scratchvae.checkpoint import load_checkpoint
from scratchvae.cli import main

T = ["--hidden", "32", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]
RESUME = ["--resume", "--epochs", "3", "--no-progress", "--no-figures"]


class _FullDisk:
    """The file ``np.savez`` writes to, on a disk with ``room`` bytes left."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _disk_full_after(monkeypatch, room: int) -> None:
    savez = np.savez
    monkeypatch.setattr(np, "savez", lambda file, **arrays: savez(_FullDisk(file, room), **arrays))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("disk-full") / "run"
    assert main(["train", "--out", str(out), *T]) == 0
    return out


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("scratchvae: error: "), lines
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


@pytest.mark.parametrize("room", [0, 1000, 40_000])
def test_a_disk_full_while_saving_keeps_the_checkpoint_and_leaves_no_temporary_file(
    trained, tmp_path, monkeypatch, capsys, room
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "checkpoint.npz").read_bytes()
    _disk_full_after(monkeypatch, room)
    assert main(["train", "--out", str(run), *RESUME]) == 2
    line = _error(capsys)
    assert "No space left on device; what was there before is intact" in line
    assert str(run / "checkpoint.npz") in line
    assert (run / "checkpoint.npz").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()  # room again: the run goes on from its epoch 2
    assert main(["train", "--out", str(run), *RESUME]) == 0
    assert load_checkpoint(run).epoch == 3


def test_a_first_save_that_fails_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    run = tmp_path / "fresh"
    _disk_full_after(monkeypatch, 1000)
    assert main(["train", "--out", str(run), *T]) == 2
    line = _error(capsys)  # it said "what was there before is intact": nothing was there
    assert "No space left on device; nothing was written" in line and "intact" not in line
    assert not (run / "checkpoint.npz").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_what_a_killed_save_left_is_cleared_and_only_that(trained, tmp_path):
    # a save killed part way leaves .checkpoint.npz.<random>.tmp: the next training removes it;
    # a folder or a link of that name is no file scratchvae left (it stopped the run, EISDIR)
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    left = run / ".checkpoint.npz.x1y2z3.tmp"
    left.write_bytes((run / "checkpoint.npz").read_bytes()[:3000])
    (run / ".checkpoint.npz.folder.tmp").mkdir()
    (run / ".metrics.jsonl.link.tmp").symlink_to(run / "checkpoint.npz")
    assert main(["train", "--out", str(run), *RESUME]) == 0
    assert not left.exists() and load_checkpoint(run).epoch == 3
    assert (run / ".checkpoint.npz.folder.tmp").is_dir()
    assert (run / ".metrics.jsonl.link.tmp").is_symlink()


class _Interrupted(_FullDisk):
    """Ctrl-C (or SIGTERM, which the program turns into it) after ``room`` bytes."""

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise KeyboardInterrupt
        self.room -= len(data)
        return self.file.write(data)


def test_ctrl_c_while_saving_keeps_the_checkpoint_and_the_run_resumes(
    trained, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "checkpoint.npz").read_bytes()
    savez = np.savez
    monkeypatch.setattr(np, "savez", lambda f, **arrays: savez(_Interrupted(f, 5000), **arrays))
    assert main(["train", "--out", str(run), *RESUME]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "checkpoint" in err.strip().splitlines()[-1], err
    assert (run / "checkpoint.npz").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert main(["train", "--out", str(run), *RESUME]) == 0
    assert load_checkpoint(run).epoch == 3
