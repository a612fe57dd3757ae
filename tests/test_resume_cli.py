"""`scratchvae train --resume` as a user meets it: after Ctrl-C the run resumes to the numbers of
a run that never stopped; what it refuses (a run that does not record its data, a flag of
another model kind), what it says when there is nothing to resume, and a bad
SCRATCHVAE_THREADS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np  # numpy-boundary: writing a user data file, comparing host arrays
import pytest

from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.cli import main
from scratchvae.data import load_dataset
from scratchvae.models import VAE
from scratchvae.train import TrainConfig, Trainer, fit

# 1350 training digits in batches of 300: 5 steps an epoch
TINY = ["--hidden", "8", "--latent", "2", "--batch-size", "300", "--no-progress", "--no-figures"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def _metrics(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    drop = ("seconds", "samples_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@contextmanager
def _ctrl_c_at_step(monkeypatch, n: int):
    """Inside the block, the n-th training step (counted from 1) raises KeyboardInterrupt."""
    real, calls = Trainer.train_step, []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(self, *args)

    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "train_step", interrupted)
        yield


def test_ctrl_c_then_resume_gives_the_run_that_never_stopped(tmp_path, monkeypatch, capsys):
    run = ["train", *TINY, "--model", "dae", "--noise", "mask", "--binarize", "dynamic",
           "--epochs", "3", "--save-every", "2", "--patience", "3"]  # fmt: skip
    assert main([*run, "--out", str(tmp_path / "a")]) == 0
    out = tmp_path / "b"
    with _ctrl_c_at_step(monkeypatch, 13):  # in epoch 3: the checkpoint is epoch 2's
        assert main([*run, "--out", str(out)]) == 130
    assert "interrupted; the last checkpoint in" in _error_line(capsys)
    assert load_checkpoint(out).epoch == 2
    assert main(["train", "--resume", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(out)
    assert (a.epoch, a.step, a.rng_state) == (b.epoch, b.step, b.rng_state) == (3, 15, b.rng_state)
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    for key in a.optim_state:
        assert np.array_equal(a.optim_state[key], b.optim_state[key]), key
    assert _metrics(tmp_path / "a") == _metrics(out)
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3]


def test_a_run_made_by_fit_resumes_only_on_the_data_it_names(tmp_path, capsys):
    # fit() records no data; `--resume` went on with the embedded digits without a word
    x = (np.random.default_rng(0).random((100, 64)) < 0.3).astype(np.float32)
    np.save(tmp_path / "mine.npy", x)
    out = tmp_path / "run"
    config = TrainConfig(epochs=1, batch_size=50, progress=False, out_dir=str(out))
    fit(VAE(64, hidden=[8], latent=2, backend=Backend()), x, config)
    before = _files(out)
    resume = ["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]
    assert main([*resume, "--no-figures"]) == 2
    line = _error_line(capsys)
    assert line.endswith("does not record its data (it was trained by fit(), not scratchvae "
                         "train); pass --data with the data it was trained on")  # fmt: skip
    assert _files(out) == before
    assert main([*resume, "--no-figures", "--data", str(tmp_path / "mine.npy")]) == 0
    assert "on mine.npy (100 x 64)" in capsys.readouterr().err  # the start line
    assert load_checkpoint(out).epoch == 2


@pytest.mark.parametrize("command", ["evaluate", "reconstruct", "plot"])
def test_a_run_made_by_fit_is_looked_at_only_on_the_data_it_names(tmp_path, capsys, command):
    # the same run seen by evaluate, reconstruct and plot: they went to the digits (also 64
    # features) without a word
    x = (np.random.default_rng(0).random((100, 64)) < 0.3).astype(np.float32)
    np.save(tmp_path / "mine.npy", x)
    out = tmp_path / "run"
    config = TrainConfig(epochs=1, batch_size=50, progress=False, out_dir=str(out))
    fit(VAE(64, hidden=[8], latent=2, backend=Backend()), x, config)
    assert main([command, str(out)]) == 2
    assert _error_line(capsys).endswith("pass --data with the data it was trained on")
    more = {"evaluate": ["--iw-samples", "0", "--no-progress", "--split", "train"]}
    more["reconstruct"] = ["--split", "train"]
    assert (
        main([command, str(out), "--data", str(tmp_path / "mine.npy"), *more.get(command, [])]) == 0
    )


@pytest.mark.parametrize(
    "flag, value", [("--noise-level", "0.1"), ("--rho", "0.2"), ("--sparsity-weight", "1")]
)
def test_a_flag_of_another_model_kind_is_refused_on_resume(tmp_path, capsys, flag, value):
    out = tmp_path / "vae"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    before = _files(out)
    resume = ["train", "--resume", "--out", str(out), "--epochs", "2", *TINY]
    assert main([*resume, flag, value]) == 2  # it used to be ignored without a word
    line = _error_line(capsys)
    assert f"{flag} applies to --model " in line and "holds a vae; drop it to resume" in line
    assert _files(out) == before


def test_a_run_stopped_before_its_first_checkpoint_says_how_to_start_over(
    tmp_path, monkeypatch, capsys
):
    # with --save-every 2, Ctrl-C in epoch 2 leaves epoch 1's metrics.jsonl and no checkpoint:
    # `--resume` said "train without --resume first", which then refused the metrics file
    run = ["train", *TINY, "--epochs", "2", "--save-every", "2", "--out", str(tmp_path)]
    with _ctrl_c_at_step(monkeypatch, 7):
        assert main(run) == 130
    assert _error_line(capsys).endswith(
        f"no checkpoint was written in {tmp_path} yet (--force starts the run over, replacing "
        "its metrics.jsonl)"
    )
    assert {p.name for p in tmp_path.iterdir()} == {".lock", "metrics.jsonl"}
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert _error_line(capsys).endswith(f"no checkpoint in {tmp_path}; train again with --force")
    assert main([*run, "--force"]) == 0
    assert load_checkpoint(tmp_path).epoch == 2
    # the library says the same: no resume=True to offer where there is no checkpoint
    (tmp_path / "checkpoint.npz").unlink()
    digits = load_dataset("digits")
    config = TrainConfig(epochs=1, batch_size=300, progress=False, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"holds a run \(metrics.jsonl\): replace=True deletes"):
        fit(VAE(64, hidden=[8], latent=2), digits, config)


def test_a_bad_scratchvae_threads_is_one_line_and_deletes_nothing(tmp_path):
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "old")]) == 0
    before = _files(tmp_path / "old")
    env = {**os.environ, "SCRATCHVAE_THREADS": "two"}
    argv = [sys.executable, "-m", "scratchvae", "train", *TINY, "--epochs", "1", "--force"]
    for out in ("old", "new"):  # it was a traceback from `import scratchvae`
        done = subprocess.run([*argv, "--out", str(tmp_path / out)], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.splitlines()[-1] == (
            "scratchvae: error: SCRATCHVAE_THREADS must be a whole number >= 1 or auto, got 'two'"
        )
        assert "Traceback" not in done.stderr
    assert _files(tmp_path / "old") == before  # --force did not delete the run it would replace
    assert not (tmp_path / "new").exists()


def test_resume_may_change_how_often_it_saves_and_nothing_else(tmp_path, capsys):
    # --save-every changes no number of the run: the library's fit(resume=True) takes another
    # save_every, and the command line now does too (it was refused as another run's setting)
    out, straight = tmp_path / "run", tmp_path / "straight"
    assert main(["train", *TINY, "--epochs", "4", "--out", str(straight)]) == 0
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    more = ["train", "--resume", "--out", str(out), "--epochs", "4", "--save-every", "3"]
    assert main([*more, "--no-progress", "--no-figures"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.epoch == 4 and ckpt.train_config["save_every"] == 3
    assert _metrics(out) == _metrics(straight)
    for name, value in load_checkpoint(straight).params.items():
        np.testing.assert_array_equal(ckpt.params[name], value)
