"""The SNR lab (scratchvae/lab/snr.py): the trends Rainforth et al. (2018) and Tucker et al.
(2019) report, on a small trained digits VAE with fixed seeds; the rates they derive, on a
linear-Gaussian VAE; and the SNR estimate itself on draws of known SNR."""

import math

import numpy as np  # numpy-boundary: host-side test arithmetic
import pytest

from scratchvae.backend import Backend
from scratchvae.data import load_dataset
from scratchvae.lab.snr import NOISE_FLOOR, _snr, format_snr, gradient_snr
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
    assert len(lines) == 5 and "enc dreg" in lines[0] and lines[2].split()[0] == "1"
    assert lines[-1].startswith("noise floor") and "0.126 (40 draws)" in lines[-1]
    assert all(r.floor == pytest.approx(NOISE_FLOOR / math.sqrt(40)) for r in rows)


def test_a_gradient_that_never_varies_has_no_snr():
    """SNR is |mean| / std over the parameters whose draws vary; where none does (a constant
    gradient: a dead unit, or one draw repeated) there is nothing to average: NaN, not inf."""
    constant = np.tile(np.array([[0.0, 2.0, -1.0]]), (5, 1))
    assert math.isnan(_snr(constant))
    varied = constant + np.array([[0.0], [0.0], [0.0], [0.0], [1.0]]) * np.array([0.0, 1.0, 0.0])
    assert _snr(varied) == pytest.approx(2.2 / varied[:, 1].std(ddof=1))  # the varying one only


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


def test_snr_of_a_zero_mean_gradient_is_the_floor():
    """Normal draws of known SNR rho per parameter (4,000 parameters, R = 200 draws each): for
    rho well above the floor NOISE_FLOOR / sqrt(R) = 0.056 the estimate is rho; for rho = 0 it
    is the floor itself, and for rho = 0.02 (under half the floor) still the floor: such a
    cell says only "below what R draws resolve"."""
    rng = np.random.default_rng(0)
    R = 200
    floor = NOISE_FLOOR / math.sqrt(R)
    for rho, want in ((0.0, floor), (0.02, floor), (0.5, 0.5), (2.0, 2.0)):
        got = _snr(rho + rng.standard_normal((R, 4000)))
        assert got == pytest.approx(want, rel=0.1), (rho, got)


def _linear_gaussian(k, estimator):
    """x | z ~ N(z W + b, I), z ~ N(0, 1): the posterior is N(m, v) with v = 1 / (1 + |W|^2);
    the encoder gives q = N(m + 0.3, 4 v / 3), wider than the posterior (as in Rainforth et
    al.'s Gaussian example), so the importance weights are bounded and the rates apply."""
    bk = Backend("numpy", "float64", seed=k)
    model = VAE(3, hidden=(), latent=1, activation="identity", likelihood="gaussian",
                backend=bk, objective="iwae", k=k, estimator=estimator)  # fmt: skip
    W, b = np.array([[1.0, -0.5, 0.7]]), np.array([0.2, 0.0, -0.1])
    v = 1 / (1 + (W @ W.T)[0, 0])
    model.params["decoder.0.W"][...], model.params["decoder.0.b"][...] = W, b
    model.params["encoder.0.W"][...] = np.concatenate([W.T * v, np.zeros((3, 1))], axis=1)
    model.params["encoder.0.b"][...] = [0.3 - (b @ W.T)[0] * v, math.log(4 * v / 3)]
    return model, np.array([[1.0, 0.5, -0.3]])


def test_snr_rates_against_k_are_the_published_ones():
    """Rainforth et al. (2018, theorem 1): the pathwise IWAE gradient's SNR falls like
    k^(-1/2) for the encoder and grows like k^(1/2) for the decoder; Tucker et al. (2019): the
    DReG encoder's grows (like k^(1/2) when the weights are bounded). Measured slopes of
    log SNR against log k over k = 16 ... 1024: -0.53, +0.48, +0.46 ... +0.49; asserted within
    0.15 of +-1/2 (each slope's standard error: about 0.03, from 60 steps per k).

    Per draw: std g = sqrt(R) times the std of steps of R tiled rows; E g for the encoder's mu
    from DReG's draws (the same expectation as the pathwise gradient's,
    tests/lab/test_estimator_targets.py, measured at z > 500: the pathwise draws alone would
    not resolve a mean of 0.01 std)."""
    ks = np.array([16, 64, 256, 1024])
    stats = {}
    for estimator in ("pathwise", "dreg"):
        for k in ks:
            model, x = _linear_gaussian(int(k), estimator)
            R = 4096 // k
            X = np.tile(x, (R, 1))
            g = np.array([model.loss_and_grads(X)[1].flat.copy() for _ in range(60)])
            stats[estimator, k] = g.mean(axis=0), g.std(axis=0, ddof=1) * math.sqrt(R)
    mu, decoder = 6, slice(8, 14)  # flat: encoder.0.W (3, 2), encoder.0.b (mu, logvar), ...

    def slope(snr):
        return np.polyfit(np.log(ks), np.log(snr), 1)[0]

    enc = {
        e: [abs(stats["dreg", k][0][mu]) / stats[e, k][1][mu] for k in ks]
        for e in ("pathwise", "dreg")
    }
    dec = np.array([np.abs(stats["pathwise", k][0][decoder]) / stats["pathwise", k][1][decoder]
                    for k in ks])  # fmt: skip
    assert abs(slope(enc["pathwise"]) + 0.5) < 0.15, enc
    assert abs(slope(enc["dreg"]) - 0.5) < 0.15, enc
    for j in range(dec.shape[1]):
        assert abs(slope(dec[:, j]) - 0.5) < 0.15, dec
