"""scratchvae bench --contention: the conditions it sets up, the step choosing its threads as a
training run does, the report naming the count."""

from __future__ import annotations

import argparse

import pytest

from scratchvae.bench import conditions, report
from scratchvae.bench.conditions import AsTraining, markdown, run_contention
from scratchvae.bench.equivalence import ReferenceMismatch


class Choice:
    def __init__(self, probe: object) -> None:
        self.probe, self.updates = probe, 0

    def update(self) -> int:
        self.updates += 1
        return 1


def test_the_step_chooses_again_every_second_unless_pinned() -> None:
    calls = []
    auto, pinned = Choice(probe=object()), Choice(probe=None)
    for choice in (auto, pinned):
        run = AsTraining(lambda: calls.append(1), choice)
        run()
        run.since -= 2.0  # two seconds later
        run()
        run()
    assert len(calls) == 6 and auto.updates == 1 and pinned.updates == 0


def test_contention_runs_each_condition_and_names_the_thread_count() -> None:
    opts = argparse.Namespace(
        configs=["mnist"], dtypes=["float64"], batch_sizes=[8], conditions=["idle", "busy", "pair"],
        busy_cores=[0], reps=2, target_seconds=0.01, pause=0.0, torch_device="none", no_jax=True,
        contention=True,
    )  # fmt: skip
    results = run_contention(opts, log=lambda _: None)
    rows = results["rows"]
    assert [r["condition"] for r in rows] == ["idle", "busy", "pair"]
    assert all(r["impl"] == "scratchvae" and r["scratchvae_threads"] >= 1 for r in rows)
    assert rows[2]["partner_samples_per_s"] > 0
    assert rows[0]["kept"] == 1.0
    assert "| 8 | busy | scratchvae (" in markdown(results)
    assert "\n- versions: scratchvae " in markdown(results)  # was: the machine's name only
    assert "- median of 2 interleaved repetitions of 0.01 s each" in markdown(results)
    assert conditions.CONDITIONS == ("idle", "busy", "pair")


def test_the_report_divides_scratchvae_by_each_reference_under_the_same_condition() -> None:
    rows = [
        {"batch": 128, "threads": 1, "impl": "scratchvae", "samples_per_s": 30.0},
        {"batch": 128, "threads": 1, "impl": "jax", "samples_per_s": 20.0},
        {"batch": 128, "threads": 2, "impl": "scratchvae", "samples_per_s": 30.0},
        {"batch": 128, "threads": 2, "impl": "jax", "samples_per_s": 40.0},
    ]
    results = {"schema": "scratchvae-bench-threads/1", "config": "mnist", "dtype": "float32",
               "machine": {"cpu": "x", "cores": 2}, "rows": rows}  # fmt: skip
    text = conditions.markdown(results)
    assert "| 128 | 1 | 1.50 |" in text and "| 128 | 2 | 0.75 |" in text


def test_a_condition_run_checks_its_references_before_timing(monkeypatch) -> None:
    """Was: --contention and --thread-sweep timed PyTorch and JAX unchecked."""
    bad = {"reference": "torch-cpu", "ok": False, "weights_max_rel_diff": 0.0,
           "loss_rel_diff": 0.0, "grad_max_rel_diff": 0.5, "adam_update_max_rel_diff": 0.0,
           "tolerance": 2e-4}  # fmt: skip
    monkeypatch.setattr(conditions, "check_torch", lambda step, device: bad)
    monkeypatch.setattr(conditions, "TorchStep", None)  # never built
    with pytest.raises(ReferenceMismatch, match=r"^torch-cpu does not compute scratchvae's step "
                       r"\(mnist float64 batch 8\): its gradients differ by 5.0e-01"):  # fmt: skip
        conditions._steps("mnist", 8, "float64", torch=True, jax=False)


def test_the_condition_results_hold_their_settings_and_the_starting_load(monkeypatch) -> None:
    loads = iter([[0.5, 0, 0], [3.0, 0, 0]])  # at the start, at the end
    monkeypatch.setattr(conditions, "load_average", lambda: next(loads))
    monkeypatch.setattr(report, "load_average", lambda: next(loads))
    opts = argparse.Namespace(
        configs=["mnist"], dtypes=["float64"], batch_sizes=[8], conditions=["idle"],
        busy_cores=None, reps=2, target_seconds=0.01, pause=0.0, torch_device="none",
        no_jax=True, contention=True,
    )  # fmt: skip
    results = run_contention(opts, log=lambda _: None)
    assert results["machine"]["load_avg_start"] == [0.5, 0, 0]  # was taken after the run
    assert results["machine"]["load_avg_end"] == [3.0, 0, 0]
    assert results["settings"] == {
        "config": "mnist", "dtype": "float64", "batch_sizes": [8], "reps": 2,
        "target_seconds_per_rep": 0.01, "pause_seconds_between_reps": 0.0, "torch": False,
        "jax": False, "conditions": ["idle"], "busy_cores": None,
    }  # fmt: skip
