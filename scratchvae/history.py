"""A training run's per-epoch metrics (:class:`History`) and their file, ``metrics.jsonl``
(:func:`write_metrics`): what :mod:`scratchvae.train` records and a resumed run reads back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write

__all__ = ["METRICS_NAME", "History", "write_metrics"]

METRICS_NAME = "metrics.jsonl"


@dataclass
class History:
    """Per-epoch metrics: a list of flat dicts (epoch, step, train_loss, train_recon, train_kl,
    val_loss, ..., kl_weight: nats per example; seconds, samples_per_s; on NumPy threads and
    kernels, 1 or 0: what the step's last bits depend on)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.records[i]

    @property
    def best_epoch(self) -> int | None:
        """The epoch with the lowest validation loss (None without validation)."""
        scored = [r for r in self.records if "val_loss" in r]
        return min(scored, key=lambda r: r["val_loss"])["epoch"] if scored else None

    def epochs_since_best(self) -> int:
        best = self.best_epoch
        return 0 if best is None else self.records[-1]["epoch"] - best

    def out_of_patience(self, patience: int | None) -> bool:
        """Whether early stopping with ``patience`` (None: off) ends the run here."""
        return patience is not None and self.epochs_since_best() >= patience


def write_metrics(path: str | os.PathLike, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` as JSON lines (one per epoch), atomically."""
    with atomic_write(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return Path(path)
