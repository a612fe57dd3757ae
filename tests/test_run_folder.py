"""A run folder across commands and working directories: the data path it records, --force,
resuming a run with nothing left to train, a GPU run looked at without a GPU, a full disk and
a second Ctrl-C. Called in-process through main([...])."""

from __future__ import annotations

import errno
import json
import signal
from pathlib import Path

import numpy as np  # numpy-boundary: a user data file and a checkpoint's metadata
import pytest
from run_files import rewrite_checkpoint

from scratchvae import cli, commands
from scratchvae.atomic import atomic_write
from scratchvae.backend import cupy_available
from scratchvae.checkpoint import load_checkpoint, load_model
from scratchvae.cli import main
from scratchvae.data import load_dataset
from scratchvae.train import History, TrainConfig, Trainer

TINY = ["--hidden", "8", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]


def _last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture
def run(tmp_path) -> Path:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def test_a_run_on_a_relative_data_path_resumes_from_any_folder(tmp_path, monkeypatch, capsys):
    """The run records the file's absolute path: --resume and evaluate work from elsewhere,
    and the same file written another way is the same data."""
    (tmp_path / "a" / "dd").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a" / "dd" / "x.npy", rng.random((120, 16)).astype("float32"))
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "--data", "dd/x.npy", "--out", "u", *TINY]) == 0
    out = tmp_path / "a" / "u"
    assert load_checkpoint(out).train_config["data"] == str(tmp_path / "a" / "dd" / "x.npy")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--no-progress",
                 "--no-figures"]) == 0  # fmt: skip
    absolute = str(tmp_path / "a" / "dd" / "x.npy")
    assert main(["train", "--resume", "--out", str(out), "--epochs", "4", "--data", absolute,
                 "--no-progress", "--no-figures"]) == 0  # fmt: skip
    assert load_checkpoint(out).epoch == 4
    assert main(["evaluate", str(out), "--split", "train", "--iw-samples", "2"]) == 0


def test_force_takes_the_folder_at_the_start_of_the_new_run(run, monkeypatch, capsys):
    """An interrupted --force run never leaves the old run's checkpoint beside its metrics."""

    def interrupted(self, epoch, bar):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_run_epoch", interrupted)
    assert main(["train", "--out", str(run), *TINY, "--model", "ae", "--force"]) == 130
    assert f"no checkpoint was written in {run} yet" in _last_line(capsys)
    assert not (run / "checkpoint.npz").exists() and not (run / "metrics.jsonl").exists()


@pytest.mark.parametrize("names", [["metrics.jsonl"], ["recon.png", "curves.png"]])
def test_a_folder_with_files_a_run_writes_is_refused_without_force(tmp_path, capsys, names):
    out = tmp_path / "mine"
    out.mkdir()
    for name in names:
        (out / name).write_text("my own results")
    assert main(["train", "--out", str(out), *TINY]) == 2
    line = _last_line(capsys)
    assert all(name in line for name in names) and "--force" in line
    assert all((out / name).read_text() == "my own results" for name in names)
    assert main(["train", "--out", str(out), *TINY, "--force"]) == 0


def test_out_a_file_and_resume_with_force_are_refused(tmp_path, run, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--out", str(tmp_path / "afile"), *TINY]) == 2
    assert "is a file; give a folder" in _last_line(capsys)
    assert main(["train", "--out", str(run), *TINY, "--resume", "--force"]) == 2
    assert "pass one" in _last_line(capsys)


def test_resume_with_nothing_left_to_train_writes_nothing(run, capsys):
    before = (run / "checkpoint.npz").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "nothing to train" in _last_line(capsys)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "1"]) == 2
    assert "--epochs 1 is below the 2 epochs the run has done" in _last_line(capsys)
    assert (run / "checkpoint.npz").read_bytes() == before


def test_a_run_that_stopped_early_stays_stopped(tmp_path, monkeypatch, capsys):
    """Resuming an early-stopped run trained one more epoch (and again at every --resume)."""
    monkeypatch.setattr(History, "epochs_since_best", lambda self: 5)  # no better loss since
    out = tmp_path / "early"
    assert main(["train", "--out", str(out), *TINY, "--epochs", "9", "--patience", "2"]) == 0
    assert load_checkpoint(out).epoch == 1
    before = (out / "checkpoint.npz").read_bytes()
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "stopped early at epoch 1 (--patience 2)" in _last_line(capsys)
    assert (out / "checkpoint.npz").read_bytes() == before
    model, ckpt = load_model(out)  # the library's fit alone too
    config = TrainConfig.from_dict(ckpt.train_config, progress=False)
    trainer = Trainer(model, load_dataset("digits", "train"), config)
    assert len(trainer.fit(resume=True)) == 1 and (out / "checkpoint.npz").read_bytes() == before


def _as_gpu_run(run: Path) -> None:
    """The run's checkpoint as if trained on CuPy (its metadata says so)."""
    gpu_state = json.dumps({"cupy": {"seed": 0, "counter": 5}})
    rewrite_checkpoint(run, lambda meta: meta["backend"].update(name="cupy"), rng_state=gpu_state)


@pytest.mark.skipif(cupy_available(), reason="CuPy works here: a GPU run needs no fallback")
def test_a_gpu_run_is_looked_at_on_numpy_and_resumed_only_when_asked(run, tmp_path, capsys):
    _as_gpu_run(run)
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 0
    assert "trained on cupy, which cannot run here; using numpy" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 2
    assert "resume on the CPU with --backend numpy" in _last_line(capsys)
    on_cpu = ["train", "--out", str(run), "--resume", "--epochs", "3", "--backend", "numpy"]
    assert main(on_cpu) == 0
    assert "trained on cupy and continues on numpy" in capsys.readouterr().err
    assert load_checkpoint(run).backend["name"] == "numpy"  # the advice works (it was refused)
    _as_gpu_run(run)
    # asked for by name, CuPy is not replaced by NumPy: one line saying why it cannot run
    assert main(["evaluate", str(run), "--backend", "cupy"]) == 2
    line = _last_line(capsys)
    assert line.startswith("scratchvae: error: ") and "CuPy" in line and "using numpy" not in line


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("old")
    with pytest.raises(OSError, match="No space left on device; what was there before is intact"):
        with atomic_write(path, "w"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_after_ctrl_c_the_program_ignores_a_second_one(tmp_path, monkeypatch):
    """The scratchvae program (cli.run) ignores Ctrl-C and SIGTERM once the first has ended
    the run: a second one during shutdown printed a traceback from an exit handler."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(commands, "fit", interrupted)
    monkeypatch.setattr(cli, "_PROGRAM", True)
    try:
        assert main(["train", "--out", str(tmp_path / "c"), *TINY]) == 130
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


@pytest.mark.parametrize("activation, init", [("relu", "he"), ("tanh", "glorot")])
def test_the_digits_init_follows_the_activation_as_the_help_says(tmp_path, activation, init):
    out = tmp_path / activation
    assert (
        main(["train", "--out", str(out), *TINY, "--epochs", "1", "--activation", activation]) == 0
    )
    assert load_checkpoint(out).model_config["init"] == init


@pytest.mark.parametrize(
    "argv, name",
    [
        (["train", "--out", ""], "--out"),
        (["evaluate", ""], "DIR"),  # as --help names it (was RUN)
        (["train", "--data", ""], "--data"),
    ],
)
def test_an_empty_path_is_refused(argv, name, capsys):
    assert main(argv) == 2
    assert _last_line(capsys) == f"scratchvae: error: argument {name}: empty; give a path"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rho", "0.1"], "--rho applies to --model sae only"),
        (["--model", "ae", "--estimator", "stl"], "--estimator applies to --model vae only"),
        (["--noise", "mask"], "--noise applies to --model dae only"),
        (["--momentum", "0.9"], "--momentum applies to --optimizer sgd only"),
        (["--model", "sae", "--warmup-epochs", "2"], "--warmup-epochs applies to --model vae"),
    ],
)
def test_a_flag_for_another_kind_of_run_is_refused(tmp_path, capsys, flags, message):
    """It would be ignored without a word (--rho on a VAE, --momentum with Adam)."""
    assert main(["train", "--out", str(tmp_path / "r"), *TINY, *flags]) == 2
    assert message in _last_line(capsys) and not (tmp_path / "r").exists()


def test_run_files_names_every_file_a_run_writes(tmp_path):
    """commands.RUN_FILES (what --force may replace) against what train really writes."""
    out = tmp_path / "all"
    flags = [f for f in TINY if f != "--no-figures"]
    assert main(["train", "--out", str(out), *flags, "--epochs", "1"]) == 0
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert written <= set(commands.RUN_FILES), written - set(commands.RUN_FILES)
