"""Resuming equals never stopping, bit for bit, in the cases tests/test_resume_exact.py leaves
out: the ops' readable bodies (the kernels off), the encoder's estimators (stl, dreg), a
Gaussian decoder with a fixed std, k draws of the ELBO, SGD without momentum, and every model
kind with its batches split across CPU threads (300 rows on 2). And the same seed gives the
same run in two processes (``scratchvae train`` twice, other hash seeds), on 1 and on 2
threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np  # numpy-boundary: comparing host arrays
import pytest
from same_run import same_checkpoint

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend, kernels, threads
from scratchvae.checkpoint import load_checkpoint
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.models import AE, VAE
from scratchvae.train import TrainConfig, fit

MODELS = {
    "ae-dropout": lambda bk: AE(64, hidden=[8], latent=2, dropout=0.2, backend=bk),
    "dae-gaussian": lambda bk: DenoisingAE(64, hidden=[8], latent=2, backend=bk),
    "dae-mask": lambda bk: DenoisingAE(64, hidden=[8], latent=2, noise="mask", backend=bk),
    "sae": lambda bk: SparseAE(64, hidden=[8], latent=6, backend=bk),
    "vae-gaussian-std": lambda bk: VAE(
        64, hidden=[8], latent=2, likelihood="gaussian", decoder_std=0.1, backend=bk
    ),
    "vae-k3-elbo": lambda bk: VAE(64, hidden=[8], latent=2, k=3, dropout=0.1, backend=bk),
    "vae-stl": lambda bk: VAE(64, hidden=[8], latent=2, estimator="stl", backend=bk),
    "iwae-dreg": lambda bk: VAE(
        64, hidden=[8], latent=2, objective="iwae", k=4, estimator="dreg", dropout=0.1, backend=bk
    ),
}
# (model, dtype, optimizer, kernels on, threads and batch): serial, batches of 40 rows
SERIAL = [
    ("ae-dropout", "float64", "sgd", False),
    ("dae-mask", "float32", "adam", False),
    ("vae-gaussian-std", "float32", "adam", True),
    ("vae-k3-elbo", "float64", "sgd", False),
    ("vae-stl", "float32", "sgd", True),
    ("iwae-dreg", "float64", "adam", False),
]
# split: batches of 300 rows on 2 threads (each chunk 128 rows or more)
SPLIT = [
    ("ae-dropout", "float32", "adam", True),
    ("dae-gaussian", "float64", "sgd", False),
    ("dae-mask", "float32", "sgd", True),
    ("sae", "float64", "adam", True),  # never split: the same run on 2 threads
    ("vae-gaussian-std", "float64", "adam", False),
    ("vae-k3-elbo", "float32", "adam", True),
    ("iwae-dreg", "float32", "sgd", True),
]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(out, opt, epochs, batch_size):
    # SGD without momentum here (test_resume_exact has it with); a warm-up resumed inside it
    lr = 0.02 if opt == "sgd" else 3e-3
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=opt,
                       warmup_epochs=1.5, clip_norm=1.0, binarize="dynamic", progress=False,
                       out_dir=str(out))  # fmt: skip


def _same_run(a, b):
    same_checkpoint(a, b)


def _resumed_equals_never_stopped(tmp_path, data, kind, dtype, opt, batch_size):
    make = MODELS[kind]
    fit(make(Backend("numpy", dtype, 1)), data, _config(tmp_path / "a", opt, 3, batch_size))
    fit(make(Backend("numpy", dtype, 1)), data, _config(tmp_path / "b", opt, 1, batch_size))
    fit(make(Backend("numpy", dtype, 9)), data, _config(tmp_path / "b", opt, 3, batch_size),
        resume=True)  # fmt: skip
    _same_run(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("kind, dtype, opt, on", SERIAL, ids=[c[0] for c in SERIAL])
def test_a_resume_equals_never_stopping(digits, tmp_path, kind, dtype, opt, on):
    data = dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")  # 108: 40 40 28
    with kernels(on), threads(1):
        _resumed_equals_never_stopped(tmp_path, data, kind, dtype, opt, 40)


@pytest.mark.parametrize("kind, dtype, opt, on", SPLIT, ids=[c[0] for c in SPLIT])
def test_a_resume_with_split_batches_equals_never_stopping(digits, tmp_path, kind, dtype, opt, on):
    data = dataset_from_array(digits.x[:700], digits.y[:700], "digits-700")  # 630: 300 300 30
    with kernels(on), threads(2):
        _resumed_equals_never_stopped(tmp_path, data, kind, dtype, opt, 300)
    assert [r["threads"] for r in load_checkpoint(tmp_path / "b").history] == [2, 2, 2]


def _train(tmp_path, name, n_threads, hash_seed, *more):
    argv = [sys.executable, "-m", "scratchvae", "train", "--hidden", "8", "--latent", "2",
            "--batch-size", "300", "--binarize", "dynamic", "--k-train", "2", "--no-progress",
            "--no-figures", "--out", str(tmp_path / name), *more]  # fmt: skip
    env = {**os.environ, "SCRATCHVAE_THREADS": str(n_threads), "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_same_seed_gives_the_same_run_in_two_processes_on_one_and_two_threads(tmp_path):
    for n in (1, 2):
        _train(tmp_path, f"{n}a", n, "1", "--epochs", "2")
        _train(tmp_path, f"{n}b", n, "2", "--epochs", "1")  # and resumed in a third process
        _train(tmp_path, f"{n}b", n, "3", "--epochs", "2", "--resume")
        _same_run(tmp_path / f"{n}a", tmp_path / f"{n}b")
        lines = (tmp_path / f"{n}b" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["threads"] for line in lines] == [n, n]
    one, two = load_checkpoint(tmp_path / "1a"), load_checkpoint(tmp_path / "2a")
    # the split sums in another order: the same seed on another count is another run
    assert any(not np.array_equal(one.params[k], two.params[k]) for k in one.params)
