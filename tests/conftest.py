"""Shared test configuration: Hypothesis profiles, the GPU marker, the kernels on/off fixture,
an HTTP server on 127.0.0.1 for the download tests (``serve``).

Profiles, chosen with the environment variable SCRATCHVAE_HYPOTHESIS_PROFILE:
  ci (default)  few examples per property, so the whole suite stays fast on 2 cores
  dev           a few more, printing statistics
  thorough      many examples: `SCRATCHVAE_HYPOTHESIS_PROFILE=thorough pytest`
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# A training run picks its CPU thread count from the cores free at its start (and after each
# epoch); the step's numbers depend on that count. The suite pins it, so that a machine busy
# with something else cannot change a bit that a test compares; tests/test_free_cores.py
# tests the choice itself. Set before scratchvae is imported (it reads it then), and
# inherited by the CLI runs in subprocesses.
os.environ.setdefault("SCRATCHVAE_THREADS", str(len(os.sched_getaffinity(0))))

# The download tests talk to a server on 127.0.0.1 (``serve``). urllib sends every request to
# $http_proxy unless $no_proxy names the host, so on a machine with a proxy set (common on CI
# runners) they reached the proxy instead and failed; the local server is never proxied here.
# Inherited by the CLI runs in subprocesses.
for _name in ("no_proxy", "NO_PROXY"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("SCRATCHVAE_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["kernels-on", "kernels-off"])
def kernels(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run the test twice: with the ops' kernels (Numba on NumPy arrays, when installed; CuPy
    kernels on GPU arrays) and with the readable op bodies only. Yields whether they are on."""
    from scratchvae.backend import kernels as use_kernels

    on = request.param == "kernels-on"
    with use_kernels(on):
        yield on


# SCRATCHVAE_FAKE_CUPY=1: the GPU tests run on a host stand-in for CuPy (tests/fake_cupy.py), to
# check their own logic before a GPU run; tests that need CuPy itself skip (`needs_real_gpu`).
FAKE_CUPY = os.environ.get("SCRATCHVAE_FAKE_CUPY") == "1"


def pytest_configure(config: pytest.Config) -> None:
    if FAKE_CUPY:
        import fake_cupy

        fake_cupy.install_for_the_session()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` cleanly when CuPy or a CUDA device is missing (and those marked
    `needs_real_gpu` under the host stand-in)."""
    from scratchvae.backend import cupy_available

    if FAKE_CUPY:
        real = pytest.mark.skip(reason="needs CuPy itself (SCRATCHVAE_FAKE_CUPY=1)")
        for item in items:
            if "needs_real_gpu" in item.keywords:
                item.add_marker(real)

    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or cupy_available():
        return
    skip = pytest.mark.skip(
        reason="needs CuPy and a CUDA device (pip install 'scratchvae[cuda12]')"
    )
    for item in gpu_items:
        item.add_marker(skip)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
