"""The command line as a hostile or hurried user meets it, mostly in a real subprocess: every
error is one line ``scratchvae: error: ...`` with exit status 2 and no usage block or
traceback; SIGTERM ends a run like Ctrl-C; a diverging run says nothing false about its
checkpoint and shows no NumPy warnings; a run folder is never replaced without --force; a log
file gets plain lines, not a progress bar; a huge --iw-samples shows its progress and keeps
its memory flat (issue: hostile files and everyday friction)."""

from __future__ import annotations

import errno
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from scratchvae.atomic import temp_files
from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.cli import main
from scratchvae.evaluate import iw_bound
from scratchvae.models import VAE

T = ["train", "--hidden", "32", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]
TIMEOUT = 120


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "scratchvae", *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "default", **extra}  # warnings shown, if any


def _cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), capture_output=True, text=True, env=_env(**env), cwd=cwd, timeout=TIMEOUT
    )


def _one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, exactly one line on stderr and it is the error; returns it."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("scratchvae: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile-cli") / "run"
    assert main([*T, "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------ one line, exit status 2
def _bad_calls(run: str) -> list[tuple[list[str], str]]:
    """(argv, what the one line must name): a bad flag and a bad value for every command."""
    return [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--seed", "-1"], "--seed"),
        (["evaluate", run, "--bogus"], "--bogus"),
        (["evaluate", run, "--iw-samples", "-5"], "--iw-samples"),
        (["sample", run, "--bogus"], "--bogus"),
        (["sample", run, "--n", "many"], "--n"),
        (["reconstruct", run, "--bogus"], "--bogus"),
        (["reconstruct", run, "--n", "-3"], "--n"),
        (["plot", run, "--bogus"], "--bogus"),
        (["plot"], "DIR"),  # the run folder is missing
        (["trace", "--bogus"], "--bogus"),
        (["trace", "--seed", "-1"], "--seed"),
        (["bench", "--bogus"], "--bogus"),
        (["bench", "--quick", "--reps", "x"], "--reps"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["--bogus"], "--bogus"),  # no command: train's options
        (["trace", "--k", "0"], "argument --k"),  # was: "... got 'elbo', 'pathwise', 0"
        (["sample", run, "--n", "1000000"], "--n: expected a whole number from 1 to 10000"),
        (["sample", run, "--out", "x.txt"], "--out x.txt"),  # was matplotlib's "Format 'txt'"
        (["bench", "--name", "../../x"], "--name '../../x' holds a path separator"),
        (["bench", "--contention", "--busy-cores", "999"], "--busy-cores 999: not a core"),
    ]


def test_every_command_refuses_a_bad_flag_and_a_bad_value_in_one_line(run_dir, capsys):
    """Through ``main`` (what the ``scratchvae`` entry point calls), every pair of calls."""
    for argv, needle in _bad_calls(str(run_dir)):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, (argv, err)
        assert err.startswith("scratchvae: error: ") and needle in err, (argv, err)


def test_each_command_in_a_real_process_gives_one_line_and_status_2(run_dir):
    """One call per command as a real process (~1 s of start-up each, run side by side)."""
    calls = _bad_calls(str(run_dir))[1::2][:7]  # a bad value, or for plot no folder
    assert {argv[0] for argv, _ in calls} == {
        "train", "evaluate", "sample", "reconstruct", "plot", "trace", "bench"
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda call: _cli(*call[0]), calls))
    for (argv, needle), result in zip(calls, results, strict=True):
        assert "usage:" not in result.stderr and "Traceback" not in result.stderr, argv
        _one_error_line(result, needle)
        assert result.stdout == "", argv


def test_help_still_prints_the_usage_and_exits_0():
    result = _cli("train", "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: scratchvae train") and "--force" in result.stdout


@pytest.mark.parametrize(
    "flag", ["--lr", "--beta", "--warmup-epochs", "--clip-norm", "--val-fraction", "--momentum"]
)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_float_options_refuse_inf_and_nan(flag, value, tmp_path, capsys):
    assert main([*T, "--out", str(tmp_path / "x"), f"{flag}={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scratchvae: error: argument {flag}: expected ")
    assert err.endswith(f", got '{value}'\n") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_negative_seed_names_the_flag(tmp_path):
    line = _one_error_line(_cli(*T, "--out", str(tmp_path / "s"), "--seed", "-1"))
    assert line == "scratchvae: error: argument --seed: expected a whole number >= 0, got '-1'"


# ------------------------------------------------------------------ SIGTERM
def _start(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        _command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(PYTHONUNBUFFERED="1", **env),
    )


def _wait_for_line(stream, needle: str, timeout: float = 60.0) -> list[str]:
    """Lines read from ``stream`` until one contains ``needle``; fails after ``timeout`` even
    when the child prints nothing at all (the lines are read on a thread: a readline here
    would wait for ever). The reader stops at the needle, leaving the rest to communicate()."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in iter(stream.readline, ""):
            lines.put(line)
            if needle in line:
                return
        lines.put(None)  # end of the stream: the child closed it or exited

    threading.Thread(target=read, daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line with {needle!r} in {timeout} s; read {seen}") from None
        if line is None:
            raise AssertionError(f"no line with {needle!r} before the stream ended: {seen}")
        seen.append(line)
        if needle in line:
            return seen


def test_waiting_for_a_line_from_a_silent_child_times_out():
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True
    )
    try:
        start = time.monotonic()
        with pytest.raises(AssertionError, match="no line with 'x' in 0.5 s"):
            _wait_for_line(proc.stdout, "x", timeout=0.5)
        assert time.monotonic() - start < 10
    finally:
        proc.kill()
        proc.communicate()


def test_ctrl_c_while_drawing_a_finished_runs_figures_says_how_to_draw_them(
    tmp_path, monkeypatch, capsys
):
    # it said "--resume continues", and --resume then had nothing to train
    import scratchvae.commands as commands

    def drawing(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_figures", drawing)
    out = tmp_path / "done"
    assert main([*T[:-1], "--out", str(out)]) == 130  # T without --no-figures
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"scratchvae: interrupted; the run in {out} had finished (checkpoint written); "
        f"scratchvae plot {out} draws its figures"
    )
    assert load_checkpoint(out).epoch == 2
    monkeypatch.undo()
    assert main(["plot", str(out)]) == 0


def test_sigterm_ends_training_like_ctrl_c_with_the_checkpoint_kept(tmp_path):
    out = tmp_path / "term"
    proc = _start(*T[:-4], "--epochs", "5000", "--no-progress", "--no-figures", "--out", str(out))
    try:
        _wait_for_line(proc.stdout, "epoch 3/5000")  # checkpoints of epochs 1..3 written
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    lines = err.splitlines()
    assert lines[-1] == (
        f"scratchvae: terminated (SIGTERM); the last checkpoint in {out} is intact "
        "(--resume continues)"
    )
    assert "Traceback" not in err and "error" not in err
    ckpt = load_checkpoint(out)
    assert ckpt.epoch >= 3 and len(ckpt.history) == ckpt.epoch
    assert temp_files(out / "checkpoint.npz") == []
    more = ["--resume", "--epochs", str(ckpt.epoch + 1), "--no-progress", "--no-figures"]
    assert main(["train", "--out", str(out), *more]) == 0  # and it continues


# ------------------------------------------------------------------ divergence
def test_divergence_in_a_fresh_folder_claims_no_checkpoint_and_shows_no_warnings(tmp_path):
    out = tmp_path / "fresh"
    # the readable NumPy ops (kernels off) are the ones that warn on overflow
    result = _cli(*T, "--out", str(out), "--lr", "1e9", SCRATCHVAE_KERNELS="0")
    assert result.returncode == 2, result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("scratchvae: training VAE 64-32-2")  # the start line
    assert len(lines) == 2 and lines[1].startswith("scratchvae: error: training diverged")
    assert "is kept" not in lines[1]
    assert lines[1].endswith(f"; no checkpoint of this run was written in {out}")
    assert not (out / "checkpoint.npz").exists()


# ------------------------------------------------------------------ never replace a run unasked
def test_a_run_folder_is_not_replaced_without_force(run_dir, tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes((run_dir / "checkpoint.npz").read_bytes())
    before = (out / "checkpoint.npz").read_bytes()
    line = _one_error_line(_cli(*T, "--out", str(out)), "--force", "--resume", "--out")
    assert str(out) in line
    assert (out / "checkpoint.npz").read_bytes() == before
    assert main([*T, "--out", str(out), "--force", "--seed", "3"]) == 0
    assert load_checkpoint(out).train_config["seed"] == 3


def _disk_full(self, fname, **kwargs):
    """Figure.savefig on a full disk: half a figure written, then ENOSPC."""
    fname.write(b"\x89PNG\r\n\x1a\nhalf a figure")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_the_figures_that_were_there(run_dir, tmp_path, monkeypatch, capsys):
    # was: a truncated recon.png over the good one, a 0-byte latent.png from plot
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert main(["reconstruct", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    monkeypatch.setattr(Figure, "savefig", _disk_full)
    for argv in (["reconstruct", str(run)], ["plot", str(run)], ["sample", str(run)]):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        full = "scratchvae: error: [Errno 28] No space left on device; "
        assert out == "" and err.startswith(full) and err.count("\n") == 1
        name = err.rstrip().rsplit(f"'{run}/", 1)[1].rstrip("'")  # the figure it was writing
        kept = "what was there before is intact" if name in before else "nothing was written"
        assert err.startswith(f"{full}{kept}: '{run}/{name}'"), (name, err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no temp, no 0 bytes


def test_a_bare_train_refuses_to_replace_runs_digits_vae(run_dir, tmp_path):
    default = tmp_path / "runs" / "digits-vae"
    default.mkdir(parents=True)
    (default / "checkpoint.npz").write_bytes((run_dir / "checkpoint.npz").read_bytes())
    _one_error_line(_cli("train", cwd=tmp_path), "runs/digits-vae", "--force")


# ------------------------------------------------------------------ a log file, not a terminal
def test_a_log_file_gets_one_plain_line_per_epoch_and_no_bar(tmp_path):
    result = _cli(*T[:-4], "--epochs", "3", "--no-figures", "--out", str(tmp_path / "log"))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert "train loss" in epochs[0] and "val loss" in epochs[0]
    assert len(result.stderr.splitlines()) == 1  # the start line only
    assert len(result.stdout) + len(result.stderr) < 1500  # a digits run once wrote ~25 KB


def test_no_progress_keeps_the_epoch_lines(run_dir, capsys):
    out = run_dir.parent / "quiet"
    assert main([*T, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]


# ------------------------------------------------------------------ a huge --iw-samples
def test_a_huge_iw_samples_shows_its_progress_and_can_be_stopped(run_dir):
    proc = _start("evaluate", str(run_dir), "--iw-samples", "10000000")
    try:
        seen = _wait_for_line(proc.stderr, "left)", timeout=90)  # the first estimate (5 s)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    text = "".join(seen)
    assert "scratchvae: importance-weighted bound, k=10,000,000 ..." in text
    assert "about" in seen[-1] and "%" in seen[-1]
    assert proc.returncode == 143 and err.splitlines()[-1] == "scratchvae: terminated (SIGTERM)"


def test_the_iw_bound_keeps_its_memory_flat_in_k():
    """Each chunk's logsumexp joins a running one: nothing is kept per chunk. The kernels are
    compiled before the traces (run alone, the first trace held the compilation, so nothing
    could fail), and a chunk has 60 examples, so that an array kept per chunk (~1.2 MB over
    2000 chunks) stands well above the interpreter's and Numba's own allocations (130 KB at
    k = 2000 with Python 3.10 and Numba 0.59, which failed the old 20 KB margin)."""
    model = VAE(64, hidden=[8], latent=2, backend=Backend("numpy", "float64", seed=0))
    x = model.backend.asarray(Backend("numpy", "float64", 1).uniform((60, 64)))

    def peak(k: int) -> tuple[int, int]:
        calls = [0, 0]  # (calls, the last count of (example, sample) pairs): no growth

        def count(done: int) -> None:
            calls[:] = [calls[0] + 1, done]

        tracemalloc.start()
        try:
            iw_bound(model, x, k, budget=60 * 208, progress=count)  # 60 x 1: 208 floats a row
            assert calls[1] == 60 * k  # every pair counted
            return tracemalloc.get_traced_memory()[1], calls[0]
        finally:
            tracemalloc.stop()

    iw_bound(model, x, 2, budget=60 * 208)  # compile or load the kernels outside the trace
    (small, n_small), (large, n_large) = peak(200), peak(2000)
    assert n_large == 10 * n_small >= 2000  # one progress call per chunk
    assert large < small + 300_000  # a list of 2000 (60,) arrays would hold ~1.2 MB


def test_a_model_too_large_for_memory_is_one_line_and_leaves_no_folder(tmp_path) -> None:
    # 784-10^9-20 needs 2 TB to train (float32 parameters, gradients, Adam's two moments): was
    # a MemoryError traceback; 784-50000-50000-20 (75 GB) passes NumPy's zeros (memory is only
    # reserved) and would have met the out-of-memory killer while being initialised
    out = tmp_path / "run"
    result = _cli("train", "--hidden", "1000000000", "--epochs", "1", "--out", str(out))
    _one_error_line(result, "136,000,000,068 parameters", "GiB", "smaller model")
    assert not out.exists()


def test_an_unforeseen_memory_error_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.00 GiB for an array with shape (2, 402653184)")

    monkeypatch.setattr("scratchvae.commands.fit", no_memory)
    assert main([*T, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()  # the start line, then the error
    assert err[-1].startswith("scratchvae: error: out of memory: Unable to allocate 3.00 GiB")
    assert not any("Traceback" in line for line in err)


def test_an_unforeseen_memory_error_names_the_commands_own_flags(monkeypatch, capsys) -> None:
    """Every command was told "--batch-size or --iw-samples"; trace has --k, not --iw-samples."""

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.00 GiB")

    monkeypatch.setattr("scratchvae.cli.trace.run_cli", no_memory)  # the parser binds it
    assert main(["trace", "--objective", "iwae", "--k", "5"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("choose a smaller --batch-size, --hidden or --k"), line
    assert "--iw-samples" not in line
