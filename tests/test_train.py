"""The trainer: determinism, bit-exact resume, warm-up, early stopping, divergence."""

from __future__ import annotations

import json
import math

import numpy as np  # numpy-boundary: test assertions on host arrays
import pytest

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.data import DataError, dataset_from_array, load_dataset
from scratchvae.models import AE, VAE
from scratchvae.optim import build_optimizer
from scratchvae.train import TrainConfig, Trainer, TrainingDiverged, fit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    """300 digits: enough to learn something, fast enough for many tiny runs."""
    return dataset_from_array(digits.x[:300], digits.y[:300], "digits-300")


def _vae(seed=0, n_features=64, **kw):
    bk = Backend("numpy", "float32", seed=seed)
    return VAE(n_features, hidden=[32], latent=4, backend=bk, **kw)


def _cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 32, "progress": False, **kw})


def _state(model, trainer):
    params = {k: np.array(v) for k, v in model.params.items()}
    opt = {k: np.array(v) for k, v in trainer.optimizer.state_dict().items()}
    return params, opt, model.backend.rng_state()


def test_training_lowers_the_loss_and_records_history(small):
    model = _vae()
    history = fit(model, small, _cfg(epochs=5, lr=3e-3))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    first, last = history[0], history[-1]
    assert last["train_loss"] < first["train_loss"] - 2.0
    assert last["val_loss"] < first["val_loss"]
    steps_per_epoch = math.ceil(270 / 32)  # 300 minus 30 held out for validation
    assert last["step"] == 5 * steps_per_epoch
    for key in ("train_recon", "train_kl", "val_kl", "kl_weight", "seconds", "samples_per_s"):
        assert key in last
    assert last["train_loss"] == pytest.approx(last["train_recon"] + last["train_kl"], rel=1e-6)


def test_same_seed_gives_bit_identical_parameters(small):
    runs = []
    for _ in range(2):
        model = _vae(seed=3)
        fit(model, small, _cfg(binarize="dynamic"))
        runs.append(model.params.copy())
    other = _vae(seed=4)
    fit(other, small, _cfg(binarize="dynamic"))
    for name in runs[0]:
        assert np.array_equal(runs[0][name], runs[1][name]), name
    assert not np.array_equal(runs[0]["decoder.0.W"], other.params["decoder.0.W"])


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_resume_equals_uninterrupted_training_bit_for_bit(small, tmp_path, binarize):
    kw = dict(binarize=binarize, warmup_epochs=3, out_dir=str(tmp_path / "a"), batch_size=64)
    model_a = _vae(seed=1)
    trainer_a = Trainer(model_a, small, _cfg(epochs=4, **kw))
    trainer_a.fit()

    kw["out_dir"] = str(tmp_path / "b")
    fit(_vae(seed=1), small, _cfg(epochs=2, **kw))  # interrupted after epoch 2 ...
    model_b = _vae(seed=99)  # ... new objects, as in a new process (different init!)
    trainer_b = Trainer(model_b, small, _cfg(epochs=4, **kw))
    history_b = trainer_b.fit(resume=True)

    params_a, opt_a, rng_a = _state(model_a, trainer_a)
    params_b, opt_b, rng_b = _state(model_b, trainer_b)
    for name in params_a:
        assert np.array_equal(params_a[name], params_b[name]), name
    assert opt_a.keys() == opt_b.keys() and opt_a["t"] == opt_b["t"] == trainer_a.step
    for key in opt_a:
        assert np.array_equal(opt_a[key], opt_b[key]), key
    assert rng_a == rng_b
    drop = ("seconds", "samples_per_s")
    strip = [{k: v for k, v in r.items() if k not in drop} for r in trainer_a.history]
    assert [{k: v for k, v in r.items() if k not in drop} for r in history_b] == strip
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_resume_refuses_a_different_model(small, tmp_path):
    fit(_vae(), small, _cfg(epochs=1, out_dir=str(tmp_path)))
    other = VAE(64, hidden=[16], latent=4, backend=Backend(seed=0))
    with pytest.raises(ValueError, match="same model settings"):
        fit(other, small, _cfg(epochs=2, out_dir=str(tmp_path)), resume=True)


def test_a_new_run_never_deletes_a_run_it_was_not_told_to_replace(small, tmp_path):
    fit(_vae(), small, _cfg(epochs=1, out_dir=str(tmp_path)))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"holds a run \(checkpoint.npz, metrics.jsonl\): resume"):
        fit(_vae(), small, _cfg(epochs=2, out_dir=str(tmp_path)))  # resume=True forgotten
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    history = fit(_vae(), small, _cfg(epochs=2, out_dir=str(tmp_path)), resume=True)
    assert [r["epoch"] for r in history] == [1, 2]
    history = fit(_vae(), small, _cfg(epochs=1, out_dir=str(tmp_path)), replace=True)
    assert [r["epoch"] for r in history] == [1]  # started over


def test_kl_warmup_ramps_linearly_per_step(small):
    model = _vae(beta=2.0)
    trainer = Trainer(model, small, _cfg(epochs=3, warmup_epochs=2, batch_size=30))
    per_epoch = trainer.steps_per_epoch  # 270 / 30 = 9
    assert per_epoch == 9
    assert trainer.kl_weight(0) == 0.0
    assert trainer.kl_weight(9) == pytest.approx(1.0)  # half-way: beta / 2
    assert trainer.kl_weight(18) == trainer.kl_weight(500) == 2.0
    history = trainer.fit()
    assert [r["kl_weight"] for r in history] == pytest.approx([2 * 8 / 18, 2 * 17 / 18, 2.0])


def test_epoch_lines_say_when_the_training_loss_is_the_warm_up_objective(small, capsys):
    """During warm-up the training loss is recon + w kl with w below beta, not what the
    validation loss is (recon + beta kl): an epoch line whose steps trained with a lower KL
    weight says which (the first step's and the last's); later lines are as before."""
    model = _vae(beta=2.0)
    history = fit(model, small, _cfg(epochs=3, warmup_epochs=2, batch_size=30, progress=True))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 3
    assert "train loss" in lines[0] and "; KL weight 0 -> 0.89 in warm-up)" in lines[0]
    assert "; KL weight 1 -> 1.9 in warm-up)" in lines[1]
    assert "warm-up" not in lines[2] and "KL weight" not in lines[2]
    r = history[0]  # what the line labels: the loss is not recon + kl (nor recon + beta kl)
    assert r["train_loss"] < r["train_recon"] + r["train_kl"]


def test_each_step_passes_its_warm_up_weight_to_the_model(small, monkeypatch):
    """The weight the trainer reports is the weight the step trains with: loss_and_grads
    gets kl_weight(step) for each optimizer step (beta itself once warm-up is over)."""
    model = _vae(beta=0.5)
    trainer = Trainer(model, small, _cfg(epochs=2, warmup_epochs=1, batch_size=90))
    seen, real = [], model.loss_and_grads

    def recording(x, noise=None, kl_weight=None):
        seen.append(kl_weight)
        return real(x, noise, kl_weight)

    monkeypatch.setattr(model, "loss_and_grads", recording)
    trainer.fit()
    assert seen == pytest.approx([trainer.kl_weight(s) for s in range(6)])
    assert seen == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5, 0.5, 0.5])


def test_early_stopping_stops_after_patience_epochs(small):
    # a learning rate so small that the validation loss cannot improve after epoch 1
    cfg = _cfg(epochs=30, patience=2, optimizer="sgd", lr=1e-12)
    history = fit(_vae(), small, cfg)
    assert history.stopped_early
    assert len(history) == 3 and history.best_epoch == 1
    assert history.epochs_since_best() == 2


def test_no_early_stop_while_improving(small):
    history = fit(_vae(), small, _cfg(epochs=4, patience=2, lr=3e-3))
    assert not history.stopped_early and len(history) == 4


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(small, tmp_path, monkeypatch):
    fit(_vae(), small, _cfg(epochs=3, out_dir=str(tmp_path)))  # a good checkpoint at epoch 3
    before = (tmp_path / "checkpoint.npz").read_bytes()
    # resume (its own settings) with an absurd learning rate behind them: Adam moves every
    # weight by ~1e30, logits overflow
    monkeypatch.setattr(Trainer, "_build_optimizer", lambda self: build_optimizer("adam", 1e30))
    cfg = _cfg(epochs=6, out_dir=str(tmp_path), log_every=2)
    with pytest.raises(TrainingDiverged) as info:
        fit(_vae(), small, cfg, resume=True)
    message = str(info.value)
    assert "\n" not in message
    assert "epoch 4" in message and "step" in message
    assert "--lr" in message and "--clip-norm" in message
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert load_checkpoint(tmp_path).epoch == 3


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("out", [False, True])
@pytest.mark.parametrize("grad, what", [(np.inf, "parameters"), (1e20, "optimizer state")])
def test_an_update_that_breaks_the_last_step_is_divergence_not_a_finished_run(
    small, tmp_path, monkeypatch, out, grad, what
):
    """The loss of a step is computed before its update: an infinite gradient in an epoch's
    last step leaves NaN weights that no training loss shows. Without validation, fit
    returned them as a finished run (no run folder), or died saving them with 'refusing to
    save non-finite parameters'; it is divergence, said as such, naming the epoch. A float32
    gradient of 1e20 leaves the weights finite but Adam's second moment (g^2) infinite: saved,
    that checkpoint could not be resumed ('holds NaN or infinite values')."""
    model = _vae()
    real, calls = model.loss_and_grads, []

    def last_step_inf(x, noise=None, kl_weight=None):
        terms, grads = real(x, noise, kl_weight)
        calls.append(1)
        if len(calls) == 10:  # 300 rows, batch 32: step 10 ends epoch 1
            grads.flat[:] = grad
        return terms, grads

    monkeypatch.setattr(model, "loss_and_grads", last_step_inf)
    cfg = _cfg(epochs=1, val_fraction=0.0, out_dir=str(tmp_path) if out else None)
    with pytest.raises(TrainingDiverged, match=f"the {what} became NaN or infinite in epoch 1"):
        fit(model, small, cfg)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_a_non_finite_validation_loss_is_divergence_and_says_what_was_kept(
    small, tmp_path, monkeypatch
):
    """Training finite, validation NaN (from epoch 3, or from the first): the message names
    the validation loss and what the run folder holds: the last checkpoint this run wrote, or
    none, or nothing at all without a folder."""
    validate = Trainer.validate

    def nan_from(epoch):
        def patched(self):
            out = validate(self)
            return {**out, "loss": math.nan} if len(self.history.records) + 1 >= epoch else out

        return patched

    monkeypatch.setattr(Trainer, "validate", nan_from(3))
    with pytest.raises(TrainingDiverged, match="validation loss became NaN") as info:
        fit(_vae(), small, _cfg(epochs=4, out_dir=str(tmp_path / "a")))
    assert str(info.value).endswith(
        f"the last good checkpoint ({tmp_path / 'a' / 'checkpoint.npz'}, epoch 2) is kept"
    )
    assert load_checkpoint(tmp_path / "a").epoch == 2
    monkeypatch.setattr(Trainer, "validate", nan_from(1))
    with pytest.raises(TrainingDiverged, match="in epoch 1") as info:
        fit(_vae(), small, _cfg(epochs=2, out_dir=str(tmp_path / "b")))
    assert str(info.value).endswith(f"no checkpoint of this run was written in {tmp_path / 'b'}")
    with pytest.raises(TrainingDiverged) as info:
        fit(_vae(), small, _cfg(epochs=2))  # no run folder: nothing to say about one
    assert str(info.value).endswith("or check the data for extreme values")


def test_resume_without_a_run_folder_is_refused(small):
    with pytest.raises(ValueError, match="resuming needs the run folder: set out_dir"):
        fit(_vae(), small, _cfg(), resume=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda bk: AE(64, hidden=[16], latent=3, backend=bk),
        lambda bk: DenoisingAE(64, hidden=[16], latent=3, noise="mask", backend=bk),
        lambda bk: SparseAE(64, hidden=[], latent=16, backend=bk),
    ],
)
def test_other_models_train(small, make):
    model = make(Backend(seed=0))
    history = fit(model, small, _cfg(epochs=3, lr=3e-3, optimizer="sgd", momentum=0.9))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert "train_kl" not in history[-1]


def test_clipping_is_applied(small):
    trainer = Trainer(_vae(), small, _cfg(epochs=1, clip_norm=0.5))
    trainer.fit()
    assert trainer.optimizer.clip_norm == 0.5
    assert trainer.optimizer.last_grad_norm is not None


def test_bad_configuration_gives_one_line_errors(small):
    with pytest.raises(ValueError, match="binarization"):
        TrainConfig(binarize="sometimes")
    with pytest.raises(ValueError, match="validation part"):
        TrainConfig(patience=3, val_fraction=0.0)
    with pytest.raises(ValueError, match="learning rate"):
        TrainConfig(lr=0)
    with pytest.raises(DataError, match="features"):
        Trainer(_vae(n_features=10), small, _cfg())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"clip_norm": float("nan")}, "clip norm must be > 0"),
        ({"clip_norm": -1.0}, "clip norm must be > 0"),
        ({"warmup_epochs": float("inf")}, "warm-up epochs must be >= 0 and finite"),
        ({"optimizer": "adamw"}, "unknown optimizer 'adamw'"),
        ({"optimizer": "sgd", "momentum": 2.0}, r"momentum must be in \[0, 1\)"),
    ],
)
def test_train_config_refuses_what_the_cli_refuses(settings, message):
    """What `scratchvae train` refuses (--clip-norm nan, --warmup-epochs inf, ...) the API's
    TrainConfig refuses too, in one line, when it is made: not a run whose KL weight stays 0
    for ever (an infinite warm-up), or one whose every gradient is scaled by NaN."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_memory_mapped_data_trains(tmp_path, digits):
    path = tmp_path / "x.npy"
    np.save(path, (digits.get_batch(slice(0, 200)) * 255).astype(np.uint8))
    data = load_dataset(str(path))
    assert data.memmapped
    history = fit(_vae(), data, _cfg(epochs=1))
    assert math.isfinite(history[-1]["train_loss"])


def test_config_round_trips_through_a_dict():
    cfg = _cfg(epochs=7, clip_norm=1.0, patience=3)
    assert TrainConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    assert TrainConfig.from_dict(cfg.to_dict(), epochs=9).epochs == 9


@pytest.mark.gpu
def test_training_on_cupy_runs_saves_and_resumes(small, tmp_path):
    from scratchvae.checkpoint import load_model

    bk = Backend("cupy", "float32", seed=0)
    model = VAE(64, hidden=[32], latent=4, backend=bk)
    kw = dict(out_dir=str(tmp_path), binarize="dynamic", lr=3e-3)
    history = fit(model, small, _cfg(epochs=2, **kw))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    host, _ = load_model(tmp_path)  # a CuPy run's checkpoint loads on NumPy
    assert np.array_equal(host.params.flat, bk.to_numpy(model.params.flat))
    model2 = VAE(64, hidden=[32], latent=4, backend=Backend("cupy", "float32", seed=0))
    history = fit(model2, small, _cfg(epochs=3, **kw), resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert math.isfinite(history[-1]["train_loss"])
