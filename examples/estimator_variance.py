"""How noisy is each gradient estimator of the ELBO? Pathwise (reparameterization) against the
score function (REINFORCE), plain and with baselines.

1. A linear-Gaussian toy, f(z) = -(x - a z - b)^2 / 2, whose gradient is known exactly: both
   estimators are unbiased, their variances differ.
2. A small VAE trained briefly on the embedded UCI digits: the variance of dL/dmu, dL/dlogvar and
   of the encoder weights' gradient, as the number of samples S grows.

It runs on these two problems only, on the CPU in float64: unlike the other examples it takes no
--data, --data-dir, --backend or --fast (its options are below; ``--help`` lists them).

Writes (to --out, default examples/out/estimator_variance/ in this repository, wherever it is
run from):
  estimator_variance.png      variance of the S-sample estimate against S, log-log
  estimator_distribution.png  histograms of the per-sample estimates of one gradient entry
and prints the variance ratios score / pathwise. About 80 s of CPU time (1-3 minutes on 2 cores).

    python examples/estimator_variance.py [--out DIR] [--steps 1500] [--repeats 200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scratchvae.backend import Backend, to_numpy  # noqa: E402
from scratchvae.cliargs import COUNT, NATURAL  # noqa: E402
from scratchvae.data import load_dataset  # noqa: E402
from scratchvae.lab.estimators import (  # noqa: E402
    LinearGaussianToy,
    toy_estimators,
    vae_estimators,
    vae_gradient_samples,
)
from scratchvae.lab.study import StudyRow, estimator_study, format_study  # noqa: E402
from scratchvae.models import VAE  # noqa: E402
from scratchvae.optim import Adam  # noqa: E402

ESTIMATORS = ("pathwise", "score", "score+loo", "score+running")
#: what the tables' last column is (a large number there is not by itself a bias)
BIAS_NOTE = (
    "bias/se: the largest over the group's P parameters of |mean - reference| / standard error;"
    " an unbiased estimator shows about 2.8 for P = 100, 4 for P = 10^4"
)
COLORS = {"pathwise": "C0", "score": "C3", "score+loo": "C1", "score+running": "C2"}
DEFAULT_OUT = _common.HERE / "out" / "estimator_variance"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    description = (
        "How noisy is each gradient estimator of the ELBO? Pathwise (reparameterization) against "
        "the score function, plain and with baselines, on a linear-Gaussian toy and on a small "
        "VAE trained on the embedded digits: this example's own problems only (it takes no "
        "--data, --data-dir, --backend or --fast)."
    )
    p = _common.Parser(
        prog="estimator_variance.py",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # --help says every default
    )
    default_out = "examples/out/estimator_variance/ in this repository, wherever run from"
    p.add_argument("--out", default=None, help=f"output folder (None: {default_out})")
    p.add_argument("--seed", type=NATURAL, default=0, help="seed of the weights and every draw")
    p.add_argument("--steps", type=NATURAL, default=1500, help="Adam steps training the VAE")
    p.add_argument("--hidden", type=COUNT, default=128, help="hidden units of the VAE")
    p.add_argument("--latent", type=COUNT, default=8, help="latent size of the VAE")
    p.add_argument("--batch", type=COUNT, default=16, help="examples whose gradient is studied")
    p.add_argument(
        "--repeats", type=_common.AT_LEAST_TWO, default=200, help="independent estimates per S"
    )
    p.add_argument("--reference", type=COUNT, default=50_000, help="pathwise reference samples")
    p.add_argument("--hist-groups", type=COUNT, default=400, help="groups of 16 in the histogram")
    p.add_argument(
        "--sample-sizes",
        type=COUNT,
        nargs="+",
        default=[1, 2, 4, 8, 16, 32, 64, 128],
        help="the numbers of samples S of the estimates (score+loo: S >= 2 only)",
    )
    return p.parse_args(argv)


def train_vae(args: argparse.Namespace, bk: Backend) -> tuple[VAE, object]:
    """A few epochs of Adam on the digits, batch 64: the decoder becomes sensitive to z."""
    data = bk.asarray(load_dataset("digits", "train").x)  # (1500, 64) in [0, 1]
    model = VAE(64, hidden=(args.hidden,), latent=args.latent, backend=bk)
    opt = Adam(1e-3)
    n = data.shape[0]
    order = bk.permutation(n)
    for step in range(args.steps):
        start = (step * 64) % (n - 64)
        if start < 64:
            order = bk.permutation(n)
        _, grads = model.loss_and_grads(data[order[start : start + 64]])
        opt.step(model.params, grads)
    test = bk.asarray(load_dataset("digits", "test").x)
    terms = model.loss(test, train=False)
    print(
        f"VAE 64-{args.hidden}-{args.latent} after {args.steps} Adam steps: test -ELBO "
        f"{float(to_numpy(terms['loss'])):.2f} nats per example (sum over pixels, mean over "
        f"images; KL {float(to_numpy(terms['kl'])):.2f})"
    )
    return model, test[: args.batch]


def ratios(rows: list[StudyRow], group: str) -> dict[str, float | None]:
    """Variance of each score estimator / variance of pathwise, geometric mean over S (None
    for an estimator without rows: leave-one-out when every S is 1)."""
    var = {(r.estimator, r.n_samples): r.variance for r in rows if r.group == group}
    out: dict[str, float | None] = {}
    for name in ESTIMATORS[1:]:
        rs = [var[(name, S)] / var[("pathwise", S)] for (e, S) in var if e == name]
        prod = 1.0
        for r in rs:
            prod *= r
        out[name] = prod ** (1 / len(rs)) if rs else None
    return out


def ratio_text(name: str, ratio: float | None) -> str:
    return f"{name}: {'n/a (S >= 2)' if ratio is None else f'{ratio:8.1f}'}"


def total(rows: list[StudyRow], groups: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """estimator -> [(S, variance summed over the groups)]."""
    acc: dict[tuple[str, int], float] = {}
    for r in rows:
        if r.group in groups:
            acc[(r.estimator, r.n_samples)] = acc.get((r.estimator, r.n_samples), 0.0) + r.variance
    curves: dict[str, list[tuple[int, float]]] = {}
    for (name, S), v in sorted(acc.items(), key=lambda kv: kv[0][1]):
        curves.setdefault(name, []).append((S, v))
    return curves


def plot_variance(panels: list[tuple[str, dict]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (title, curves) in zip(axes, panels, strict=True):
        for name, pts in curves.items():
            S, v = zip(*pts, strict=True)
            ax.loglog(S, v, "o-", ms=3, color=COLORS[name], label=name)
        S0, v0 = curves["pathwise"][0]
        S_all = [s for s, _ in curves["pathwise"]]
        ax.loglog(S_all, [v0 * S0 / s for s in S_all], "k:", lw=1, label="1/S")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("samples S")
        ax.grid(True, which="both", alpha=0.2)
    axes[0].set_ylabel("variance of the S-sample estimate\n(summed over parameters)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _common.save_figure(fig, path)


def plot_distribution(
    samples: dict[str, object], ref: float, label: str, path: Path, title: str = ""
) -> None:
    xp = Backend("numpy").xp
    allv = xp.concatenate([to_numpy(v) for v in samples.values()])
    lo, hi = xp.percentile(allv, [0.5, 99.5])
    bins = xp.linspace(lo, hi, 80)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, v in samples.items():
        v = to_numpy(v)
        ax.hist(v, bins=bins, density=True, histtype="step", lw=1.4, color=COLORS[name],
                label=f"{name} (std {v.std():.3g})")  # fmt: skip
    ax.axvline(ref, color="k", ls=":", lw=1, label=f"reference {ref:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel(f"per-sample estimate of {label} (the middle 99% of all of them shown)")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = _common.output_folder(DEFAULT_OUT if args.out is None else Path(args.out))
    staged = _common.Staged(out)  # both figures moved in at the end, or neither
    bk = Backend("numpy", "float64", seed=args.seed)
    xp = bk.xp

    # ---- 1. the toy: exact gradient known
    toy = LinearGaussianToy(x=xp.array([1.0, -0.5, 2.0]), a=xp.array([1.5, 0.7, -1.0]),
                            b=xp.array([0.1, 0.2, 0.3]))  # fmt: skip
    mu, lv = xp.array([0.3, -0.2, 1.0]), xp.array([-0.5, 0.2, 0.0])
    toy_rows = estimator_study(
        toy_estimators(toy, mu, lv, bk), toy.exact_grad(mu, lv), args.sample_sizes, args.repeats
    )
    print("\n== linear-Gaussian toy (bias against the exact gradient) ==")
    print(format_study([r for r in toy_rows if r.n_samples in (1, 16, 128)]))
    print(BIAS_NOTE)

    # ---- 2. a VAE trained briefly on the digits
    print("\n== VAE on the digits ==")
    model, x = train_vae(args, bk)
    ests = vae_estimators(model, x, weights=True)
    n_chunks = max(1, args.reference // 5_000)
    chunks = [ests["pathwise"](args.reference // n_chunks) for _ in range(n_chunks)]
    reference = {k: sum(c[k] for c in chunks) / len(chunks) for k in chunks[0]}
    vae_rows = estimator_study(ests, reference, args.sample_sizes, args.repeats)
    print(format_study([r for r in vae_rows if r.n_samples in (1, 16, 128)]))
    print(BIAS_NOTE + "; the reference's own noise adds to it (pathwise rows at large S)")

    print("\nvariance ratio score-function / pathwise (geometric mean over S):")
    for title, rows, group in [("toy dE/dmu", toy_rows, "mu"),
                               ("toy dE/dlogvar", toy_rows, "logvar"),
                               ("VAE dL/dmu", vae_rows, "mu"),
                               ("VAE dL/dlogvar", vae_rows, "logvar"),
                               ("VAE encoder weights", vae_rows, "weights")]:  # fmt: skip
        r = ratios(rows, group)
        print(f"  {title:<20} " + "  ".join(ratio_text(k, v) for k, v in r.items()))

    plot_variance(
        [("toy f(z) = -(x - a z - b)^2 / 2: mu, logvar", total(toy_rows, ("mu", "logvar"))),
         ("VAE: dL/dmu, dL/dlogvar", total(vae_rows, ("mu", "logvar"))),
         ("VAE: encoder weights", total(vae_rows, ("weights",)))],
        staged.figure("estimator_variance.png"),
    )  # fmt: skip
    staged.show(staged.figure("estimator_variance.png"))

    # ---- per-sample distributions of one entry, dL/dmu[0, 0]: groups of 16 (for loo)
    S, R, B = 16, args.hist_groups, x.shape[0]
    xs = xp.tile(x, (R, 1))  # R copies of the batch: R independent groups of S samples
    per = {}
    for name, (est, base) in {"pathwise": ("pathwise", "none"), "score": ("score", "none"),
                              "score+loo": ("score", "loo")}.items():  # fmt: skip
        g = vae_gradient_samples(model, xs, S, est, base)
        per[name] = R * g.mu.reshape(S, R, B, -1)[:, :, 0, 0].ravel()  # rescale 1/(RB) -> 1/B
    ref = float(to_numpy(reference["mu"][0, 0]))
    title = f"{R} groups of S = {S} samples (leave-one-out baseline: the other {S - 1} of a group)"
    plot_distribution(per, ref, "dL/dmu[0, 0]", staged.figure("estimator_distribution.png"), title)
    staged.show(staged.figure("estimator_distribution.png"))
    print()
    staged.move_in()
    print(f"runtime {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    _common.run(main)
