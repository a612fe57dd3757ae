"""scratchvae.bench.report: machine names, the Markdown report, files written atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from scratchvae.atomic import temp_files
from scratchvae.bench import report


def test_machine_name_is_a_safe_file_stem() -> None:
    info = {"cpu": "AMD EPYC 7B13 64-Core Processor @ 2.4GHz", "cores": 2}
    assert report.machine_name(info, "numpy") == "cpu-amd-epyc-7b13-64-core-2c"
    assert (
        report.machine_name({"gpu": "NVIDIA H100 80GB HBM3"}, "cupy") == "gpu-nvidia-h100-80gb-hbm3"
    )


def _results() -> dict:
    step = {"median": 0.01, "q1": 0.009, "q3": 0.011, "min": 0.008, "max": 0.02, "reps": 3}
    key = {"config": "mnist", "dtype": "float32", "batch": 32}
    return {
        "machine": {
            "cpu": "Some CPU",
            "cores": 2,
            "blas": "openblas 0.3",
            "python": "3.11",
            "versions": {"numpy": "2.0", "torch": None},
        },
        "settings": {"backend": "numpy", "step": "the step", "reps": 3, "batch_sizes": [32]},
        "throughput": [
            {**key, "impl": impl, "step_s": step, "samples_per_s": 3200.0}
            for impl in ("scratchvae-numpy", "torch-cpu", "matmul-bound")
        ],
        "summary": [
            {
                **key,
                "speedup_vs_torch-cpu": 1.5,
                "matmul_fraction": 0.8,
                "matmul_fraction_best": 0.9,
            }
        ],
        "equivalence": [
            {
                **key,
                "reference": "torch-cpu",
                "loss_rel_diff": 1e-7,
                "grad_max_rel_diff": 2e-6,
                "adam_update_max_rel_diff": None,
                "tolerance": 2e-4,
                "ok": False,
            }
        ],
        "memory": [{"impl": "torch-cpu", "batch": 32, "steps": 5, "error": "boom"}],
        "eval": {
            "n": 8,
            "k": 4,
            "dtype": "float32",
            "backend": "numpy",
            "seconds": 0.5,
            "peak_mib": 3.0,
            "peak_measure": "tracemalloc",
            "iw_nll": 90.0,
        },
    }


def test_markdown_report_has_every_section() -> None:
    md = report.markdown_report(_results())
    assert md.startswith("# scratchvae benchmark: Some CPU (2 cores)")
    assert "versions: numpy 2.0\n" in md  # missing libraries are left out
    assert "| mnist | float32 | 32 | 3200 (2909-3556) | 3200 (2909-3556) | 3200 (2909-3556) |" in md
    assert "| 1.50 | 0.80 | 0.90 |" in md
    assert "| mnist | float32 | 32 | torch-cpu | 1.0e-07 | 2.0e-06 | 2e-04 | - | - | NO |" in md
    assert "- torch-cpu, batch 32, 5 steps: error: boom" in md
    assert "k = 4, 8 inputs, float32 on numpy: 0.5 s, peak 3 MiB (tracemalloc)" in md


def test_markdown_marks_a_busy_machine_and_a_fraction_above_1() -> None:
    results = _results()
    results["summary"][0]["matmul_fraction"] = 1.43
    results["machine"].update(load_avg_start=[5.0, 4.0, 3.0], load_avg_end=[1.0, 1.0, 1.0])
    md = report.markdown_report(results)
    assert "| 1.50 | n/a (1.43) | 0.90 |" in md
    # the line gives the load averages; its note says why it counts as busy, not them again
    assert "- load average at start [5.0, 4.0, 3.0], end [1.0, 1.0, 1.0] (the machine was " in md
    assert "(the machine was busy: the load average exceeded its 2 cores; the timings" in md
    assert report.fraction_text(0.999) == "1.00" and report.fraction_text(1.01) == "n/a (1.01)"


def test_write_outputs_replaces_the_files_and_leaves_no_temporaries(tmp_path) -> None:
    out = tmp_path / "new" / "folder"
    for _ in range(2):  # the second run replaces the first run's files
        paths = report.write_outputs(_results(), out, "r")
    assert [p.name for p in paths] == ["r.json", "r.md", "r.png"]
    assert json.loads(paths[0].read_text())["machine"]["cores"] == 2
    assert paths[1].read_text() == report.markdown_report(_results())
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(temp_files(p) == [] for p in paths)
    assert sorted(p.name for p in out.iterdir()) == ["r.json", "r.md", "r.png"]


def test_threads_env_sets_every_library_and_pins_the_child_to_n_cores() -> None:
    # JAX reads no thread variable: only the cores a process may use limit its thread pools,
    # so a "1 thread" child must be pinned to 1 core or JAX runs on all of them
    cores = len(os.sched_getaffinity(0))
    env, pin = report.threads_env(1)
    assert env["OPENBLAS_NUM_THREADS"] == env["SCRATCHVAE_THREADS"] == "1"
    code = "import os; print(len(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", code], env=env, preexec_fn=pin,  # noqa: PLW1509
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert int(out) == 1
    assert report.threads_env(cores)[1] is None  # all the cores: nothing to pin


def test_cores_text_says_when_a_run_was_pinned_to_fewer_cores() -> None:
    assert report.cores_text({"cores": 2, "cores_present": 2}) == "2 cores"
    assert report.cores_text({"cores": 1, "cores_present": 1}) == "1 core"
    assert report.cores_text({"cores": 1, "cores_present": 2}) == "1 of 2 cores"
    assert report.cores_text({"cores": 16}) == "16 cores"  # results written before the field
