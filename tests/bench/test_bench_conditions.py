"""scratchvae bench --contention: the conditions it sets up, the step choosing its threads as a
training run does, the report naming the count."""

from __future__ import annotations

import argparse

from scratchvae.bench import conditions
from scratchvae.bench.conditions import AsTraining, markdown, run_contention


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
    )  # fmt: skip
    results = run_contention(opts, log=lambda _: None)
    rows = results["rows"]
    assert [r["condition"] for r in rows] == ["idle", "busy", "pair"]
    assert all(r["impl"] == "scratchvae" and r["scratchvae_threads"] >= 1 for r in rows)
    assert rows[2]["partner_samples_per_s"] > 0
    assert rows[0]["kept"] == 1.0
    assert "| 8 | busy | scratchvae (" in markdown(results)
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
