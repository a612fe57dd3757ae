"""benchmarks/compare_versions.py: a side's environment, setup code and cores reach its
processes; a failing side is a one-line error naming its tree."""

import argparse
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "compare_versions", ROOT / "benchmarks" / "compare_versions.py"
)
compare_versions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_versions)


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
