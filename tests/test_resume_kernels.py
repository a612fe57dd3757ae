"""A resume with the compiled kernels on where the run's last epoch had them off (or off where
it had them on: Numba missing, SCRATCHVAE_KERNELS=0) says so in one line, as a resume on
another CPU thread count does: the kernels and the ops' readable bodies round differently in
the last bits, so the run no longer equals one that never stopped. Each epoch records whether
the kernels ran (``kernels``: 1 or 0, beside ``threads``). Not refused."""

from __future__ import annotations

import json
import warnings

import numpy as np  # numpy-boundary: comparing host arrays
import pytest

from scratchvae.backend import Backend, compiled_kernels, kernels
from scratchvae.checkpoint import load_checkpoint
from scratchvae.cli import main
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.kernels import cpu
from scratchvae.models import VAE
from scratchvae.resume import ResumeWarning
from scratchvae.train import TrainConfig, Trainer, fit

pytestmark = pytest.mark.skipif(cpu.numba is None, reason="the kernels need numba")

TINY = ["--hidden", "8", "--latent", "2", "--batch-size", "40", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def tiny():
    digits = load_dataset("digits")
    return dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")


def _vae(seed: int = 1) -> VAE:
    return VAE(64, hidden=[8], latent=2, backend=Backend("numpy", "float32", seed))


def _config(out, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=40, progress=False, out_dir=str(out))


def _kernels(out) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["kernels"] for line in lines]


def _message(out, on: bool) -> str:
    now, ran = ("on", "off") if on else ("off", "on")
    how = (
        "SCRATCHVAE_KERNELS=0"
        if on
        else "the kernels on (Numba installed, SCRATCHVAE_KERNELS unset)"
    )
    return (
        f"the run in {out} continues with the compiled kernels {now} where its last epoch ran "
        f"with them {ran}, so its numbers will differ in the last bits from a run that never "
        f"stopped; {how} reproduces them"
    )


def test_the_kernels_and_the_bodies_differ_in_the_last_bits(tiny, tmp_path):
    # why it is said: the same run with and without the kernels is not the same run
    for on in (True, False):
        with kernels(on):
            assert compiled_kernels() is on
            fit(_vae(), tiny, _config(tmp_path / str(on), 2))
    a, b = load_checkpoint(tmp_path / "True"), load_checkpoint(tmp_path / "False")
    assert any(not np.array_equal(a.params[n], b.params[n]) for n in a.params)
    assert _kernels(tmp_path / "True") == [1, 1] and _kernels(tmp_path / "False") == [0, 0]


@pytest.mark.parametrize("on", [True, False], ids=["kernels-on-now", "kernels-off-now"])
def test_fit_warns_when_a_resume_runs_with_the_kernels_switched(tiny, tmp_path, on):
    with kernels(not on):
        fit(_vae(), tiny, _config(tmp_path, 1))
    with kernels(on), pytest.warns(ResumeWarning) as caught:
        fit(_vae(), tiny, _config(tmp_path, 2), resume=True)
    assert [str(w.message) for w in caught] == [_message(tmp_path, on)]
    assert _kernels(tmp_path) == [int(not on), int(on)]
    with kernels(on), warnings.catch_warnings():  # as its last epoch ran: no word
        warnings.simplefilter("error", ResumeWarning)
        fit(_vae(), tiny, _config(tmp_path, 3), resume=True)
    assert _kernels(tmp_path) == [int(not on), int(on), int(on)]


def test_a_resume_as_the_run_ran_equals_never_stopping_with_the_kernels_off(tiny, tmp_path):
    with kernels(False):
        fit(_vae(), tiny, _config(tmp_path / "a", 3))
        fit(_vae(), tiny, _config(tmp_path / "b", 1))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResumeWarning)
            fit(_vae(9), tiny, _config(tmp_path / "b", 3), resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert all(np.array_equal(a.params[n], b.params[n]) for n in a.params)
    assert a.rng_state == b.rng_state


def test_the_cli_says_it_in_one_line_on_stderr(tmp_path, capsys):
    with kernels(False):
        assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    resume = ["train", "--resume", "--out", str(tmp_path), "--no-progress", "--no-figures"]
    with kernels(True):
        assert main([*resume, "--epochs", "2"]) == 0
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "kernels" in line]
    assert said == [f"scratchvae: {_message(tmp_path, True)}"]
    assert "Warning" not in err and "kernels" not in out


@pytest.mark.parametrize("call", ["fit", "Trainer.fit"])
def test_the_warning_points_at_the_user_s_line(tiny, tmp_path, call):
    # it pointed into scratchvae/train.py when fit() was called (a level below Trainer.fit)
    with kernels(False):
        fit(_vae(), tiny, _config(tmp_path, 1))
    with kernels(True), pytest.warns(ResumeWarning) as caught:
        if call == "fit":
            fit(_vae(), tiny, _config(tmp_path, 2), resume=True)
        else:
            Trainer(_vae(), tiny, _config(tmp_path, 2)).fit(resume=True)
    assert [w.filename for w in caught] == [__file__]
