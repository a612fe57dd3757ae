"""Training on the GPU (``pytest -m gpu``; also run on CuPy's host stand-in by
tests/kernels/test_gpu_tests_on_host.py): a run resumed from its checkpoint equals the one never
stopped, bit for bit, and the README's commands with ``--backend cupy`` work on a run trained
on the device."""

from __future__ import annotations

import pytest
from same_run import same_checkpoint

from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.models import VAE
from scratchvae.train import TrainConfig, fit

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def tiny():
    digits = load_dataset("digits")
    return dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")


def _config(out, epochs=3):
    return TrainConfig(
        epochs=epochs, batch_size=50, lr=3e-3, warmup_epochs=1.0, out_dir=str(out), progress=False
    )


def test_a_gpu_training_resumed_equals_never_stopping(tiny, tmp_path) -> None:
    """A VAE trained on CuPy (data on the device, eps from the counter-based generator, the
    step replayed as a CUDA graph once the warm-up ends), resumed after one epoch by a new
    model of another seed: the same parameters, Adam state, generator state and losses as
    the run that never stopped."""

    def make(seed):
        return VAE(64, hidden=[8], latent=2, backend=Backend("cupy", "float32", seed))

    fit(make(1), tiny, _config(tmp_path / "a"))
    fit(make(1), tiny, _config(tmp_path / "b", epochs=1))
    fit(make(7), tiny, _config(tmp_path / "b"), resume=True)
    a, _ = same_checkpoint(tmp_path / "a", tmp_path / "b")
    assert '"cupy"' in a.rng_state and a.epoch == 3
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]


def test_the_commands_on_a_gpu_run(tmp_path, capsys) -> None:
    """train (its figures) and --resume, evaluate with the importance-weighted bound, sample,
    reconstruct and trace, with ``--backend cupy``; trace ran the CUDA kernels."""
    from scratchvae.cli import main

    run = str(tmp_path / "run")
    train = ["train", "--backend", "cupy", "--out", run, "--no-progress"]
    assert main([*train, "--epochs", "2"]) == 0
    assert main([*train, "--epochs", "3", "--resume"]) == 0
    assert load_checkpoint(run).epoch == 3
    assert main(["evaluate", run, "--iw-samples", "20"]) == 0
    assert main(["sample", run]) == 0
    assert main(["reconstruct", run]) == 0
    assert main(["trace", run, "--backend", "cupy"]) == 0
    out = capsys.readouterr().out
    assert "IW bound" in out and "cupy float32" in out and " cuda " in out
