"""The SNR lab (scratchvae/lab/snr.py): the trends Rainforth et al. (2018) and Tucker et al.
(2019) report, on a small trained digits VAE with fixed seeds."""

import math

import pytest

from scratchvae.backend import Backend
from scratchvae.data import load_dataset
from scratchvae.lab.snr import format_snr, gradient_snr
from scratchvae.models import VAE
from scratchvae.train import TrainConfig, fit


@pytest.fixture(scope="module")
def rows():
    digits = load_dataset("digits", "train")
    bk = Backend("numpy", "float64", seed=0)
    model = VAE(64, hidden=[32], latent=4, backend=bk)
    fit(model, digits, TrainConfig(epochs=20, batch_size=64, lr=3e-3, val_fraction=0,
                                   progress=False))  # fmt: skip
    return gradient_snr(model, digits.get_batch(slice(0, 8)), ks=(1, 100), repeats=40)


def test_iwae_encoder_snr_falls_and_decoder_snr_grows_with_k(rows):
    snr = {(r.estimator, r.k): r for r in rows}
    assert snr["pathwise", 100].encoder_snr < snr["pathwise", 1].encoder_snr
    assert snr["pathwise", 100].decoder_snr > 2 * snr["pathwise", 1].decoder_snr
    # DReG's encoder gradient does not get noisier with k the way the pathwise one does
    assert snr["dreg", 100].encoder_snr > 2 * snr["pathwise", 100].encoder_snr
    assert all(math.isfinite(r.encoder_snr) and r.repeats == 40 for r in rows)


def test_the_table_has_a_line_per_k(rows):
    lines = format_snr(rows).splitlines()
    assert len(lines) == 4 and "enc dreg" in lines[0] and lines[2].split()[0] == "1"


def test_too_few_draws_are_refused():
    model = VAE(4, hidden=[3], latent=2)
    with pytest.raises(ValueError, match="at least two draws"):
        gradient_snr(model, Backend().uniform((2, 4)), ks=(1,), repeats=1)


def test_dreg_encoder_snr_rises_with_k_on_an_iwae_trained_model():
    """Trained with the IWAE bound (k = 50, DReG), as in examples/iwae_snr.py: the pathwise
    encoder SNR falls with k, DReG's rises (Tucker et al. 2019, figure 1)."""
    digits = load_dataset("digits", "train")
    bk = Backend("numpy", "float64", seed=0)
    model = VAE(64, hidden=[32], latent=4, backend=bk, objective="iwae", k=50, estimator="dreg")
    fit(model, digits, TrainConfig(epochs=10, batch_size=64, lr=3e-3, val_fraction=0,
                                   progress=False))  # fmt: skip
    rows = gradient_snr(model, digits.get_batch(slice(0, 8)), ks=(1, 100),
                        estimators=("pathwise", "dreg"), repeats=40)  # fmt: skip
    snr = {(r.estimator, r.k): r.encoder_snr for r in rows}
    assert snr["pathwise", 100] < 0.5 * snr["pathwise", 1]
    assert snr["dreg", 100] > 1.5 * snr["dreg", 1]
