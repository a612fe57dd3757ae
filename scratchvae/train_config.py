"""How to train (:class:`TrainConfig`): the settings of a run, every one saved in its checkpoint.

:mod:`scratchvae.train` trains with them (and re-exports :class:`TrainConfig`, where users
import it); a resumed run keeps those that change its numbers
(:data:`scratchvae.resume.RUN_SETTINGS`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import CHECKPOINT_NAME
from .data import BINARIZE_MODES
from .inputs import real, whole
from .inputs import require as _check
from .optim import Optimizer, build_optimizer

__all__ = ["TrainConfig", "kl_weight_at"]


def kl_weight_at(beta: float, warmup_epochs: float, steps_per_epoch: int, step: int) -> float:
    """beta * min(1, step / warm-up steps): the KL weight at optimizer step ``step`` of a run
    whose warm-up lasts ``warmup_epochs`` epochs of ``steps_per_epoch`` steps. The one formula:
    the Trainer weighs each step with it, and a checkpoint's history is checked against it
    (:mod:`scratchvae.checkpoint_checks`), exactly (the same arithmetic on the same floats)."""
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, max(step, 0) / warmup_steps)


@dataclass
class TrainConfig:
    """How to train. Every field is saved in the checkpoint (``to_dict``)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.0  # sgd only
    warmup_epochs: float = 0.0  # KL weight 0 -> beta linearly over this many epochs (per step)
    clip_norm: float | None = None  # global gradient-norm clipping
    binarize: str = "none"  # none | threshold | dynamic (a fresh Bernoulli draw every batch)
    val_fraction: float = 0.1  # held-out part of the training data (fixed by seed)
    patience: int | None = None  # early stopping: epochs without a better validation loss
    seed: int = 0  # the train/validation split and the validation noise
    progress: bool = True  # print a line per epoch (a tenth of them below a bar) ...
    progress_bar: bool = True  # ... and a progress bar, when stderr is a terminal
    out_dir: str | None = None  # where checkpoint.npz and metrics.jsonl go (None: not saved)
    save_every: int = 1  # checkpoint every this many epochs (and at the end)
    log_every: int = 50  # steps between progress updates and divergence checks (a host sync)
    data: str | None = None  # the data spec and folder, recorded for `scratchvae evaluate DIR`
    data_dir: str | None = None  #   (not used by fit: it is given the data set itself)

    def __post_init__(self) -> None:
        self.epochs, self.seed = whole(self.epochs, "epochs"), whole(self.seed, "seed", 0)
        self.batch_size = whole(self.batch_size, "batch size")
        for name in ("lr", "momentum", "warmup_epochs", "val_fraction", "clip_norm"):
            setattr(self, name, real(getattr(self, name), name, optional=name == "clip_norm"))
        self.save_every, self.log_every = (
            whole(self.save_every, "save_every"),
            whole(self.log_every, "log_every"),
        )
        if self.patience is not None:
            self.patience = whole(self.patience, "patience", 0)  # >= 1: checked below
        _check(0 < self.lr < math.inf, f"learning rate must be > 0 and finite, got {self.lr}")
        _check(
            0 <= self.warmup_epochs < math.inf,  # inf: a KL weight of 0 for ever
            f"warm-up epochs must be >= 0 and finite, got {self.warmup_epochs}",
        )
        self.make_optimizer()  # the optimizer's checks (name, clip norm, momentum), now
        _check(
            self.binarize in BINARIZE_MODES,
            f"unknown binarization {self.binarize!r}; choose one of {', '.join(BINARIZE_MODES)}",
        )
        _check(
            0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"
        )
        _check(
            self.patience is None or (self.patience >= 1 and self.val_fraction > 0),
            "early stopping needs patience >= 1 and a validation part (val_fraction > 0)",
        )

    def make_optimizer(self) -> Optimizer:
        """A new optimizer of these settings (a ValueError, one line, for one they refuse)."""
        extra = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        return build_optimizer(self.optimizer, self.lr, self.clip_norm, **extra)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> TrainConfig:
        """Rebuild from ``to_dict`` output (unknown keys ignored), with ``overrides`` applied."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names}, **overrides})

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else Path(self.out_dir) / CHECKPOINT_NAME
