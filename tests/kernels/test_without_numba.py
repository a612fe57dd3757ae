"""Numba is optional (the ``fast`` extra): without it the package imports, has no CPU kernels,
warm_up is a no-op, and a training step (the batch split on two threads, the fused Adam, the
IWAE bound) runs the ops' bodies and computes what the kernels-off step computes here."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from scratchvae.backend import kernels

# the same step in this process (kernels off) and in one where `import numba` fails
STEP = """
import numpy as np
from scratchvae.backend import Backend, threads
from scratchvae.models import VAE
from scratchvae.optim import Adam

def step(objective, k):
    bk = Backend("numpy", "float64", seed=5)
    model = VAE(12, hidden=(8,), latent=3, objective=objective, k=k, backend=bk)
    x = (bk.uniform((300, 12)) < 0.4).astype(np.float64)  # 300 rows: split on 2 threads
    opt = Adam(1e-2)
    with threads(2):
        for _ in range(2):
            terms, grads = model.loss_and_grads(x)
            opt.step(model.params, grads)
    return float(terms["loss"]), model.params.flat.copy()
"""

CHILD = (
    "import sys\n"
    "sys.modules['numba'] = None  # as if it were not installed: import numba fails\n"
    + STEP
    + """
from scratchvae.backend import tracing
from scratchvae.kernels import cpu

assert cpu.numba is None and cpu.KERNELS == {}, cpu.KERNELS
cpu.warm_up("float32")  # a no-op
labels = set()

class Tracer:
    def call(self, op, impl, label, args, kwargs):
        labels.add(label)
        return impl(*args, **kwargs)

out = {}
with tracing(Tracer()):
    for objective, k in (("elbo", 1), ("iwae", 3)):
        loss, flat = step(objective, k)
        out[f"{objective}-loss"], out[f"{objective}-params"] = loss, flat
assert labels == {"numpy"}, labels
np.savez(sys.argv[1], **out)
"""
)


def test_without_numba_every_op_runs_its_body_and_the_step_is_the_kernels_off_step(tmp_path):
    env = {**os.environ, "SCRATCHVAE_KERNELS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "out.npz")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    namespace: dict = {}
    exec(STEP, namespace)
    with kernels(False):
        for objective, k in (("elbo", 1), ("iwae", 3)):
            loss, flat = namespace["step"](objective, k)
            assert float(got[f"{objective}-loss"]) == pytest.approx(loss, rel=1e-13)
            np.testing.assert_allclose(got[f"{objective}-params"], flat, rtol=1e-13, atol=1e-15)
