"""The training curves of a run: its loss terms per epoch, training and validation, from the
history (``metrics.jsonl``), with a KL warm-up's epochs marked. Part of :mod:`scratchvae.plots`,
which exports :func:`plot_curves` with the other figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (and none on a server)

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .figure_parts import PathLike, _save  # noqa: E402

__all__ = ["MAX_MARKED_EPOCHS", "plot_curves"]

MAX_MARKED_EPOCHS = 30  # up to this many epochs, each epoch's point is marked on the curves


def _warmup(records: list[Mapping[str, Any]]) -> tuple[float, int] | None:
    """(the largest KL weight, the first epoch at it) of a history whose KL weight ``w`` (a
    VAE's ``kl_weight``, recorded at each epoch's last step) rose over the epochs, else None.
    A warm-up starts from 0 at the run's first step, whatever epoch 1's record says."""
    if any(r.get("kl_weight") is None for r in records):
        return None  # an AE, or a history written before the weight was recorded
    weights = [float(r["kl_weight"]) for r in records]
    top = max(weights)
    if min(weights) == top:
        return None
    return top, int(records[weights.index(top)]["epoch"])


def curve_terms(record: Mapping[str, Any]) -> list[str]:
    """The loss terms a history record holds for either split, in the panels' order."""
    terms = ("loss", "recon", "kl", "sparsity")
    return [t for t in terms if f"train_{t}" in record or f"val_{t}" in record]


def plot_curves(
    history: Sequence[Mapping[str, Any]] | Any,
    path: PathLike,
    labels: Mapping[str, str] | None = None,
    loss_title: str | None = None,
) -> Path:
    """Training and validation loss terms per epoch, nats per example. During a KL warm-up
    the training loss is recon + w KL with w below its final value (validation: the final
    weight), so the two do not compare there: those epochs are shaded and the title says it.
    ``labels``: the legend's words for "train" and "val" (a denoising AE's say which inputs).
    ``loss_title``: the loss panel's title, for a loss that is not recon + w KL (IWAE's -L_k).
    A term recorded for one split only (IWAE: the validation KL) gets its panel too."""
    records = list(history)
    if not records:
        raise ValueError("no training history to plot; train for at least one epoch")
    epochs = [r["epoch"] for r in records]
    warmup = _warmup(records)
    terms = curve_terms(records[0])
    if not terms:  # fit()'s history holds the terms; a library save may hold epochs only
        raise ValueError("the training history holds no loss terms to plot (epochs only)")
    marker = "o" if len(records) <= MAX_MARKED_EPOCHS else None  # 1 epoch: a point, no line
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.5), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        for split, style, color in (("train", "-", "C0"), ("val", "--", "C1")):
            key = f"{split}_{term}"
            if key in records[0]:  # each split its colour in every panel (IWAE: no train KL)
                shown = (labels or {}).get(split, split)
                values = [r[key] for r in records]
                ax.plot(epochs, values, style, color=color, marker=marker, ms=4, label=shown)
        ax.set_title(term)
        if warmup is not None:  # said in words: "w" is the code's name, not the reader's
            top, since = warmup
            label = f"KL warm-up: KL weight from 0 to {top:.2g}"
            ax.axvspan(epochs[0], since, color="0.9", zorder=0, label=label)
            if term == "loss" and loss_title is None:
                ax.set_title("loss (training: recon + KL weight x KL)")
        if term == "loss" and loss_title is not None:
            ax.set_title(loss_title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
        ax.legend()
    axes[0][0].set_ylabel("nats per example")
    fig.tight_layout()
    return _save(fig, path)
