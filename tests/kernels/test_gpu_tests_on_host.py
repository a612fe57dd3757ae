"""The GPU tests themselves (``pytest -m gpu``), run on CuPy's host stand-in.

A GPU run is rare and short (a session may be lent one for minutes), and a GPU test whose own
logic is wrong (a table without inputs for a kernel, a tolerance tighter than rounding allows)
spends it. So the whole ``-m gpu`` selection also runs here, in a subprocess with
``SCRATCHVAE_FAKE_CUPY=1`` (tests/conftest.py, tests/fake_cupy.py): everything but the stream
captures (marked ``needs_real_gpu``) must pass on the host before it meets a GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cuda_on_host import usable

WHY_NOT = usable()
TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
def test_the_gpu_tests_pass_on_the_host_stand_in_for_cupy() -> None:
    env = {**os.environ, "SCRATCHVAE_FAKE_CUPY": "1", "SCRATCHVAE_KERNELS": "1"}  # (they
    # check the CUDA kernels: a suite run with SCRATCHVAE_KERNELS=0 still runs them there)
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(TESTS)]
    done = subprocess.run(
        cmd, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in summary and not re.search(r"\b\d+ (failed|errors?)\b", summary), summary
