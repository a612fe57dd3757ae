"""The backprop trace records the real step (every op the model calls, with the implementation
that ran), and its numerical checks pass for right backward ops and catch wrong ones."""

import argparse

import numpy as np  # numpy-boundary: host-side test arithmetic
import pytest

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend, dispatch, kernels
from scratchvae.kernels import cpu
from scratchvae.lab.trace import (
    add_arguments,
    backward_rules,
    check_summary,
    format_trace,
    format_weights,
    run_cli,
    trace_step,
)
from scratchvae.models import AE, VAE
from scratchvae.ops import reparam
from scratchvae.optim import Adam

VAE_FORWARD = [
    ("dense_relu_forward", "encoder.0"),
    ("dense_forward", "encoder.1"),
    ("repeat_forward", ""),  # k copies of [mu | logvar] for k draws (k = 1: itself)
    ("latent_forward", "latent"),
    ("dense_relu_forward", "decoder.0"),
    ("dense_forward", "decoder.1"),
    ("bernoulli_nll_forward", "lik"),
]
VAE_BACKWARD = [
    ("bernoulli_nll_backward", "lik"),
    ("dense_backward", "decoder.1"),
    ("dense_relu_backward", "decoder.0"),
    ("latent_backward", "latent"),
    ("repeat_backward", ""),
    ("dense_backward", "encoder.1"),
    ("dense_relu_backward", "encoder.0"),
]


def _vae(dtype="float64", **kw):
    bk = Backend("numpy", dtype, seed=0)
    model = VAE(10, hidden=kw.pop("hidden", (7,)), latent=3, backend=bk, **kw)
    return model, bk.uniform((4, 10))


def _top(rows, phase):
    return [(r.op, r.where) for r in rows if r.phase == phase and r.depth == 0]


def test_vae_trace_is_the_step_forward_then_backward_mirrored(kernels):
    model, x = _vae()
    noise = model.draw_noise(4)
    rows = trace_step(model, x, noise)
    assert _top(rows, "forward") == VAE_FORWARD
    assert _top(rows, "backward") == VAE_BACKWARD
    assert all(r.rel_err is None for r in rows)
    _, grads = model.loss_and_grads(x, noise)  # the trace's norms are the model's gradients
    norms = {}
    for r in rows:
        if r.op.startswith("dense") and r.phase == "backward" and r.depth == 0:
            norms[f"{r.where}.W"], norms[f"{r.where}.b"] = r.grads["dW"][1], r.grads["db"][1]
    assert set(norms) == set(model.params)
    for name, norm in norms.items():
        assert norm == pytest.approx(float((grads[name] ** 2).sum() ** 0.5), rel=1e-12)
    latent = next(r for r in rows if r.op == "latent_backward")
    assert latent.grads["dh"][0] == (4, 6) and latent.in_shapes == [(4, 3)]
    last = [r for r in rows if r.depth == 0][-1]
    assert last.op == "dense_relu_backward" and "dx" not in last.grads  # need_dx=False


def test_the_implementation_column_shows_what_ran():
    model, x = _vae()
    with kernels(False):
        rows = trace_step(model, x)
    assert {r.impl for r in rows} == {"numpy"}
    nested = [(r.op, r.depth) for r in rows if r.depth == 1]  # the latent layer's own ops
    assert ("reparam_forward", 1) in nested and ("gaussian_kl_backward", 1) in nested
    if cpu.KERNELS:
        with kernels(True):
            rows = trace_step(model, x)
        impl = {r.op: r.impl for r in rows}
        assert impl["dense_relu_forward"] == "numba" and impl["latent_backward"] == "numba"
        assert impl["bernoulli_nll_backward"] == "numpy"  # no kernel: its body ran
        assert not [r for r in rows if r.depth > 0]  # kernels call no other op


def test_tracing_costs_one_global_outside_a_trace():
    model, x = _vae()
    trace_step(model, x)
    assert dispatch._TRACER is None


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned", "mse"])
def test_check_passes_for_every_backward_op(likelihood, kernels):
    model, x = _vae(likelihood=likelihood, dropout=0.3, activation="tanh", beta=0.5)
    rows = trace_step(model, x, check=True, optimizer=Adam(1e-3))
    assert any(r.op == "dropout_backward" for r in rows)
    checked = [r for r in rows if r.phase == "backward" and r.depth == 0]
    assert len(checked) >= 8
    for r in checked:
        assert r.rel_err is not None and r.rel_err < 1e-6, r
    assert all(r.rel_err is None for r in rows if r.phase != "backward")
    assert rows[-1].op == "adam_update" and rows[-1].phase == "update"


def test_float32_model_is_checked_in_float64():
    model, x = _vae(dtype="float32")
    rows = trace_step(model, x, check=True)
    assert max(r.rel_err for r in rows if r.rel_err is not None) < 1e-6


def test_the_check_catches_a_wrong_backward(monkeypatch):
    """The std taken as exp(logvar) in the sample's backward: the latent row's check fails."""
    model, x = _vae()

    def wrong(cache, dz):
        return reparam.ReparamGrads(dz, dz * cache.eps * cache.sigma * cache.sigma)

    monkeypatch.setattr(reparam, "reparam_backward", wrong)  # read by latent_backward's body
    with kernels(False):
        rows = trace_step(model, x, check=True)
    errors = {r.op: r.rel_err for r in rows if r.rel_err is not None}
    assert errors["latent_backward"] > 1e-3
    assert errors["dense_relu_backward"] < 1e-6  # the other ops are still right
    verdict, failed = check_summary(rows)
    assert failed == ["latent_backward"] and verdict.startswith("FAIL: 1 of ")
    assert "FAIL" in format_trace(rows) and " ok" in format_trace(rows)


def test_a_zero_gradient_against_a_nonzero_derivative_is_an_error_of_one(monkeypatch):
    """It read 1e+301 (the error over a zero scale)."""
    model, x = _vae()

    def zero(cache, d):
        like = cache[0]  # eps (the sample's cache) or mu (the KL's): (B, L)
        return reparam.ReparamGrads(0 * like, 0 * like)

    monkeypatch.setattr(reparam, "reparam_backward", zero)  # the sample's part and the KL's
    monkeypatch.setattr(reparam, "gaussian_kl_backward", zero)
    with kernels(False):
        rows = trace_step(model, x, check=True)
    assert [r.rel_err for r in rows if r.op == "latent_backward"] == [1.0]


def test_plain_denoising_and_sparse_aes_are_traced():
    bk = Backend("numpy", "float64", seed=2)
    for model in (
        AE(10, hidden=(6,), latent=2, backend=bk),
        DenoisingAE(10, hidden=(6,), latent=3, noise="mask", dropout=0.2, backend=bk),
        SparseAE(10, hidden=(6,), latent=4, rho=0.1, beta=2.0, backend=bk),
    ):
        rows = trace_step(model, bk.uniform((5, 10)), check=True)
        ops = [r.op for r in rows if r.depth == 0]
        assert ops[0] == "dense_relu_forward" and ops[-1] == "dense_relu_backward"
        checked = [r for r in rows if r.phase == "backward" and r.depth == 0]
        assert checked and all(r.rel_err is not None and r.rel_err < 1e-6 for r in checked)
        if isinstance(model, SparseAE):
            assert {"sigmoid_forward", "sparsity_kl_forward", "sparsity_kl_backward"} <= set(ops)
    with pytest.raises(ValueError, match=r"shape \(batch, 10\)"):
        trace_step(model, bk.uniform((3, 4)))


def test_format_trace_fits_100_columns_and_prints_the_formulas():
    model, x = _vae()
    rows = trace_step(model, x, check=True, optimizer=Adam(1e-3))
    text = format_trace(rows)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert text.index("forward pass") < text.index("backward pass") < text.index("update")
    assert text.index("bernoulli_nll_backward") < text.index("latent_backward")
    assert "rel.err" in text and "|dW| =" in text and "(10, 7)" in text
    rules = backward_rules(rows)
    assert "dL/dmu     = dz" in rules and "dL/dW = x^T @ dy" in rules


def _cli(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_prints_the_whole_step(capsys):
    assert run_cli(_cli("--hidden", "16", "--latent", "4", "--batch-size", "5", "--check")) == 0
    out = capsys.readouterr().out
    for piece in ("latent_forward", "latent_backward", "adam_update", "(5, 64)", "rel.err"):
        assert piece in out, piece
    assert "loss terms" in out and "the backward formulas" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert out.splitlines()[-1].startswith("ok: all ") and "FAIL" not in out


def test_cli_check_exits_1_when_a_backward_is_wrong(monkeypatch, capsys):
    def wrong(cache, dz):
        return reparam.ReparamGrads(dz, dz * cache.eps * cache.sigma * cache.sigma)

    monkeypatch.setattr(reparam, "reparam_backward", wrong)
    with kernels(False):
        assert run_cli(_cli("--hidden", "16", "--latent", "4", "--batch-size", "5", "--check")) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAIL: 1 of ")


@pytest.mark.parametrize("estimator", ["pathwise", "stl", "dreg"])
def test_the_k_sample_step_is_traced_with_its_weights(estimator):
    """An IWAE step: K draws per example through the decoder (K B rows), the bound's weights
    w~ (K, B) kept and printed; every backward checked, except the latent's under stl / dreg,
    which is not the forward's derivative (tests/ops/test_iwae.py checks it statistically)."""
    model, x = _vae(objective="iwae", k=5, estimator=estimator)
    rows = trace_step(model, x, check=True)
    by_op = {r.op: r for r in rows if r.depth == 0}
    assert by_op["iw_latent_forward"].out_shapes == [(5, 4, 3), (5, 4)]
    assert by_op["dense_forward"].in_shapes[0] in [(4, 7), (20, 7)]
    weights = by_op["iw_bound_forward"].weights
    assert weights.shape == (5, 4) and abs(weights.sum(axis=0) - 1).max() < 1e-12
    for r in rows:
        if r.phase == "backward" and r.depth == 0:
            if r.op == "iw_latent_backward" and estimator != "pathwise":
                assert r.rel_err is None
            else:
                assert r.rel_err < 1e-6, (r.op, r.rel_err)
    text = format_weights(rows)
    assert "K = 5 samples per example" in text and "ESS" in text
    assert len(text.splitlines()) == 2 + 4  # header, columns, one line per example
    assert format_weights(trace_step(*_vae())) == ""  # one sample: no weights


def test_the_printed_weights_are_the_steps_importance_weights():
    """format_weights shows w~ = softmax_k log w_k of the step's own draws: recomputed here
    from the same eps (log p(x|z) + log p(z) - log q(z|x), written out), they agree to
    rounding, and so do the largest weight and the ESS printed. The trace's weight gradients
    are the step's. A K-sample ELBO step (objective elbo, stl) weighs each draw 1/K: it was
    printed as "importance weights" with ESS K; it has no importance weights to print."""
    model, x = _vae(objective="iwae", k=5, estimator="dreg")
    noise = model.draw_noise(4)
    rows = trace_step(model, x, noise)
    eps = noise["eps"]  # (K, B, L) = (5, 4, 3)
    mu, logvar = model.encode(x)
    z = mu + np.exp(logvar / 2) * eps
    logits = model.decoder.forward(model.params, z.reshape(20, 3))[0].reshape(5, 4, 10)
    log_w = (x * logits - np.logaddexp(0, logits)).sum(-1)  # log p(x | z), Bernoulli
    log_w += 0.5 * ((eps**2).sum(-1) - (z**2).sum(-1) + logvar.sum(-1))  # log p(z) - log q
    want = np.exp(log_w - log_w.max(axis=0))
    want /= want.sum(axis=0)
    got = next(r.weights for r in rows if r.weights is not None)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-15)
    for b, line in enumerate(format_weights(rows).splitlines()[2:]):
        _, largest, ess, *_ = line.split()
        assert float(largest) == pytest.approx(want[:, b].max(), abs=5e-4)
        assert float(ess) == pytest.approx(1 / (want[:, b] ** 2).sum(), abs=5e-3)
    _, grads = model.loss_and_grads(x, noise)
    for r in rows:
        if r.op.startswith("dense") and r.phase == "backward" and r.depth == 0:
            want_norm = float(np.linalg.norm(grads[f"{r.where}.W"]))
            assert r.grads["dW"][1] == pytest.approx(want_norm, rel=1e-12), r.where
    elbo, _ = _vae(objective="elbo", k=3, estimator="stl")
    assert format_weights(trace_step(elbo, x)) == ""


def test_cli_traces_the_iwae_step(capsys):
    argv = ("--hidden", "16", "--latent", "4", "--objective", "iwae", "--k", "50", "--check")
    assert run_cli(_cli(*argv, "--estimator", "dreg")) == 0
    out = capsys.readouterr().out
    assert "iw_bound_backward" in out and "K = 50 samples" in out and "(50, 8, 4)" in out
    assert "not the forward's derivative" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    with pytest.raises(ValueError, match="dreg"):
        run_cli(_cli("--estimator", "dreg"))  # the elbo objective


def test_cli_defaults_and_bad_input():
    args = _cli()
    assert (args.batch_size, args.seed, args.data, args.dtype) == (8, 0, None, None)  # digits
    assert args.hidden is args.latent is args.k is None  # the defaults: 400, 20, 1
    assert not args.check and args.checkpoint is None and args.data_dir is None
    with pytest.raises(ValueError, match="--batch-size"):
        run_cli(_cli("--batch-size", "0"))
    for flags in (("--latent", "0"), ("--hidden", "8", "0")):
        with pytest.raises(ValueError, match="--latent and every --hidden size must be >= 1"):
            run_cli(_cli(*flags))


def test_cli_traces_a_checkpoint(tmp_path, capsys):
    from scratchvae.checkpoint import save_checkpoint

    model = VAE(64, hidden=(9,), latent=2, backend=Backend("numpy", "float32", seed=3))
    save_checkpoint(tmp_path / "checkpoint.npz", model)
    assert run_cli(_cli("--checkpoint", str(tmp_path), "--batch-size", "2")) == 0
    assert "(2, 9)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--objective, --k: the checkpoint's model is traced"):
        run_cli(_cli("--checkpoint", str(tmp_path), "--objective", "iwae", "--k", "5"))
    save_checkpoint(tmp_path / "checkpoint.npz", VAE(10, hidden=(3,), latent=2))
    with pytest.raises(ValueError, match="takes 10 features, the data has 64; pass the --data"):
        run_cli(_cli("--checkpoint", str(tmp_path)))


def test_cli_takes_the_run_as_the_other_commands_do(tmp_path, capsys):
    """`scratchvae trace RUN` was argparse's "unrecognized arguments: RUN" (evaluate, sample,
    reconstruct and plot take the run that way; trace only as --checkpoint)."""
    from scratchvae.checkpoint import save_checkpoint

    model = VAE(64, hidden=(9,), latent=2, backend=Backend("numpy", "float32", seed=3))
    save_checkpoint(tmp_path / "checkpoint.npz", model)
    assert run_cli(_cli(str(tmp_path), "--batch-size", "2")) == 0
    by_position = capsys.readouterr().out
    assert run_cli(_cli("--checkpoint", str(tmp_path), "--batch-size", "2")) == 0
    assert capsys.readouterr().out == by_position and "(2, 9)" in by_position
    for same in (str(tmp_path), f"{tmp_path}/", str(tmp_path / "checkpoint.npz")):  # one run
        assert run_cli(_cli(str(tmp_path), "--checkpoint", same, "--batch-size", "2")) == 0
    with pytest.raises(ValueError, match="two runs to trace"):
        run_cli(_cli(str(tmp_path), "--checkpoint", str(tmp_path / "other")))


def test_cli_traces_a_checkpoint_on_its_own_data_in_its_dtype(tmp_path, capsys):
    """--checkpoint RUN traced the digits (64 features) whatever the run was trained on: a run
    on MNIST or on one's own file was refused ("pass the --data it was trained on")."""
    import numpy as np

    from scratchvae.train import TrainConfig, fit

    data = tmp_path / "mine.npy"
    np.save(data, np.random.default_rng(0).random((40, 16), dtype=np.float32))
    model = VAE(16, hidden=(6,), latent=2, backend=Backend("numpy", "float64", seed=3))
    run = tmp_path / "run"
    config = TrainConfig(epochs=1, progress=False, out_dir=str(run), data=str(data))
    fit(model, np.load(data), config)
    assert run_cli(_cli("--checkpoint", str(run), "--check")) == 0
    out = capsys.readouterr().out
    assert "numpy float64" in out.splitlines()[0] and "examples of mine.npy" in out
    assert "(8, 16), (16, 6)" in out and out.splitlines()[-1].startswith("ok: all ")
    with pytest.raises(ValueError, match="takes 16 features, the data has 64"):
        run_cli(_cli("--checkpoint", str(run), "--data", "digits"))


def test_the_check_steps_past_a_relu_kink_instead_of_failing():
    """A trained ReLU unit whose pre-activation lies within the difference step of 0: the
    central difference straddled the kink and a right backward was marked FAIL (a Gaussian-
    decoder VAE trained on the digits, traced with --checkpoint RUN --check)."""
    model, x = _vae(hidden=(7,))
    params = model.params
    a = x @ params["encoder.0.W"] + params["encoder.0.b"]  # (4, 7) pre-activations
    params["encoder.0.b"][2] -= a[0, 2] - 3e-7  # example 0, unit 2: 3e-7 above the kink
    rows = trace_step(model, x, check=True)
    kinked = [r for r in rows if r.op == "dense_relu_backward" and r.where == "encoder.0"]
    assert kinked[0].rel_err < 1e-6
    assert check_summary(rows)[1] == []


@pytest.mark.gpu
def test_trace_on_cupy_matches_numpy():
    """Same weights, batch and eps on both backends: the same ops, the same norms; the CuPy
    kernels are checked in float64 on the GPU."""
    model, x = _vae()
    noise = model.draw_noise(4)
    gpu = VAE(10, hidden=(7,), latent=3, backend=Backend("cupy", "float64", seed=0))
    gpu.params.flat[...] = gpu.backend.asarray(model.params.flat)
    rows = trace_step(model, x, noise)
    rows_gpu = trace_step(
        gpu, gpu.backend.asarray(x), {"eps": gpu.backend.asarray(noise["eps"])}, check=True
    )
    assert _top(rows, "backward") == _top(rows_gpu, "backward")
    assert {r.impl for r in rows_gpu if r.op == "latent_backward"} == {"cuda"}
    top = [r for r in rows if r.depth == 0]
    for r, g in zip(top, [r for r in rows_gpu if r.depth == 0], strict=True):
        for name in r.grads:
            assert g.grads[name][1] == pytest.approx(r.grads[name][1], rel=1e-10), r.op
    assert max(r.rel_err for r in rows_gpu if r.rel_err is not None) < 1e-6
