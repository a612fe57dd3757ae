"""Figures (PNG, matplotlib's Agg backend): what a trained auto-encoder has learned.

Grids of images take host arrays of shape (N, D) with D = H * W and ``image_shape = (H, W)``;
anything given as a backend array is copied to the host with ``to_numpy`` first. Rows that are
not images (``image_shape`` None) are drawn as 1 x D strips.

* :func:`plot_reconstructions`   inputs above their reconstructions
* :func:`plot_run_reconstructions`  the same of a run, its inputs binarized as in its training
* :func:`plot_samples`           decoded draws from the prior
* :func:`plot_manifold`          the decoder over a grid of prior quantiles (2-D latent)
* :func:`plot_latent`            encoder means coloured by label (PCA to 2-D when latent > 2):
                                 a legend for a few discrete labels, else a colour bar
* :func:`plot_curves`            training curves from the history
* :func:`plot_interpolation`     decoded points on the line between two codes
* :func:`plot_denoising`         noisy input / output / clean, one row each
* :func:`plot_imputation`        masked input / filled-in output / truth, one row each
* :func:`plot_features`          one image per unit's weights, with a colour scale
* :func:`save_standard_figures`  the set ``scratchvae train`` and ``scratchvae plot`` write,
                                 of the inputs as the run saw them (:func:`as_trained`)

Each figure is written atomically (:func:`scratchvae.atomic.atomic_write`): a save that fails
midway, on a full disk say, leaves the file that was there. The suffix of the path chooses the
format (:data:`FIGURE_SUFFIXES`); a path without one gets ``.png``, and the path returned is
the file written. The pieces the figures are built from (mosaics, rows of images, the save)
are in :mod:`scratchvae.figure_parts`.

This module is an I/O boundary (it hands host arrays to matplotlib), so it imports NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (and none on a server)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402  # numpy-boundary: plotting
from matplotlib.lines import Line2D  # noqa: E402
from scipy.stats import norm  # noqa: E402  # numpy-boundary: plotting (prior quantiles)

from .backend import Backend, to_numpy  # noqa: E402
from .curves import MAX_MARKED_EPOCHS, _warmup, curve_terms, plot_curves  # noqa: E402, F401 - public here too
from .data import binarize as binarize_images  # noqa: E402
from .data.labels import class_names  # noqa: E402
from .figure_parts import (  # noqa: E402
    FIGURE_SUFFIXES,
    PathLike,
    Shape,
    _grid_figure,
    _host,
    _images,
    _rows_figure,
    _save,
    _tile,
    figure_path,
)
from .models import AE, VAE  # noqa: E402

__all__ = [
    "FIGURE_SUFFIXES",
    "INPUT_NOTES",
    "as_trained",
    "figure_path",
    "plot_curves",
    "plot_denoising",
    "plot_features",
    "plot_imputation",
    "plot_interpolation",
    "plot_latent",
    "plot_manifold",
    "plot_reconstructions",
    "plot_run_reconstructions",
    "plot_samples",
    "samples_title",
    "save_standard_figures",
]


def _code(model: AE, x: Any) -> np.ndarray:
    """The encoder's output used as a point in latent space: mu for a VAE, the code otherwise."""
    code = model.encode(x)
    return _host(code[0] if isinstance(code, tuple) else code)


# ------------------------------------------------------------------------------------ figures
def plot_reconstructions(
    x: Any, x_rec: Any, image_shape: Shape, path: PathLike, title: str = "input / reconstruction"
) -> Path:
    """Inputs (top row) above their reconstructions (bottom row). x, x_rec: (N, D)."""
    return _rows_figure([("input", x), ("recon", x_rec)], image_shape, title, path)


#: what :meth:`~scratchvae.models.AE.sample` returns: z drawn from N(0, I), decoded to the
#: likelihood's mean (a Bernoulli decoder's pixel probabilities), not a draw of x
SAMPLES_TITLE = "decoded z ~ N(0, I) (the decoder's mean image of each draw)"
#: the same for a model without a prior (an AE's codes need not look like N(0, I) at all)
NO_PRIOR_TITLE = "decoded z ~ N(0, I): an AE has no prior, these are not its samples"


def samples_title(model: AE) -> str:
    """:data:`SAMPLES_TITLE` for a VAE; for the other models, a title that says they have no
    prior (decoded N(0, I) codes are what the AE-vs-VAE comparison shows, not the model's
    samples)."""
    return SAMPLES_TITLE if isinstance(model, VAE) else NO_PRIOR_TITLE


def plot_samples(
    samples: Any, image_shape: Shape, path: PathLike, title: str = SAMPLES_TITLE
) -> Path:
    """A square-ish grid of samples (N, D)."""
    images = _images(samples, image_shape)
    return _grid_figure(images, math.ceil(math.sqrt(len(images))), title, path)


def plot_manifold(model: VAE, image_shape: Shape, path: PathLike, n: int = 15) -> Path:
    """Decode an n x n grid of z = (Phi^-1(u1), Phi^-1(u2)) for u evenly spaced in (0, 1).

    Equal-probability steps under the N(0, I) prior; a 2-D latent space only."""
    if model.latent != 2:
        raise ValueError(
            f"the manifold plot needs a 2-D latent space, this model has {model.latent}"
        )
    q = norm.ppf(np.linspace(0.5 / n, 1 - 0.5 / n, n))  # (n,) prior quantiles
    z1, z2 = np.meshgrid(q, q[::-1])  # z2 grows upwards in the figure
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)  # (n*n, 2)
    images = _images(model.decode(model.backend.asarray(z)), image_shape)
    steps = "in steps of equal prior probability"
    labels = (
        f"z1 from {q[0]:.2f} (left) to {q[-1]:.2f}, {steps}",
        f"z2 from {q[0]:.2f} (bottom) to {q[-1]:.2f}",
    )
    return _grid_figure(images, n, "decoder over the prior's quantiles", path, labels)


def _pca2(codes: np.ndarray) -> tuple[np.ndarray, str]:
    """Project (N, L) codes on their first two principal axes (SVD of the centred codes)."""
    if codes.shape[1] <= 2:
        return codes, "z"
    centred = codes - codes.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, "PC"


MAX_LEGEND_LABELS = 10  # up to this many distinct labels: one colour each and a legend


def plot_latent(
    model: AE, x: Any, y: Any, path: PathLike, class_names: Sequence[str] | None = None
) -> Path:
    """Encoder means (an AE's codes) of x (N, D), coloured by label y (N,) (None: uncoloured).

    A few distinct labels (classes, at most :data:`MAX_LEGEND_LABELS`) get one colour each and
    a legend, which names label i ``class_names[i]`` when given (Fashion-MNIST's
    :data:`~scratchvae.data.labels.FASHION_MNIST_CLASSES`); more labels (or values that are not
    classes) a continuous colour bar."""
    points, axis = _pca2(_code(model, x))
    fig, ax = plt.subplots(figsize=(6, 5))
    if points.shape[1] == 1:
        points = np.concatenate([points, np.zeros_like(points)], axis=1)
    labels = None if y is None else np.asarray(to_numpy(y)).ravel()
    classes: list[Any] | np.ndarray = [] if labels is None else np.unique(labels)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8)
    elif len(classes) <= MAX_LEGEND_LABELS:  # one scatter: the classes drawn interleaved
        # (tab10 is a ListedColormap: mypy sees a Colormap, without colors)
        palette = np.asarray(plt.get_cmap("tab10").colors)[: len(classes)]  # type: ignore[attr-defined]
        colours = palette[np.searchsorted(classes, labels)]
        ax.scatter(points[:, 0], points[:, 1], c=colours, s=6, alpha=0.8)
        handles = [
            Line2D([], [], ls="", marker="o", color=palette[i], label=_label_text(c, class_names))
            for i, c in enumerate(classes)
        ]
        beside: dict[str, Any] = {
            "loc": "center left",
            "bbox_to_anchor": (1.01, 0.5),
            "frameon": False,
        }
        title = "label" if class_names is None else "class"
        ax.legend(handles=handles, title=title, **beside)  # right of the axes
    else:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="viridis", s=6, alpha=0.8)
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(f"{axis}1")
    if model.latent > 1:
        ax.set_ylabel(f"{axis}2")
    else:  # a 1-D code, drawn on the line y = 0: no second axis to name or tick
        ax.set_yticks([])
    note = "" if axis == "z" else f" (PCA of {model.latent}-D)"
    what = "encoder means" if isinstance(model, VAE) else "encoder codes"  # an AE: no means
    ax.set_title(f"{what}{note}")
    return _save(fig, path)


def _label_text(label: Any, names: Sequence[str] | None = None) -> str:
    """names[3] (when given) or '3' for 3 or 3.0, else str(label)."""
    if isinstance(label, (float, np.floating)) and float(label).is_integer():
        label = int(label)
    if names is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(names):
        return names[label]  # type: ignore[index]  # a NumPy integer indexes (__index__)
    return str(label)


def plot_interpolation(
    model: AE,
    x_a: Any,
    x_b: Any,
    image_shape: Shape,
    path: PathLike,
    steps: int = 10,
    title: str = "interpolation in latent space (first and last: the two inputs)",
) -> Path:
    """Decode (1 - t) code(x_a) + t code(x_b) for t in [0, 1]; x_a, x_b: (D,) or (1, D)."""
    bk = model.backend
    za = _code(model, bk.asarray(x_a).reshape(1, -1))
    zb = _code(model, bk.asarray(x_b).reshape(1, -1))
    t = np.linspace(0.0, 1.0, steps)[:, None]  # (steps, 1)
    decoded = _host(model.decode(bk.asarray((1 - t) * za + t * zb)))  # (steps, D)
    row = np.concatenate([_host(x_a).reshape(1, -1), decoded, _host(x_b).reshape(1, -1)])
    return _rows_figure([("", row)], image_shape, title, path)


def plot_denoising(
    noisy: Any,
    output: Any,
    clean: Any,
    image_shape: Shape,
    path: PathLike,
    title: str = "denoising",
) -> Path:
    """Rows: the corrupted input, the model's output, the clean image. Each (N, D)."""
    rows = [("noisy", noisy), ("output", output), ("clean", clean)]
    return _rows_figure(rows, image_shape, title, path)


def plot_imputation(
    masked: Any,
    filled: Any,
    truth: Any,
    image_shape: Shape,
    path: PathLike,
    mask: Any = None,
    title: str = "imputation",
) -> Path:
    """Rows: the input with missing pixels, the filled-in output, the truth. Each (N, D).

    ``mask`` (N, D), 1 where a pixel is observed: missing pixels are drawn mid-grey."""
    masked = _host(masked)
    if mask is not None:
        masked = np.where(_host(mask) > 0, masked, 0.5)
    rows = [("masked", masked), ("filled", filled), ("truth", truth)]
    return _rows_figure(rows, image_shape, title, path)


def plot_features(
    weights: Any, image_shape: Shape, path: PathLike, title: str = "weights per unit"
) -> Path:
    """One image per row of ``weights`` (U, D) (a unit's input or output weights), on one
    colour scale: each unit's weights divided by its largest |weight|, so that every pattern
    shows; the colour bar gives that scale and the title the range of the divisors."""
    w = _host(weights)
    w = w.reshape(len(w), -1)
    peak = np.abs(w).max(axis=1, keepdims=True)  # (U, 1)
    scaled = w / np.where(peak > 0, peak, 1.0)  # in [-1, 1]
    ncols = math.ceil(math.sqrt(len(w))) if image_shape else 1  # strips: one per line
    mosaic = _tile(_images(scaled, image_shape), ncols)  # gaps at 0: white on RdBu
    height = 6.0 * mosaic.shape[0] / mosaic.shape[1] if image_shape else 0.12 * len(w)
    fig, ax = plt.subplots(figsize=(6.4, height + 0.6))
    aspect: Literal["equal", "auto"] = "equal" if image_shape else "auto"
    shown = ax.imshow(mosaic, cmap="RdBu_r", vmin=-1, vmax=1, aspect=aspect)
    ax.set_axis_off()
    bar = fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02, ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label("weight / the unit's largest |weight|")
    ax.set_title(f"{title}\n(largest |weight| per unit: {peak.min():.2g} to {peak.max():.2g})")
    return _save(fig, path)


# ------------------------------------------------------------------------------------ the set
#: What a run's figures say of their inputs, per ``TrainConfig.binarize``: the model was trained
#: on (and is shown) the binarized images, not the grey levels.
INPUT_NOTES = {
    "none": "",
    "threshold": "binarized at 0.5, as in training",
    "dynamic": "binarized by a Bernoulli draw per pixel, as in training",
}


def as_trained(x: Any, binarize_mode: str, backend: Any, seed: int = 0) -> Any:
    """Grey-level rows x (N, D) as a run trained with ``binarize=binarize_mode`` saw them: as
    they are, thresholded at 0.5, or one Bernoulli draw per pixel (from a generator seeded
    ``seed``: the same figure every time). A backend array of ``backend``."""
    noise = Backend(backend.name, backend.dtype.name, seed=seed)
    return binarize_images(backend.asarray(x), binarize_mode, noise)


def plot_run_reconstructions(
    model: AE, x: Any, image_shape: Shape, path: PathLike, binarize: str = "none"
) -> Path:
    """A run's reconstructions of grey-level rows x (N, D), below its inputs as it was trained
    on them (``binarize``, the run's ``TrainConfig.binarize``; the title says how)."""
    x = as_trained(x, binarize, model.backend)
    note = INPUT_NOTES[binarize]
    title = "input / reconstruction" + (f"; input {note}" if note else "")
    return plot_reconstructions(x, model.reconstruct(x), image_shape, path, title)


def _split_labels(model: AE) -> dict[str, str] | None:
    """A denoising AE's curves: its training loss is from corrupted inputs, its validation
    loss from clean ones (the two need not be close, nor in that order)."""
    if hasattr(model, "corrupt"):
        return {"train": "train (corrupted inputs)", "val": "val (clean inputs)"}
    return None


def _loss_title(model: AE, history: Any) -> str | None:
    """The loss panel's title where the loss weighs a term its panel shows unweighted
    (``loss = recon + 2 kl``, a sparse AE's penalty). An IWAE run's training loss is -L_k
    over k draws, its validation loss the one-draw -ELBO (:class:`~scratchvae.train.Trainer`):
    the title says so; with a KL weight other than 1 (beta, or a warm-up), on log p(z) -
    log q(z|x) in each log w and on the validation KL, it says that too."""
    beta = float(getattr(model, "beta", 1.0))  # a VAE's KL weight, a sparse AE's penalty's
    if hasattr(model, "rho"):  # the sparse AE: its epoch lines and panels show the terms
        return f"loss = recon + {beta:g} sparsity" if beta != 1.0 else None  # unweighted
    if not (isinstance(model, VAE) and model.objective == "iwae"):  # a warm-up says its own
        return f"loss = recon + {beta:g} kl" if beta != 1.0 and not _warmup(list(history)) else None
    if model.beta == 1.0 and all(float(r.get("kl_weight", 1.0)) == 1.0 for r in history):
        return f"loss (training: -L_{model.k}, the IWAE bound;\nvalidation: one-draw -ELBO)"
    return (
        f"loss (training: -L_{model.k}, log p(z)/q weighted by the KL weight;"
        "\nvalidation: one-draw recon + KL weight x KL)"
    )


def _spread(n_total: int, k: int) -> np.ndarray:
    """min(k, n_total) distinct indices evenly spread over 0..n_total-1 (sorted)."""
    return np.unique(np.linspace(0, n_total - 1, min(k, n_total)).astype(np.int64))


def save_standard_figures(
    model: AE, data: Any, history: Any, out_dir: PathLike, n: int = 10, binarize: str = "none"
) -> list[Path]:
    """Curves, reconstructions, samples, latent scatter, interpolation (+ manifold for a 2-D
    VAE, denoising for a DenoisingAE) into ``out_dir``; returns the paths written.

    ``binarize``: the run's ``TrainConfig.binarize``. The model is given, and the figures show,
    its inputs as it was trained on them (:func:`as_trained`), and the titles say so."""
    out = Path(out_dir)
    bk = model.backend
    shape, note = data.image_shape, INPUT_NOTES[binarize]
    grey = data.get_batch(_spread(data.n, n))  # evenly spread examples: no random state
    x_show = as_trained(grey, binarize, bk)
    paths = []
    if history is not None and len(history) and curve_terms(history[0]):  # (a library save
        # may record epochs only: no curves then, the other figures all the same)
        labels, title = _split_labels(model), _loss_title(model, history)
        paths.append(plot_curves(history, out / "curves.png", labels, title))
    paths.append(plot_run_reconstructions(model, grey, shape, out / "recon.png", binarize))
    paths.append(plot_samples(model.sample(64), shape, out / "samples.png", samples_title(model)))
    many = _spread(data.n, 2000)
    labels = None if data.y is None else data.y[many]
    names = class_names(data.name)  # Fashion-MNIST's legend: "Trouser", not 1
    x_many = as_trained(data.get_batch(many), binarize, bk)
    paths.append(plot_latent(model, x_many, labels, out / "latent.png", names))
    ends = "the two inputs" + (f", {note}" if note else "")
    title = f"interpolation in latent space (first and last: {ends})"
    paths.append(
        plot_interpolation(model, x_show[0], x_show[1], shape, out / "interp.png", 10, title)
    )
    if isinstance(model, VAE) and model.latent == 2:
        paths.append(plot_manifold(model, shape, out / "manifold.png"))
    if hasattr(model, "corrupt"):  # a DenoisingAE
        noisy = model.corrupt(x_show)
        out_img = model.reconstruct(noisy)
        # as it was trained (mypy: hasattr(corrupt) means a DenoisingAE, with these)
        title = f"denoising: {model.noise} noise {model.noise_level:g}"  # type: ignore[attr-defined]
        title += f" on the input {note}" if note else ""
        paths.append(plot_denoising(noisy, out_img, x_show, shape, out / "denoise.png", title))
    return paths
