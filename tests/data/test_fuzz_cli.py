"""Hostile --data paths through the command line: each is one ``scratchvae: error: ...`` line on
stderr and exit status 2, before a run folder is made; a named pipe (or a device) given as the
data is refused at once instead of waiting forever for a writer."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from idx_helpers import STEMS, idx_bytes, write
from PIL import Image

from scratchvae.cli import main
from scratchvae.data import DataError, load_dataset
from scratchvae.data.idx import read_idx

TRAIN = ["train", "--epochs", "1", "--hidden", "8", "--latent", "2", "--no-progress"]


def _bomb_folder(folder: Path) -> Path:
    """IDX files whose image stream holds 32 MiB more than its header's one 28x28 image."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = comp.compress(struct.pack(">I3I", 2051, 1, 28, 28))
    body = b"".join(comp.compress(bytes(1 << 20)) for _ in range(32))
    write(folder, {f"{STEMS['train'][0]}.gz": head + body + comp.flush()})
    return write(folder, {f"{STEMS['train'][1]}.gz": gzip.compress(idx_bytes(np.zeros(1)))})


def _cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    np.save(tmp / "binary.npy", np.eye(4, dtype=np.uint8))
    np.save(tmp / "huge.npy", np.full((4, 4), 1e39))
    deep = tmp / "deep"
    deep.mkdir()
    for i in range(2):
        Image.fromarray(np.full((2, 2), 1000, np.uint16)).save(deep / f"{i}.png")
    cut = write(tmp / "cut", {STEMS["train"][0]: idx_bytes(np.zeros((3, 2, 2)))[:-1]})
    write(cut, {STEMS["train"][1]: idx_bytes(np.zeros(3))})
    return {
        "binary-uint8": (tmp / "binary.npy", "is uint8 holding only 0 and 1"),
        "beyond-float32": (tmp / "huge.npy", "beyond float32's range"),
        "16-bit-images": (deep, "is an image of mode I;16, not 8-bit"),
        "gzip-bomb": (_bomb_folder(tmp / "bomb"), "is damaged: it holds more than the 800 bytes"),
        "truncated-idx": (cut, "is truncated or damaged: 27 bytes"),
    }


@pytest.mark.parametrize(
    "case", ["binary-uint8", "beyond-float32", "16-bit-images", "gzip-bomb", "truncated-idx"]
)
def test_a_hostile_data_path_is_one_line_and_status_2(tmp_path, capsys, case):
    path, needle = _cases(tmp_path)[case]
    likelihood = ["--likelihood", "gaussian"] if case == "beyond-float32" else []
    out = tmp_path / "run"
    assert main([*TRAIN, *likelihood, "--data", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scratchvae: error: "), err
    assert needle in err[0] and path.name in err[0], err[0]
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_as_data_is_refused_not_waited_on(tmp_path):
    """A pipe named x.npy (or x.npz, or a.png in a folder of images) was opened for reading,
    which waits for a writer: the command hung until killed."""
    os.mkfifo(tmp_path / "x.npy")
    (tmp_path / "images").mkdir()
    os.mkfifo(tmp_path / "images" / "a.png")
    os.mkfifo(tmp_path / "pipe")
    for path in (tmp_path / "x.npy", tmp_path / "images"):
        with pytest.raises(DataError, match=r"is not a regular file \(a pipe or a device\)"):
            load_dataset(str(path))
    with pytest.raises(DataError, match=r"pipe is not a regular file"):
        read_idx(tmp_path / "pipe")
    result = subprocess.run(
        [sys.executable, "-m", "scratchvae", *TRAIN, "--data", str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"scratchvae: error: {tmp_path / 'x.npy'} is not a regular file (a pipe or a device); "
        "save the data to a file"
    )
