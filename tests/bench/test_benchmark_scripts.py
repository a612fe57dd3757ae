"""Benchmark scripts' own logic. compare_versions.py: a side's environment, setup code and
cores reach its processes; a failing side is a one-line error naming its tree.
step_phases.py: every phase timed."""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


compare_versions = _script("compare_versions")


def test_a_setting_is_name_equals_value():
    assert compare_versions._setting("A=1=2") == ("A", "1=2")
    for bad in ("A", "=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            compare_versions._setting(bad)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_a_side_runs_with_its_environment_setup_and_cores():
    setup = (
        "import os; assert os.environ['SCRATCHVAE_PROBE'] == 'yes'; "
        "assert len(os.sched_getaffinity(0)) == 1"
    )
    env = {"SCRATCHVAE_PROBE": "yes"}
    seconds = compare_versions.time_tree(str(ROOT), 4, "float64", 1, env, setup, cores=1)
    assert 0 < seconds < 10


def test_a_failing_side_is_one_line_naming_its_tree():
    with pytest.raises(SystemExit, match=r"failed in .*: ValueError: boom$"):
        compare_versions.time_tree(str(ROOT), 4, "float64", 1, setup="raise ValueError('boom')")


def test_step_phases_times_every_phase():
    ms = _script("step_phases").phases(8, "float64", reps=1, target_s=0.001)
    assert set(ms) == {
        "noise", "forward", "backward", "adam", "step (whole)", "step (as trained)", "products"
    }  # fmt: skip
    assert all(t > 0 for t in ms.values())


def test_burda_table1_without_the_mnist_files_is_one_line(tmp_path, monkeypatch, capsys):
    # it tried to download them and ended in a DataError traceback
    from dead_port import dead_url

    monkeypatch.setenv("SCRATCHVAE_MNIST_MIRROR", dead_url())
    burda = _script("burda_table1")
    assert burda.main(["--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("burda_table1.py: error: could not download ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing written, no cache folder left


def _iwae_case(k=50, batch=20):
    from scratchvae.backend import Backend
    from scratchvae.models import VAE
    from scratchvae.optim import Adam

    iwae = _script("iwae_step")
    bk = Backend("numpy", "float32", seed=0)
    model = VAE(784, hidden=[200, 200], latent=50, activation="tanh", objective="iwae", k=k,
                backend=bk)  # fmt: skip
    x = bk.asarray(bk.uniform((batch, 784)) < 0.3)
    opt = Adam(iwae.ADAM["lr"], betas=iwae.ADAM["betas"], eps=iwae.ADAM["eps"])
    return iwae, model, x, opt


def test_iwae_step_checks_the_adam_update_too(monkeypatch):
    # it checked the loss and the gradients only: an Adam of other settings went unnoticed
    pytest.importorskip("torch")
    iwae, model, x, opt = _iwae_case()
    before = model.params.flat.copy()
    row = iwae.check(model, x, 50, opt)
    assert row["ok"], row
    assert row["adam_update_worst"]["rel_diff"] <= row["adam_update_worst"]["tolerance"]
    assert (model.params.flat == before).all()  # timed from the weights checked
    monkeypatch.setitem(iwae.ADAM, "eps", 1e-5)  # the reference's Adam only
    row = iwae.check(model, x, 50, opt)
    assert not row["ok"] and row["grad_max_rel_diff"] <= row["tolerance"], row
    with pytest.raises(iwae.ReferenceMismatch, match=r"\(IWAE k=50 float32 batch 20\): its Adam"):
        iwae.raise_if_disagrees(row)


SCRIPTS = ["burda_table1", "compare_versions", "contention_runs", "iwae_step", "mnist_epochs",
           "products", "readme_numbers", "step_phases"]  # fmt: skip


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_bad_argument_is_one_error_line(name, monkeypatch, capsys):
    # argparse printed its usage block (several lines) above the error
    module = _script(name)
    monkeypatch.setattr("sys.argv", [f"{name}.py", "--no-such-flag"])
    with pytest.raises(SystemExit) as info:
        module.main()
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"{name}.py: error: ")  # the flag, or a required argument missing


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
@pytest.mark.parametrize("script", ["run_cpu_host.sh", "run_gpu.sh"])
def test_the_shell_scripts_take_help_and_refuse_other_options(tmp_path, script) -> None:
    """Was: `bash benchmarks/run_cpu_host.sh --help` took --help for the output folder (mkdir
    printed its own help) and went on to run the benchmarks."""
    import subprocess

    path = str(ROOT / "benchmarks" / script)
    shown = subprocess.run(["bash", path, "--help"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert shown.returncode == 0 and "bash benchmarks/" in shown.stdout and not shown.stderr
    bad = subprocess.run(["bash", path, "--out"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith(f"{script}: unknown option --out") and bad.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
