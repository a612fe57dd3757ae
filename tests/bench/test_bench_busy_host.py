"""scratchvae bench on a busy host: scratchvae's step is timed with the CPU threads a training
run would choose (from the free cores), and the report says how busy the host was from what it
measured during the timing, not only from the load average, which lags a minute behind."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from scratchvae import bench
from scratchvae.backend import cpu_threads
from scratchvae.backend.threads import LoadProbe, usable_cores

threads_module = sys.modules["scratchvae.backend.threads"]  # the name is also a function's


def _args(tmp_path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    argv = ["--quick", "--torch-device", "none", "--no-jax", "--out", str(tmp_path)]
    argv += ["--batch-sizes", "16", "32", "--reps", "2", "--target-seconds", "0.002"]
    return parser.parse_args([*argv, "--eval-k", "0", "--name", "t"])


@pytest.mark.parametrize("busy_elsewhere", [0.0, 9.0])
def test_the_step_is_timed_on_the_threads_a_training_run_would_use(
    tmp_path, monkeypatch, capsys, busy_elsewhere
):
    """Was: the step ran on BLAS's threads for every core whatever the load; on a 2-core host
    with two spinning processes (load 4.5) `bench --quick` measured 368 samples/s at batch 32
    and the full run 363, where a training run, which takes the free cores only (one thread),
    steps at 1,700-3,500 (benchmarks/README.md)."""
    monkeypatch.setattr(bench.cli, "measure_memory", lambda *args: [])  # fresh processes: slow
    monkeypatch.setattr(threads_module, "_THREADS", None)  # not pinned (conftest pins it)
    monkeypatch.setattr(LoadProbe, "others", lambda self: busy_elsewhere)
    seen = []
    timed = bench.cli.time_interleaved

    def recorded(fns, *args):
        seen.append(cpu_threads())
        return timed(fns, *args)

    monkeypatch.setattr(bench.cli, "time_interleaved", recorded)
    assert bench.run_cli(_args(tmp_path)) == 0
    want = 1 if busy_elsewhere else usable_cores()
    assert seen == [want, want]
    res = json.loads((tmp_path / "t.json").read_text())
    assert [row["scratchvae_threads"] for row in res["summary"]] == [want, want]
    assert res["machine"]["cores_busy_elsewhere"] == busy_elsewhere
    printed = capsys.readouterr().out
    md = (tmp_path / "t.md").read_text()
    assert f"| mnist | float32 | 16 | {want} |" in md  # the threads column
    if busy_elsewhere:
        assert f"on 1 of {usable_cores()} threads" in printed or usable_cores() == 1
        assert "other processes kept 9.0 cores busy" in printed and "9.0 cores busy" in md
    else:  # (the load average may still say busy: the host's other work)
        assert "cores busy" not in printed and "cores busy" not in md


def test_a_busy_host_is_said_from_what_was_measured_when_the_load_average_lags():
    """Two spinners started a few seconds before the run: the 1-minute load average read 1.2
    at the start and 1.9 at the end on 2 cores, and the run said nothing of a busy host."""
    lagging = {"cores": 2, "load_avg_start": [1.2, 0, 0], "load_avg_end": [1.9, 0, 0]}
    assert bench.report.busy_note(lagging) is None  # nothing else to go by
    assert bench.report.busy_note({**lagging, "cores_busy_elsewhere": 0.3}) is None
    note = bench.report.busy_note({**lagging, "cores_busy_elsewhere": 1.8})
    assert note.startswith(
        "the machine was busy: other processes kept 1.8 cores busy (of 2) while the steps "
        "were timed; load average 1.2 at the start, 1.9 at the end"
    )
    busy_by_load = {**lagging, "load_avg_end": [3.14, 0, 0], "cores_busy_elsewhere": 0.1}
    assert bench.report.busy_note(busy_by_load).startswith(
        "the machine was busy: load average 1.2 at the start, 3.1 at the end, on 2 cores"
    )


def test_the_markdown_states_the_load_average_once():
    """The results file's line already gives the load averages: its busy note did too."""
    measured = {"cores": 2, "load_avg_start": [1.2, 0, 0], "load_avg_end": [1.9, 0, 0]}
    note = bench.report.busy_note({**measured, "cores_busy_elsewhere": 1.8}, with_load=False)
    assert note == (
        "the machine was busy: other processes kept 1.8 cores busy (of 2) while the steps "
        "were timed; the timings are noisy (the fastest repetitions least so)"
    )
    by_load = {**measured, "load_avg_end": [3.14, 0, 0]}
    assert "load average 1.2" not in bench.report.busy_note(by_load, with_load=False)
    assert bench.report.busy_note(by_load, with_load=False).startswith(
        "the machine was busy: the load average exceeded its 2 cores"
    )
