"""The same network as an AE and as a VAE: decode z ~ N(0, I) in each latent space.

    python examples/ae_vs_vae.py                       # digits, ~10 s
    python examples/ae_vs_vae.py --data mnist --data-dir ~/data --epochs 10

A VAE is trained so that its codes fill the prior N(0, I): a draw from the prior decodes to a
digit. A plain AE puts its codes wherever reconstruction is easiest, at whatever scale; most of
N(0, I) is then a region the decoder never saw. Two numbers say so:

* the spread of the codes of the test set (per unit std; the VAE's q(z|x) marginal is ~1);
* how far each sample is from its nearest training image (squared distance, summed over pixels),
  next to the same distance for real test images (what a "digit-like" sample scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402  # numpy-boundary: example script (statistics, figures)

from scratchvae.backend import to_numpy  # noqa: E402
from scratchvae.cliargs import COUNT  # noqa: E402
from scratchvae.models import AE, VAE  # noqa: E402

EPOCHS = {"digits": 300, "other": 5}


def nearest_distance(rows: np.ndarray, train: np.ndarray, chunk: int = 256) -> np.ndarray:
    """min over training images of sum_D (row - train)^2, for each row. (N,)"""
    t2 = (train**2).sum(axis=1)  # (M,)
    out = []
    for i in range(0, len(rows), chunk):
        r = rows[i : i + chunk]
        d = (r**2).sum(axis=1)[:, None] - 2 * r @ train.T + t2[None, :]  # (n, M)
        out.append(np.maximum(d.min(axis=1), 0))
    return np.concatenate(out)


def code_std(model: Any, x: Any) -> np.ndarray:
    """Per-unit std over the test set of the code (AE) or of z ~ q(z|x) (VAE). (L,)"""
    if isinstance(model, VAE):
        mu, logvar = model.encode(x)
        z = mu + model.xp.exp(0.5 * logvar) * model.backend.normal(mu.shape)
    else:
        z = model.encode(x)
    return to_numpy(z).std(axis=0)


def tile(samples: np.ndarray, shape: tuple[int, int], pad: int = 1) -> np.ndarray:
    """(n*n, H*W) rows -> one (n*(H+pad), n*(W+pad)) mosaic with a dark gap between images."""
    n, (h, w) = int(np.sqrt(len(samples))), shape
    cells = np.full((n, n, h + pad, w + pad), 0.35)  # grey gaps
    cells[:, :, :h, :w] = samples[: n * n].reshape(n, n, h, w)
    return cells.transpose(0, 2, 1, 3).reshape(n * (h + pad), n * (w + pad))


def side_by_side(grids: dict[str, np.ndarray], shape: tuple[int, int], path: Any) -> Any:
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5.4))
    for ax, (title, samples) in zip(axes, grids.items(), strict=True):
        ax.imshow(tile(samples, shape), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_axis_off()
    return _common.save_figure(fig, path, "decoded z ~ N(0, I): same architecture, same epochs")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__)
    p.add_argument("--latent", type=COUNT, default=None, help="default: 8 digits, 20 else")
    s = _common.setup("ae_vs_vae", argv, p, EPOCHS)
    D, shape = s.train.n_features, s.train.image_shape
    hidden, latent = ((128,) if s.small else (400,)), s.args.latent
    if latent is None:
        latent = 8 if s.small else 20
    x_test = s.x_test(None if s.small else 2000)
    train_np = s.train.get_batch(slice(0, 10000))  # (<=10000, D) host array
    ref = nearest_distance(to_numpy(x_test), train_np)
    print(f"  test images: squared distance to the nearest training image {ref.mean():.2f}")

    grids, result = {}, {"test_nn": float(ref.mean())}
    for cls in (AE, VAE):
        name = cls.__name__
        model = cls(D, hidden=hidden, latent=latent, backend=s.backend)
        _common.train(model, s)
        samples = to_numpy(model.sample(400))  # (400, D)
        nn = nearest_distance(samples, train_np)
        std = code_std(model, x_test)
        print(
            f"  {name}: code std per unit {std.min():.2f}..{std.max():.2f} (prior: 1); "
            f"samples' squared distance to the nearest training image {nn.mean():.2f}"
        )
        grids[f"{name} samples"] = samples[:64]
        result[name] = {"nn": float(nn.mean()), "code_std": std.tolist()}
    s.show(side_by_side(grids, shape, s.figure("ae_vs_vae_samples.png")))
    s.finish()
    return {**result, "out": s.out}


if __name__ == "__main__":
    _common.run(main)
