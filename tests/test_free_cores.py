"""A training run's CPU thread count chosen from the free cores (scratchvae/backend/threads.py):
the /proc/stat reading, the choice, BLAS's count following it, and the trainer recording it."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from scratchvae.backend.threads import (
    LoadProbe,
    ThreadChoice,
    _cpu_ticks,
    free_threads,
    training_threads,
    usable_cores,
)
from scratchvae.data import load_dataset
from scratchvae.models import VAE
from scratchvae.resume import ResumeWarning
from scratchvae.train import TrainConfig, Trainer

threads_module = sys.modules["scratchvae.backend.threads"]  # the name is also a function's

STAT = """cpu  100 0 50 800 10 0 0 5 0 0
cpu0 60 0 30 400 5 0 0 5 0 0
cpu1 40 0 20 400 5 0 0 0 0 0
intr 12345
"""


def blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_cpu_ticks_reads_the_per_core_lines_of_usable_cores(monkeypatch):
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda _: {0, 1})
    # busy: user + nice + system + irq + softirq + steal; all: every field but guest ones
    assert _cpu_ticks(STAT) == (60 + 30 + 5 + 40 + 20, 500 + 465)
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda _: {1})
    assert _cpu_ticks(STAT) == (60, 465)
    assert _cpu_ticks("intr 1\n") is None


@pytest.mark.parametrize(
    ("others", "cores", "expected"),
    [(None, 4, 4), (0.0, 2, 2), (0.4, 2, 2), (0.6, 2, 1), (1.0, 2, 1), (5.0, 2, 1), (2.2, 16, 14)],
)
def test_free_threads_leaves_the_busy_cores(others, cores, expected):
    assert free_threads(others, cores) == expected


@pytest.mark.skipif(_cpu_ticks() is None, reason="no /proc/stat here")
def test_the_probe_sees_a_busy_process_and_not_its_own_work():
    """On a shared machine other work can start at any moment, also just after the quiet look
    (it failed "own work < 0.5" with 0.7 to 1.1 cores of such bursts): the look at this
    process's own work is taken up to three times, each after a quiet 0.3 s. A probe that
    counted this process's own work would count it every time."""
    probe = LoadProbe()
    for _ in range(3):
        time.sleep(0.3)
        if (quiet := probe.others()) > 0.3:  # a shared machine: what it sees is not ours to set
            pytest.skip(f"{quiet:.1f} cores busy with other work; tested on quiet cores only")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.3:  # this process's own work is not "others"
            np.ones(1000).sum()
        if (own := probe.others()) < 0.5:
            break
    assert own < 0.5
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        probe.others()
        time.sleep(0.5)
        assert probe.others() > 0.6
    finally:
        busy.kill()
        busy.wait()


class Busy:
    """A probe that reports a fixed number of busy cores."""

    def __init__(self, cores: float) -> None:
        self.cores = cores

    def others(self) -> float:
        return self.cores


def test_a_choice_sets_the_split_and_blas_and_restores_them(monkeypatch):
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads_module, "_THREADS", None)
    before = blas_threads()
    choice = ThreadChoice(None, Busy(2.0))
    assert choice.update() == 2
    assert threads_module.cpu_threads() == 2 and blas_threads() == 2
    assert choice.news() == (
        "scratchvae: 2 CPU thread(s): 2.0 of 4 cores busy with other work "
        "(SCRATCHVAE_THREADS=N pins the count)"
    )
    assert choice.news() is None  # said once
    choice.probe = Busy(0.0)
    assert choice.update() == 4 and choice.news() is not None  # and when it changes back
    choice.restore()
    assert blas_threads() == before


def test_a_pinned_count_is_never_measured(monkeypatch):
    monkeypatch.setattr(threads_module, "_THREADS", 1)
    with training_threads() as choice:
        assert choice.probe is None and choice.count == 1 and blas_threads() == 1
        assert choice.news() is None
    assert threads_module._THREADS == 1


def test_auto_chooses_from_the_load_at_the_start(monkeypatch):
    monkeypatch.setattr(threads_module, "_THREADS", None)
    monkeypatch.setattr(threads_module, "LoadProbe", lambda: Busy(99.0))
    with training_threads(start_probe=0.0) as choice:
        assert choice.count == 1 and threads_module.cpu_threads() == 1
    assert threads_module._THREADS is None
    with training_threads(numpy=False) as choice:  # a GPU run: nothing chosen
        assert choice.busy is None and threads_module._THREADS is None


def test_the_trainer_records_each_epochs_count_and_says_when_it_drops(monkeypatch, capsys):
    monkeypatch.setattr(threads_module, "_THREADS", None)
    monkeypatch.setattr(threads_module, "LoadProbe", lambda: Busy(99.0))
    monkeypatch.setattr(threads_module.time, "sleep", lambda s: None)
    data = load_dataset("digits", "train")
    model = VAE(64, hidden=(16,), latent=2)
    config = TrainConfig(epochs=2, batch_size=64, progress=True, progress_bar=False)
    history = Trainer(model, data, config).fit()
    assert [r["threads"] for r in history.records] == [1, 1]
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("CPU thread(s)") == (1 if usable_cores() > 1 else 0)


@pytest.mark.skipif(_cpu_ticks() is None, reason="no /proc/stat here")
def test_a_look_too_soon_after_the_last_tells_nothing():
    """Under 50 ms between looks the clock ticks (1/100 s) cannot say how busy the cores were:
    unknown (None), which the choice reads as all cores free."""
    probe = LoadProbe()
    assert probe.others() is None
    assert free_threads(None, 4) == 4


class Changing:
    """A probe that reports each of ``cores`` in turn (the last one from then on)."""

    def __init__(self, cores: list[float]) -> None:
        self.cores = list(cores)

    def others(self) -> float:
        return self.cores.pop(0) if len(self.cores) > 1 else self.cores[0]


def test_a_count_that_changes_between_epochs_is_recorded_said_and_warned_on_resume(
    monkeypatch, capsys, tmp_path
):
    # 4 usable cores; busy at the start 0, after epoch 1: 2, after epoch 2: 3, after epoch 3: 0
    monkeypatch.setattr(threads_module, "_THREADS", None)
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads_module.time, "sleep", lambda s: None)
    probes = [Changing([0.0, 2.0, 3.0, 0.0])]
    monkeypatch.setattr(threads_module, "LoadProbe", lambda: probes.pop(0))
    data = load_dataset("digits", "train")
    config = TrainConfig(epochs=3, batch_size=600, progress=True, progress_bar=False,
                         out_dir=str(tmp_path))  # fmt: skip  # 600 rows: split on 2 threads
    history = Trainer(VAE(64, hidden=(16,), latent=2), data, config).fit()
    assert [r["threads"] for r in history.records] == [4, 2, 1]
    out = capsys.readouterr()
    said = [line for line in (out.out + out.err).splitlines() if "CPU thread" in line]
    assert said == [
        "scratchvae: 2 CPU thread(s): 2.0 of 4 cores busy with other work "
        "(SCRATCHVAE_THREADS=N pins the count)",
        "scratchvae: 1 CPU thread(s): 3.0 of 4 cores busy with other work "
        "(SCRATCHVAE_THREADS=N pins the count)",
    ]
    # resumed where 1 core is busy: 3 threads, where the run's last epoch ran on 1
    probes.append(Busy(1.0))
    config.epochs = 4
    with pytest.warns(
        ResumeWarning, match="continues on 3 CPU threads where its last epoch ran on 1"
    ):
        history = Trainer(VAE(64, hidden=(16,), latent=2), data, config).fit(resume=True)
    assert [r["threads"] for r in history.records] == [4, 2, 1, 3]
