"""Fill in missing pixels with a trained VAE, against filling them with the mean training image.

    python examples/imputation.py                      # digits, ~10 s
    python examples/imputation.py --data mnist --data-dir ~/data --epochs 10

Two kinds of missing data on the test set: the bottom half of every image, and 50% of the pixels
at random. The VAE fills them by iterating encode / decode on the observed pixels
(:func:`scratchvae.lab.impute.impute`): pseudo-Gibbs (z ~ q(z|x) each step, the last steps'
decodings averaged) and the deterministic variant (z = mu). The score is the mean squared error
per MISSING pixel against the truth; the baseline sets every missing pixel to the mean image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common

from scratchvae import plots
from scratchvae.backend import Backend
from scratchvae.cliargs import COUNT
from scratchvae.lab.impute import impute, impute_importance, make_mask, masked_mse, mean_fill
from scratchvae.models import VAE

EPOCHS = {"digits": 300, "other": 10}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__)
    p.add_argument(
        "--iters", type=COUNT, default=50, help="encode/decode iterations (default 50; --fast: 5)"
    )
    p.add_argument(
        "--k",
        type=COUNT,
        default=200,
        help="importance samples per image (default 200; --fast: 10)",
    )
    s = _common.setup("imputation", argv, p, EPOCHS)
    D, shape = s.train.n_features, s.train.image_shape
    model = VAE(
        D, hidden=(128,) if s.small else (400,), latent=8 if s.small else 20, backend=s.backend
    )
    _common.train(model, s, warmup_epochs=min(10, s.epochs / 2))
    mean_image = s.backend.asarray(s.train.get_batch(slice(0, 10000)).mean(axis=0))  # (D,)
    x = s.x_test(None if s.small else 2000)
    n_iter = 5 if s.args.fast else s.args.iters
    k = 10 if s.args.fast else s.args.k

    # an image's bottom half hidden; of rows that are no images (1 x D strips, whose "bottom
    # half" is all of the one row), the second half of the features
    half = "bottom-half" if shape[0] > 1 else "second-half"
    kinds = (half, "random")
    errors: dict[str, dict[str, float]] = {}
    for kind in kinds:
        mask_bk = Backend(seed=s.args.seed + 1)  # the random mask (seed 0: as published)
        hidden = "right-half" if kind == "second-half" else kind  # of a 1 x D strip
        mask = make_mask(x.shape[0], shape, hidden, missing=0.5, backend=mask_bk)
        mask = s.backend.asarray(mask, dtype=bool)
        bk = Backend(s.backend.name, seed=s.args.seed + 2)  # the imputation's noise
        gibbs = impute(model, x, mask, n_iter, sample=True, fill=mean_image, backend=bk)
        mfield = impute(model, x, mask, n_iter, sample=False, fill=mean_image)
        cmean = impute_importance(model, x, mask, k, fill=mean_image, backend=bk)
        errors[kind] = {
            "mean image": masked_mse(mean_fill(x, mask, mean_image), x, mask),
            "VAE pseudo-Gibbs": masked_mse(gibbs, x, mask),
            "VAE z = mu": masked_mse(mfield, x, mask),
            f"VAE IS, K={k}": masked_mse(cmean, x, mask),
        }
        path = s.figure(f"imputation_{kind}.png")
        what = kind.replace("-", " ") if kind != "random" else "50% of the pixels at random"
        title = f"imputation, {what} missing (grey): filled by pseudo-Gibbs"
        s.show(plots.plot_imputation(x[:12], gibbs[:12], x[:12], shape, path, mask[:12], title))

    print(f"  squared error per missing pixel ({n_iter} iterations):")
    print(f"  {'fill':18s} {half.replace('-', ' '):>12s} {'50% random':>12s}")
    for name in errors[half]:
        print(f"  {name:18s} {errors[half][name]:12.4f} {errors['random'][name]:12.4f}")
    s.finish()
    return {"errors": errors, "out": s.out}


if __name__ == "__main__":
    _common.run(main)
