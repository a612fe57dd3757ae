"""A crafted checkpoint whose progress is told consistently but is a count no run reaches: a
step count near 2**63 passed every check (a whole number within int64, the history's steps
agreeing, the optimizer at the same step), and the resumed run's next Adam step overflowed
the counter: an OverflowError traceback, exit status 1. Counts are now at most 2**53 (no
run takes that many steps: 285 years at a million a second), so a resumed run never nears
int64's end, and float arithmetic on a step count stays exact."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np  # numpy-boundary: writing crafted files
import pytest
from run_files import cli_run, rewrite_checkpoint

from scratchvae.checkpoint import CheckpointError, load_checkpoint, restore_optimizer
from scratchvae.cli import main
from scratchvae.models import build_model
from scratchvae.optim import Adam

T = ["--hidden", "32", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]
RESUME = ["--resume", "--epochs", "3", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return cli_run(tmp_path_factory, "step-counts", T)


def _at_step(run: Path, out: Path, step: int, t: int | None = None) -> Path:
    """A copy of ``run`` whose progress says ``step`` everywhere (its 2 epochs the last 2 x 22
    steps), its optimizer at step ``t`` (default the same)."""

    def at(meta: dict) -> None:
        meta["step"], meta["history"][0]["step"], meta["history"][1]["step"] = step, step - 22, step

    shutil.copytree(run, out)
    rewrite_checkpoint(out, at, **{"optim/t": step if t is None else t})
    return out


@pytest.mark.parametrize("step", [2**63 - 1, 2**63 - 20, 2**53 + 1])
def test_a_step_count_no_run_reaches_is_refused_in_one_line(trained, tmp_path, capsys, step):
    out = _at_step(trained, tmp_path / "run", step)
    before = (out / "checkpoint.npz").read_bytes()
    assert main(["train", "--out", str(out), *RESUME]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("scratchvae: error: ") and f"meta entry 'step' is {step}" in line
    assert "more than a run takes" in line
    assert (out / "checkpoint.npz").read_bytes() == before
    with pytest.raises(CheckpointError, match="meta entry 'step'"):
        load_checkpoint(out)


def test_a_large_step_count_a_run_could_reach_still_resumes(trained, tmp_path):
    out = _at_step(trained, tmp_path / "run", 2**53 - 100)
    assert main(["train", "--out", str(out), *RESUME]) == 0
    assert load_checkpoint(out).step == 2**53 - 100 + 22


def test_restore_optimizer_refuses_a_step_count_no_run_reaches(trained, tmp_path):
    # the library's own path: the optimizer state alone, its step count past 2**53
    ckpt = load_checkpoint(trained)
    ckpt.optim_state["t"] = np.array(2**63 - 1)
    model = build_model(ckpt.model_config)
    fresh = Adam(1e-3)
    with pytest.raises(CheckpointError, match="step count 9223372036854775807"):
        restore_optimizer(ckpt, fresh, model)
    assert fresh.t == 0
