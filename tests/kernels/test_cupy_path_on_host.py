"""The library's GPU code path, end to end, on the host (tests/fake_cupy.py stands in for CuPy).

``Backend("cupy")`` models run here as they would on a GPU, except that the arrays live in
host memory: the op dispatch picks the CUDA kernels (their C compiled for the host), the
products go through the cuBLAS binding (to a stand-in with cuBLAS's semantics), eps comes from
the counter-based generator, Adam's step count lives in an array, the trainer keeps the data
"on the device" and wraps the step in its CUDA graph object (whose capture the stand-in
refuses, so the plain step runs, and the trainer says so once). ``pytest -m gpu`` runs the same
on CuPy itself; this runs in every CI run.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_on_host import usable
from fake_cupy import installed
from test_cpu_kernels import Recorder

from scratchvae import backend
from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend, to_numpy
from scratchvae.checkpoint import load_checkpoint
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.kernels import gpu as gpu_kernels
from scratchvae.models import VAE
from scratchvae.optim import Adam
from scratchvae.train import TrainConfig, fit

WHY_NOT = usable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


MODELS = {
    "vae-dropout": lambda bk: VAE(30, hidden=(16, 12), latent=4, dropout=0.2, backend=bk),
    "iwae-dreg": lambda bk: VAE(
        30, hidden=(16,), latent=3, objective="iwae", k=3, estimator="dreg", backend=bk
    ),
    "vae-k2-gaussian": lambda bk: VAE(
        30, hidden=(16,), latent=3, k=2, likelihood="gaussian", decoder_std=0.3, backend=bk
    ),
    "dae-mask": lambda bk: DenoisingAE(30, hidden=[16], latent=3, noise="mask", backend=bk),
    "sae": lambda bk: SparseAE(30, hidden=[], latent=6, backend=bk),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_training_step_on_the_cupy_path_equals_numpy(kind: str, dtype: str) -> None:
    """Same weights, data and noise: two steps of loss_and_grads + Adam on the CuPy path give
    NumPy's losses, gradients, parameters and moments (float64 to 1e-9, float32 to 1e-4), for
    each model kind; the VAE ran every CUDA kernel of the step, the products through cuBLAS."""
    rtol = 1e-9 if dtype == "float64" else 1e-4
    with installed() as cublas_calls:
        cp = backend.import_cupy()
        bk_np, bk_cp = Backend("numpy", dtype, seed=9), Backend("cupy", dtype, seed=9)
        m_np, m_cp = MODELS[kind](bk_np), MODELS[kind](bk_cp)
        m_cp.params.flat[...] = cp.asarray(m_np.params.flat)
        opt_np, opt_cp, tracer = Adam(1e-2), Adam(1e-2), Recorder()
        for _ in range(2):
            x, noise = bk_np.uniform((8, 30)), m_np.draw_noise(8)
            t_np, g_np = m_np.loss_and_grads(x, noise)
            g_np = g_np.flat.copy()
            opt_np.step(m_np.params, m_np.grads)
            with backend.tracing(tracer):
                noise_cp = {k: cp.asarray(v) for k, v in noise.items()}  # arrays, by name
                t_cp, g_cp = m_cp.loss_and_grads(cp.asarray(x), noise_cp)
                g_cp = to_numpy(g_cp.flat)
                opt_cp.step(m_cp.params, m_cp.grads)
            assert type(m_cp.params.flat) is cp.ndarray
            assert t_cp.keys() == t_np.keys()
            for term in t_np:
                np.testing.assert_allclose(to_numpy(t_cp[term]), t_np[term], rtol=rtol, atol=rtol)
            atol = rtol * np.abs(g_np).max()
            np.testing.assert_allclose(g_cp, g_np, rtol=rtol, atol=atol)
            np.testing.assert_allclose(to_numpy(m_cp.params.flat), m_np.params.flat, rtol=rtol)
        state_cp = opt_cp.state_dict()  # the step count read back from the device
        for key, value in opt_np.state_dict().items():
            got, atol = to_numpy(state_cp[key]), rtol * np.abs(value).max()  # (float32: sums
            np.testing.assert_allclose(got, value, rtol=rtol, atol=atol, err_msg=key)  # cancel)
    ran = {name for name, label, _ in tracer.calls if label == "cuda"}
    assert "dense_relu_forward" in ran or kind == "sae"
    if kind == "vae-dropout":
        assert ran == set(gpu_kernels.KERNELS) - {"accumulate"}, ran
    assert {"sgemm", "dgemm"} & set(cublas_calls.calls) and "gemv" in "".join(cublas_calls.calls)


@pytest.fixture(scope="module")
def tiny():
    digits = load_dataset("digits")
    return dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")


def _config(out, epochs=3):
    return TrainConfig(
        epochs=epochs, batch_size=50, lr=3e-3, warmup_epochs=1.0, out_dir=str(out), progress=False
    )


def test_training_on_the_cupy_path_resumes_exactly(tiny, tmp_path, capsys) -> None:
    """A VAE trained on the CuPy path (data on the device, the generator's counter saved):
    resumed after one epoch by a new model of another seed, it ends with the same parameters,
    Adam state, generator state and history as the run that never stopped; the trainer said
    once why the step runs without a CUDA graph."""
    with installed():
        make = lambda seed: VAE(64, hidden=[8], latent=2, backend=Backend("cupy", "float32", seed))  # noqa: E731
        fit(make(1), tiny, _config(tmp_path / "a"))
        fit(make(1), tiny, _config(tmp_path / "b", epochs=1))
        fit(make(7), tiny, _config(tmp_path / "b"), resume=True)
        a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert '"cupy"' in a.rng_state and a.rng_state == b.rng_state and a.epoch == b.epoch == 3
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
    for key in a.optim_state:
        np.testing.assert_array_equal(a.optim_state[key], b.optim_state[key], err_msg=key)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    said = capsys.readouterr().out.count("runs without a CUDA graph")
    assert said == 2  # once a fit that captures: a, and b once resumed (its first epoch is warm-up)


def test_the_command_line_on_the_cupy_path(tmp_path, capsys) -> None:
    """The README's commands with ``--backend cupy``: train (its figures) and resume, evaluate
    with the importance-weighted bound, sample, reconstruct and trace, each on the device."""
    run = str(tmp_path / "run")
    train = ["train", "--backend", "cupy", "--out", run, "--no-progress"]
    with installed() as cublas_calls:
        from scratchvae.cli import main

        assert main([*train, "--epochs", "2"]) == 0
        assert main([*train, "--epochs", "3", "--resume"]) == 0
        assert load_checkpoint(run).epoch == 3
        cublas_calls.calls.clear()
        assert main(["evaluate", run, "--iw-samples", "20"]) == 0
        assert cublas_calls.calls  # evaluated on the device
        assert main(["sample", run]) == 0
        assert main(["reconstruct", run]) == 0
        assert main(["trace", run, "--backend", "cupy"]) == 0
    out = capsys.readouterr().out
    assert "runs without a CUDA graph" in out and "IW bound" in out
    assert "cupy float32" in out and " cuda " in out  # the trace: the CUDA kernels ran
