"""benchmarks/contention_runs.py: a table of the contention figures from contention result files;
a file that is not one is a one-line error."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "contention_runs", ROOT / "benchmarks" / "contention_runs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(idle, busy, pair, partner, torch, jax_idle, jax_busy):
    rows = [
        {"batch": 128, "condition": "idle", "impl": "scratchvae", "samples_per_s": idle},
        {"batch": 128, "condition": "idle", "impl": "torch", "samples_per_s": torch},
        {"batch": 128, "condition": "idle", "impl": "jax", "samples_per_s": jax_idle},
        {"batch": 128, "condition": "busy", "impl": "scratchvae", "samples_per_s": busy},
        {"batch": 128, "condition": "busy", "impl": "jax", "samples_per_s": jax_busy},
        {"batch": 128, "condition": "pair", "impl": "scratchvae", "samples_per_s": pair,
         "partner_samples_per_s": partner},
    ]  # fmt: skip
    machine = {"cpu": "Test CPU", "cores": 2, "load_avg_start": [0.1, 0.1, 0.1]}
    return {"machine": machine, "settings": {"batch_sizes": [128]}, "rows": rows}


def test_each_run_is_a_row_of_ratios(tmp_path):
    paths = []
    for i, busy in enumerate((6000.0, 9000.0), start=1):
        path = tmp_path / f"run-{i}" / "test-cpu-contention.json"
        path.parent.mkdir()
        path.write_text(json.dumps(_result(10000.0, busy, 5000.0, 4000.0, 5000.0, 8000.0, 7500.0)))
        paths.append(path)
    table = _module().summarize(paths, tmp_path / "out", note="a note")
    text = table.read_text()
    assert table.name == "test-cpu-contention-runs.md" and "a note" in text
    assert "| run-1 | 128 | 10000 | 2.00 | 1.25 | 60% | 0.80 | 50% | 40% |" in text
    assert "| run-2 | 128 | 10000 | 2.00 | 1.25 | 90% | 1.20 | 50% | 40% |" in text
    doc = json.loads((tmp_path / "out" / "test-cpu-contention-runs.json").read_text())
    assert [r["run"] for r in doc["runs"]] == ["run-1", "run-2"] and len(doc["results"]) == 2


def test_a_file_that_is_not_a_result_is_one_error_line(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    monkeypatch.setattr(sys, "argv", ["contention_runs.py", str(tmp_path), "--summarize", str(bad)])
    with pytest.raises(SystemExit) as info:
        _module().main()
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("contention_runs.py: error: cannot tabulate the runs (KeyError")


def test_runs_in_one_folder_are_told_apart_by_their_file_names(tmp_path):
    paths = []
    for i in (1, 2):
        path = tmp_path / f"host-{i}-contention.json"
        path.write_text(
            json.dumps(_result(10000.0, 6000.0, 5000.0, 4000.0, 5000.0, 8000.0, 7500.0))
        )
        paths.append(path)
    text = _module().summarize(paths, tmp_path / "out").read_text()
    assert "| host-1-contention | 128 |" in text and "| host-2-contention | 128 |" in text


def test_run_names_are_the_shortest_unique_tails():
    names = _module().run_names
    assert names([Path("a/run-1/x.json"), Path("a/run-2/x.json")]) == ["run-1", "run-2"]
    assert names([Path("a/run-1/x.json"), Path("b/run-1/x.json")]) == ["a/run-1/x", "b/run-1/x"]
    assert names([Path("r/h-1.json"), Path("r/h-2.json"), Path("s/h-3.json")]) == [
        "h-1",
        "h-2",
        "h-3",
    ]
