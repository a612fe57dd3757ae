"""The importance-weighted bound of scratchvae.evaluate at its edges: examples whose log-weights
are all -inf, +inf or NaN (from extreme but finite parameters), float32 against float64 on the
same parameters and draws, and agreement with the training step's bound (ops/iwae.py)."""

import json
import warnings

import numpy as np  # numpy-boundary: host-side test arithmetic
import pytest

from scratchvae import evaluate as ev
from scratchvae.backend import Backend
from scratchvae.checkpoint import load_model, save_checkpoint
from scratchvae.cli import main
from scratchvae.models import VAE

F32 = np.float32


def _vae(dtype="float32", seed=0, **kw):
    return VAE(6, hidden=[5], latent=2, backend=Backend("numpy", dtype, seed=seed), **kw)


def _set_logvar(model, logvar):
    """q's logvar = ``logvar`` for every input (the encoder's last layer), mu as it was."""
    L = model.latent
    model.params["encoder.1.W"][:, L:], model.params["encoder.1.b"][L:] = 0, logvar


class _HugeDraws(Backend):
    """Float32 normal draws, those of shape ``shape`` with ``value`` at ``where``."""

    def __init__(self, shape, where, value):
        super().__init__("numpy", "float32", seed=0)
        self.shape, self.where, self.value = shape, where, value

    def normal(self, shape):
        eps = super().normal(shape)
        if tuple(shape) == self.shape:
            eps[self.where] = self.value
        return eps


def _quiet(fn, *args, **kw):
    """fn(*args, **kw), asserting it raised no NumPy RuntimeWarning (overflow, invalid value):
    what overflowed is in the results, said once."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return fn(*args, **kw)


# ------------------------------------------------------------------ log-weights that are not finite
def test_every_log_weight_minus_inf_is_reported_with_why():
    """Reachable with finite parameters: q's logvar 100 draws z of about e^50 eps, whose z^2
    overflows float32, so log p(z) = -inf for every sample. The bound of such an example is
    -inf (a true bound, and the mean over the examples with it); evaluate printed
    "log p(x) >= -inf", "bits/dim inf" with nothing saying why, after NumPy's overflow
    warnings. Now ``iw_note`` says which examples and why, and the report shows it."""
    model = _vae()
    _set_logvar(model, 100.0)
    x = (model.backend.uniform((3, 6)) > 0.5).astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):
        assert (ev.iw_bound(model, x, 4) == -np.inf).all()  # the exact value, per example
    r = _quiet(ev.evaluate, model, x, iw_samples=4)
    assert r["iw_bound"] == -np.inf and r["iw_nll"] == np.inf
    assert r["iw_note"].startswith("3 of 3 examples have no importance weights (3 with every ")
    assert "(3 with every one of its 4 log-weights -inf)" in r["iw_note"]
    r.update(checkpoint="c.npz", data="d", binarize="none")
    text = ev.format_report(r, model, 1, 6).splitlines()
    assert f"IW bound      -inf  (k=4): {r['iw_note']}" in text, text
    assert "bits/dim      none (the IW bound is not finite)" in text
    assert ev.json_numbers(r)["iw_bound"] is None and ev.json_numbers(r)["iw_note"] == r["iw_note"]
    assert _quiet(ev.evaluate, _vae(), x, iw_samples=4)["iw_note"] is None  # a finite bound


def test_a_log_weight_plus_inf_is_reported_with_why():
    """q's logvar -80 and one draw's eps 2e19: eps^2 overflows in log q(z|x) while z = mu +
    4e-18 eps stays finite, so that draw's log w is +inf (the model's own generator draws it
    here). evaluate printed a bound of +inf (log p(x) >= inf, bits/dim -inf), no why."""
    x = (np.random.default_rng(0).random((3, 6)) > 0.5).astype(F32)
    model = VAE(6, hidden=[5], latent=2, backend=_HugeDraws((4, 3, 2), (1, 2), 2e19))
    _set_logvar(model, -80.0)
    r = _quiet(ev.evaluate, model, x, iw_samples=4, seed=None)
    assert r["iw_bound"] == np.inf
    assert r["iw_note"].startswith("1 of 3 examples have no importance weights (1 with a log-w")


def test_a_nan_log_weight_is_reported_with_why():
    """A learned-variance Gaussian decoder with log-variance -3e38 where a pixel is 1 and the
    mean 0: ((x - m)/sigma)^2 overflows to +inf while the log-variances' sum is -inf, so the
    log-likelihood is inf - inf = NaN (a genuine one: ops/losses.py forms 0 * inf no more,
    which was this test's NaN before). evaluate printed "log p(x) >= nan", no why."""
    model = VAE(4, hidden=[5], latent=2, likelihood="gaussian-learned",
                backend=Backend("numpy", "float32", seed=0))  # fmt: skip
    model.params["decoder.1.W"][...] = 0
    model.params["decoder.1.b"][:4], model.params["decoder.1.b"][4:] = 0, -3e38
    x = np.zeros((3, 4), dtype=F32)
    x[:, 1] = 1.0
    r = _quiet(ev.evaluate, model, x, iw_samples=5)
    assert np.isnan(r["iw_bound"]) and "(3 with a log-weight NaN)" in r["iw_note"]


def test_the_command_says_why_without_warnings(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--hidden", "8", "--latent", "2", "--epochs", "1", "--no-progress", "--no-figures"]
    assert main(["train", "--out", str(run), *argv]) == 0
    model, ckpt = load_model(run)
    _set_logvar(model, 100.0)  # finite: the checkpoint takes it
    save_checkpoint(run / "checkpoint.npz", model, epoch=ckpt.epoch, step=ckpt.step,
                    rng_state=ckpt.rng_state, train_config=ckpt.train_config,
                    history=ckpt.history, data_fingerprint=ckpt.data_fingerprint)  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iw-samples", "3", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "Warning" not in err and "Traceback" not in err, err
    why = "297 of 297 examples have no importance weights (297 with every one of its 3 log-"
    assert f"IW bound      -inf  (k=3): {why}" in out, out
    assert main(["evaluate", str(run), "--iw-samples", "3", "--no-progress", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["iw_bound"] is None and r["iw_note"].startswith(why)


# ------------------------------------------ float32, and the training step's bound
def test_the_float32_bound_is_float64s_to_float32s_rounding():
    """The same parameters and draws in float32 and float64, chunked over examples and samples.
    The log-weights are the model's dtype (the decoder runs in it), their logsumexp and the mean
    over the examples float64: per example float32 misses float64 by about float32's rounding of
    log w (measured: under 1e-6 relative at |log w| ~ 400), the mean by less."""
    m32 = VAE(50, hidden=[20], latent=4, backend=Backend("numpy", "float32", seed=0))
    m32.params["decoder.1.W"][...] *= 30  # a sharp decoder: |log w| in the hundreds
    m64 = VAE(50, hidden=[20], latent=4, backend=Backend("numpy", "float64"))
    m64.params.flat[...] = m32.params.flat.astype(np.float64)
    x = (m32.backend.uniform((300, 50)) > 0.5).astype(F32)
    eps = m32.backend.normal((64, 300, 4))
    b32 = ev.iw_bound(m32, x, 64, batch_size=70, budget=3000, eps=eps)
    assert ev._chunk_sizes(m32, 70, 64, 3000)[1] < 64  # really chunked over samples
    b64 = ev.iw_bound(m64, x.astype(np.float64), 64, eps=eps.astype(np.float64))
    assert b32.dtype == np.float64 and float(np.abs(b64).min()) > 30
    np.testing.assert_allclose(b32, b64, rtol=1e-5, atol=0)
    assert abs(b32.mean() - b64.mean()) < 1e-6 * abs(b64.mean())


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned"])
def test_the_bound_is_the_training_steps_on_the_same_draws(likelihood):
    """One formula: evaluate's log-weights are the IWAE step's (iw_latent_forward's draws and
    log p(z) - log q(z|x), the likelihood's log p(x|z)), and their logsumexp over chunks of
    samples is iw_bound_forward's L_K: equal in float64, to float32's rounding in float32."""
    for dtype, rtol in (("float64", 1e-13), ("float32", 1e-6)):
        model = VAE(12, hidden=[16], latent=3, objective="iwae", k=7, likelihood=likelihood,
                    backend=Backend("numpy", dtype, seed=3))  # fmt: skip
        x = model.backend.uniform((9, 12))
        eps = model.backend.normal((7, 9, 3))
        step = -float(model.forward(x, {"eps": eps})[0]["loss"])  # the batch mean of L_K
        bound = ev.iw_bound(model, x, 7, budget=100, eps=eps)  # chunks of 1 x 2 pairs
        assert float(bound.mean()) == pytest.approx(step, rel=rtol), dtype
