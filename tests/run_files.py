"""Run folders for tests: one trained by the command line, and a checkpoint rewritten in place
(its metadata changed, entries replaced), as the tests of damaged, crafted or older files need."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: reading and writing checkpoint files

from scratchvae.cli import main


def cli_run(tmp_path_factory: Any, name: str, flags: Sequence[str]) -> Path:
    """A run folder trained by ``scratchvae train --out ... FLAGS`` in a new temporary folder."""
    out = tmp_path_factory.mktemp(name) / "run"
    assert main(["train", "--out", str(out), *flags]) == 0
    return out


def rewrite_checkpoint(
    path: Path, change: Callable[[dict], None] | None = None, **entries: Any
) -> Path:
    """Rewrite the checkpoint ``path`` (a file or run folder): ``change(meta)`` edits its parsed
    metadata in place, ``entries`` replace arrays by name (values as np.array takes them)."""
    path = path / "checkpoint.npz" if path.is_dir() else path
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if change is not None:
        meta = json.loads(str(arrays["meta"]))
        change(meta)
        arrays["meta"] = np.array(json.dumps(meta))
    arrays |= {k: np.array(v) for k, v in entries.items()}
    np.savez(path, **arrays)
    return path
