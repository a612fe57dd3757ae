"""The signal-to-noise ratio of the IWAE gradient against k, for the encoder and the decoder,
with the pathwise, STL and DReG estimators (Rainforth et al. 2018; Tucker et al. 2019).

    python examples/iwae_snr.py                   # the embedded digits: about 20 s
    python examples/iwae_snr.py --repeats 400     # smoother curves

A VAE is trained on the digits first (the SNR of an untrained model says little), by default
with the IWAE bound itself (k = 50, DReG; ``--train-objective elbo`` trains with the ELBO);
then, for k = 1 ... 1000 samples per example and each estimator, ``--repeats`` gradients of the
IWAE loss on one batch from independent draws give |mean| / std per parameter, averaged over
the encoder's and over the decoder's parameters. Expected: with the pathwise gradient the
decoder's SNR grows with k and the encoder's falls (a tighter bound, a noisier encoder
gradient); DReG keeps the encoder's from falling; STL's rises, but STL is biased for IWAE
(tests/ops/test_iwae.py). An encoder trained with the ELBO is narrower than the posterior
(the weights p(x, z) / q(z | x) are then heavy-tailed): DReG's encoder SNR then rises up to
k = 3 and falls again beyond, still above the pathwise estimator's.
Writes ``iwae_snr.png`` and prints the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common

from scratchvae.cliargs import COUNT
from scratchvae.lab.snr import format_snr, gradient_snr
from scratchvae.models import VAE

EPOCHS = {"digits": 100, "other": 3}
COLORS = {"pathwise": "C3", "stl": "C1", "dreg": "C0"}
#: the legend's names: STL's gradient is not the IWAE bound's beyond k = 1 (its SNR is no merit)
LABELS = {"pathwise": "pathwise", "stl": "STL (biased for k > 1)", "dreg": "DReG"}
#: the decoder's: STL's decoder gradient is pathwise's (unbiased), so no warning there
DECODER_LABELS = {"pathwise": "pathwise", "stl": "STL", "dreg": "DReG"}


def plot(rows: list, path: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, layout="constrained")
    for ax, part in zip(axes, ("encoder", "decoder"), strict=True):
        for est, color in COLORS.items():
            mine = [r for r in rows if r.estimator == est]
            if mine:
                ks, snr = [r.k for r in mine], [getattr(r, f"{part}_snr") for r in mine]
                label = (LABELS if part == "encoder" else DECODER_LABELS)[est]
                ax.loglog(ks, snr, "o-", color=color, label=label)
        floor = max(r.floor for r in rows)  # a gradient with zero mean shows this much
        label = f"noise floor ({min(r.repeats for r in rows)} draws)"
        ax.axhline(floor, color="grey", linestyle=":", label=label)
        ax.set_xlabel("k (samples per example)")
        ax.set_ylabel("SNR = |E g| / std g  (mean over parameters)")  # each panel its own scale
        ax.set_title(f"{part} parameters")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return _common.save_figure(fig, path, "SNR of the IWAE gradient estimators")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__)
    p.add_argument(
        "--repeats",
        type=_common.AT_LEAST_TWO,
        default=200,
        help="draws per (k, estimator) (default 200; --fast: 10)",
    )
    p.add_argument(
        "--ks",
        type=COUNT,
        nargs="+",
        default=[1, 3, 10, 30, 100, 300, 1000],
        help="the numbers of samples k (default 1 3 10 30 100 300 1000; --fast: 1 10 100)",
    )
    p.add_argument("--batch", type=COUNT, default=8, help="examples in the batch (default 8)")
    p.add_argument(
        "--train-objective",
        choices=["iwae", "elbo"],
        default="iwae",
        help="train the model with the IWAE bound (DReG) or the ELBO (default iwae)",
    )
    p.add_argument("--train-k", type=COUNT, default=50, help="k of the IWAE training (default 50)")
    s = _common.setup("iwae_snr", argv, p, EPOCHS)
    ks, repeats = ([1, 10, 100], 10) if s.args.fast else (s.args.ks, s.args.repeats)
    iwae = {"objective": "iwae", "k": s.args.train_k, "estimator": "dreg"}
    objective = iwae if s.args.train_objective == "iwae" else {}
    hidden = (64,) if s.small else (200,)
    model = VAE(s.train.n_features, hidden=hidden, latent=4, backend=s.backend, **objective)
    # an IWAE training loss is -L_k, no recon + KL (its val_loss: the one-draw -ELBO)
    label = f"VAE (train_loss: -L_{s.args.train_k}, the IWAE bound)" if objective else "VAE"
    _common.train(model, s, lr=3e-3, label=label)
    rows = gradient_snr(model, s.x_test(s.args.batch), ks=ks, repeats=repeats)
    print(format_snr(rows))
    s.show(plot(rows, s.figure("iwae_snr.png")))
    s.finish()
    return {"rows": rows, "out": s.out}


if __name__ == "__main__":
    _common.run(main)
