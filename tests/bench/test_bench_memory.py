"""scratchvae.bench.memory: tracemalloc sees memory kept from step to step; the probe's fields."""

from __future__ import annotations

from scratchvae.backend import Backend
from scratchvae.bench import memory


def test_tracemalloc_steps_tells_a_leaking_step_from_a_clean_one() -> None:
    kept: list[bytes] = []
    leaky = memory._tracemalloc_steps(lambda: kept.append(bytes(2**16)), steps=32)
    clean = memory._tracemalloc_steps(lambda: bytes(2**16), steps=32)
    assert leaky["tracemalloc_growth_mib"] >= 32 * 2**16 / 2**20 * 0.9
    assert abs(clean["tracemalloc_growth_mib"]) < 0.05
    assert clean["tracemalloc_step_peak_mib"] >= 2**16 / 2**20 * 0.9  # the temporary is seen


def test_memory_probe_in_process_reports_numpy_figures() -> None:
    out = memory.memory_probe("scratchvae-numpy", "numpy", batch=8, steps=3)
    assert out["impl"] == "scratchvae-numpy" and out["steps"] == 3
    assert out["params_grads_adam_mib"] > 0
    assert "tracemalloc_growth_mib" in out and "gpu_used_growth_mib" not in out


def test_eval_cost_times_the_importance_weighted_bound() -> None:
    out = memory.eval_cost(Backend("numpy", "float32", 0), n=4, k=3)
    assert out["n"] == 4 and out["k"] == 3 and out["seconds"] > 0 and out["peak_mib"] > 0
    assert out["peak_measure"] == "tracemalloc" and out["iw_nll"] > 0
