"""A sparse auto-encoder (target mean activation rho = 0.05): its activations and its features.

    python examples/sparse_ae.py                       # digits, ~5 s
    python examples/sparse_ae.py --data mnist --data-dir ~/data --epochs 10

The code h = sigmoid(W_enc x + b) of a SparseAE is pushed towards a mean activation of rho per unit
by the penalty beta * sum_j KL(rho || mean_batch h_j). The example prints the mean activation on
the test set (it should come out near rho), how many units a typical image switches on, and draws
each unit's decoder weights (the pattern it adds to the output) and encoder weights (the pattern
it responds to) as images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common
import numpy as np  # numpy-boundary: example script (statistics)

from scratchvae import SparseAE
from scratchvae.backend import to_numpy
from scratchvae.cliargs import COUNT, NON_NEGATIVE, OPEN_UNIT
from scratchvae.plots import plot_features

EPOCHS = {"digits": 300, "other": 10}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__)
    p.add_argument("--units", type=COUNT, default=None, help="default: 64 digits, 196 else")
    p.add_argument(
        "--rho",
        type=OPEN_UNIT,
        default=0.05,
        help="target mean activation, in (0, 1) (default 0.05)",
    )
    p.add_argument(
        "--beta", type=NON_NEGATIVE, default=3.0, help="weight of the sparsity penalty (default 3)"
    )
    s = _common.setup("sparse_ae", argv, p, EPOCHS)
    D, shape = s.train.n_features, s.train.image_shape
    units = s.args.units
    if units is None:
        units = 64 if s.small else 196
    rho = s.args.rho
    model = SparseAE(D, hidden=(), latent=units, rho=rho, beta=s.args.beta, backend=s.backend)
    # the training line's terms are unweighted: say what the loss adds up
    _common.train(model, s, label=f"SparseAE (loss = recon + {s.args.beta:g} sparsity)")

    h = to_numpy(model.encode(s.x_test(None if s.small else 2000)))  # (N, units) in (0, 1)
    per_unit = h.mean(axis=0)
    on = (h > 0.5).sum(axis=1)  # units "on" per image
    print(
        f"  mean hidden activation {h.mean():.4f} (target rho = {rho}); per unit "
        f"{per_unit.min():.3f}..{per_unit.max():.3f}; units above 0.5 per image: "
        f"median {np.median(on):.0f} of {units}"
    )
    dec = to_numpy(model.params["decoder.0.W"])  # (units, D): what each unit adds
    enc = to_numpy(model.params["encoder.0.W"]).T  # (units, D): what each unit responds to
    title = "decoder weights per hidden unit (red +, blue -)"
    s.show(plot_features(dec, shape, s.figure("decoder_features.png"), title))
    title = "encoder weights per hidden unit (red +, blue -)"
    s.show(plot_features(enc, shape, s.figure("encoder_features.png"), title))
    s.finish()
    return {"mean_activation": float(h.mean()), "rho": rho, "out": s.out}


if __name__ == "__main__":
    _common.run(main)
