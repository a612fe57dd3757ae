"""scratchvae.bench.equivalence: a reference that computes other numbers is caught, in one line,
before anything is timed. The references here are fakes built from scratchvae itself (a copy
of the model, a second Adam), each with one planted difference; no PyTorch or JAX needed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np  # numpy-boundary: test arrays
import pytest

from scratchvae.backend import Backend, to_numpy
from scratchvae.bench import cli, equivalence, timing
from scratchvae.models import VAE
from scratchvae.optim import Adam


def _step(dtype: str, batch: int = 16) -> timing.ScratchStep:
    return timing.ScratchStep(timing.CONFIGS["mnist"], batch, Backend("numpy", dtype, seed=0))


class Fake:
    """A reference made of a second scratchvae VAE holding a copy of the weights."""

    name = "fake"

    def __init__(
        self, step, kl_weight=1.0, adam=None, nudge=0.0, x_flip=False, grad_off=0.0
    ) -> None:
        bk = step.model.backend
        self.model = VAE(**timing.CONFIGS["mnist"], backend=Backend("numpy", bk.dtype.name, 1))
        for n in step.model.params:
            self.model.params[n] = to_numpy(step.model.params[n])
        self.model.params["decoder.1.b"][0] += nudge  # a weight not copied exactly
        self.x = bk.asarray(to_numpy(step.x).copy())
        if x_flip:
            self.x[0, 0] = 1 - self.x[0, 0]  # another batch
        self.kl_weight = kl_weight
        self.grad_off = grad_off  # one gradient array this much off, relative
        self.opt = Adam(**({"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8} | (adam or {})))

    def weights(self):
        return {n: to_numpy(self.model.params[n]) for n in self.model.params}

    def loss_and_grads(self, eps):
        terms, grads = self.model.loss_and_grads(self.x, {"eps": eps}, self.kl_weight)
        grads = {n: to_numpy(grads[n]).copy() for n in grads}
        grads["encoder.0.W"] *= 1 + self.grad_off
        return float(terms["loss"]), grads

    def adam(self, grads):
        for g in grads:
            self.opt.step(self.model.params, g)
        return self.weights()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_faithful_reference_passes_and_the_weights_stay_as_they_were(dtype) -> None:
    step = _step(dtype)
    before = step.model.params.flat.copy()
    row = equivalence.compare(step, Fake(step))
    assert row["ok"], row
    assert row["weights_max_rel_diff"] == 0 and row["loss_rel_diff"] <= 1e-12
    assert (step.model.params.flat == before).all()  # the timed steps start from these


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "plant, figure",
    [
        ({"kl_weight": -1.0}, "its gradients differ"),  # a wrong sign in the KL
        ({"kl_weight": 0.5}, "its gradients differ"),  # KL halved
        ({"adam": {"eps": 1e-7}}, "its Adam update differs"),  # eps 1e-7 instead of 1e-8
        ({"adam": {"betas": (0.8, 0.999)}}, "its Adam update differs"),  # another beta1
        ({"adam": {"betas": (0.9, 0.99)}}, "its Adam update differs"),  # another beta2
        ({"adam": {"lr": 1.01e-3}}, "its Adam update differs"),  # lr 1% off
        ({"adam": {"lr": 1.0001e-3}}, "its Adam update differs by 1.0e-04 in "),  # 0.01% off:
        # under float32's one tolerance of 2e-4 for every array (now each array's own)
        ({"x_flip": True}, "differ"),  # one pixel of another batch
        ({"nudge": 1e-6}, "its copy of the initial weights differs"),
    ],
)
def test_a_planted_difference_is_caught_in_one_line(dtype, plant, figure) -> None:
    step = _step(dtype)
    row = equivalence.compare(step, Fake(step, **plant))
    assert not row["ok"], row
    with pytest.raises(equivalence.ReferenceMismatch) as info:
        equivalence.raise_if_disagrees({"config": "mnist", "dtype": dtype, "batch": 16, **row})
    line = str(info.value)
    assert "\n" not in line and line.startswith(
        f"fake does not compute scratchvae's step (mnist {dtype} batch 16): "
    )
    assert figure in line and line.endswith("; nothing was timed")


def test_a_disagreeing_reference_stops_the_run_before_timing_and_writes_nothing(
    tmp_path, monkeypatch, capsys
) -> None:
    """Was: the mismatch went into the results as 'NO', every cell was timed anyway and the
    files written (replacing an earlier run's), then exit status 1."""
    earlier = '{"schema": "scratchvae-bench/1", "note": "earlier results"}'
    (tmp_path / "t.json").write_text(earlier)
    monkeypatch.setattr(cli, "_resolve_torch", lambda device, log: "cpu")
    info = cli.machine_info
    monkeypatch.setattr(cli, "machine_info", lambda backend, device: info(backend, None))
    monkeypatch.setattr(
        cli,
        "check_torch",
        lambda step, device: equivalence.compare(step, Fake(step, kl_weight=-1.0)),
    )

    def timed(*args, **kwargs):
        raise AssertionError("timed a reference that disagrees")

    monkeypatch.setattr(cli, "time_interleaved", timed)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--quick", "--no-jax", "--out", str(tmp_path), "--name", "t", "--eval-k", "0"]
    )
    assert cli.run_cli(args) == 1
    out, err = capsys.readouterr()
    assert err.startswith(
        "scratchvae: error: fake does not compute scratchvae's step "
        "(mnist float32 batch 32): its gradients differ by "
    )
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]
    assert (tmp_path / "t.json").read_text() == earlier


def test_the_update_tolerance_is_the_rounding_of_the_weights_and_the_step() -> None:
    # two steps of lr 1e-3; the MNIST decoder's weights reach 1.16 (ulp 1.19e-7), biases are 0
    ones = np.full(3, 1.16)
    update = np.full(3, 2e-3)
    step_and_b2 = 16 * 2.0**-23 + 2 * 2.0**-23 / (4 * (1 - 0.999**2))  # 1.9e-6 + 3.0e-5
    assert equivalence.update_tolerance(ones, update, "float32", 2, 0.999) == pytest.approx(
        2 * 2.0**-23 / 2e-3 + step_and_b2
    )
    assert equivalence.update_tolerance(0 * ones, update, "float32", 2, 0.999) == pytest.approx(
        2 * 2.0**-32 / 2e-3 + step_and_b2  # the weights after: 2e-3, ulp 2**-32
    )
    assert 1.4e-4 < equivalence.update_tolerance(ones, update, "float32", 2, 0.999) < 1.6e-4
    assert equivalence.update_tolerance(ones, update, "float64", 2, 0.999) < 3e-13


@pytest.mark.parametrize("dtype, off", [("float32", 1e-5), ("float64", 3e-14)])
def test_a_gradient_slightly_off_is_caught(dtype, off) -> None:
    """The encoder's first weight gradient 1e-5 off relative (float32; 3e-14 in float64):
    under the one tolerance of 2e-4 (1e-9) for the loss and every gradient, it passed."""
    step = _step(dtype)
    assert off < equivalence.EQ_TOL[dtype]  # what let it through
    row = equivalence.compare(step, Fake(step, grad_off=off))
    assert row["grad_max_rel_diff"] == pytest.approx(off, rel=0.02)
    assert row["grad_max_rel_diff"] > row["grad_tolerance"] and not row["ok"], row
    with pytest.raises(equivalence.ReferenceMismatch, match="its gradients differ by"):
        equivalence.raise_if_disagrees(row)


def test_the_loss_and_gradient_tolerances_are_the_rounding_of_the_products() -> None:
    """2 u sqrt(K): K the inner dimensions on the way (docstring of step_tolerances), for the
    MNIST config (784-400-40, 20-400-784); an IWAE bound adds 4 u |loss| to the gradients'."""
    u = 2.0**-24
    model = VAE(**timing.CONFIGS["mnist"], backend=Backend("numpy", "float32", 0))
    loss_tol, grad_tol = equivalence.step_tolerances(model, 128, "float32", 100.0)
    assert loss_tol == pytest.approx(2 * u * (1604 + 784 + 128) ** 0.5)  # 6.0e-6
    assert grad_tol == pytest.approx(2 * u * (3228 + 128) ** 0.5)  # 6.9e-6
    assert grad_tol < 1e-5
    f64 = equivalence.step_tolerances(model, 128, "float64", 100.0)
    assert f64 == pytest.approx((loss_tol * 2.0**-29, grad_tol * 2.0**-29))
    iwae = VAE(784, hidden=[200, 200], latent=50, activation="tanh", objective="iwae", k=50,
               backend=Backend("numpy", "float32", 0))  # fmt: skip
    shapes = 984 + 400 + 300 + 250 + 400 + 984  # the six layers' n_in + n_out
    assert equivalence.step_tolerances(iwae, 20, "float32", -549.0)[1] == pytest.approx(
        2 * u * (shapes + 50 * 20) ** 0.5 + 4 * u * 549.0
    )


def _committed_rows():
    """Every compare row in benchmarks/results/*.json (CPU and GPU runs, PyTorch and JAX)."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    rows = []

    def walk(o, name):
        if isinstance(o, dict):
            if "loss_rel_diff" in o:
                rows.append((name, o))
            for v in o.values():
                walk(v, name)
        elif isinstance(o, list):
            for v in o:
                walk(v, name)

    for path in sorted(results.glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return rows


def test_no_committed_run_would_fail_the_derived_tolerances() -> None:
    """The measured differences of every genuine run committed (float32 and float64, CPU and
    GPU) are within the derived tolerances, by a factor of 10 at least; and such old rows,
    which carry one "tolerance", still read (raise_if_disagrees says nothing)."""
    rows = _committed_rows()
    assert len(rows) >= 20 and {r["reference"] for _, r in rows} >= {"torch-cuda", "jax-cpu"}
    for name, r in rows:
        model = VAE(**timing.CONFIGS[r["config"]], backend=Backend("numpy", r["dtype"], 0))
        loss_tol, grad_tol = equivalence.step_tolerances(
            model, r["batch"], r["dtype"], r["loss_reference"]
        )
        where = f"{name} {r['reference']} {r['config']} {r['dtype']} {r['batch']}"
        assert r["loss_rel_diff"] <= loss_tol / 10, where
        assert r["grad_max_rel_diff"] <= grad_tol / 10, where
        equivalence.raise_if_disagrees(r)


def test_an_old_row_reads_with_its_one_tolerance() -> None:
    """A row written before step_tolerances: "tolerance" for the loss, the gradients and (with
    no per-array figure) the update."""
    old = {"reference": "torch-cpu", "config": "mnist", "dtype": "float32", "batch": 128,
           "weights_max_rel_diff": 0.0, "loss_rel_diff": 1e-7, "grad_max_rel_diff": 3e-4,
           "adam_update_max_rel_diff": 1e-5, "tolerance": 2e-4, "ok": False}  # fmt: skip
    with pytest.raises(equivalence.ReferenceMismatch, match=r"gradients differ by 3.0e-04 "
                       r"\(relative; tolerance 2.0e-04\)"):  # fmt: skip
        equivalence.raise_if_disagrees(old)
