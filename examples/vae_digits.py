"""Train a VAE on the digits; show reconstructions, samples, the latent space and the 2-D manifold.

    python examples/vae_digits.py                      # the embedded 8x8 digits, ~15 s
    python examples/vae_digits.py --data mnist --data-dir ~/data --epochs 10

Prints the test ELBO (with its terms) and the importance-weighted bound on log p(x), all in
nats per example (``--iw-samples 0`` skips the bound). A second VAE with a 2-D latent space is
trained for the manifold figure (``manifold_2d.png``, ``latent_2d.png``); with ``--latent 2``
the VAE is the 2-D one, and its figures ``manifold.png`` and ``latent.png`` are those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common

from scratchvae import plots
from scratchvae.cliargs import COUNT, NATURAL
from scratchvae.data.labels import class_names
from scratchvae.evaluate import evaluate
from scratchvae.models import VAE

EPOCHS = {"digits": 300, "other": 5}


def report(name: str, r: dict[str, Any]) -> None:
    if r["iw_nll"] is None:  # --iw-samples 0
        bound = "IWAE bound skipped (--iw-samples 0)"
    else:
        bound = (
            f"-log p(x) <= {r['iw_nll']:.2f} (IWAE, k={r['iw_samples']}); "
            f"{r['bits_per_dim']:.3f} bits/dim"
        )
    print(
        f"  {name}: test -ELBO {r['neg_elbo']:.2f} = recon {r['recon']:.2f} + KL {r['kl']:.2f}; "
        f"{bound}; active units {r['active_units']}/{r['latent']}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__)
    p.add_argument("--latent", type=COUNT, default=None, help="default: 8 digits, 20 else")
    p.add_argument(
        "--iw-samples",
        type=NATURAL,
        default=None,
        help="samples of the IWAE bound; 0 skips it (default: 1000 digits, 200 else; --fast: 20)",
    )
    s = _common.setup("vae_digits", argv, p, EPOCHS)
    D, shape = s.train.n_features, s.train.image_shape
    hidden = (128,) if s.small else (400,)
    latent, k = s.args.latent, s.args.iw_samples
    if latent is None:
        latent = 8 if s.small else 20
    if s.args.fast:
        k = 20
    elif k is None:
        k = 1000 if s.small else 200
    x_test = s.x_test(None if s.small else 2000)  # MNIST: the first 2,000 test digits

    model = VAE(D, hidden=hidden, latent=latent, backend=s.backend)
    warmup = min(10, s.epochs / 2)
    history = _common.train(model, s, label=f"VAE latent={latent}", warmup_epochs=warmup)
    result = evaluate(model, x_test, iw_samples=k, seed=s.args.seed)
    report(f"VAE latent={latent}", result)
    for path in plots.save_standard_figures(model, s.test, history, s.figures):
        s.show(path)

    if latent == 2:  # the model above is the 2-D one: training it again, or drawing its
        # manifold.png and latent.png again under other names, says nothing new
        print("  VAE latent=2: the model above (--latent 2): manifold.png, latent.png")
        s.finish()
        return {"latent": result, "latent2": result, "out": s.out}
    model2 = VAE(D, hidden=hidden, latent=2, backend=s.backend)
    _common.train(model2, s, label="VAE latent=2", warmup_epochs=warmup)
    result2 = evaluate(model2, x_test, iw_samples=k, seed=s.args.seed)
    report("VAE latent=2", result2)
    s.show(plots.plot_manifold(model2, shape, s.figure("manifold_2d.png")))
    y = None if s.test.y is None else s.test.y[:2000]
    names = class_names(s.test.name)  # Fashion-MNIST: "Trouser", not 1
    s.show(plots.plot_latent(model2, s.x_test(2000), y, s.figure("latent_2d.png"), names))
    s.finish()
    return {"latent": result, "latent2": result2, "out": s.out}


if __name__ == "__main__":
    _common.run(main)
