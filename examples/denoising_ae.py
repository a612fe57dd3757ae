"""Denoising auto-encoders (Gaussian noise, masking noise) against a plain AE on noisy test input.

    python examples/denoising_ae.py                    # digits, ~20 s
    python examples/denoising_ae.py --data mnist --data-dir ~/data --epochs 5

Three models of the same shape: a plain AE, a DenoisingAE trained on x + 0.3 n (n ~ N(0, I)) and
one trained on x with 30% of its pixels zeroed. Each is given corrupted test images (the same
corruption for all) and scored on how close its output is to the CLEAN image: squared error summed
over pixels, mean over examples. The "input" row is the error of the corrupted image itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common

from scratchvae import AE, DenoisingAE, plots
from scratchvae.backend import Backend
from scratchvae.lab.impute import denoise

EPOCHS = {"digits": 300, "other": 3}
SIGMA = 0.3  # Gaussian noise std
MASKED = 0.3  # fraction of pixels zeroed


def corrupt(x: Any, kind: str, seed: int) -> Any:
    """The fixed test corruption: x + SIGMA n, or x with MASKED of its pixels set to 0."""
    bk = Backend("numpy" if type(x).__module__ == "numpy" else "cupy", "float32", seed=seed)
    if kind == "gaussian":
        return x + SIGMA * bk.normal(x.shape)
    return x * bk.bernoulli(1.0 - MASKED, x.shape)


def squared_error(out: Any, clean: Any) -> float:
    """sum over pixels of (out - clean)^2, mean over examples (a host float)."""
    return float(((out - clean) ** 2).sum()) / clean.shape[0]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__)
    s = _common.setup("denoising_ae", argv, p, EPOCHS)
    D, shape = s.train.n_features, s.train.image_shape
    kw = dict(hidden=(128,) if s.small else (400,), latent=32 if s.small else 64)
    models = {
        "plain AE": AE(D, backend=s.backend, **kw),
        "DAE gaussian": DenoisingAE(
            D, noise="gaussian", noise_level=SIGMA, backend=s.backend, **kw
        ),
        "DAE mask": DenoisingAE(D, noise="mask", noise_level=MASKED, backend=s.backend, **kw),
    }
    for name, model in models.items():
        _common.train(model, s, label=name)

    clean = s.x_test(None if s.small else 2000)
    table: dict[str, dict[str, float]] = {}
    for kind in ("gaussian", "mask"):
        noisy = corrupt(clean, kind, seed=s.args.seed + 1)
        table[kind] = {"input": squared_error(noisy, clean)}
        for name, model in models.items():
            table[kind][name] = squared_error(denoise(model, noisy), clean)
        own = models[f"DAE {kind}"]
        path = s.figure(f"denoise_{kind}.png")
        what = (
            f"Gaussian noise, sigma {SIGMA}"
            if kind == "gaussian"
            else f"{MASKED:.0%} of the pixels zeroed"
        )
        title = f"{what}: the DAE trained on that noise"
        out = denoise(own, noisy[:12])
        s.show(plots.plot_denoising(noisy[:12], out, clean[:12], shape, path, title))

    print("  squared error to the clean test image (sum over pixels, mean over examples):")
    print(f"  {'model':14s} {'gaussian noise':>15s} {'masking noise':>15s}")
    for name in ("input", *models):
        print(f"  {name:14s} {table['gaussian'][name]:15.2f} {table['mask'][name]:15.2f}")
    s.finish()
    return {"errors": table, "out": s.out}


if __name__ == "__main__":
    _common.run(main)
