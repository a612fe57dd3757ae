"""Smoke tests: every example runs in-process with --fast and writes its figures."""

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dead_port import dead_url

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FIGURES = {
    "vae_digits": [
        "curves.png",
        "recon.png",
        "samples.png",
        "latent.png",
        "manifold_2d.png",
        "latent_2d.png",
    ],
    "ae_vs_vae": ["ae_vs_vae_samples.png"],
    "denoising_ae": ["denoise_gaussian.png", "denoise_mask.png"],
    "sparse_ae": ["decoder_features.png", "encoder_features.png"],
    "linear_ae_pca": ["pca_vs_linear_ae.png"],
    "imputation": ["imputation_bottom-half.png", "imputation_random.png"],
    "iwae_snr": ["iwae_snr.png"],
}


def run_example(name: str, out: Path, *extra: str) -> dict:
    sys.path.insert(0, str(EXAMPLES))
    try:
        module = importlib.import_module(name)
        return module.main(["--fast", "--out", str(out), *extra])
    finally:
        sys.path.remove(str(EXAMPLES))


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


def _import_example(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module(name), importlib.import_module("_common")
    finally:
        sys.path.remove(str(EXAMPLES))


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
    module, common = _import_example(name)
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
    _, common = _import_example("sparse_ae")
    p = common.parser("test")
    argv = ["--epochs", "3", "--n-train", "40", "--batch-size", "7", "--out", str(tmp_path)]
    s = common.setup("sparse_ae", argv, p, {"digits": 300, "other": 10})
    assert (s.epochs, s.train.n, s.args.batch_size) == (3, 40, 7)
    s = common.setup("sparse_ae", ["--out", str(tmp_path)], p, {"digits": 300, "other": 10})
    assert (s.epochs, s.train.n, s.args.batch_size) == (300, 1500, None)


def test_the_first_line_says_the_epochs_only_of_an_example_trained_by_epochs(tmp_path, capsys):
    """linear_ae_pca (full-batch steps) said "1 epochs"."""
    _, common = _import_example("sparse_ae")
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

    _, common = _import_example("sparse_ae")
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
    _, common = _import_example("sparse_ae")
    s = common.setup("sparse_ae", ["--out", str(tmp_path)], common.parser("t"), {"digits": 9})
    s.x_test(None), s.x_test(400)  # all 297 rows: nothing to say
    assert s.x_test(5).shape == (5, 64) and s.x_test(5).shape == (5, 64)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["  using the first 5 of the 297 test rows"]  # once


def test_vae_digits_iw_samples_0_skips_the_bound(capsys):
    module, _ = _import_example("vae_digits")
    r = {"neg_elbo": 24.0, "recon": 20.0, "kl": 4.0, "iw_nll": None, "iw_samples": 0,
         "bits_per_dim": None, "active_units": 6, "latent": 8}  # fmt: skip
    module.report("VAE", r)
    line = capsys.readouterr().out
    assert "IWAE bound skipped (--iw-samples 0)" in line and "active units 6/8" in line


def test_estimator_variance_writes_under_the_repository_by_default():
    module, common = _import_example("estimator_variance")
    assert module.DEFAULT_OUT == common.HERE / "out" / "estimator_variance"
    assert module.DEFAULT_OUT.is_absolute()


def test_the_seed_sets_the_train_validation_split_too(tmp_path, monkeypatch):
    """--seed reached the weights only: the trainer's split was seed 0's whatever --seed said."""
    import scratchvae.train
    from scratchvae.data import train_val_split
    from scratchvae.models import AE

    _, common = _import_example("sparse_ae")
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

    _, common = _import_example("sparse_ae")
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


# ---------------------------------------------------------------- the first line, the output
def test_the_first_line_does_not_give_the_full_sets_size_before_the_rows_used(tmp_path, capsys):
    """It said "UCI digits train (1500 x 64), ...; 270 train / 30 validation / 200 test rows":
    1500 rows, then 300 of them, with nothing to say which; now the rows used, and of what."""
    _, common = _import_example("sparse_ae")
    common.setup("sparse_ae", ["--fast", "--out", str(tmp_path)], common.parser("t"), {"digits": 9})
    common.setup("sparse_ae", ["--out", str(tmp_path)], common.parser("t"), {"digits": 9})
    fast, full = capsys.readouterr().out.splitlines()
    assert "1500 x 64" not in fast and "1500 x 64" not in full
    assert fast == (
        "sparse_ae: UCI digits, 8 x 8 images, grey levels in [0, 1] (0..16 / 16); "
        "270 train / 30 validation / 200 test rows, 2 epochs; "
        "from the first 300 of the 1,500 training rows and the first 200 of the 297 test rows"
    )
    assert full.endswith("; 1,350 train / 150 validation / 297 test rows, 9 epochs")


def test_the_first_line_of_a_file_with_its_test_part_held_out(tmp_path, capsys):
    import numpy as np  # numpy-boundary: building a data file

    np.save(tmp_path / "rows.npy", np.random.default_rng(0).random((50, 6)))
    _, common = _import_example("sparse_ae")
    argv = ["--data", str(tmp_path / "rows.npy"), "--out", str(tmp_path / "o")]
    common.setup("sparse_ae", argv, common.parser("t"), {"digits": 9})
    (line,) = capsys.readouterr().out.splitlines()
    assert "(50 x 6)" not in line and "(45 x 6)" not in line
    assert (
        ", 6 features, " in line
        and "memory-mapped" not in line
        and line.endswith("; 41 train / 4 validation / 5 test rows, 9 epochs")
    )


def test_an_output_folder_that_cannot_be_used_is_said_before_the_data_and_training(
    tmp_path, capsys, monkeypatch
):
    """A folder that could not be written was found when the first figure was saved, after
    the training (minutes on MNIST); a `scratchvae train` run folder had its figures replaced."""
    module, common = _import_example("sparse_ae")
    (tmp_path / "afile").write_text("mine")
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "metrics.jsonl").write_text("{}\n")
    cases = [
        (tmp_path / "afile", "is a file, not a folder"),
        (run_folder, "holds a scratchvae training run"),
    ]
    for out, expected in cases:
        with pytest.raises(SystemExit) as exit_:
            common.run(module.main, ["--n-train", "40", "--epochs", "1", "--out", str(out)])
        assert exit_.value.code == 2
        captured = capsys.readouterr()
        (line,) = captured.err.splitlines()
        assert line.startswith("sparse_ae.py: error: --out ") and expected in line, line
        assert "last epoch" not in captured.out
    assert (tmp_path / "afile").read_text() == "mine"
    assert sorted(p.name for p in run_folder.iterdir()) == ["metrics.jsonl"]

    def refused(*args, **kwargs):  # what a read-only folder says (root may write anywhere)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(common.tempfile, "TemporaryFile", refused)
    with pytest.raises(SystemExit) as exit_:
        common.run(module.main, ["--fast", "--out", str(tmp_path / "ro")])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and "last epoch" not in captured.out
    assert captured.err == (
        f"sparse_ae.py: error: cannot write the figures to --out {tmp_path / 'ro'}: "
        "Permission denied\n"
    )


def test_paths_printed_stay_on_one_line(tmp_path, capsys):
    out = tmp_path / "a\nb"
    run_example("sparse_ae", out)
    wrote = [line for line in capsys.readouterr().out.splitlines() if "wrote" in line]
    assert len(wrote) == 2 and all("a\\nb" in line for line in wrote), wrote
    assert (out / "decoder_features.png").is_file()


def test_an_examples_own_figure_is_saved_atomically(tmp_path):
    """_common.save_figure called fig.savefig(path): a save failing midway (a full disk) left a
    truncated file in the place of the previous run's figure."""
    import matplotlib.pyplot as plt

    _, common = _import_example("sparse_ae")
    path = tmp_path / "fig.png"
    path.write_bytes(b"the previous run's figure")
    fig, _ = plt.subplots()

    def full_disk(target, **kwargs):
        if isinstance(target, (str, os.PathLike)):
            Path(target).write_bytes(b"trunc")
        else:
            target.write(b"trunc")
        raise OSError(28, "No space left on device")

    fig.savefig = full_disk
    with pytest.raises(OSError, match="No space left"):
        common.save_figure(fig, path, "title")
    assert path.read_bytes() == b"the previous run's figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_estimator_variance_with_only_one_sample_per_estimate(tmp_path, capsys):
    """--sample-sizes 1 ended in ZeroDivisionError (leave-one-out has no S = 1 row), after the
    whole study."""
    module, _ = _import_example("estimator_variance")
    argv = ["--out", str(tmp_path), "--steps", "2", "--repeats", "2", "--reference", "10"]
    module.main([*argv, "--hist-groups", "1", "--sample-sizes", "1"])
    printed = capsys.readouterr().out
    assert "score+loo: n/a (S >= 2)" in printed
    for name in ("estimator_variance.png", "estimator_distribution.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_iwae_snr_figure_labels_both_panels_and_says_stl_is_biased(tmp_path, monkeypatch):
    """The decoder panel had no y label (its scale is not the encoder's), the noise floor not
    its number of draws, and STL's rising encoder SNR read as a merit (its IWAE gradient is
    biased beyond k = 1)."""
    from scratchvae.lab.snr import SNRRow

    module, common = _import_example("iwae_snr")
    rows = [SNRRow(est, k, 50, 0.5 * k, 2.0 * k, 0.11) for est in ("pathwise", "stl", "dreg")
            for k in (1, 10)]  # fmt: skip
    drawn = []
    monkeypatch.setattr(common, "save_figure", lambda fig, path, title: drawn.append(fig))
    module.plot(rows, tmp_path / "snr.png")
    (fig,) = drawn
    encoder, decoder = fig.axes
    assert encoder.get_ylabel() and decoder.get_ylabel() == encoder.get_ylabel()
    legend = [t.get_text() for t in encoder.get_legend().get_texts()]
    assert legend == ["pathwise", "STL (biased for k > 1)", "DReG", "noise floor (50 draws)"]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_help_gives_a_whole_description_and_every_default(name, monkeypatch):
    """iwae_snr's --help described it as "... for the encoder and the decoder," (the first
    line of a wrapped sentence); --rho, --beta, --iters, --k, --ks, --data, --backend did not
    say their defaults, nor --iters, --k, --repeats, --ks what --fast makes of them."""
    module, common = _import_example(name)
    seen = []

    class Stop(Exception):
        pass

    def parsed(name, argv, p, epochs):
        seen.append(p)
        raise Stop

    monkeypatch.setattr(common, "setup", parsed)
    with pytest.raises(Stop):
        module.main([])
    (p,) = seen
    assert p.description == common.summary(module.__doc__)
    assert p.description.endswith(".") and "\n" not in p.description
    for action in p._actions:
        if action.dest in ("help", "fast"):
            continue
        assert "default" in (action.help or ""), (action.dest, action.help)


@pytest.mark.parametrize("stop", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_run_stopped_midway_leaves_the_earlier_runs_figures(tmp_path, capsys, monkeypatch, stop):
    """The figures were written one by one into the output folder: a run that failed (or was
    stopped with Ctrl-C) after its first figure left that one new beside the earlier run's
    others, a set from two runs; Ctrl-C printed a traceback."""
    module, common = _import_example("sparse_ae")
    out = tmp_path / "out"
    run_example("sparse_ae", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["decoder_features.png", "encoder_features.png"]
    capsys.readouterr()
    draw, calls = module.plot_features, []

    def second_fails(*args):
        calls.append(args)
        if len(calls) == 2:
            raise stop
        return draw(*args)

    monkeypatch.setattr(module, "plot_features", second_fails)
    with pytest.raises(SystemExit) as exit_:
        common.run(module.main, ["--fast", "--seed", "1", "--out", str(out)])
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no hidden folder left
    captured = capsys.readouterr()
    assert "wrote" not in captured.out and len(captured.err.splitlines()) == 1, captured.err
    if isinstance(stop, KeyboardInterrupt):
        assert exit_.value.code == 130
        assert captured.err == "sparse_ae.py: interrupted; the output folder keeps what it held\n"
    else:
        assert exit_.value.code == 2 and "No space left" in captured.err
