"""scratchvae bench: the quick subset runs (NumPy only, no PyTorch/JAX) and writes well-formed
files; bad options are one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from scratchvae import bench
from scratchvae.backend.threads import usable_cores


def _args(tmp_path, *extra: str) -> argparse.Namespace:
    out = [] if tmp_path is None else ["--out", str(tmp_path)]
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(["--quick", "--torch-device", "none", "--no-jax", *out, *extra])


TINY = (
    *("--batch-sizes", "16", "--reps", "2", "--target-seconds", "0.002"),
    *("--memory-steps", "2", "--eval-n", "4", "--eval-k", "2", "--name", "t"),
)


def test_quick_run_writes_json_markdown_and_plot(tmp_path, capsys) -> None:
    args = _args(
        tmp_path,
        *("--batch-sizes", "16", "48", "--reps", "2", "--target-seconds", "0.002"),
        *("--memory-steps", "5", "--eval-n", "8", "--eval-k", "4", "--name", "t"),
    )
    assert bench.run_cli(args) == 0
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["schema"] == bench.SCHEMA
    assert {"cpu", "cores", "blas", "versions", "load_avg_start", "load_avg_end"} <= set(
        res["machine"]
    )
    impls = {(r["batch"], r["impl"]) for r in res["throughput"]}
    assert impls == {(b, i) for b in (16, 48) for i in ("scratchvae-numpy", "matmul-bound")}
    for r in res["throughput"]:
        t = r["step_s"]
        assert 0 < t["min"] <= t["q1"] <= t["median"] <= t["q3"] <= t["max"] and t["reps"] == 2
        assert r["samples_per_s"] == pytest.approx(r["batch"] / t["median"])
    for row in res["summary"]:
        assert row["matmul_fraction"] == pytest.approx(row["matmul_ms"] / row["scratch_step_ms"])
        fastest = {
            r["impl"]: r["step_s"]["min"] for r in res["throughput"] if r["batch"] == row["batch"]
        }
        want = fastest["matmul-bound"] / fastest["scratchvae-numpy"]
        assert row["matmul_fraction_best"] == pytest.approx(want)
        assert not any(k.startswith("speedup_vs_") for k in row)  # no reference was run
    assert res["equivalence"] == []
    (mem,) = res["memory"]
    assert "error" not in mem, mem
    assert mem["impl"] == "scratchvae-numpy" and mem["steps"] == 5 and mem["batch"] == 48
    assert mem["tracemalloc_growth_mib"] < 0.5  # no memory kept from step to step
    assert res["eval"]["n"] == 8 and res["eval"]["k"] == 4 and res["eval"]["iw_nll"] > 0
    md = (tmp_path / "t.md").read_text()
    assert "| mnist | float32 | 16 |" in md and "| mnist | float32 | 48 |" in md
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--batch-sizes", "0"), "batch sizes must be >= 1"),
        (("--eval-k", "-1"), "--eval-k >= 0"),
        (("--torch-device", "tpu"), "--torch-device must be cpu, cuda"),
        (
            ("--torch-device", "cuda:x"),
            "--torch-device must be cpu, cuda[:N] or none, got 'cuda:x'",
        ),
        (("--threads", "0"), "--threads must be >= 1"),
        (("--reps", "0"), "--reps and --memory-steps must be >= 1, --target-seconds > 0"),
        (("--pause", "-1"), "--pause >= 0"),
        (("--target-seconds", "inf"), "--target-seconds and --pause must be finite"),
        (("--pause", "nan"), "--target-seconds and --pause must be finite"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, message) -> None:
    assert bench.run_cli(_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("scratchvae: error: ") and message in err and err.count("\n") == 1


@pytest.fixture
def no_timing(monkeypatch):
    """Any benchmark started fails the test: the checks must come before the timing."""

    def timed(*args, **kwargs):
        raise AssertionError("a benchmark ran before its options were checked")

    for name in ("run_benchmarks", "run_contention", "run_thread_sweep"):
        monkeypatch.setattr(bench.cli, name, timed)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--name", "../../x"), "--name '../../x' holds a path separator; give a file name"),
        (("--name", "a/b"), "--name 'a/b' holds a path separator"),
        (("--name", ".."), "--name '..' is not a file name"),
        (("--contention", "--busy-cores", "-1"), "--busy-cores -1: not a core this process may"),
        (("--busy-cores", "0"), "--busy-cores sets the busy condition of --contention; add"),
        (("--conditions", "busy"), "--conditions chooses the conditions of --contention; add"),
        (("--contention", "--thread-sweep"), "--contention and --thread-sweep are two runs"),
        (("--contention", "--busy-cores", "0", "999"), "--busy-cores 999: not a core"),
        # was: run on more threads than cores; the conditions ran NumPy and PyTorch CPU and
        # their first config and dtype whatever was asked, and --threads gave way to the sweep
        (("--threads", "999"), "--threads 999: this process may use"),
        (("--contention", "--torch-device", "cuda"), "--contention times the CPU steps only"),
        (("--thread-sweep", "--backend", "cupy"), "--thread-sweep times the CPU steps only"),
        (("--contention", "--dtypes", "float32", "float64"), "one config and one dtype"),
        (("--thread-sweep", "--configs", "mnist", "wide"), "one config and one dtype"),
        (("--thread-sweep", "--threads", "1"), "--thread-sweep sets the thread counts itself"),
    ],
)
def test_names_and_cores_are_checked_before_any_timing(
    tmp_path, capsys, no_timing, extra, message
) -> None:
    # was: --name ../../x wrote outside --out, --busy-cores -1 and 999 were taken
    assert bench.run_cli(_args(tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("scratchvae: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # not even the --out folder


def test_an_out_that_cannot_be_a_folder_is_refused_before_any_timing(
    tmp_path, capsys, no_timing
) -> None:
    # was: the whole benchmark ran, then "[Errno 17] File exists" and the results were lost
    (tmp_path / "file").write_text("mine")
    file, below = tmp_path / "file", tmp_path / "file" / "sub"
    for out, line in (
        (file, f"--out {file} is a file, not a folder; choose a folder for the results"),
        (below, f"--out {below}: cannot create the folder (Not a directory); choose another --out"),
    ):
        assert bench.run_cli(_args(out)) == 2
        assert capsys.readouterr().err == f"scratchvae: error: {line}\n"
    assert (tmp_path / "file").read_text() == "mine"
    assert bench.cli.prepare_out(str(tmp_path / "new" / "deeper")) is None  # made up front
    assert (tmp_path / "new" / "deeper").is_dir()


def test_a_name_whose_files_are_not_earlier_results_is_refused(tmp_path, capsys, no_timing):
    # was: --name notes replaced the user's notes.md (and .json, .png) without a word
    (tmp_path / "notes.md").write_text("mine")
    assert bench.run_cli(_args(tmp_path, "--name", "notes")) == 2
    assert capsys.readouterr().err == (
        f"scratchvae: error: --name notes: {tmp_path / 'notes.md'} is not the results of an "
        "earlier scratchvae bench run, and the run would replace it; choose another --name or "
        "--out\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]
    assert (tmp_path / "notes.md").read_text() == "mine"
    (tmp_path / "runs.json").write_text(json.dumps({"schema": bench.SCHEMA}))
    (tmp_path / "runs.md").write_text("an earlier run's table")  # replaced: results
    assert bench.cli.check_replaces_results_only(str(tmp_path), "runs") is None
    assert bench.cli.check_replaces_results_only(str(tmp_path), "fresh") is None


@pytest.mark.parametrize("extra", [(), ("--contention",), ("--thread-sweep",)])
def test_a_backend_that_cannot_run_is_one_line_before_anything_else(
    tmp_path, monkeypatch, capsys, no_timing, extra
) -> None:
    """--backend cupy without CuPy: it printed 'results go to <a new temporary folder>' and the
    references it skipped, left that folder behind empty, then gave the error."""

    def no_cupy(name: str = "numpy", *args, **kwargs):
        if name == "cupy":
            raise bench.cli.BackendError("the CuPy backend needs CuPy, which is not installed")
        return real(name, *args, **kwargs)

    real = bench.cli.Backend
    monkeypatch.setattr(bench.cli, "Backend", no_cupy)
    monkeypatch.setattr(bench.cli.tempfile, "tempdir", str(tmp_path))
    args = _args(None, "--backend", "cupy", "--torch-device", "cpu", *extra)
    args.no_jax = False
    assert bench.run_cli(args) == 2
    out, err = capsys.readouterr()
    said = "the CuPy backend needs CuPy, which is not installed"
    if extra:  # the conditions run on the CPU only, CuPy or not
        said = f"{extra[0]} times the CPU steps only: drop --backend cupy and --torch-device cuda"
    assert out == "" and err == f"scratchvae: error: {said}\n"
    assert list(tmp_path.iterdir()) == []  # no temporary folder made
    assert bench.run_cli(_args(tmp_path / "out", "--backend", "cupy")) == 2
    assert not (tmp_path / "out").exists()  # nor --out


def test_usable_cores_are_written_as_ranges() -> None:
    assert bench.checks._ranges([0, 1, 2, 3, 8, 10, 11]) == "0-3, 8, 10-11"
    assert bench.checks.check_busy_cores(bench.checks.usable_core_ids()) is None


def test_results_go_to_a_new_temporary_folder_unless_told(tmp_path, monkeypatch, capsys):
    """Never into ./benchmarks/results of wherever it runs (untracked files in a clone)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench.cli, "measure_memory", lambda *args: [])  # fresh processes: slow
    monkeypatch.setattr(bench.cli.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert bench.run_cli(_args(None, *TINY)) == 0
    out = capsys.readouterr().out
    (folder,) = (tmp_path / "tmp").iterdir()
    assert out.startswith(f"results go to {folder} (a new temporary folder; --out DIR")
    assert sorted(p.name for p in folder.iterdir()) == ["t.json", "t.md", "t.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]  # nothing in the cwd


def test_a_busy_machine_is_said_to_be_and_a_fraction_above_1_is_not_a_figure(monkeypatch):
    assert bench.cli._fraction_log(0.8, 0.9) == "matmul fraction 0.80 (best reps 0.90)"
    assert bench.cli._fraction_log(1.43, 0.97) == (
        "matmul fraction n/a (measured 1.43, best reps 0.97: above 1 only when the machine is busy)"
    )
    quiet = {"cores": 2, "load_avg_start": [0.5, 0, 0], "load_avg_end": [1.9, 0, 0]}
    assert bench.report.busy_note(quiet) is None
    busy = {**quiet, "load_avg_end": [3.14, 0, 0]}
    assert bench.report.busy_note(busy).startswith(
        "the machine was busy: load average 0.5 at the start, 3.1 at the end, on 2 cores"
    )
    assert bench.report.busy_note({"cores": 4, "load_avg_start": None}) is None  # no loadavg


def test_quick_fills_the_quick_defaults_and_keeps_what_was_given(tmp_path) -> None:
    args = bench.options.fill_defaults(_args(tmp_path, "--reps", "5"))
    assert args.reps == 5 and args.batch_sizes == [32, 128] and args.configs == ["mnist"]


def test_python_dash_m_scratchvae_bench_and_no_reference_library_imported() -> None:
    code = (
        "import sys, runpy; sys.argv = ['scratchvae.bench', '--help']\n"
        "try:\n    runpy.run_module('scratchvae.bench', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('torch', 'jax', 'matplotlib') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage: scratchvae bench" in proc.stdout and "--quick" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"  # imported only when a reference runs


def test_the_thread_sweep_and_contention_runs_write_their_tables(tmp_path, capsys) -> None:
    """--thread-sweep: each thread count 1, 2, 4, ... up to the usable cores in a process of
    its own; --contention (here its idle condition only): the step as a run starting now would
    take it. Each writes NAME.json and NAME.md, NAME from the machine when not given."""
    tiny = ("--batch-sizes", "8", "--reps", "2", "--target-seconds", "0.002", "--dtypes", "float64")
    assert bench.run_cli(_args(tmp_path, "--thread-sweep", *tiny)) == 0
    (sweep,) = tmp_path.glob("*-threads.json")
    res = json.loads(sweep.read_text())
    cores = usable_cores()
    counts = sorted({r["threads"] for r in res["rows"]})
    assert counts[0] == 1 and counts[-1] == cores and len(counts) == len(set(counts))
    assert {r["impl"] for r in res["rows"]} == {"scratchvae"}
    # --torch-device none: PyTorch neither run nor asked for its threads (that import was a
    # traceback after the whole sweep, on a machine without PyTorch)
    assert "torch_threads" not in res["machine"]
    assert all(r["batch"] == 8 and r["samples_per_s"] > 0 for r in res["rows"])
    assert "| 1 | 8 | scratchvae |" in sweep.with_suffix(".md").read_text()
    assert bench.run_cli(_args(tmp_path, "--contention", "--conditions", "idle", *tiny)) == 0
    (contention,) = tmp_path.glob("*-contention.json")
    (row,) = json.loads(contention.read_text())["rows"]
    assert row["condition"] == "idle" and row["kept"] == 1.0
    assert "wrote " in capsys.readouterr().out


def test_the_thread_sweep_records_the_threads_torch_was_timed_with(tmp_path) -> None:
    """Was: ``torch_threads`` was this process's count (in the machine's entry), not that of
    the process that timed PyTorch with each count of the sweep."""
    pytest.importorskip("torch")
    tiny = ("--batch-sizes", "8", "--reps", "1", "--target-seconds", "0.002", "--dtypes",
            "float64", "--torch-device", "cpu", "--name", "sweep")  # fmt: skip
    assert bench.run_cli(_args(tmp_path, "--thread-sweep", *tiny)) == 0
    res = json.loads((tmp_path / "sweep.json").read_text())
    assert "torch_threads" not in res["machine"]
    torch_rows = [r for r in res["rows"] if r["impl"] == "torch"]
    assert len(torch_rows) == len({r["threads"] for r in res["rows"]}) > 0
    assert all(r["torch_threads"] == r["threads"] for r in torch_rows), torch_rows
    assert all("torch_threads" not in r for r in res["rows"] if r["impl"] != "torch")


def test_threads_reruns_the_command_given_with_its_thread_count(tmp_path, monkeypatch) -> None:
    """--threads N runs the same options again in a process whose libraries use N threads.
    main([...]) called from Python reran this process's own command line instead (pytest's
    here; nothing after `python -c`: the full default benchmark)."""
    from scratchvae.cli import main

    runs = []

    class Popen:
        def __init__(self, cmd, env, preexec_fn):
            runs.append((cmd, env))

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(bench.cli.subprocess, "Popen", Popen)
    options = ["--threads", "1", "--quick", "--no-jax", "--torch-device", "none", *TINY]
    assert main(["bench", *options, "--out", str(tmp_path)]) == 0
    assert bench.main([*options, "--out", str(tmp_path)]) == 0
    for cmd, env in runs:
        assert cmd == [sys.executable, "-m", "scratchvae.bench", *options, "--out", str(tmp_path)]
        assert env["SCRATCHVAE_BENCH_THREADS"] == env["SCRATCHVAE_THREADS"] == "1"
    assert len(runs) == 2


def test_a_backend_that_cannot_run_here_is_one_line(tmp_path, capsys) -> None:
    from scratchvae.backend import cupy_available

    if cupy_available():
        pytest.skip("CuPy works here")
    assert bench.run_cli(_args(tmp_path, "--backend", "cupy", *TINY)) == 2
    err = capsys.readouterr().err
    assert err.startswith("scratchvae: error: ") and "CuPy" in err and err.count("\n") == 1
    assert not list(tmp_path.glob("t.*"))  # nothing written


def test_contention_and_the_sweep_default_to_one_config_and_dtype(tmp_path, monkeypatch) -> None:
    """Was (this session): without --quick, the full suite's two configs and dtypes were
    refused by the conditions' own check."""
    seen = []
    monkeypatch.setattr(bench.cli, "_run_conditions", lambda args: seen.append(args) or 0)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    for mode in ("--contention", "--thread-sweep"):
        assert bench.run_cli(parser.parse_args([mode, "--out", str(tmp_path)])) == 0
    assert [(a.configs, a.dtypes, a.batch_sizes) for a in seen] == [
        (["mnist"], ["float32"], [128]),
        (["mnist"], ["float32"], [128, 2048]),
    ]
