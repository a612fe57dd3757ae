"""A checkpoint names the folder its MNIST came from (``train_config.data_dir``); one crafted,
or from another machine, named a folder of someone else's choosing, and ``evaluate``,
``reconstruct``, ``plot``, ``trace`` and ``train --resume`` downloaded the data into it
(creating it).
The recorded folder is now read, never downloaded into: missing files are one line asking for
``--data-dir``, and nothing is created."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from run_files import cli_run, rewrite_checkpoint

from scratchvae.cli import main

T = ["--hidden", "8", "--latent", "2", "--epochs", "1", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return cli_run(tmp_path_factory, "data-dir", T)


def _pointing_at(run: Path, tmp_path: Path, folder: Path) -> Path:
    """A copy of ``run`` whose checkpoint says it trained on MNIST kept in ``folder``."""
    out = tmp_path / "copied"
    shutil.copytree(run, out)
    rewrite_checkpoint(out, lambda m: m["train_config"].update(data="mnist", data_dir=str(folder)))
    return out


@pytest.mark.parametrize("command", ["evaluate", "reconstruct", "plot", "trace", "resume"])
def test_the_folder_a_checkpoint_names_is_never_downloaded_into(run, tmp_path, capsys, command):
    chosen = tmp_path / "somewhere" / "else"
    copied = _pointing_at(run, tmp_path, chosen)
    resume = ["train", "--resume", "--out", str(copied), "--epochs", "2", *T[:-4]]
    argv = {name: [name, str(copied)] for name in ("evaluate", "reconstruct", "plot", "trace")}
    argv["resume"] = resume
    assert main(argv[command]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the data folder the run recorded" in err
    assert f"are not in {chosen / 'mnist'}, under {chosen}: the data folder" in err
    assert f"--data-dir {chosen} to download them there" in err
    assert not (tmp_path / "somewhere").exists()
