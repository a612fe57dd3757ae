"""The pieces every figure of :mod:`scratchvae.plots` is built from: host arrays, image
mosaics, labelled rows of images, square grids, and the atomic save (a failed save leaves the
file that was there; the path's suffix chooses the format, :data:`FIGURE_SUFFIXES`).

This module is an I/O boundary (it hands host arrays to matplotlib), so it imports NumPy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (and none on a server)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402  # numpy-boundary: plotting

from .atomic import atomic_write, remove_stale_temp_files  # noqa: E402
from .backend import to_numpy  # noqa: E402

PathLike = str | os.PathLike
Shape = tuple[int, int] | None

# what a figure may be saved as: matplotlib's own writers and Pillow's common ones (not pgf,
# which needs LaTeX, nor raw pixel dumps)
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".eps", ".jpg", ".jpeg")
MAX_ROW = 20  # images in one row of a rows figure before it wraps
STALE_FIGURE = 600  # seconds: a figure's save takes seconds; a temporary file older is a dead one


# ------------------------------------------------------------------------------------ helpers
def _host(a: Any) -> np.ndarray:
    return np.asarray(to_numpy(a), dtype=np.float64)


def _images(rows: Any, image_shape: Shape) -> np.ndarray:
    """(N, D) -> (N, H, W) host array (a 1 x D strip per row when there is no image shape)."""
    rows = _host(rows)
    rows = rows.reshape(len(rows), -1)
    h, w = image_shape if image_shape is not None else (1, rows.shape[1])
    return rows.reshape(len(rows), h, w)


def _tile(images: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """(N, H, W) -> one (rows*(H+pad)+pad, ncols*(W+pad)+pad) mosaic, empty cells left at 0."""
    n, h, w = images.shape
    nrows = math.ceil(n / ncols)
    out = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad))
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top : top + h, left : left + w] = im
    return out


def figure_path(path: PathLike) -> Path:
    """Where a figure asked for at ``path`` is written: ``.png`` added to a name without a
    suffix (as matplotlib would, so the path returned is the file written); a suffix not in
    :data:`FIGURE_SUFFIXES` raises ValueError."""
    path = Path(path)
    if not path.suffix:
        return path.with_name(path.name + ".png")
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(
            f"cannot write a figure to {path}: {path.suffix} is not one of "
            f"{', '.join(FIGURE_SUFFIXES)}; end the file name in .png"
        )
    return path


def _save(fig: Any, path: PathLike) -> Path:
    """Write ``fig`` atomically: a failure midway (a full disk) leaves the file that was there
    before, never a truncated or empty one."""
    try:
        path = figure_path(path)
        remove_stale_temp_files(path, STALE_FIGURE)  # a save killed mid-way left it
        with atomic_write(path) as f:
            fig.savefig(f, format=path.suffix[1:].lower(), dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def save_figure(fig: Any, path: PathLike) -> Path:
    """Write a matplotlib figure made elsewhere (an example's own) as the figures here are:
    atomically, the format from the suffix, then closed; returns the path written."""
    return _save(fig, path)


def _row_length(n: int, n_rows: int) -> int:
    """Images per row: all n up to MAX_ROW; past that about sqrt(n_rows * n), so that the
    wrapped blocks make a roughly square figure instead of one row thousands of pixels long."""
    return n if n <= MAX_ROW else max(MAX_ROW, math.ceil(math.sqrt(n_rows * n)))


def _wrapped(rows: Sequence[tuple[str, Any]], image_shape: Shape) -> list[tuple[str, Any]]:
    """(label, mosaic) panels: each block of columns shows every row in turn (an input above
    its reconstruction), labelled with the examples' numbers once a row wraps."""
    n = len(_host(rows[0][1]))
    ncols = _row_length(n, len(rows))
    panels = []
    for start in range(0, n, ncols):
        stop = min(start + ncols, n)
        for label, arr in rows:
            mosaic = _tile(_images(_host(arr)[start:stop], image_shape), ncols=ncols)
            where = f"{start + 1}-{stop}" if ncols < n else ""
            panels.append(("\n".join(t for t in (label, where) if t), mosaic))
    return panels


def _rows_figure(
    rows: Sequence[tuple[str, Any]], image_shape: Shape, title: str, path: PathLike
) -> Path:
    """One labelled mosaic row per (label, (N, D) array), all N the same, wrapped into blocks
    of rows past MAX_ROW images. The figure takes the mosaics' shape (no blank band above or
    below a long thin row); 1 x D strips (no image shape, or one row high) are stretched to a
    readable height."""
    panels = _wrapped(rows, image_shape)
    mosaic_h, mosaic_w = panels[0][1].shape
    width = max(4.0, 0.6 * _row_length(len(_host(rows[0][1])), len(rows)))
    row_height = width * mosaic_h / mosaic_w if image_shape else 0.0
    thin = row_height < 0.35  # no image shape, or 1 x D images: stretched, or labels overlap
    row_height = 0.5 if thin else row_height
    size = (width, len(panels) * row_height * 1.08 + 0.35)  # + the title's line
    fig, axes = plt.subplots(len(panels), 1, figsize=size, layout="constrained")
    # (mypy sees a LayoutEngine or None: "constrained" makes one whose set() takes these)
    fig.get_layout_engine().set(h_pad=0.02, w_pad=0.02, hspace=0.0)  # type: ignore[union-attr, call-arg]
    aspect = "auto" if thin else "equal"
    for ax, (label, mosaic) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, aspect=aspect)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _grid_figure(
    images: np.ndarray,
    ncols: int,
    title: str,
    path: PathLike,
    axis_labels: tuple[str, str] | None = None,
) -> Path:
    """A mosaic of images, 6 inches wide, wider when that would draw an image's pixels
    smaller than the screen's (a large grid stays legible); ``axis_labels`` (x, y): what the
    columns and the rows stand for (no ticks)."""
    mosaic = _tile(images, ncols)
    width = max(6.0, mosaic.shape[1] / 75)  # the axes get ~3/4 of the width, at 100 dpi
    fig, ax = plt.subplots(figsize=(width, width * mosaic.shape[0] / mosaic.shape[1] + 0.4))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1)
    if axis_labels is None:
        ax.set_axis_off()
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    return _save(fig, path)
