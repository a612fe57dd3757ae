"""Burda, Grosse and Salakhutdinov (2016), Table 1, MNIST, one stochastic layer, as far as it runs.

The protocol: dynamically binarized MNIST; encoder and decoder with two deterministic tanh
layers of 200 units and 50 latent units; Adam (beta1 0.9, beta2 0.999, eps 1e-4), batch 20;
stage i = 0 .. 7 trains 3^i epochs at learning rate 1e-3 * 10^(-i/7) (3,280 epochs in all); the
test log-likelihood is estimated with the k = 5000 importance-weighted bound, on the test set
binarized once. Published (nats, -log p(x) of the test set):

    VAE (k = 1) 86.76    VAE (k = 50) 86.35    IWAE (k = 5) 85.54    IWAE (k = 50) 84.78

    python benchmarks/burda_table1.py --data-dir DIR --stages 4 --out benchmarks/results

DIR holds mnist/ with the official IDX files (``scratchvae train --data mnist`` downloads them;
on the project's development machines ``../shared/tools/make_idx.py``, outside this
repository, writes them from verified .npz copies). ``--stages N`` runs stages
0 .. N-1 (N = 4: 40 epochs). Each model trains in its own run folder under ``--runs`` with a
checkpoint after every epoch, and a later call with more stages resumes where the last ended.
Writes ``burda-table1.json`` and ``burda-table1.md``: our numbers next to the published ones,
with the epochs actually run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scratchvae.atomic import atomic_write  # noqa: E402
from scratchvae.backend import Backend, to_numpy  # noqa: E402
from scratchvae.checkpoint import CHECKPOINT_NAME, load_checkpoint  # noqa: E402
from scratchvae.cliargs import COUNT, NATURAL, one_line_error, script_parser, up_to  # noqa: E402
from scratchvae.data import DataError, binarize, load_dataset  # noqa: E402
from scratchvae.evaluate import iw_bound  # noqa: E402
from scratchvae.models import VAE  # noqa: E402
from scratchvae.optim import Adam  # noqa: E402
from scratchvae.train import TrainConfig, Trainer  # noqa: E402

PUBLISHED = {"VAE k=1": 86.76, "VAE k=50": 86.35, "IWAE k=5": 85.54, "IWAE k=50": 84.78}
TEST_IMAGES = 10_000  # MNIST's test set
MODELS = {  # name -> (objective, k)
    "VAE k=1": ("elbo", 1),
    "VAE k=50": ("elbo", 50),
    "IWAE k=5": ("iwae", 5),
    "IWAE k=50": ("iwae", 50),
}


def stage_plan(stages: int) -> list[tuple[int, float, int]]:
    """(stage i, learning rate, epochs done at its end) for i = 0 .. stages - 1."""
    plan, total = [], 0
    for i in range(stages):
        total += 3**i
        plan.append((i, 1e-3 * 10 ** (-i / 7), total))
    return plan


def epochs_done(run: Path) -> int:
    path = run / CHECKPOINT_NAME
    return load_checkpoint(path).epoch if path.is_file() else 0


def train(name: str, train_set, run: Path, stages: int, seed: int, log) -> VAE:
    """Train one model of the table through the stages, resuming from its run folder."""
    objective, k = MODELS[name]
    bk = Backend("numpy", "float32", seed=seed)
    model = VAE(784, hidden=[200, 200], latent=50, activation="tanh", objective=objective,
                k=k, backend=bk)  # fmt: skip
    for i, lr, total in stage_plan(stages):
        if epochs_done(run) >= total:
            continue
        config = TrainConfig(
            epochs=total, batch_size=20, lr=lr, binarize="dynamic", val_fraction=0.0,
            progress=False, out_dir=str(run), seed=seed,
        )  # fmt: skip
        trainer = Trainer(model, train_set, config)
        trainer.optimizer = Adam(lr, betas=(0.9, 0.999), eps=1e-4)  # the paper's eps
        t0 = time.perf_counter()
        resume = (run / CHECKPOINT_NAME).is_file()  # else the stage starts over
        history = trainer.fit(resume=resume, replace=not resume, allow_changes=("lr",))
        last = history[-1]
        log(f"{name}: stage {i} (lr {lr:.2e}) to epoch {total} in {time.perf_counter() - t0:.0f}"
            f" s; train loss {last['train_loss']:.2f}")  # fmt: skip
    if (run / CHECKPOINT_NAME).is_file():  # the weights of the last stage run
        from scratchvae.checkpoint import copy_params  # noqa: PLC0415

        copy_params(load_checkpoint(run / CHECKPOINT_NAME), model)
    return model


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__file__, __doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding mnist/ (the IDX files)")
    p.add_argument(
        "--stages", type=up_to(8), default=4, help="stages 0 .. N-1, N in 1..8 (4: 40 epochs)"
    )
    p.add_argument("--models", nargs="+", default=["VAE k=1", "IWAE k=5", "IWAE k=50"],
                   choices=list(MODELS))  # fmt: skip
    p.add_argument("--k-test", type=COUNT, default=5000, help="samples of the test bound (5000)")
    p.add_argument("--n-test", type=COUNT, default=None, help="the first N test images (all)")
    p.add_argument("--runs", type=Path, default=Path("runs/burda"), help="run folders")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--seed", type=NATURAL, default=0)
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:  # a folder without the files: one line, as scratchvae's own commands say it
        train_set = load_dataset("mnist", "train", args.data_dir)
        test_set = load_dataset("mnist", "test", args.data_dir)
    except DataError as exc:
        print(one_line_error(str(exc), "burda_table1.py"), file=sys.stderr)
        return 2
    bk = Backend("numpy", "float32", seed=args.seed + 123)  # the test set, binarized once
    n_test = test_set.n if args.n_test is None else min(args.n_test, test_set.n)
    x_test = binarize(bk.asarray(test_set.get_batch(slice(0, n_test))), "dynamic", bk)
    rows = []
    for name in args.models:
        run = args.runs / name.replace(" ", "").replace("=", "")
        model = train(name, train_set, run, args.stages, args.seed, log)
        t0 = time.perf_counter()
        nll = -float(to_numpy(iw_bound(model, x_test, k=args.k_test).mean()))
        row = {"model": name, "epochs": epochs_done(run), "test_nll": nll, "k_test": args.k_test,
               "n_test": n_test, "published": PUBLISHED[name]}  # fmt: skip
        rows.append(row)
        seconds = time.perf_counter() - t0
        log(f"{name}: {row['epochs']} epochs, test -log p(x) <= {nll:.2f} (k={args.k_test}; "
            f"{seconds:.0f} s); published {PUBLISHED[name]}")  # fmt: skip
    result = {"protocol": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "burda-table1.json", "w") as f:
        f.write(json.dumps(result, indent=1) + "\n")
    with atomic_write(args.out / "burda-table1.md", "w") as f:
        f.write(markdown(rows))
    log(markdown(rows))
    return 0


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | epochs run (of 3,280) | test -log p(x), ours (nats) | published |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        nll = f"{r['test_nll']:.2f}" if math.isfinite(r["test_nll"]) else "n/a"
        lines.append(f"| {r['model']} | {r['epochs']} | {nll} | {r['published']:.2f} |")
    # which bound: a quick run's (fewer samples or images) is looser and noisier than the paper's
    for k, n in dict.fromkeys((r["k_test"], r["n_test"]) for r in rows):
        where = (
            f"all {TEST_IMAGES:,}"
            if n == TEST_IMAGES
            else f"the first {n:,} of the {TEST_IMAGES:,}"
        )
        paper = (
            "" if (k, n) == (5000, TEST_IMAGES) else " (not the paper's k = 5000 on all of them)"
        )
        bound = "-L_k, an upper bound on -log p(x) as the paper's"
        lines.append(f"\nOurs: {bound}, k = {k}, on {where} test images{paper}.")
    lines.append(
        "Published: Burda, Grosse and Salakhutdinov (2016), Table 1, one stochastic layer."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
