"""The CUDA graph's bookkeeping (scratchvae.kernels.graph.StepGraph) on the host.

On a GPU, ``tests/kernels/test_gpu_graph.py`` checks that the replayed step computes what the
plain one does. What a GPU is not needed for, and is checked here with a stand-in for CuPy's
streams and graphs that logs what is asked of it: which call runs the step, which captures it
and which replays it; that a replay copies the batch into the graph's input first; that a key
changes with the batch's shape, dtype and the host arguments; that a failed capture (the step
raising, or the capture invalidated) ends the stream's capture, says why, and leaves every
later call running the plain step; and that the capture allocates from the graph's own pool.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest

from scratchvae.kernels import graph as graph_module
from scratchvae.kernels.graph import StepGraph


class FakeCuda:
    """``cupy.cuda``'s streams, events, pools and graphs, each call written to ``log``."""

    def __init__(self, fail_end: bool = False, fail_begin: bool = False) -> None:
        self.log: list[str] = []
        self.capturing = False
        self.allocator = "default"
        self.fail_end, self.fail_begin = fail_end, fail_begin
        cuda = self

        class Graph:
            def upload(self) -> None:
                cuda.log.append("upload")

            def launch(self) -> None:
                cuda.log.append("launch")

        class Stream:
            def __init__(self, non_blocking: bool = False) -> None:
                self.name = "capture-stream"

            def __enter__(self) -> Stream:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def record(self) -> str:
                return "event"

            def wait_event(self, event: str) -> None:
                cuda.log.append("wait")

            def begin_capture(self) -> None:
                if cuda.fail_begin:
                    raise RuntimeError("cudaErrorStreamCaptureUnsupported")
                cuda.capturing = True
                cuda.log.append("begin")

            def end_capture(self) -> Graph:
                cuda.capturing = False
                cuda.log.append("end")
                if cuda.fail_end:
                    raise RuntimeError("cudaErrorStreamCaptureInvalidated: operation not permitted")
                return Graph()

        class MemoryPool:
            def malloc(self, size: int) -> None:
                raise AssertionError("not called here")

        @contextlib.contextmanager
        def using_allocator(malloc: object):
            old, cuda.allocator = cuda.allocator, "graph-pool"
            try:
                yield
            finally:
                cuda.allocator = old

        self.namespace = types.SimpleNamespace(
            Stream=Stream,
            MemoryPool=MemoryPool,
            using_allocator=using_allocator,
            get_current_stream=lambda: Stream(),
        )


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()
    monkeypatch.setattr(
        graph_module, "import_cupy", lambda: types.SimpleNamespace(cuda=fake.namespace)
    )
    return fake


def recording_step(cuda: FakeCuda, fail_in_capture: str | None = None):
    """A step that logs whether it ran or was recorded, on which input and from which pool."""
    seen: list[np.ndarray] = []

    def step(x: np.ndarray, *args: object) -> None:
        if cuda.capturing:
            cuda.log.append("record")
            if fail_in_capture is not None:
                raise NotImplementedError(fail_in_capture)
            return
        cuda.log.append(f"run({cuda.allocator})")
        seen.append(x)

    return step, seen


def test_run_then_capture_then_replay(cuda: FakeCuda) -> None:
    """First call: the plain step. Second with the same key: the step for real from the
    graph's pool, then recorded on the capture stream, the graph uploaded. Later calls: the
    batch copied into the graph's input, one launch, no step."""
    step, seen = recording_step(cuda)
    g = StepGraph(step)
    x1, x2, x3 = (np.full((4, 3), v, dtype=np.float32) for v in (1.0, 2.0, 3.0))
    g(x1, 0.5)
    assert cuda.log == ["run(default)"] and seen[-1] is x1
    cuda.log.clear()
    g(x2, 0.5)
    assert cuda.log == ["run(graph-pool)", "wait", "begin", "record", "end", "wait", "upload"]
    static_x = seen[-1]
    assert static_x is not x2 and np.array_equal(static_x, x2)  # the graph's own copy
    cuda.log.clear()
    g(x3, 0.5)
    assert cuda.log == ["launch"] and g.replays == 1 and g.fallback_reason is None
    np.testing.assert_array_equal(static_x, x3)  # the batch copied in before the launch


def test_a_new_key_runs_plain_until_it_repeats(cuda: FakeCuda) -> None:
    """The batch's shape, its dtype and each host argument are part of the key: a changed one
    runs the plain step (the KL weight during warm-up never captures), the same key twice in
    a row captures, and each captured key replays its own graph."""
    step, _ = recording_step(cuda)
    g = StepGraph(step)
    x = np.zeros((4, 3), np.float32)
    for weight in (0.1, 0.2, 0.3):  # warm-up: a new weight at every step
        g(x, weight)
    assert cuda.log.count("begin") == 0
    g(x, 1.0), g(x, 1.0)  # settled: captured
    g(x[:2], 1.0), g(x.astype(np.float64), 1.0)  # a short batch, another dtype: plain
    cuda.log.clear()
    g(x, 1.0)
    assert cuda.log == ["launch"] and len(g.graphs) == 1
    g(x[:2], 1.0), g(x[:2], 1.0)  # the short shape twice in a row: its own graph
    assert len(g.graphs) == 2


FAILURES = {  # where the capture fails -> the reason kept
    "step raises": "NotImplementedError: calling cuBLAS API during stream capture",
    "step raises, no message": "NotImplementedError",
    "step raises, a blank first line": "NotImplementedError: the reason",
    "capture invalidated": (
        "RuntimeError: cudaErrorStreamCaptureInvalidated: operation not permitted"
    ),
    "capture refused": "RuntimeError: cudaErrorStreamCaptureUnsupported",
}


@pytest.mark.parametrize("where", sorted(FAILURES))
def test_a_failed_capture_falls_back_for_good(cuda: FakeCuda, where: str) -> None:
    """A step that raises while recorded (with or without a message), a capture that cannot
    end, or one that cannot begin: a capture begun is ended (the stream not left capturing),
    the reason kept in one line (the exception's name first), no graph kept, and every later
    call runs the plain step. (A refused begin raised out of the training step before.)"""
    cuda.fail_end, cuda.fail_begin = where == "capture invalidated", where == "capture refused"
    message = {"step raises": "calling cuBLAS API during stream capture\nmore text",
               "step raises, no message": "",
               "step raises, a blank first line": "\n  the reason\n"}.get(where)  # fmt: skip
    step, _ = recording_step(cuda, fail_in_capture=message)
    g = StepGraph(step)
    x = np.zeros((2, 2), np.float32)
    g(x), g(x)
    assert ("end" in cuda.log) == (where != "capture refused")
    assert not cuda.capturing and not g.graphs
    assert g.fallback_reason == FAILURES[where]
    cuda.log.clear()
    for _ in range(3):
        g(x)
    assert cuda.log == ["run(default)"] * 3 and g.replays == 0
