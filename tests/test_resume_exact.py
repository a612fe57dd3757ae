"""Resuming equals never stopping, bit for bit, for every model kind, both optimizers, both
dtypes, with early stopping and sparse checkpoints; after Ctrl-C in an epoch or in a checkpoint
write too; and the metrics file holds each epoch once. (The suite pins the CPU thread count:
conftest.py.)"""

from __future__ import annotations

import json

import pytest
from same_run import same_checkpoint

import scratchvae.checkpoint as checkpoint_module
from scratchvae.atomic import temp_files
from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend, threads
from scratchvae.checkpoint import load_checkpoint
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.models import AE, VAE
from scratchvae.train import TrainConfig, Trainer, fit

MODELS = {
    "ae-dropout": lambda bk: AE(64, hidden=[8], latent=2, dropout=0.2, backend=bk),
    "dae-gaussian": lambda bk: DenoisingAE(64, hidden=[8], latent=2, backend=bk),
    "dae-mask": lambda bk: DenoisingAE(64, hidden=[8], latent=2, noise="mask", backend=bk),
    "sae": lambda bk: SparseAE(64, hidden=[], latent=6, backend=bk),
    "vae-bernoulli": lambda bk: VAE(64, hidden=[8], latent=2, backend=bk),
    "vae-gaussian": lambda bk: VAE(64, hidden=[8], latent=2, likelihood="gaussian", backend=bk),
    "iwae-k3": lambda bk: VAE(
        64, hidden=[8], latent=2, objective="iwae", k=3, dropout=0.1, backend=bk
    ),
}
# (model, dtype, optimizer, extra settings): each kind, dtype and optimizer at least once
CASES = [
    ("ae-dropout", "float64", "sgd", {"patience": 1}),
    ("dae-gaussian", "float32", "adam", {"save_every": 2, "log_every": 1}),
    ("dae-mask", "float64", "adam", {"binarize": "dynamic"}),
    ("sae", "float32", "sgd", {"save_every": 3}),
    ("vae-bernoulli", "float32", "adam", {"warmup_epochs": 1.5, "binarize": "dynamic"}),
    ("vae-gaussian", "float64", "sgd", {"patience": 2, "clip_norm": 1.0}),
    ("iwae-k3", "float32", "adam", {"save_every": 2, "warmup_epochs": 1.0}),
]


@pytest.fixture(scope="module")
def tiny():
    digits = load_dataset("digits")
    return dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")


def _config(out, opt, extra, epochs=4):
    lr, momentum = (0.05, 0.5) if opt == "sgd" else (3e-3, 0.0)
    settings = dict(batch_size=40, lr=lr, optimizer=opt, momentum=momentum, progress=False)
    return TrainConfig(epochs=epochs, out_dir=str(out), **{**settings, **extra})


def _metrics(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    drop = ("seconds", "samples_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def _same_run(a, b):
    """Two run folders hold the same run: parameters, optimizer and generator state, metrics."""
    _, cb = same_checkpoint(a, b)
    assert _metrics(a) == _metrics(b)
    assert [r["epoch"] for r in _metrics(b)] == list(range(1, cb.epoch + 1))
    assert not temp_files(b / "checkpoint.npz") and not temp_files(b / "metrics.jsonl")


@pytest.mark.parametrize("kind, dtype, opt, extra", CASES, ids=[c[0] for c in CASES])
def test_resuming_from_a_finished_or_a_mid_run_checkpoint_equals_never_stopping(
    tiny, tmp_path, kind, dtype, opt, extra
):
    make = MODELS[kind]
    fit(make(Backend("numpy", dtype, 1)), tiny, _config(tmp_path / "a", opt, extra))
    for done in (1, 2):  # a run that ended there, resumed by new objects (another init)
        out = tmp_path / f"b{done}"
        fit(make(Backend("numpy", dtype, 1)), tiny, _config(out, opt, extra, epochs=done))
        fit(make(Backend("numpy", dtype, 9)), tiny, _config(out, opt, extra), resume=True)
        _same_run(tmp_path / "a", out)


def _interrupt(monkeypatch, target, name, after):
    """KeyboardInterrupt on the ``after``-th call of ``target.name`` (the call not made)."""
    real, calls = getattr(target, name), []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == after:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)


@pytest.mark.parametrize(
    "where, after",
    [("step", 2), ("step", 8), ("savez", 1), ("savez", 2), ("write", 3)],
    ids=["epoch-1", "epoch-3", "first-checkpoint-write", "second-checkpoint-write", "metrics"],
)
def test_ctrl_c_anywhere_leaves_whole_files_and_resumes_to_the_same_run(
    tiny, tmp_path, monkeypatch, where, after
):
    make = MODELS["dae-mask"]
    extra = {"save_every": 2, "binarize": "dynamic"}  # the metrics run ahead of the checkpoint
    fit(make(Backend("numpy", "float32", 1)), tiny, _config(tmp_path / "a", "adam", extra))
    out = tmp_path / "b"
    with monkeypatch.context() as mp:
        if where == "step":  # 3 steps an epoch
            _interrupt(mp, Trainer, "train_step", after)
        elif where == "savez":
            _interrupt(mp, checkpoint_module.np, "savez", after)
        else:
            _interrupt(mp, Trainer, "_save", after)
        with pytest.raises(KeyboardInterrupt):
            fit(make(Backend("numpy", "float32", 1)), tiny, _config(out, "adam", extra))
    assert not temp_files(out / "checkpoint.npz") and not temp_files(out / "metrics.jsonl")
    if (out / "checkpoint.npz").exists():
        ckpt = load_checkpoint(out)  # whole: loads and checks
        assert [r["epoch"] for r in _metrics(out)][: ckpt.epoch] == list(range(1, ckpt.epoch + 1))
        fit(make(Backend("numpy", "float32", 9)), tiny, _config(out, "adam", extra), resume=True)
    else:  # nothing to resume: the run again from the start
        fit(make(Backend("numpy", "float32", 1)), tiny, _config(out, "adam", extra), replace=True)
    _same_run(tmp_path / "a", out)


def test_the_same_trainer_resumes_after_ctrl_c_and_starts_a_new_run_afresh(
    tiny, tmp_path, monkeypatch
):
    make = MODELS["vae-bernoulli"]
    fit(make(Backend("numpy", "float32", 1)), tiny, _config(tmp_path / "a", "adam", {}))
    out = tmp_path / "b"
    trainer = Trainer(make(Backend("numpy", "float32", 1)), tiny, _config(out, "adam", {}))
    with monkeypatch.context() as mp:
        _interrupt(mp, Trainer, "train_step", 8)  # in epoch 3
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    trainer.fit(resume=True)  # the object that was interrupted, its state half an epoch on
    _same_run(tmp_path / "a", out)
    # a new run on it (replace=True) counts its epochs from 1 again: they used to follow the
    # old run's in the history and metrics.jsonl (1 2 3 4 1 2 3 4), its steps and Adam's too
    history = trainer.fit(replace=True)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3, 4]
    ckpt = load_checkpoint(out)
    assert ckpt.step == trainer.step == 12 and int(ckpt.optim_state["t"]) == 12
    with pytest.raises(ValueError, match="resume=True continues a run, replace=True deletes it"):
        trainer.fit(resume=True, replace=True)


def test_a_pinned_thread_count_gives_the_same_numbers_twice_and_is_in_the_metrics(tmp_path):
    # batches of 256 rows are split across 2 threads (backend/threads.py): the step's sums
    # depend on the count, so each epoch records it and a pinned count repeats bit for bit
    digits = load_dataset("digits")
    data = dataset_from_array(digits.x[:600], digits.y[:600], "digits-600")
    make, big = MODELS["vae-bernoulli"], {"batch_size": 256}
    with threads(2):
        for name in ("a", "b"):
            fit(make(Backend(seed=1)), data, _config(tmp_path / name, "adam", big, epochs=3))
        out = tmp_path / "c"  # and resumed
        fit(make(Backend(seed=1)), data, _config(out, "adam", big, epochs=1))
        fit(make(Backend(seed=9)), data, _config(out, "adam", big, epochs=3), resume=True)
    _same_run(tmp_path / "a", tmp_path / "b")
    _same_run(tmp_path / "a", out)
    assert [r["threads"] for r in _metrics(out)] == [2, 2, 2]
