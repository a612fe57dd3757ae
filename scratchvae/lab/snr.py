"""The signal-to-noise ratio of gradient estimators against the number of samples k.

Rainforth et al. (2018, "Tighter variational bounds are not necessarily better") measured, for
the gradient g of the importance-weighted bound L_k with respect to one parameter,

    SNR = |E[g]| / std[g]        (over independent draws of the k samples)

and found that with the pathwise (reparameterized) IWAE gradient the decoder's SNR grows like
sqrt(k) while the encoder's FALLS like 1/sqrt(k): a tighter bound gives the encoder a noisier
gradient. Tucker et al. (2019) showed that with the doubly reparameterized estimator (DReG)
the encoder's SNR rises with k instead. :func:`gradient_snr` measures this on a model: for each
k and estimator, ``repeats`` gradients of the loss from independent draws, their mean and
standard deviation per parameter, and the SNR averaged over the encoder's and over the
decoder's parameters. ``examples/iwae_snr.py`` makes the figure and the table.

The estimate's floor. From R draws with mean m and standard deviation s per parameter,
E[m^2] = (E g)^2 + s^2 / R: a gradient with zero mean still shows |m| / s of about
:data:`NOISE_FLOOR` / sqrt(R) (0.056 at R = 200; each row's ``floor``), so an SNR that falls
towards it levels off there (the pathwise encoder's from about k = 100 at 200 draws) and a
figure near the floor says only "below what R draws resolve". ``format_snr`` prints the floor
and the example draws it; tests/lab/test_snr.py checks the published rates with enough draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backend import get_xp, to_numpy
from ..models import VAE, build_model

Array = Any

__all__ = ["NOISE_FLOOR", "SNRRow", "format_snr", "gradient_snr"]

#: E|Z| = sqrt(2 / pi) for Z ~ N(0, 1): the SNR measured for a gradient with zero mean from R
#: (normal) draws is about NOISE_FLOOR / sqrt(R)
NOISE_FLOOR = math.sqrt(2 / math.pi)


@dataclass
class SNRRow:
    """One estimator at one k: the SNR averaged over the encoder's and the decoder's
    parameters (those whose gradient varies), from ``repeats`` draws; ``floor``: what a
    gradient with zero mean would show from as many draws (NOISE_FLOOR / sqrt(repeats))."""

    estimator: str
    k: int
    repeats: int
    encoder_snr: float
    decoder_snr: float
    floor: float = math.nan


def _snr(samples: Array) -> float:
    """The mean over parameters of |mean| / std of (repeats, n) gradient samples."""
    xp = get_xp(samples)
    mean, std = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    varies = std > 0
    if not bool(varies.any()):
        return math.nan
    return float(to_numpy((xp.abs(mean[varies]) / std[varies]).mean()))


def gradient_snr(
    model: VAE,
    x: Array,
    ks: Sequence[int] = (1, 3, 10, 30, 100, 300, 1000),
    estimators: Sequence[str] = ("pathwise", "stl", "dreg"),
    repeats: int = 100,
) -> list[SNRRow]:
    """SNR of the IWAE gradient per estimator and k, on the batch x, for ``model``'s weights
    (copied into a VAE of the same shape with objective "iwae", k samples and the estimator)."""
    if repeats < 2:
        raise ValueError(f"the SNR needs at least two draws, got repeats={repeats}")
    x, xp = model.prepare(x), model.xp
    # which entries of the flat gradient are the encoder's (the store is laid out by name)
    enc = xp.concatenate(
        [xp.full(_size(model, n), n.startswith("encoder."), dtype=bool) for n in model.params]
    )
    rows = []
    for k in ks:
        for estimator in estimators:
            config = {**model.config, "objective": "iwae", "k": int(k), "estimator": estimator}
            twin = build_model(config, model.backend)
            twin.params.flat[...] = model.params.flat
            draws = []
            for _ in range(repeats):
                _, grads = twin.loss_and_grads(x)
                draws.append(grads.flat.copy())
            g = xp.stack(draws)  # (repeats, all parameters)
            enc_snr, dec_snr = _snr(g[:, enc]), _snr(g[:, ~enc])
            floor = NOISE_FLOOR / math.sqrt(repeats)
            rows.append(SNRRow(estimator, int(k), repeats, enc_snr, dec_snr, floor))
    return rows


def _size(model: VAE, name: str) -> int:
    return math.prod(model.params.shapes[name])


def format_snr(rows: Sequence[SNRRow]) -> str:
    """A table: one line per k, the encoder's and the decoder's SNR for each estimator."""
    estimators = list(dict.fromkeys(r.estimator for r in rows))
    head = f"{'k':>6}  " + "  ".join(f"{'enc ' + e:>13}{'dec ' + e:>13}" for e in estimators)
    lines = [head, "-" * len(head)]
    for k in dict.fromkeys(r.k for r in rows):
        by = {r.estimator: r for r in rows if r.k == k}
        cells = "  ".join(
            f"{by[e].encoder_snr:>13.3f}{by[e].decoder_snr:>13.3f}" for e in estimators
        )
        lines.append(f"{k:>6}  {cells}")
    floors = sorted({(r.repeats, r.floor) for r in rows})
    lines.append(
        "noise floor (the SNR a gradient with zero mean shows; figures near it are noise): "
        + ", ".join(f"{f:.3f} ({n} draws)" for n, f in floors)
    )
    return "\n".join(lines)
