"""scratchvae.bench.timing: the summary statistics, interleaved timing, the matmul bound."""

from __future__ import annotations

from scratchvae.backend import Backend
from scratchvae.bench import timing


def test_summarize_orders_its_statistics() -> None:
    s = timing.summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    assert (s["min"], s["q1"], s["median"], s["q3"], s["max"]) == (1.0, 2.0, 3.0, 4.0, 10.0)
    assert timing.summarize([2.5])["median"] == 2.5


def test_time_interleaved_alternates_the_functions_rep_by_rep() -> None:
    order: list[str] = []
    fns = {name: (lambda name=name: order.append(name), lambda: None) for name in ("a", "b")}
    out = timing.time_interleaved(fns, reps=3, target_s=1e-9)
    assert set(out) == {"a", "b"} and all(s["reps"] == 3 for s in out.values())
    # warm-up: 2 x 2 calls each; then 3 repetitions of (2 calls of a, 2 calls of b)
    assert order == ["a"] * 4 + ["b"] * 4 + ["a", "a", "b", "b"] * 3


def test_matmul_bound_runs_the_step_products_into_preallocated_outputs() -> None:
    step = timing.ScratchStep(timing.CONFIGS["mnist"], 4, Backend("numpy", "float32", seed=0))
    layers = timing._dense_layers(step.model)
    assert layers == [("encoder.0", 784, 400), ("encoder.1", 400, 40)] + [
        ("decoder.0", 20, 400),
        ("decoder.1", 400, 784),
    ]
    timing.matmul_bound_fn(step.model, 4)()  # shapes agree, or matmul(out=) raises
    before = step.model.params.flat.copy()
    step()
    assert (step.model.params.flat != before).any()  # the timed step trains
