"""Tests of the backprop trace: it replays the model's step exactly, covers every op from the
loss to the input (both branches into mu and logvar), and its numerical checks catch bugs."""

import argparse

import pytest

import scratchvae.trace as trace_mod
from scratchvae.activations import Activation, relu_forward
from scratchvae.backend import Backend
from scratchvae.models import AE, VAE, DenoisingAE, SparseAE
from scratchvae.trace import _act_check, add_arguments, format_trace, run_cli, trace_step

CHECKED_OPS = ("_backward",)  # every row whose op is a library backward function gets checked


def _vae(dtype="float64", **kw):
    bk = Backend("numpy", dtype, seed=0)
    model = VAE(10, hidden=kw.pop("hidden", (7,)), latent=3, backend=bk, **kw)
    return model, bk.uniform((4, 10))


def test_vae_trace_covers_the_chain_from_loss_to_input():
    model, x = _vae()
    rows = trace_step(model, x)
    ops = [(r.op, r.at) for r in rows]
    assert ops[0] == ("loss = recon + beta * kl", "loss")
    assert ops[1] == ("bernoulli_nll_backward", "recon")
    # the sample branch and the KL branch into mu and logvar, then their sums
    i = ops.index(("reparam_backward", "z -> mu"))
    assert ops[i : i + 6] == [
        ("reparam_backward", "z -> mu"),
        ("reparam_backward", "z -> logvar"),
        ("gaussian_kl_backward", "kl -> mu"),
        ("gaussian_kl_backward", "kl -> logvar"),
        ("sum of branches", "mu"),
        ("sum of branches", "logvar"),
    ]
    assert rows[i - 1].grad == "dL/dz" and rows[i - 1].grad_shape == (4, 3)
    assert rows[-1].op == "dense_backward" and rows[-1].grad == "dL/dx"
    assert rows[-1].grad_shape == (4, 10)
    dense = [r for r in rows if r.op == "dense_backward"]
    assert len(dense) == 4  # two layers in the decoder, two in the encoder
    assert set().union(*(r.params for r in dense)) == set(model.params)
    assert all(r.rel_err is None for r in rows)


def test_trace_row_norms_are_the_model_gradients():
    model, x = _vae()
    noise = model.draw_noise(4)
    rows = trace_step(model, x, noise)
    _, grads = model.loss_and_grads(x, noise)
    for r in rows:
        for name, (shape, norm) in r.params.items():
            assert shape == grads[name].shape
            assert norm == pytest.approx(float((grads[name] ** 2).sum() ** 0.5), rel=1e-12)
    mu_row = next(r for r in rows if r.op == "sum of branches" and r.at == "mu")
    path = next(r for r in rows if r.at == "z -> mu")
    assert mu_row.grad_norm != pytest.approx(path.grad_norm)  # the KL branch was added


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned", "mse"])
def test_check_passes_for_every_op_and_likelihood(likelihood):
    model, x = _vae(likelihood=likelihood, dropout=0.3, activation="tanh")
    rows = trace_step(model, x, check=True)
    assert any(r.op == "dropout_backward" for r in rows)
    checked = [r for r in rows if r.op.endswith("_backward")]
    assert len(checked) >= 12
    for r in checked:
        assert r.rel_err is not None and r.rel_err < 1e-6, r
    for r in rows:
        if not r.op.endswith("_backward"):
            assert r.rel_err is None


def test_float32_model_is_checked_in_float64():
    model, x = _vae(dtype="float32")
    rows = trace_step(model, x, check=True)
    assert max(r.rel_err for r in rows if r.rel_err is not None) < 1e-6


def test_trace_that_differs_from_the_model_fails(monkeypatch):
    """A wrong backward in the replay (the std taken as exp(logvar)) is caught at the end."""
    model, x = _vae()

    def wrong(cache, dz):
        eps, sigma = cache
        return dz, dz * eps * sigma * sigma  # d/dlogvar of mu + exp(logvar) eps

    monkeypatch.setattr(trace_mod, "reparam_backward", wrong)
    with pytest.raises(AssertionError, match="trace vs model.loss_and_grads"):
        trace_step(model, x)


def test_numerical_check_catches_a_wrong_backward():
    bk = Backend("numpy", "float64", seed=1)
    a, dy = bk.normal((3, 5)), bk.normal((3, 5))
    bad = Activation("relu", relu_forward, lambda y, dy: dy * (y >= 0) * 0.5)
    assert _act_check(bad, a, dy, None)() > 0.1


def test_plain_ae_is_traced_and_other_models_are_refused():
    bk = Backend("numpy", "float64", seed=2)
    ae = AE(10, hidden=(6,), latent=2, backend=bk)
    rows = trace_step(ae, bk.uniform((3, 10)), check=True)
    assert rows[0].op == "loss = recon" and rows[-1].grad == "dL/dx"
    assert [r.grad for r in rows if r.op == "dense_backward"][1] == "dL/dcode"

    class CustomAE(AE):  # a model the trace does not know how to replay
        pass

    with pytest.raises(TypeError, match="supports AE, DAE, SAE and VAE, got CustomAE"):
        trace_step(CustomAE(10, hidden=(6,), latent=2, backend=bk), bk.uniform((3, 10)))
    with pytest.raises(ValueError, match=r"shape \(batch, 10\)"):
        trace_step(ae, bk.uniform((3, 4)))
    vae, x = _vae()
    with pytest.raises(ValueError, match="'eps' of shape \\(4, 3\\)"):
        trace_step(vae, x, {"eps": bk.normal((4, 2))})


@pytest.mark.parametrize("noise", ["gaussian", "mask"])
def test_denoising_ae_is_traced_from_the_clean_loss_to_the_corrupted_input(noise):
    bk = Backend("numpy", "float64", seed=4)
    dae = DenoisingAE(10, hidden=(6,), latent=3, noise=noise, dropout=0.2, backend=bk)
    rows = trace_step(dae, bk.uniform((5, 10)), check=True)  # matches dae.loss_and_grads
    assert "CLEAN x" in rows[0].rule and rows[-1].grad == "dL/dx~"
    checked = [r for r in rows if r.op.endswith(CHECKED_OPS)]
    assert checked and all(r.rel_err is not None and r.rel_err < 1e-6 for r in checked)


def test_sparse_ae_trace_has_the_sparsity_and_sigmoid_rows():
    bk = Backend("numpy", "float64", seed=5)
    sae = SparseAE(10, hidden=(6,), latent=4, rho=0.1, beta=2.0, backend=bk)
    rows = trace_step(sae, bk.uniform((6, 10)), check=True)  # matches sae.loss_and_grads
    ops = [r.op for r in rows]
    assert ops[0] == "loss = recon + beta * sparsity" and rows[-1].grad == "dL/dx"
    i = ops.index("sparsity_kl_backward")
    assert ops[i + 1 : i + 3] == ["sum of branches", "sigmoid_backward"]
    assert rows[i - 1].grad == "dL/dh"  # the decoder's branch arrives first
    checked = [r for r in rows if r.op.endswith(CHECKED_OPS)]
    assert all(r.rel_err is not None and r.rel_err < 1e-6 for r in checked)


def test_format_trace_reads_from_loss_to_input():
    model, x = _vae()
    text = format_trace(trace_step(model, x, check=True))
    lines = text.splitlines()
    assert "rel.err" in lines[0] and "rule" in lines[0]
    body = [ln for ln in lines[2:] if ln[:3].strip()]  # numbered rows, not parameter lines
    assert "loss = recon + beta * kl" in body[0]
    assert "dL/dx" in body[-1]
    assert text.index("bernoulli_nll_backward") < text.index("reparam_backward")
    assert text.index("reparam_backward") < text.index("encoder.0.dense")
    assert "dL/dencoder.0.W" in text and "(10, 7)" in text


def _cli(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_prints_the_whole_chain(capsys):
    args = _cli("--hidden", "16", "--latent", "4", "--batch-size", "5", "--check")
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    for piece in (
        "bernoulli_nll_backward",
        "reparam_backward",
        "gaussian_kl_backward",
        "sum of branches",
        "dL/dx",
        "(5, 64)",
        "rel.err",
        "loss terms",
    ):
        assert piece in out, piece


def test_cli_defaults_and_bad_input():
    args = _cli()
    assert (args.batch_size, args.seed, args.data, args.hidden, args.latent) == (
        8,
        0,
        "digits",
        [400],
        20,
    )
    assert not args.check and args.checkpoint is None and args.data_dir is None
    with pytest.raises(ValueError, match="--batch-size"):
        run_cli(_cli("--batch-size", "0"))


def test_cli_traces_a_checkpoint(tmp_path, capsys):
    ckpt = pytest.importorskip("scratchvae.checkpoint")
    model = VAE(64, hidden=(9,), latent=2, backend=Backend("numpy", "float32", seed=3))
    ckpt.save_checkpoint(tmp_path / "checkpoint.npz", model)
    assert run_cli(_cli("--checkpoint", str(tmp_path), "--batch-size", "2")) == 0
    assert "(2, 9)" in capsys.readouterr().out


@pytest.mark.gpu
def test_trace_on_cupy_matches_numpy():
    """Same weights, batch and eps on both backends: the same rows, the same norms."""
    model, x = _vae()
    noise = model.draw_noise(4)
    gpu = VAE(10, hidden=(7,), latent=3, backend=Backend("cupy", "float64", seed=0))
    for name in model.params:
        gpu.params[name] = model.params[name]
    rows = trace_step(model, x, noise)
    rows_gpu = trace_step(
        gpu, gpu.backend.asarray(x), {"eps": gpu.backend.asarray(noise["eps"])}, check=True
    )
    assert [r.op for r in rows] == [r.op for r in rows_gpu]
    for r, g in zip(rows, rows_gpu):
        assert g.grad_norm == pytest.approx(r.grad_norm, rel=1e-10), r.op
    assert max(r.rel_err for r in rows_gpu if r.rel_err is not None) < 1e-6
