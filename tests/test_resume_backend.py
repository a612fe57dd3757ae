"""A run resumed on the other backend (``--backend``, allowed) says so in one line: the
generator's stream does not continue there (it starts again from the seed and the epochs done)
and the arithmetic is another, so the run differs from one that never stopped. A NumPy run
resumed on CuPy went on without a word; a CuPy run resumed on NumPy was refused ("resume it on
cupy") although the command line advised `--backend numpy` where CuPy cannot run. (CuPy here:
the host stand-in, tests/fake_cupy.py.)"""

from __future__ import annotations

import warnings

import pytest
from cuda_on_host import usable
from fake_cupy import installed

from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.models import VAE
from scratchvae.resume import ResumeWarning
from scratchvae.train import TrainConfig, fit

WHY_NOT = usable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture(scope="module")
def tiny():
    digits = load_dataset("digits")
    return dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")


def _vae(name: str) -> VAE:
    return VAE(64, hidden=[8], latent=2, backend=Backend(name, "float32", 1))


def _config(out, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=40, progress=False, out_dir=str(out))


def test_a_numpy_run_resumed_on_cupy_says_its_numbers_differ(tiny, tmp_path):
    fit(_vae("numpy"), tiny, _config(tmp_path, 1))
    with installed(), pytest.warns(ResumeWarning) as caught:
        fit(_vae("cupy"), tiny, _config(tmp_path, 2), resume=True)
    assert [str(w.message) for w in caught] == [
        f"the run in {tmp_path} was trained on numpy and continues on cupy: another generator "
        "and other arithmetic, so its numbers will differ from a run that never stopped; "
        "--backend numpy reproduces them"
    ]
    assert caught[0].filename == __file__
    assert '"cupy"' in load_checkpoint(tmp_path).rng_state
    with installed(), warnings.catch_warnings():  # on the backend it last ran on: no word
        warnings.simplefilter("error", ResumeWarning)
        fit(_vae("cupy"), tiny, _config(tmp_path, 3), resume=True)


def test_a_cupy_run_resumed_on_numpy_continues_and_says_so(tiny, tmp_path):
    """The GPU run's checkpoint, resumed on NumPy: a warning, then the same numbers each time
    (NumPy's generator from seed + epochs), and the checkpoint is a NumPy run's from then on."""
    with installed():
        fit(_vae("cupy"), tiny, _config(tmp_path / "gpu", 1))
    runs = []
    for copy in ("a", "b"):
        out = tmp_path / copy
        out.mkdir()
        (out / "checkpoint.npz").write_bytes((tmp_path / "gpu" / "checkpoint.npz").read_bytes())
        with pytest.warns(ResumeWarning, match="trained on cupy and continues on numpy"):
            fit(_vae("numpy"), tiny, _config(out, 2), resume=True)
        runs.append(load_checkpoint(out))
    a, b = runs
    assert a.backend["name"] == "numpy" and "bit_generator" in a.rng_state
    assert a.rng_state == b.rng_state
    assert all((a.params[k] == b.params[k]).all() for k in a.params)
