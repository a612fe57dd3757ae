"""A linear auto-encoder trained with squared error learns the principal subspace (PCA).

    python examples/linear_ae_pca.py                   # digits, k = 5, ~5 s
    python examples/linear_ae_pca.py --data mnist --data-dir ~/data --k 5

AE(D, hidden=(), activation="identity", likelihood="mse") computes x_hat = (x W_e + b_e) W_d + b_d.
Its minimum squared error is reached when the rows of W_d span the top-k principal subspace of
the (centred) data (Baldi & Hornik 1989), though W_d itself need not be orthonormal or equal to
the principal axes. The example trains it on centred data and prints the principal angles
between the row space of W_d and the top-k principal subspace (``scipy.linalg.subspace_angles``):
all should be close to zero. The training loop here is full-batch Adam with a decaying learning
rate (a few lines), so the optimum is reached rather than hovered around.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402  # numpy-boundary: example script (PCA, figures)
from scipy.linalg import subspace_angles  # noqa: E402  # numpy-boundary: example script

from scratchvae.backend import to_numpy  # noqa: E402
from scratchvae.cliargs import COUNT  # noqa: E402
from scratchvae.models import AE  # noqa: E402
from scratchvae.optim import Adam  # noqa: E402

STEPS = {"digits": 3000, "other": 600}
ROWS = 10_000  # the training rows used (MNIST: 10,000 of 60,000 suffice); no test rows


def train_full_batch(model: AE, x: Any, steps: int, lr: float = 1e-2) -> list[float]:
    """Full-batch Adam with a cosine-decayed step size; returns the loss every step."""
    opt, losses = Adam(lr), []
    for t in range(steps):
        opt.lr = 1e-5 + 0.5 * (lr - 1e-5) * (1 + np.cos(np.pi * t / steps))
        terms, grads = model.loss_and_grads(x)
        opt.step(model.params, grads)
        losses.append(terms["loss"])  # device scalars: read once, after the loop
    return [float(to_numpy(v)) for v in losses]


def principal_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal directions (D, k) of centred x, and all the variances."""
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    return vt[:k].T, sv**2 / len(x)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__)
    p.add_argument(
        "--k",
        type=COUNT,
        default=5,
        help="latent size = number of components: 1 to min(rows, features) - 1 (default 5)",
    )
    p.add_argument(
        "--steps",
        type=COUNT,
        default=None,
        help="full-batch steps (default 3000 digits, 600 else; --fast: 200)",
    )
    # full-batch steps, not epochs; the fit is all it does: no test rows
    s = _common.setup("linear_ae_pca", argv, p, None, test_split=False, rows=ROWS)
    D, shape, k = s.train.n_features, s.train.image_shape, s.args.k
    x = s.train.get_batch(slice(None)).astype(np.float64)  # (<= ROWS, D)
    most = min(x.shape) - 1  # k + 1 principal components: the gap lambda_k / lambda_{k+1}
    if k > most:
        p.error(
            f"argument --k: expected a whole number from 1 to {most} (one less than the "
            f"smaller of the data's {x.shape[0]} rows and {D} features), got '{k}'"
        )
    mean = x.mean(axis=0)
    xc = x - mean  # centred: PCA's subspace passes through the mean
    pcs, variances = principal_axes(xc, k + 1)
    steps = s.args.steps
    if steps is None:
        steps = 200 if s.args.fast else STEPS["digits" if s.small else "other"]

    model = AE(D, hidden=(), latent=k, activation="identity", likelihood="mse", backend=s.backend)
    losses = train_full_batch(model, s.backend.asarray(xc), steps)
    W_d = to_numpy(model.params["decoder.0.W"]).astype(np.float64)  # (k, D)
    angles = np.degrees(subspace_angles(W_d.T, pcs[:, :k]))
    best = variances[k:].sum()  # PCA's squared error per example: the discarded variance
    print(
        f"  {steps} full-batch steps: squared error {losses[-1]:.4f} per example "
        f"(PCA optimum {best:.4f}); eigenvalue gap lambda_{k}/lambda_{k + 1} = "
        f"{variances[k - 1] / variances[k]:.2f}"
    )
    print(f"  principal angles to the top-{k} PCA subspace (degrees): {np.round(angles, 3)}")
    print(f"  max angle {angles.max():.2e} degrees")

    fig, axes = plt.subplots(2, k, figsize=(1.3 * k, 3.0), squeeze=False)
    basis = np.linalg.qr(W_d.T)[0]  # (D, k) orthonormal basis of the AE's subspace
    for j in range(k):
        proj = basis @ (basis.T @ pcs[:, j])  # the j-th principal axis seen in the AE subspace
        for row, img in enumerate((pcs[:, j], proj)):
            lim = np.abs(img).max() + 1e-12
            axes[row][j].imshow(img.reshape(shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[row][j].set_axis_off()
    title = (
        f"top: principal axes 1..{k};  bottom: their projection on the AE's subspace\n"
        "(red +, blue -, white 0; each image scaled to its own largest |value|)"
    )
    s.show(_common.save_figure(fig, s.figure("pca_vs_linear_ae.png"), title))
    s.finish()
    return {"max_angle_deg": float(angles.max()), "loss": losses[-1], "pca_loss": float(best)}


if __name__ == "__main__":
    _common.run(main)
