"""``scratchvae trace``: the options and the printout of :mod:`scratchvae.lab.trace`.

Prints one training step of a 400-20 VAE on the embedded digits (or of a trained model from
``--checkpoint``, on the run's own data and in its dtype), op by op, then the importance weights
of an IWAE step (``--objective iwae``, K > 1 samples per example), then each backward op's
formulas from its code.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..backend import Backend, get_backend, to_numpy
from ..cliargs import COUNT
from ..models import AE, VAE
from ..optim import Adam
from .trace import backward_rules, check_summary, format_trace, format_weights, trace_step

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scratchvae trace``."""
    parser.add_argument(
        "--check",
        action="store_true",
        help="check every backward op numerically (float64 central differences)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="examples in the batch (8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch and noise (0)")
    parser.add_argument(
        "--data", default=None, help="data set or path (digits; with --checkpoint: its data)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where mnist/ and fashion-mnist/ live (see --help of train; with --checkpoint: "
        "the run's)",
    )
    # the model's own options: None means the default below, and is all --checkpoint allows
    parser.add_argument("--hidden", type=int, nargs="*", help="hidden layer sizes (400)")
    parser.add_argument("--latent", type=int, help="latent units (20)")
    parser.add_argument(
        "--objective",
        choices=["elbo", "iwae"],
        help="the bound the step follows: elbo (the mean of K single-sample ELBOs; the "
        "default) or iwae",
    )
    parser.add_argument("--k", type=COUNT, help="samples per example (1)")
    parser.add_argument(
        "--estimator",
        choices=["pathwise", "stl", "dreg"],
        help="the encoder's gradient estimator (pathwise; dreg needs --objective iwae)",
    )
    parser.add_argument(
        "run",
        nargs="?",
        metavar="DIR",
        help="a run folder or checkpoint to trace, as the other commands take it (= --checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="trace a trained model from this checkpoint (file or run folder): a VAE, or an "
        "AE, denoising or sparse AE",
    )
    parser.add_argument(
        "--backend",
        default="numpy",
        choices=["numpy", "cupy"],
        help="the arrays' library: numpy (the default) or cupy (a CUDA GPU)",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "float64"],
        help="float32, or with --checkpoint the dtype it was trained in",
    )
    parser.add_argument(
        "--nested", action="store_true", help="also show the ops called inside other ops"
    )


_MODEL_OPTIONS = {
    "hidden": [400],
    "latent": 20,
    "objective": "elbo",
    "k": 1,
    "estimator": "pathwise",
}


def _checkpoint(args: argparse.Namespace) -> Any:
    """The checkpoint of --checkpoint (None without one). Its model is traced as it was
    trained: model flags are refused, and the data, data folder and dtype default to the run's."""
    if args.run is not None:  # `scratchvae trace RUN`, as `evaluate RUN` (or --checkpoint)
        if args.checkpoint is not None and not _same_file(args.run, args.checkpoint):
            raise ValueError(f"two runs to trace ({args.run}, --checkpoint {args.checkpoint})")
        args.checkpoint = args.run
    if not args.checkpoint:
        return None
    given = [name for name in _MODEL_OPTIONS if getattr(args, name) is not None]
    if given:
        flags = ", ".join(f"--{name}" for name in given)
        raise ValueError(f"{flags}: the checkpoint's model is traced as trained; drop {flags}")
    from ..checkpoint import load_checkpoint  # noqa: PLC0415 - the CLI's boundary

    return load_checkpoint(args.checkpoint)


def _same_file(a: str, b: str) -> bool:
    """Whether two names of a run (its folder, or its checkpoint file) are the same file."""
    from ..checkpoint import resolve_path  # noqa: PLC0415 - the CLI's boundary

    return resolve_path(a).resolve() == resolve_path(b).resolve()


def _cli_model(args: argparse.Namespace, backend: Backend, n_features: int, ckpt: Any) -> AE:
    for name, default in _MODEL_OPTIONS.items():
        setattr(args, name, default if getattr(args, name) is None else getattr(args, name))
    if ckpt is not None:
        from ..checkpoint import load_model  # noqa: PLC0415 - the CLI's boundary

        model, _ = load_model(ckpt, backend)
        if model.n_features != n_features:
            raise ValueError(
                f"the checkpoint's model takes {model.n_features} features, the data has "
                f"{n_features}; pass the --data it was trained on"
            )
        return model
    if args.latent < 1 or any(h < 1 for h in args.hidden):
        raise ValueError("--latent and every --hidden size must be >= 1")
    return VAE(
        n_features,
        hidden=args.hidden,
        latent=args.latent,
        backend=backend,
        objective=args.objective,
        k=args.k,
        estimator=args.estimator,
    )


def run_cli(args: argparse.Namespace) -> int:
    """Print the trace of one training step; returns 0, or 1 when --check finds a backward op
    that disagrees with its forward's central differences."""
    from ..runs import load_run_data  # noqa: PLC0415 - the data layer is an I/O boundary

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    ckpt = _checkpoint(args)
    run = {} if ckpt is None else ckpt.train_config
    dtype = args.dtype or (ckpt.backend.get("dtype") if ckpt else None) or "float32"
    backend = get_backend(args.backend, dtype, args.seed)
    lik = "bernoulli" if ckpt is None else ckpt.model_config.get("likelihood", "bernoulli")
    given_dir = getattr(args, "data_dir", None)  # the run's recorded folder: read, never
    ds = load_run_data(  # downloaded into (a checkpoint does not choose where files go)
        args.data or run.get("data") or "digits",
        "train",
        given_dir,
        None if given_dir else run.get("data_dir"),
        "bernoulli" if lik == "bernoulli" else "gaussian",
    )
    model = _cli_model(args, backend, ds.n_features, ckpt)
    idx = to_numpy(backend.permutation(ds.n))[: args.batch_size]
    x = backend.asarray(ds.get_batch(idx))
    noise = model.draw_noise(x.shape[0])
    terms = model.loss(x, noise, train=True)
    rows = trace_step(model, x, noise, check=args.check, optimizer=Adam(1e-3))
    c = model.config
    sampling = f", {c['objective']} k={c['k']} {c['estimator']}" if "k" in c else ""
    print(
        f"one training step of {type(model).__name__} {c['hidden']} latent {model.latent}"
        f"{sampling}, {backend.name} {backend.dtype.name}"
    )
    print(
        f"batch: {x.shape[0]} examples of {ds.name}; loss terms (nats per example): "
        + ", ".join(f"{k} {float(to_numpy(v)):.3f}" for k, v in terms.items())
    )
    print(format_trace(rows, depth=1 if args.nested else 0))
    weights = format_weights(rows)
    if weights:
        print("\n" + weights)
    print("\nthe backward formulas, from the code:\n" + backward_rules(rows))
    print("\nimpl: numba/cuda = the op's kernel ran, numpy/cupy = its readable body")
    if not args.check:
        print("add --check to check every backward op numerically")
        return 0
    estimator = getattr(model, "estimator", "pathwise")  # an AE has none
    if estimator != "pathwise":
        print(
            f"iw_latent_backward with {estimator} is not the forward's derivative: it drops\n"
            "terms zero in expectation (unchecked; tests/ops/test_iwae.py tests it statistically)"
        )
    verdict, failed = check_summary(rows)
    print(verdict)
    return 1 if failed else 0
