"""Smoke tests: every example runs in-process with --fast and writes its figures."""

import math
import os
import subprocess
import sys

import pytest
from dead_port import dead_url
from example_cases import EXAMPLES, FIGURES, import_example, run_example


def check_vae_digits(r):
    for key in ("latent", "latent2"):  # the IWAE bound is at least the ELBO (up to noise)
        assert math.isfinite(r[key]["iw_nll"]) and r[key]["iw_nll"] <= r[key]["neg_elbo"] + 0.5


def check_linear_ae_pca(r):
    assert r["max_angle_deg"] < 1.0  # a linear AE finds the principal subspace


def check_imputation(r):
    for errs in r["errors"].values():
        assert 0 < errs["VAE z = mu"] < 1 and 0 < errs["mean image"] < 1


CHECKS = {
    "vae_digits": check_vae_digits,
    "linear_ae_pca": check_linear_ae_pca,
    "imputation": check_imputation,
    "denoising_ae": lambda r: r["errors"]["gaussian"]["input"] > 0,
    "sparse_ae": lambda r: 0 < r["mean_activation"] < 1,
    "ae_vs_vae": lambda r: r["AE"]["nn"] > 0 and r["VAE"]["nn"] > 0,
    "iwae_snr": lambda r: len(r["rows"]) == 9,
}
EXTRA = {"linear_ae_pca": ["--steps", "1500"]}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_example_writes_its_figures(name, tmp_path, capsys):
    result = run_example(name, tmp_path, *EXTRA.get(name, []))
    for fig in FIGURES[name]:
        path = tmp_path / fig
        assert path.is_file() and path.stat().st_size > 1000, fig
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "done in" in printed and "nan" not in printed.lower()
    assert CHECKS[name](result) is not False


# ---------------------------------------------------------------- bad input: one line, status 2
BAD_INPUT = [
    ("vae_digits", ["--data", "nosuch"], "unknown data set 'nosuch'"),
    ("vae_digits", ["--data", "mnist", "--data-dir", "{tmp}/none"], "could not download"),
    ("vae_digits", ["--backend", "cupy"], "cupy"),
    ("vae_digits", ["--epochs", "-1"], "argument --epochs: expected a whole number >= 1"),
    ("vae_digits", ["--epochs", "0"], "argument --epochs: expected a whole number >= 1"),
    ("vae_digits", ["--n-train", "1", "--epochs", "1"], "argument --n-train: expected"),
    ("vae_digits", ["--n-train", "0"], "argument --n-train: expected a whole number >= 2"),
    ("vae_digits", ["--n-train", "-5"], "argument --n-train: expected a whole number >= 2"),
    ("vae_digits", ["--seed", "-1"], "argument --seed: expected a whole number >= 0"),
    ("vae_digits", ["--batch-size", "0"], "argument --batch-size: expected"),
    ("vae_digits", ["--latent", "0"], "argument --latent: expected a whole number >= 1"),
    ("vae_digits", ["--iw-samples", "-1"], "argument --iw-samples: expected a whole number >= 0"),
    ("vae_digits", ["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ("ae_vs_vae", ["--latent", "0"], "argument --latent: expected a whole number >= 1"),
    ("denoising_ae", ["--epochs", "x"], "argument --epochs: expected a whole number >= 1"),
    ("sparse_ae", ["--fast", "--rho", "0"], "argument --rho: expected a number in (0, 1)"),
    ("sparse_ae", ["--rho", "1"], "argument --rho: expected a number in (0, 1)"),
    ("sparse_ae", ["--units", "0"], "argument --units: expected a whole number >= 1"),
    ("sparse_ae", ["--beta", "-1"], "argument --beta: expected a finite number >= 0"),
    ("linear_ae_pca", ["--fast", "--k", "100"], "--k: expected a whole number from 1 to 63"),
    ("linear_ae_pca", ["--k", "64"], "argument --k: expected a whole number from 1 to 63"),
    ("linear_ae_pca", ["--k", "0"], "argument --k: expected a whole number >= 1"),
    ("linear_ae_pca", ["--steps", "0"], "argument --steps: expected a whole number >= 1"),
    ("linear_ae_pca", ["--epochs", "3"], "--epochs does not apply to this example"),  # ignored
    ("linear_ae_pca", ["--batch-size", "7"], "--batch-size does not apply to this example"),
    ("imputation", ["--k", "0"], "argument --k: expected a whole number >= 1"),
    ("imputation", ["--iters", "0"], "argument --iters: expected a whole number >= 1"),
    ("iwae_snr", ["--repeats", "1"], "argument --repeats: expected a whole number >= 2"),
    ("iwae_snr", ["--ks", "0"], "argument --ks: expected a whole number >= 1"),
    ("iwae_snr", ["--ks", "1", "10", "-3"], "argument --ks: expected a whole number >= 1"),
    ("estimator_variance", ["--fast"], "unrecognized arguments: --fast"),
    ("estimator_variance", ["--data", "mnist"], "unrecognized arguments: --data mnist"),
    ("estimator_variance", ["--repeats", "1"], "argument --repeats: expected a whole number >= 2"),
    ("estimator_variance", ["--seed", "-1"], "argument --seed: expected a whole number >= 0"),
]


def _cupy_works() -> bool:
    from scratchvae.backend import cupy_available

    return cupy_available()


@pytest.mark.parametrize("name, argv, expected", BAD_INPUT)
def test_bad_input_is_one_line_and_status_2_before_training(
    name, argv, expected, tmp_path, capsys, monkeypatch
):
    if "cupy" in argv and _cupy_works():
        pytest.skip("CuPy works here: no error to check")
    # a download that fails at once, without the network: every connection refused
    monkeypatch.setenv("SCRATCHVAE_MNIST_MIRROR", dead_url())
    module, common = import_example(name)
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        common.run(module.main, argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"{name}.py: error: ")
    assert expected.lower() in lines[0].lower()
    assert "last epoch" not in captured.out  # refused before any training


def test_the_scripts_run_through_the_error_wrapper():
    for path in sorted(EXAMPLES.glob("[!_]*.py")):
        tail = path.read_text().rstrip().splitlines()[-2:]
        assert tail == ['if __name__ == "__main__":', "    _common.run(main)"], path.name


def test_a_script_prints_no_traceback(tmp_path):
    """The real program: python examples/NAME.py with bad data."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent)}
    cmd = [sys.executable, str(EXAMPLES / "sparse_ae.py"), "--data", str(tmp_path / "none.npy")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("sparse_ae.py: error: ")


def test_options_given_as_values_not_defaults(tmp_path):
    """--epochs and --n-train are taken as given (not `or default`); the data are not trained."""
    _, common = import_example("sparse_ae")
    p = common.parser("test")
    argv = ["--epochs", "3", "--n-train", "40", "--batch-size", "7", "--out", str(tmp_path)]
    s = common.setup("sparse_ae", argv, p, {"digits": 300, "other": 10})
    assert (s.epochs, s.train.n, s.args.batch_size) == (3, 40, 7)
    s = common.setup("sparse_ae", ["--out", str(tmp_path)], p, {"digits": 300, "other": 10})
    assert (s.epochs, s.train.n, s.args.batch_size) == (300, 1500, None)


def test_the_first_line_says_the_epochs_only_of_an_example_trained_by_epochs(tmp_path, capsys):
    """linear_ae_pca (full-batch steps) said "1 epochs"."""
    _, common = import_example("sparse_ae")
    argv = ["--n-train", "40", "--out", str(tmp_path)]
    for epochs in ("1", "2"):
        common.setup("sparse_ae", [*argv, "--epochs", epochs], common.parser("t"), {"digits": 9})
    common.setup("linear_ae_pca", argv, common.parser("t"), None)
    one, two, steps = capsys.readouterr().out.splitlines()
    subset = "; from the first 40 of the 1,500 training rows"
    assert one.endswith(f"36 train / 4 validation / 297 test rows, 1 epoch{subset}")
    assert two.endswith(f"36 train / 4 validation / 297 test rows, 2 epochs{subset}")
    assert steps.endswith(f"40 train / 297 test rows{subset}")  # no trainer: no validation


def test_the_first_line_counts_the_rows_the_trainer_trains_and_validates_on(
    tmp_path, monkeypatch, capsys
):
    """It said "1500 train" where the trainer held out 150 of them for validation."""
    import scratchvae.train
    from scratchvae.data import train_val_split
    from scratchvae.models import AE

    _, common = import_example("sparse_ae")
    used = []

    def recorded(n, val_fraction, seed):
        fit_rows, val_rows = train_val_split(n, val_fraction, seed)
        used.append(f"{len(fit_rows):,} train / {len(val_rows):,} validation / 297 test rows")
        return fit_rows, val_rows

    monkeypatch.setattr(scratchvae.train, "train_val_split", recorded)
    for n in ("1500", "45"):
        argv = ["--n-train", n, "--epochs", "1", "--seed", "2", "--out", str(tmp_path)]
        s = common.setup("sparse_ae", argv, common.parser("t"), {"digits": 9})
        common.train(AE(64, hidden=(), latent=2, backend=s.backend), s)
    firsts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sparse")]
    assert [line.split("; ")[1].removesuffix(", 1 epoch") for line in firsts] == used
    assert firsts[1].endswith("; from the first 45 of the 1,500 training rows")
    assert used[0] == "1,350 train / 150 validation / 297 test rows"


def test_a_line_says_when_only_some_test_rows_are_used(tmp_path, capsys):
    """MNIST's examples evaluate the first 2,000 test images; the first line said 10000."""
    _, common = import_example("sparse_ae")
    s = common.setup("sparse_ae", ["--out", str(tmp_path)], common.parser("t"), {"digits": 9})
    s.x_test(None), s.x_test(400)  # all 297 rows: nothing to say
    assert s.x_test(5).shape == (5, 64) and s.x_test(5).shape == (5, 64)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["  using the first 5 of the 297 test rows"]  # once


def test_vae_digits_iw_samples_0_skips_the_bound(capsys):
    module, _ = import_example("vae_digits")
    r = {"neg_elbo": 24.0, "recon": 20.0, "kl": 4.0, "iw_nll": None, "iw_samples": 0,
         "bits_per_dim": None, "active_units": 6, "latent": 8}  # fmt: skip
    module.report("VAE", r)
    line = capsys.readouterr().out
    assert "IWAE bound skipped (--iw-samples 0)" in line and "active units 6/8" in line


def test_estimator_variance_writes_under_the_repository_by_default():
    module, common = import_example("estimator_variance")
    assert module.DEFAULT_OUT == common.HERE / "out" / "estimator_variance"
    assert module.DEFAULT_OUT.is_absolute()


def test_the_seed_sets_the_train_validation_split_too(tmp_path, monkeypatch):
    """--seed reached the weights only: the trainer's split was seed 0's whatever --seed said."""
    import scratchvae.train
    from scratchvae.data import train_val_split
    from scratchvae.models import AE

    _, common = import_example("sparse_ae")
    splits = {}

    def recorded(n, val_fraction, seed):
        splits[seed] = train_val_split(n, val_fraction, seed)[1]
        return train_val_split(n, val_fraction, seed)

    monkeypatch.setattr(scratchvae.train, "train_val_split", recorded)
    for seed in ("0", "3"):
        argv = ["--n-train", "40", "--epochs", "1", "--seed", seed, "--out", str(tmp_path)]
        s = common.setup("sparse_ae", argv, common.parser("t"), {"digits": 9})
        common.train(AE(64, hidden=(), latent=2, backend=s.backend), s)
    assert sorted(splits) == [0, 3]
    assert list(splits[0]) == list(train_val_split(40, 0.1, 0)[1])  # the default: as before
    assert list(splits[0]) != list(splits[3])


def test_a_training_line_times_that_training_alone(tmp_path, monkeypatch, capsys):
    """The time printed after a model's training included the data loading and every model
    trained before it (and "1 epochs")."""
    from types import SimpleNamespace

    from scratchvae.train import History

    _, common = import_example("sparse_ae")
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=lambda: clock.now))

    def fit(model, data, config):  # 7 s of training
        clock.now += 7.0
        return History([{"epoch": 1, "train_loss": 1.0}])

    monkeypatch.setattr(common, "fit", fit)
    argv = ["--n-train", "40", "--epochs", "1", "--out", str(tmp_path)]
    s = common.setup("sparse_ae", argv, common.parser("t"), {"digits": 9})
    clock.now += 30.0  # something else before the training (an evaluation, figures)
    common.train(object(), s)
    common.train(object(), s, label="DAE mask")  # which of two models of one class
    lines = capsys.readouterr().out.splitlines()[1:]
    heads = [line.split(";")[0] for line in lines]
    assert heads == ["  object: 1 epoch in 7.0 s", "  DAE mask: 1 epoch in 7.0 s"]
    assert s.elapsed() == "44.0 s"


def test_vae_digits_names_fashion_mnist_classes_in_its_latent_legends(tmp_path, monkeypatch):
    """Both latent figures of a Fashion-MNIST run said 0..9 (here a stand-in archive of random
    images in the place of fashion-mnist-train.npz / -test.npz, read without a download)."""
    import numpy as np  # numpy-boundary: building a stand-in data set

    from scratchvae import plots
    from scratchvae.data.labels import FASHION_MNIST_CLASSES

    rng = np.random.default_rng(0)
    (tmp_path / "fashion-mnist").mkdir()
    for split, n in (("train", 300), ("test", 40)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        np.savez(
            tmp_path / "fashion-mnist" / f"fashion-mnist-{split}.npz", x=x, y=np.arange(n) % 10
        )
    names, draw = [], plots.plot_latent

    def recorded(model, x, y, path, class_names=None):
        names.append((path.name, class_names))
        return draw(model, x, y, path, class_names)

    monkeypatch.setattr(plots, "plot_latent", recorded)
    argv = ["--data", "fashion-mnist", "--data-dir", str(tmp_path), "--iw-samples", "0"]
    run_example("vae_digits", tmp_path / "out", *argv)
    assert names == [
        ("latent.png", FASHION_MNIST_CLASSES),
        ("latent_2d.png", FASHION_MNIST_CLASSES),
    ]
