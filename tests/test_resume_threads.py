"""A resume on another CPU thread count than the run's last epoch says so in one line: its
numbers differ in the last bits from a run that never stopped (BLAS sums in another order, the
batch is split another way), and SCRATCHVAE_THREADS reproduces them. Not refused. The suite
pins the count (conftest.py); these tests set it with ``threads(n)``."""

from __future__ import annotations

import json
import warnings

import pytest

from scratchvae.backend import threads
from scratchvae.cli import main
from scratchvae.data import load_dataset
from scratchvae.models import VAE
from scratchvae.resume import ResumeWarning
from scratchvae.train import TrainConfig, fit

# 1350 training digits in batches of 300: each batch split across 2 threads (128 rows at least)
TINY = ["--hidden", "8", "--latent", "2", "--batch-size", "300", "--no-progress", "--no-figures"]


def _config(out, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=300, progress=False, out_dir=str(out))


def _threads(out) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["threads"] for line in lines]


def _message(out, now: int, ran: int) -> str:
    return (
        f"the run in {out} continues on {now} CPU thread{'s' * (now != 1)} where its last epoch "
        f"ran on {ran}, so its numbers will differ in the last bits from a run that never "
        f"stopped; SCRATCHVAE_THREADS={ran} reproduces them"
    )


def test_fit_warns_when_a_resume_runs_on_another_thread_count(tmp_path):
    digits = load_dataset("digits")
    with threads(2):
        fit(VAE(64, hidden=[8], latent=2), digits, _config(tmp_path, 1))
    with threads(1), pytest.warns(ResumeWarning) as caught:
        fit(VAE(64, hidden=[8], latent=2), digits, _config(tmp_path, 2), resume=True)
    assert [str(w.message) for w in caught] == [_message(tmp_path, 1, 2)]
    assert caught[0].filename == __file__  # the user's fit() line, not scratchvae's
    assert _threads(tmp_path) == [2, 1]
    with threads(1), warnings.catch_warnings():  # on the count it last ran on: no word
        warnings.simplefilter("error", ResumeWarning)
        fit(VAE(64, hidden=[8], latent=2), digits, _config(tmp_path, 3), resume=True)
        fit(VAE(64, hidden=[8], latent=2), digits, _config(tmp_path, 3), resume=True)  # done
    assert _threads(tmp_path) == [2, 1, 1]


def test_the_cli_says_it_in_one_line_on_stderr(tmp_path, capsys):
    with threads(2):
        assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    resume = ["train", "--resume", "--out", str(tmp_path), "--no-progress", "--no-figures"]
    with threads(1):
        assert main([*resume, "--epochs", "2"]) == 0
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "CPU thread" in line]
    assert said == [f"scratchvae: {_message(tmp_path, 1, 2)}"]
    assert "Warning" not in err and "warnings.warn" not in err and "CPU thread" not in out
    with threads(2):  # another resume in the same process says it again
        assert main([*resume, "--epochs", "3"]) == 0
    assert f"scratchvae: {_message(tmp_path, 2, 1)}" in capsys.readouterr().err.splitlines()
    assert _threads(tmp_path) == [2, 1, 2]
