"""The examples' output: the first line, the output folder (checked up front, the figures
moved in together at the end, each saved atomically), --help, the figures' labels."""

import os
import sys
import tempfile
from pathlib import Path

import pytest
from example_cases import FIGURES, import_example, run_example


def test_the_first_line_does_not_give_the_full_sets_size_before_the_rows_used(tmp_path, capsys):
    """It said "UCI digits train (1500 x 64), ...; 270 train / 30 validation / 200 test rows":
    1500 rows, then 300 of them, with nothing to say which; now the rows used, and of what."""
    _, common = import_example("sparse_ae")
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
    _, common = import_example("sparse_ae")
    argv = ["--data", str(tmp_path / "rows.npy"), "--out", str(tmp_path / "o")]
    common.setup("sparse_ae", argv, common.parser("t"), {"digits": 9})
    (line,) = capsys.readouterr().out.splitlines()
    assert "(50 x 6)" not in line and "(45 x 6)" not in line
    assert (
        ", 6 features, " in line
        and "memory-mapped" not in line
        and line.endswith(
            "; 41 train / 4 validation / 5 test rows, 9 epochs; "
            "the last 5 of its 50 rows held out as the test split"
        )
    )


def test_an_output_folder_that_cannot_be_used_is_said_before_the_data_and_training(
    tmp_path, capsys, monkeypatch
):
    """A folder that could not be written was found when the first figure was saved, after
    the training (minutes on MNIST); a `scratchvae train` run folder had its figures replaced."""
    module, common = import_example("sparse_ae")
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

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
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

    _, common = import_example("sparse_ae")
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
    module, _ = import_example("estimator_variance")
    argv = ["--out", str(tmp_path), "--steps", "2", "--repeats", "2", "--reference", "10"]
    module.main([*argv, "--hist-groups", "1", "--sample-sizes", "1"])
    printed = capsys.readouterr().out
    assert "score+loo: n/a (S >= 2)" in printed
    for name in ("estimator_variance.png", "estimator_distribution.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_estimator_variance_stopped_midway_keeps_the_previous_runs_figures(
    tmp_path, capsys, monkeypatch
):
    """Was: its first figure was written straight into --out before the second was computed, so
    a Ctrl-C between them left a new estimator_variance.png beside the previous run's
    estimator_distribution.png (found by the review)."""
    module, common = import_example("estimator_variance")
    for name in ("estimator_variance.png", "estimator_distribution.png"):
        (tmp_path / name).write_bytes(b"the previous run's")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "vae_gradient_samples", stopped)
    argv = ["--out", str(tmp_path), "--steps", "2", "--repeats", "2", "--reference", "10"]
    with pytest.raises(SystemExit) as exit_:
        common.run(module.main, [*argv, "--hist-groups", "1", "--sample-sizes", "2"])
    assert exit_.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "estimator_distribution.png",
        "estimator_variance.png",
    ]
    assert {p.read_bytes() for p in tmp_path.iterdir()} == {b"the previous run's"}


def test_iwae_snr_figure_labels_both_panels_and_says_stl_is_biased(tmp_path, monkeypatch):
    """The decoder panel had no y label (its scale is not the encoder's), the noise floor not
    its number of draws, and STL's rising encoder SNR read as a merit (its IWAE gradient is
    biased beyond k = 1)."""
    import matplotlib.pyplot as plt

    from scratchvae.lab.snr import SNRRow

    module, common = import_example("iwae_snr")
    rows = [SNRRow(est, k, 50, 0.5 * k, 2.0 * k, 0.11) for est in ("pathwise", "stl", "dreg")
            for k in (1, 10)]  # fmt: skip
    drawn = []
    monkeypatch.setattr(common, "save_figure", lambda fig, path, title: drawn.append(fig))
    module.plot(rows, tmp_path / "snr.png")
    (fig,) = drawn
    plt.close(fig)  # not saved: closed here (tests/test_plots.py counts the open figures)
    encoder, decoder = fig.axes
    assert encoder.get_ylabel() and decoder.get_ylabel() == encoder.get_ylabel()
    legend = [t.get_text() for t in encoder.get_legend().get_texts()]
    assert legend == ["pathwise", "STL (biased for k > 1)", "DReG", "noise floor (50 draws)"]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_help_gives_a_whole_description_and_every_default(name, monkeypatch):
    """iwae_snr's --help described it as "... for the encoder and the decoder," (the first
    line of a wrapped sentence); --rho, --beta, --iters, --k, --ks, --data, --backend did not
    say their defaults, nor --iters, --k, --repeats, --ks what --fast makes of them."""
    module, common = import_example(name)
    seen = []

    class Stop(Exception):
        pass

    def parsed(name, argv, p, epochs, **kwargs):
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


@pytest.mark.parametrize(
    "stop", [OSError(28, "No space left on device"), KeyboardInterrupt(), "SIGTERM"]
)
def test_a_run_stopped_midway_leaves_the_earlier_runs_figures(tmp_path, capsys, monkeypatch, stop):
    """The figures were written one by one into the output folder: a run that failed (or was
    stopped with Ctrl-C) after its first figure left that one new beside the earlier run's
    others, a set from two runs; Ctrl-C printed a traceback. SIGTERM (`timeout`, `kill`; the
    handler called as Python calls it) ended the run without its cleanup: a hidden folder of
    figures was left in --out."""
    import signal

    module, common = import_example("sparse_ae")
    out = tmp_path / "out"
    run_example("sparse_ae", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["decoder_features.png", "encoder_features.png"]
    capsys.readouterr()
    draw, calls = module.plot_features, []

    def second_fails(*args):
        calls.append(args)
        if len(calls) == 2 and stop == "SIGTERM":
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
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
    elif stop == "SIGTERM":
        assert exit_.value.code == 143
        assert captured.err.startswith("sparse_ae.py: terminated (SIGTERM); the output folder")
    else:
        assert exit_.value.code == 2 and "No space left" in captured.err


def test_vae_digits_latent_2_trains_its_2d_model_once_and_draws_it_once(tmp_path, capsys):
    """--latent 2 trained the same 2-D VAE a second time for the manifold (twice the time); then
    it drew that one model twice under two names: manifold.png (the standard figures of a 2-D
    VAE) and manifold_2d.png, the same image, and latent.png and latent_2d.png, the same
    scatter. The ``_2d`` figures are the second, 2-D model's; with --latent 2 there is none."""
    r = run_example("vae_digits", tmp_path, "--latent", "2", "--iw-samples", "0")
    printed = capsys.readouterr().out
    assert printed.count("last epoch") == 1 and "VAE latent=2: the model above" in printed
    assert r["latent2"] is r["latent"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted({*FIGURES["vae_digits"], "interp.png", "manifold.png"}
                           - {"manifold_2d.png", "latent_2d.png"})  # fmt: skip
    wrote = [line.split("/")[-1] for line in printed.splitlines() if "wrote" in line]
    assert sorted(wrote) == names


def test_a_run_that_fails_before_its_figures_leaves_no_folder_it_made(tmp_path, capsys):
    """Was: the output folder (and its parents) is made before the data are loaded, to say
    early that it cannot be written; a --data that could not be read then left it behind,
    empty. A folder that was there before stays, and so does one the user put a file in."""
    module, common = import_example("sparse_ae")
    out = tmp_path / "new" / "figures"
    argv = ["--data", str(tmp_path / "missing.npy"), "--fast", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_:
        common.run(module.main, argv)
    assert exit_.value.code == 2 and "missing.npy" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    with pytest.raises(SystemExit):
        common.run(module.main, [*argv[:-1], str(tmp_path / "mine")])
    assert (tmp_path / "mine").is_dir()


def test_a_killed_runs_hidden_folder_is_removed_by_the_next_run(tmp_path):
    """Was: a run killed with SIGKILL (no cleanup can run) left its .unfinished-* folder in
    --out for good. The folders are named after their process; a run removes those whose
    process is gone, and keeps a live one's (another run writing to the same folder)."""
    import subprocess

    _, common = import_example("sparse_ae")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    killed = tmp_path / f".unfinished-{gone}-abc"
    running = tmp_path / f".unfinished-{os.getpid()}-xyz"  # this process: alive
    for folder in (killed, running):
        folder.mkdir()
        (folder / "curves.png").write_bytes(b"half a run")
    staged = common.Staged(tmp_path)
    assert staged.figures.name.startswith(f".unfinished-{os.getpid()}-")
    assert not killed.exists() and running.exists()
    sys.modules["_output"]._UNFINISHED.remove(staged.staging)  # as a finished run does


def test_linear_ae_pca_loads_counts_and_prints_only_the_rows_it_uses(tmp_path, capsys, monkeypatch):
    """It loaded the test split and counted "/ 297 test rows" on its first line, rows it never
    uses (a full-batch fit of the training rows); its cap on the training rows (MNIST: 10,000)
    was said on a second line after the first had counted them all."""
    module, common = import_example("linear_ae_pca")
    splits = []
    load = common.load_dataset

    def recorded(name, split, data_dir=None):
        splits.append(split)
        return load(name, split, data_dir)

    monkeypatch.setattr(common, "load_dataset", recorded)
    monkeypatch.setattr(module, "ROWS", 100, raising=False)  # as MNIST: 10,000 of 60,000
    module.main(["--out", str(tmp_path), "--steps", "5", "--k", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert splits == ["train"]
    assert lines[0].endswith("; 100 train rows; from the first 100 of the 1,500 training rows")
    assert not any("test rows" in line or "using the first" in line for line in lines), lines
