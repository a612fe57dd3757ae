"""fit(..., resume=True) with a TrainConfig whose settings differ from the run's: refused in one
line naming each setting, nothing in the run folder touched (it used to continue silently with
the new batch size, learning rate, seed, ..., no longer the run it resumed)."""

from __future__ import annotations

import numpy as np  # numpy-boundary: comparing host arrays
import pytest

from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.models import VAE
from scratchvae.resume import RUN_SETTINGS, ResumeMismatch
from scratchvae.train import TrainConfig, fit


@pytest.fixture(scope="module")
def tiny():
    digits = load_dataset("digits")
    return dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")


def _vae(seed=0):
    return VAE(64, hidden=[8], latent=2, backend=Backend("numpy", "float32", seed=seed))


RUN = dict(batch_size=40, lr=1e-3, optimizer="sgd", momentum=0.5, progress=False)


def _folder(tmp_path):
    return {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ".lock"}


@pytest.mark.parametrize(
    "change",
    [
        {"batch_size": 30},
        {"lr": 0.01},
        {"optimizer": "adam", "momentum": 0.0},
        {"momentum": 0.9},  # used to be reported as a damaged file
        {"warmup_epochs": 1.0},
        {"clip_norm": 5.0},
        {"binarize": "dynamic"},
        {"val_fraction": 0.2},
        {"patience": 3},
        {"seed": 1},
    ],
)
def test_a_resumed_run_refuses_other_settings_and_touches_nothing(tiny, tmp_path, change):
    fit(_vae(), tiny, TrainConfig(epochs=1, out_dir=str(tmp_path), **RUN))
    before = _folder(tmp_path)
    model = _vae(seed=5)
    params = model.params.flat.copy()
    config = TrainConfig(epochs=2, out_dir=str(tmp_path), **{**RUN, **change})
    with pytest.raises(ResumeMismatch) as info:
        fit(model, tiny, config, resume=True)
    message = str(info.value)
    assert "\n" not in message and "this TrainConfig has" in message
    for key in change:
        if RUN.get(key, TrainConfig.__dataclass_fields__[key].default) != change[key]:
            assert f"{key}=" in message
    assert _folder(tmp_path) == before
    assert np.array_equal(model.params.flat, params)


def test_allowed_changes_and_settings_that_leave_the_numbers_alone_resume(tiny, tmp_path):
    fit(_vae(), tiny, TrainConfig(epochs=1, out_dir=str(tmp_path), **RUN))
    # how often it saves and reports, and the progress shown, may change
    free = dict(save_every=2, log_every=1, progress_bar=False)
    history = fit(_vae(), tiny, TrainConfig(epochs=2, out_dir=str(tmp_path), **RUN, **free), True)
    assert [r["epoch"] for r in history] == [1, 2]
    # a learning-rate schedule names its change
    faster = TrainConfig(epochs=3, out_dir=str(tmp_path), **{**RUN, "lr": 0.01})
    history = fit(_vae(), tiny, faster, resume=True, allow_changes=("lr",))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert load_checkpoint(tmp_path).train_config["lr"] == 0.01
    with pytest.raises(ValueError, match="allow_changes: 'epochs' is none of batch_size, lr"):
        fit(_vae(), tiny, faster, resume=True, allow_changes=("epochs",))


def test_fewer_epochs_than_the_run_has_done_are_refused(tiny, tmp_path):
    fit(_vae(), tiny, TrainConfig(epochs=2, out_dir=str(tmp_path), **RUN))
    with pytest.raises(ResumeMismatch, match="epochs=1 is below the 2 epochs the run in"):
        fit(_vae(), tiny, TrainConfig(epochs=1, out_dir=str(tmp_path), **RUN), resume=True)


def test_run_settings_are_train_config_fields():
    assert set(RUN_SETTINGS) <= set(TrainConfig.__dataclass_fields__)
