"""The command line, called in-process through main([...]) (plus one real subprocess)."""

from __future__ import annotations

import argparse
import errno
import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import numpy as np  # numpy-boundary: writing a user data file
import pytest

from scratchvae import cli, commands
from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.cli import build_parser, main
from scratchvae.cliargs import (
    COUNT,
    FRACTION,
    NATURAL,
    OPEN_UNIT,
    POSITIVE,
    error_message,
    typed_options,
)
from scratchvae.data import load_dataset
from scratchvae.models import VAE
from scratchvae.optim import build_optimizer
from scratchvae.train import TrainConfig, Trainer

TINY = ["--hidden", "16", "--latent", "2", "--epochs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny VAE run on the digits, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("run") / "vae"
    assert main(["train", "--out", str(out), *TINY, "--binarize", "dynamic"]) == 0
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_train_writes_checkpoint_metrics_and_figures(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"checkpoint.npz", "metrics.jsonl", "curves.png", "recon.png", "samples.png"} <= names
    assert "manifold.png" in names  # a 2-D latent space
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    ckpt = load_checkpoint(run_dir)
    assert ckpt.epoch == 2 and ckpt.model_config["hidden"] == [16]
    assert ckpt.train_config["binarize"] == "dynamic" and ckpt.train_config["data"] == "digits"
    assert ckpt.train_config["batch_size"] == 64  # the digits default


def test_no_arguments_trains_the_default_digits_vae(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(commands, "_SMALL_DEFAULTS", ([8], 2, 2, 64, "he"))  # keep the test fast
    assert main(["--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "runs/digits-vae/checkpoint.npz" in out and "nats/example" in out
    ckpt = load_checkpoint(tmp_path / "runs" / "digits-vae")
    assert ckpt.model_config["model"] == "vae" and ckpt.model_config["latent"] == 2


def test_init_option_reaches_the_model(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--hidden", "8", "--latent", "2", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--init", "uniform", "--out", str(out)]) == 0
    assert load_checkpoint(out).model_config["init"] == "uniform"


def test_evaluate_prints_the_bound_above_the_elbo(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--iw-samples", "20", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["iw_bound"] >= -r["neg_elbo"]
    assert r["neg_elbo"] == pytest.approx(r["recon"] + r["kl"], rel=1e-5)
    assert r["binarize"] == "dynamic" and r["split"] == "test" and r["n"] == 297
    assert 0 <= r["active_units"] <= 2
    assert main(["evaluate", str(run_dir), "--iw-samples", "20", "--binarize", "none"]) == 0
    text = capsys.readouterr().out
    for word in ("-ELBO", "IW bound", "active units", "bits/dim", "nats per example"):
        assert word in text
    assert "binarization  none" in text


def test_evaluate_of_a_gaussian_decoder_does_not_call_its_targets_bernoulli(tmp_path, capsys):
    # was: "binarization  none (grey levels in [0, 1] used as Bernoulli targets)"
    run = str(tmp_path / "g")
    assert main(["train", "--out", run, *TINY, "--likelihood", "gaussian", "--no-figures"]) == 0
    assert main(["evaluate", run, "--iw-samples", "0", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "binarization  none (values used as they are, gaussian decoder)" in lines
    assert "Bernoulli" not in "\n".join(lines)


def test_evaluate_shows_its_progress_on_stderr(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--iw-samples", "30", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["iw_samples"] == 30  # stdout: the JSON object alone
    assert err.splitlines() == [
        "scratchvae: ELBO ...",
        "scratchvae: importance-weighted bound, k=30 ...",
    ]


def test_evaluate_of_the_training_split_does_not_call_its_elbo_the_test_elbo(run_dir, capsys):
    # was: "scratchvae: test ELBO ..." on stderr, whatever --split read
    assert main(["evaluate", str(run_dir), "--split", "train", "--iw-samples", "0"]) == 0
    out, err = capsys.readouterr()
    assert "test" not in err and err.splitlines() == ["scratchvae: ELBO ..."]
    assert "UCI digits train (1500 x 64)" in out


def test_sample_reconstruct_and_plot_write_pngs(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["reconstruct", str(run_dir), "--out", str(tmp_path / "r.png")]) == 0
    for name in ("s.png", "r.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for png in copy.glob("*.png"):
        png.unlink()
    assert main(["plot", str(copy)]) == 0
    assert (copy / "latent.png").exists() and (copy / "curves.png").exists()


def test_sample_and_reconstruct_report_the_file_they_wrote(run_dir, tmp_path, capsys):
    # was: 'wrote x' for x.png; a folder as --out wrote FOLDER.png beside it
    (tmp_path / "figs").mkdir()
    cases = [
        (["sample", "--out", "x"], "x.png"),
        (["sample", "--out", "figs"], "figs/samples.png"),
        (["reconstruct", "--out", "new/"], "new/recon.png"),
        (["reconstruct", "--out", "r.svg"], "r.svg"),
    ]
    for (command, *out), written in cases:
        out[1] = str(tmp_path / out[1]) + ("/" if out[1].endswith("/") else "")
        assert main([command, str(run_dir), *out]) == 0
        assert capsys.readouterr().out == f"scratchvae: wrote {tmp_path / written}\n"
        assert (tmp_path / written).stat().st_size > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "new", "r.svg", "x.png"]


def test_a_checkpoint_under_another_name_is_still_a_checkpoint(run_dir, tmp_path, capsys):
    # was: [Errno 17] File exists: 'b.ckpt' (the figure's folder taken to be the file)
    shutil.copy(run_dir / "checkpoint.npz", tmp_path / "b.ckpt")
    assert main(["sample", str(tmp_path / "b.ckpt"), "--n", "4"]) == 0
    assert capsys.readouterr().out == f"scratchvae: wrote {tmp_path / 'samples.png'}\n"


def test_a_run_on_ones_own_file_names_the_flags_for_held_out_data(tmp_path, capsys):
    # was: "load it with split='train'", the library's words, not a flag of the command
    np.save(tmp_path / "mine.npy", np.random.default_rng(0).random((60, 16), dtype=np.float32))
    run = str(tmp_path / "run")
    data = ["--data", str(tmp_path / "mine.npy")]
    assert main(["train", *data, "--out", run, *TINY, "--no-figures"]) == 0
    for command in (["evaluate", run, "--iw-samples", "2"], ["reconstruct", run]):
        assert main(command) == 2
        line = _error_line(capsys)
        assert line.endswith(
            "pass --split train to use it, or --data FILE with the held-out examples"
        )
        assert "mine.npy is one data set with no 'test' split" in line
    assert main(["reconstruct", run, "--split", "train"]) == 0


def test_a_held_out_file_given_by_data_is_read_whole(tmp_path, capsys):
    """`evaluate RUN --data held-out.npz` said the file had no 'test' split and advised
    "--data FILE with the held-out examples", which is what it had been given."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "mine.npy", rng.random((60, 16), dtype=np.float32))
    np.save(tmp_path / "held-out.npy", rng.random((7, 16), dtype=np.float32))
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "mine.npy"), "--out", run, *TINY,
                 "--no-figures"]) == 0  # fmt: skip
    capsys.readouterr()
    held_out = ["--data", str(tmp_path / "held-out.npy")]
    assert main(["evaluate", run, *held_out, "--iw-samples", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 7 and report["split"] == "all"
    assert main(["reconstruct", run, *held_out]) == 0
    assert main(["evaluate", run, *held_out, "--split", "test"]) == 2  # asked for: refused
    assert "held-out.npy is one data set with no 'test' split" in _error_line(capsys)
    # the run's own training file, given by --data (or a copy of it elsewhere), is not held out
    shutil.copy(tmp_path / "mine.npy", tmp_path / "copy.npy")
    for own in ("mine.npy", "copy.npy"):
        assert main(["evaluate", run, "--data", str(tmp_path / own)]) == 2
        line = _error_line(capsys)
        assert f"{own} is the data the run was trained on" in line and "--split all" in line
    assert main(["evaluate", run, "--data", str(tmp_path / "mine.npy"), "--split", "all",
                 "--iw-samples", "2"]) == 0  # fmt: skip


def test_resume_continues_to_more_epochs(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "--out", out, *TINY, "--no-figures"]) == 0
    args = ["train", "--out", out, "--epochs", "3", "--resume", "--no-progress", "--no-figures"]
    assert main(args) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.epoch == 3 and len(ckpt.history) == 3


def test_iwae_objective_and_estimator_flags_reach_the_model(tmp_path, capsys):
    out = str(tmp_path / "iw")
    iw = ["--objective", "iwae", "--k-train", "3", "--estimator", "dreg"]
    assert main(["train", "--out", out, *TINY, "--no-figures", *iw]) == 0
    assert "iwae k=3 dreg" in capsys.readouterr().err  # the start line
    config = load_checkpoint(out).model_config
    assert (config["objective"], config["k"], config["estimator"]) == ("iwae", 3, "dreg")
    resume = ["train", "--out", out, "--resume", "--epochs", "3", "--no-progress", "--no-figures"]
    assert main([*resume, "--k-train", "5"]) == 2
    assert "was trained with --k-train 3; you asked for --k-train 5" in _error_line(capsys)
    assert main([*resume, "--objective", "iwae"]) == 0  # the run's own value: no mismatch
    assert load_checkpoint(out).epoch == 3
    plain = str(tmp_path / "plain")  # a run trained without the flags resumes without them
    assert main(["train", "--out", plain, *TINY, "--no-figures"]) == 0
    assert "objective" not in load_checkpoint(plain).model_config
    assert main(["train", "--out", plain, "--resume", "--epochs", "3", "--estimator", "stl"]) == 2
    assert "--estimator pathwise; you asked for --estimator stl" in _error_line(capsys)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--data", "no-such-data", "--no-progress"], "unknown data set"),
        (["train", "--estimator", "dreg", "--out", "{tmp}/x"], "dreg estimator needs the iwae"),
        (["train", "--k-train", "0", "--out", "{tmp}/x"], "--k-train: expected a whole"),
        (["train", "--latent", "0", "--no-progress", "--out", "{tmp}/x"], "--latent: expected"),
        (["train", "--hidden", "8", "0", "--out", "{tmp}/x"], "--hidden: expected a whole"),
        (["train", "--backend", "cupy", "--no-progress", "--out", "{tmp}/x"], "cupy"),
        (["train", "--patience", "2", "--val-fraction", "0", "--out", "{tmp}/x"], "patience"),
        (["train", "--resume", "--out", "{tmp}/none"], "no checkpoint"),
        (["evaluate", "{tmp}/missing"], "no run folder"),
        (["evaluate", "{tmp}/foreign.npz"], "not a scratchvae checkpoint"),
        (["evaluate", "{run}", "--data", "{tmp}/wide.npy", "--split", "train"], "features"),
        (["sample", "{run}", "--n", "0"], "argument --n: expected a whole number from 1 to"),
        (["sample", "{run}", "--n", "10001"], "--n: expected a whole number from 1 to 10000"),
        (["reconstruct", "{run}", "--n", "1001"], "--n: expected a whole number from 1 to 1000"),
        (["sample", "{run}", "--out", "{tmp}/x.txt"], "--out {tmp}/x.txt: a figure is"),
        (["reconstruct", "{run}", "--out", "{tmp}/x.v2"], "not .v2; end the name in .png"),
        (["trace", "--k", "0"], "argument --k: expected a whole number >= 1, got '0'"),
        (["sample", "{run}/metrics.jsonl"], "metrics.jsonl is not a scratchvae checkpoint (not"),
        (["trace", "--checkpoint", "{run}/metrics.jsonl"], "is not a scratchvae checkpoint"),
        (["sample", "{tmp}/wide.npy"], "wide.npy is not a scratchvae checkpoint (a .npy array"),
    ],
)
def test_bad_input_gives_one_line_error_and_status_2(argv, expected, run_dir, tmp_path, capsys):
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    np.save(tmp_path / "wide.npy", np.zeros((5, 10), dtype=np.float32))
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in argv]
    if "cupy" in argv and _cupy_works():
        pytest.skip("CuPy works here: no error to check")
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith("scratchvae: error: ")
    assert expected.format(tmp=tmp_path).lower() in line.lower()
    assert "allow_pickle" not in line  # NumPy's advice to load a file unsafely: never relayed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.npz", "wide.npy"]


def _cupy_works() -> bool:
    from scratchvae.backend import cupy_available

    return cupy_available()


def test_diverging_training_is_a_one_line_error(tmp_path, capsys):
    out = str(tmp_path / "d")
    assert main(["train", "--out", out, *TINY, "--no-figures"]) == 0
    before = (Path(out) / "checkpoint.npz").read_bytes()
    argv = ["train", "--out", out, "--resume", "--epochs", "4", "--no-progress"]
    # the resumed run keeps its saved settings; make it diverge with an absurd learning rate
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_build_optimizer", lambda self: build_optimizer("adam", 1e30))
        with np.errstate(all="ignore"):
            assert main(argv) == 2
    line = _error_line(capsys)
    assert "diverged" in line and "epoch 3" in line and "--lr" in line
    assert line.endswith(f"the last good checkpoint ({out}/checkpoint.npz, epoch 2) is kept")
    assert (Path(out) / "checkpoint.npz").read_bytes() == before


def test_ctrl_c_exits_130_with_the_checkpoint_intact(tmp_path, monkeypatch, capsys):
    out = tmp_path / "k"
    assert main(["train", "--out", str(out), *TINY, "--no-figures"]) == 0
    before = (out / "checkpoint.npz").read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "fit", interrupted)
    assert main(["train", "--out", str(out), *TINY, "--epochs", "3", "--resume"]) == 130
    line = _error_line(capsys)
    assert "interrupted" in line and "intact" in line
    assert (out / "checkpoint.npz").read_bytes() == before


def test_sigterm_exits_143_and_a_fresh_folder_says_no_checkpoint(tmp_path, monkeypatch, capsys):
    """SIGTERM raises cli.Terminated (a KeyboardInterrupt) in the main thread; the handler is
    the previous one again after main returns."""
    before = signal.getsignal(signal.SIGTERM)

    def terminated(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(commands, "fit", terminated)
    assert main(["train", "--out", str(tmp_path / "t"), *TINY]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"scratchvae: terminated (SIGTERM); no checkpoint was written in {tmp_path / 't'} yet"
    )
    assert signal.getsignal(signal.SIGTERM) == before


def test_main_in_another_thread_runs_without_a_sigterm_handler(tmp_path, capsys):
    """Signals can be handled in the main thread only: main() called from another one (a
    notebook's worker, a server) trains all the same and leaves the handler alone."""
    before, status = signal.getsignal(signal.SIGTERM), []
    argv = ["train", "--out", str(tmp_path / "t"), *TINY, "--epochs", "1", "--no-figures"]
    worker = threading.Thread(target=lambda: status.append(main(argv)))
    worker.start()
    worker.join(60)
    assert status == [0] and (tmp_path / "t" / "checkpoint.npz").exists()
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_os_error_names_its_file_once():
    """The file is added where the message lacks it, and only there: Python's message names it
    by its repr, so a Windows path (backslashes doubled) or a tab in a name read as absent and
    came twice ("...: 'C:\\\\data\\\\x.npy': C:\\data\\x.npy")."""
    for name in ("/data/x.npy", "C:\\data\\x.npy", "a\tb", Path("/data/y.npy")):
        exc = FileNotFoundError(errno.ENOENT, "No such file or directory", name)
        assert error_message(exc) == str(exc), name
    exc = OSError(errno.ENOSPC, "No space left on device")  # no file
    assert error_message(exc) == "[Errno 28] No space left on device"
    own = urllib.error.URLError("timed out", "/data/z.npy")  # its own message: no file in it
    assert error_message(own) == "<urlopen error timed out>: /data/z.npy"


def test_help_for_every_command(capsys):
    for command in ("train", "evaluate", "sample", "reconstruct", "plot", "trace", "bench"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "usage: scratchvae " + command in text
        description = text.split("\n\n")[1]  # usage, then the description
        assert not description.lstrip().startswith(("positional", "options")), command
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "sample", "reconstruct", "plot", "trace", "bench"):
        assert command in text


def test_train_help_gives_the_defaults_and_the_choices(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for words in (
        "--optimizer {adam,sgd}",
        "default adam",
        "--seed SEED seed of the weights",
        "default float32",
        "default bernoulli",
        "{identity,relu,leaky_relu,elu,tanh,sigmoid,softplus}",
        "$SCRATCHVAE_DATA, else $XDG_CACHE_HOME/scratchvae, else ~/.cache/scratchvae",
        "--force",
    ):
        assert words in text, words


def test_option_types_refuse_what_cannot_be_used():
    assert COUNT("3") == 3 and NATURAL("0") == 0 and POSITIVE("1e-3") == 1e-3
    assert FRACTION("0") == 0 and OPEN_UNIT("0.5") == 0.5
    for parse, text in [
        (COUNT, "0"),
        (COUNT, "2.5"),
        (NATURAL, "-1"),
        (POSITIVE, "0"),
        (POSITIVE, "inf"),
        (POSITIVE, "nan"),
        (FRACTION, "1"),
        (OPEN_UNIT, "0"),
        (POSITIVE, "x"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected .*, got '{text}'"):
            parse(text)


def test_the_start_line_is_one_readable_line():
    model = VAE(64, hidden=[16], latent=2, backend=Backend("numpy", "float64", seed=4))
    data = load_dataset("digits", "train")
    config = TrainConfig(seed=4, binarize="dynamic")
    line = commands._start_line(model, data, config, resume=False)
    assert line == (
        f"scratchvae: training VAE 64-16-2 (relu, bernoulli decoder; {model.n_params:,} "
        "parameters) on UCI digits train (1500 x 64): 1,350 for training, 150 for validation, "
        "binarization dynamic; numpy float64, seed 4"
    )


def test_the_start_line_says_the_weight_of_a_loss_term_the_epoch_lines_show_unweighted():
    """With --beta 2 the epoch lines read 'train loss 38.37 (recon 37.03, kl 0.67)', and a
    sparse AE's 'loss 29.76 (recon 28.01, sparsity 0.58)': the terms did not add up, and no
    line said that the loss weighs them (2 kl, 3 sparsity)."""
    from scratchvae.autoencoders import SparseAE

    bk = Backend("numpy", "float32", seed=0)
    data, config = load_dataset("digits", "train"), TrainConfig()
    vae = commands._start_line(VAE(64, [8], 2, backend=bk, beta=2), data, config, False)
    assert "(relu, bernoulli decoder; loss = recon + 2 kl; 1," in vae
    sae = SparseAE(64, [8], 2, backend=bk, rho=0.1, beta=3)
    line = commands._start_line(sae, data, config, False)
    assert "(relu, bernoulli decoder; loss = recon + 3 sparsity (rho 0.1); " in line
    iwae = VAE(64, [8], 2, backend=bk, objective="iwae", k=5)
    line = commands._start_line(iwae, data, config, False)
    assert "iwae k=5 pathwise; training loss -L_5, validation loss the one-draw -ELBO; " in line
    iwae = VAE(64, [8], 2, backend=bk, objective="iwae", k=5, beta=2)  # weighted: said
    line = commands._start_line(iwae, data, config, False)
    assert "training loss -L_5 (KL weight 2), validation loss one-draw recon + 2 kl; " in line
    plain = commands._start_line(VAE(64, [8], 2, backend=bk), data, config, False)
    assert "loss =" not in plain  # beta 1: the loss is recon + kl, as the lines show


def test_trace_and_bench_are_ordinary_subcommands(capsys):
    assert main(["bench", "--quick", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: scratchvae bench" in out and "--torch-device" in out
    assert main(["trace", "--help"]) == 0
    assert "usage: scratchvae trace" in capsys.readouterr().out
    assert main(["trace", "--batch-size", "2", "--hidden", "8", "--latent", "2"]) == 0
    assert "backward pass" in capsys.readouterr().out
    assert main(["bench", "--no-such-option"]) == 2
    line = _error_line(capsys)
    assert line == "scratchvae: error: unrecognized arguments: --no-such-option"


def test_importing_the_cli_imports_no_reference_or_plotting_library():
    code = (
        "import sys, scratchvae.cli; "
        "print(sorted(m for m in ('torch', 'jax', 'matplotlib') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_installed_entry_point_help_and_bad_argument():
    exe = Path(sys.executable).with_name("scratchvae")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "scratchvae.cli"]
    ok = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "usage: scratchvae" in ok.stdout
    bad = subprocess.run([*cmd, "train", "--epochs", "x"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert (
        bad.stderr
        == "scratchvae: error: argument --epochs: expected a whole number >= 1, got 'x'\n"
    )


def test_version_from_the_installed_distribution_or_the_package(monkeypatch, capsys):
    import scratchvae

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"scratchvae {cli.version()}\n"

    def not_installed(name):
        raise cli.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", not_installed)
    assert cli.version() == scratchvae.__version__


def test_python_dash_m_scratchvae_is_the_same_program():
    run = [sys.executable, "-m", "scratchvae"]
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout == f"scratchvae {cli.version()}\n"
    bad = subprocess.run([*run, "sample", "no-such-run"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "scratchvae: error: no run folder or checkpoint at "
        "no-such-run; train first: scratchvae train"
    ]


def test_resume_refuses_a_flag_typed_at_its_default_when_the_run_differs(tmp_path, capsys):
    # the run was trained with --lr 0.01; `--resume --lr 0.001` (the parser's default) used to
    # be taken for no --lr at all and resumed at 0.01 without a word
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, *TINY, "--no-figures", "--lr", "0.01"]) == 0
    resume = ["train", "--out", out, "--resume", "--epochs", "3", "--no-progress", "--no-figures"]
    assert main([*resume, "--lr", "0.001"]) == 2
    assert "was trained with --lr 0.01; you asked for --lr 0.001" in _error_line(capsys)
    assert main([*resume, "--lr", "0.01", "--seed", "0"]) == 0  # the run's own values


def test_typed_options_tells_a_typed_default_from_no_flag():
    typed = typed_options(build_parser(), ["train", "--lr", "0.001", "--hidden", "8"])
    assert {"lr", "hidden"} <= typed and "latent" not in typed and "seed" not in typed
    assert typed_options(build_parser(), ["evaluate", "run", "--iw-samples", "5"]) >= {"iw_samples"}


def test_a_reader_that_stops_reading_is_no_error(run_dir):
    # `scratchvae evaluate RUN | head -1`: the pipe breaks when the reader has gone; the
    # command stops quietly (status 1, as Python's docs do) instead of "error: Broken pipe"
    cmd = [sys.executable, "-m", "scratchvae", "evaluate", str(run_dir), "--iw-samples", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "error" not in err and "Traceback" not in err, err


def test_a_broken_pipe_other_than_stdout_is_still_an_error():
    # a socket's or a child process's pipe, while stdout is fine: reported as an error
    from scratchvae.cliargs import stdout_gone

    assert not stdout_gone(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert not stdout_gone(OSError(errno.EPIPE, "Broken pipe"))


def test_no_figures_says_what_was_written_without_0_figures(tmp_path, capsys):
    # was: "... wrote DIR/checkpoint.npz, DIR/metrics.jsonl and 0 figures in DIR/"
    run = tmp_path / "n"
    assert main(["train", "--out", str(run), *TINY, "--no-figures"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith(f"wrote {run / 'checkpoint.npz'} and {run / 'metrics.jsonl'}"), last


def test_the_gaussian_decoders_std_is_a_flag(tmp_path, capsys):
    """The library's decoder_std had no flag: `--likelihood gaussian` trained with std 1, with
    which a VAE on data in [0, 1] left its code unused (KL 0.02 nats on the digits)."""
    from scratchvae.checkpoint import load_model

    run = str(tmp_path / "run")
    gaussian = ["--likelihood", "gaussian", "--decoder-std", "0.1"]
    assert main(["train", *gaussian, "--out", run, *TINY, "--no-figures"]) == 0
    assert "(relu, gaussian decoder (std 0.1); " in capsys.readouterr().err
    model = load_model(run)
    model = model[0] if isinstance(model, tuple) else model
    assert model.lik.std == pytest.approx(0.1) and model.config["decoder_std"] == 0.1
    resume = ["train", "--out", run, "--resume", "--epochs", "3", "--no-progress"]
    assert main([*resume, "--decoder-std", "0.2"]) == 2
    assert "trained with --decoder-std 0.1; you asked for --decoder-std 0.2" in _error_line(capsys)
    assert main([*resume, "--decoder-std", "0.1"]) == 0
    assert main(["train", "--decoder-std", "0", "--out", str(tmp_path / "x")]) == 2
    assert "argument --decoder-std: expected a finite number > 0" in _error_line(capsys)
    # with a Bernoulli decoder it would be ignored (and recorded, then refused on resume)
    assert main(["train", "--decoder-std", "0.1", "--out", str(tmp_path / "y")]) == 2
    assert "--decoder-std applies to --likelihood gaussian only" in _error_line(capsys)
    # on resuming a Bernoulli run it said "trained with --decoder-std 1.0" (its unused default)
    bernoulli = str(tmp_path / "b")
    assert main(["train", "--out", bernoulli, *TINY, "--no-figures"]) == 0
    capsys.readouterr()
    for flags in (["--decoder-std", "1"], ["--momentum", "0.5"]):
        assert main(["train", "--out", bernoulli, "--resume", "--epochs", "3", *flags]) == 2
        line = _error_line(capsys)
        assert "only, and " in line and "was trained with --" in line and "drop it" in line
        assert "you asked for" not in line


def test_a_flag_that_does_not_apply_is_said_before_the_folder_is_looked_at(run_dir, capsys):
    """`train --decoder-std 0.1` into a run folder said "already holds a run"; given another
    --out, it then said that --decoder-std needs --likelihood gaussian: two tries for one
    command. The flag is checked first, as it does not depend on the folder."""
    assert main(["train", "--decoder-std", "0.1", "--out", str(run_dir)]) == 2
    assert "--decoder-std applies to --likelihood gaussian only" in _error_line(capsys)
    assert main(["train", "--model", "vae", "--rho", "0.1", "--out", str(run_dir)]) == 2
    assert "--rho applies to --model sae only" in _error_line(capsys)


def test_evaluate_refuses_iw_samples_for_a_model_without_the_bound(tmp_path, capsys):
    """`evaluate AE_RUN --iw-samples 50` was taken and ignored: an AE has no bound to compute
    (the report's note said so only after the work). Refused in one line, as train refuses
    a flag that does not apply."""
    run = str(tmp_path / "ae")
    assert main(["train", "--model", "ae", "--out", run, *TINY, "--no-figures"]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--iw-samples", "50"]) == 2
    line = _error_line(capsys)
    assert line.startswith("scratchvae: error: --iw-samples applies to a VAE's run only")
    assert main(["evaluate", run, "--no-progress"]) == 0  # without it: the reconstruction term
    assert main(["evaluate", run, "--iw-samples", "0"]) == 0  # "0 skips it": nothing to skip
