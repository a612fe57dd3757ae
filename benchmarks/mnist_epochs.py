"""Issue 4, item 2: the PyTorch VAE example's MNIST protocol with scratchvae and with PyTorch.

Protocol (pytorch/examples vae/main.py): 60,000 training images scaled to [0, 1], batch 128,
reshuffled every epoch, VAE 784-400-20 (ReLU, one Linear(400, 40) head for [mu | logvar],
Bernoulli decoder on logits), Adam lr 1e-3, 10 epochs; loss = BCE summed over pixels + KL,
reported per example. Both implementations start from the same weights (scratchvae's
initialisation copied into torch); scratchvae trains with its own Trainer (as a user does),
PyTorch with the example's loop. Reported: wall time of the training and the final test -ELBO
(one eps draw per test image), in nats per example.

    .venv-bench/bin/python benchmarks/mnist_epochs.py DATA --out benchmarks/results

DATA is a folder with mnist-train.npz and mnist-test.npz (arrays 'x', uint8, (N, 28, 28)).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np  # numpy-boundary: loading the .npz files of the data folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from scratchvae.atomic import atomic_write  # noqa: E402
from scratchvae.backend import Backend, to_numpy  # noqa: E402
from scratchvae.bench import TorchStep, machine_info  # noqa: E402
from scratchvae.bench.checks import prepare_out  # noqa: E402
from scratchvae.cliargs import COUNT, NATURAL, script_parser  # noqa: E402
from scratchvae.data import dataset_from_array  # noqa: E402
from scratchvae.models import VAE  # noqa: E402
from scratchvae.train import TrainConfig, Trainer  # noqa: E402


def load(folder: Path, split: str) -> np.ndarray:
    path = folder / f"mnist-{split}.npz"
    if not path.is_file():
        raise SystemExit(f"mnist_epochs: {path} not found; pass the folder holding mnist-*.npz")
    return np.load(path)["x"].reshape(-1, 784).astype(np.float32) / 255.0


def train_scratch(model: VAE, x_train, epochs: int, batch: int, log) -> float:
    """The library's own trainer, as a user runs it (on a GPU: the training set uploaded
    once, each step replayed as a CUDA graph)."""
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, val_fraction=0.0, progress=False)
    trainer = Trainer(model, dataset_from_array(x_train, name="mnist-train"), config)
    t0 = time.perf_counter()
    history = trainer.fit()
    model.backend.synchronize()
    seconds = time.perf_counter() - t0
    for r in history:
        log(f"scratchvae epoch {r['epoch']}: train -ELBO {r['train_loss']:.2f}")
    reason = getattr(trainer.step_runner, "fallback_reason", None)
    if reason:
        log(f"scratchvae: no CUDA graph ({reason})")
    return seconds


def test_elbo_scratch(model: VAE, x_test) -> float:
    bk = model.backend
    total = 0.0
    for i in range(0, x_test.shape[0], 1000):
        xb = bk.asarray(x_test[i : i + 1000])
        terms = model.loss(xb, model.draw_noise(xb.shape[0]))
        total += float(to_numpy(terms["loss"])) * xb.shape[0]
    return total / x_test.shape[0]


def train_torch(ref: TorchStep, x_train, epochs: int, batch: int, log) -> float:
    torch = ref.torch
    xt = torch.as_tensor(x_train, device=ref.device)
    n = xt.shape[0]
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=ref.gen, device=ref.device)
        total = torch.zeros((), device=ref.device)
        for i in range(0, n, batch):
            ref.x, ref.batch = xt[perm[i : i + batch]], min(batch, n - i)
            eps = torch.randn(ref.batch, ref.latent, generator=ref.gen, device=ref.device)
            loss = ref.loss(eps)
            ref.opt.zero_grad(set_to_none=True)
            loss.backward()
            ref.opt.step()
            total += loss.detach() * ref.batch
        log(f"torch      epoch {epoch + 1}: train -ELBO {float(total) / n:.2f}")
    ref.sync()
    return time.perf_counter() - t0


def test_elbo_torch(ref: TorchStep, x_test) -> float:
    torch = ref.torch
    total = 0.0
    with torch.no_grad():
        for i in range(0, x_test.shape[0], 1000):
            ref.x = torch.as_tensor(x_test[i : i + 1000], device=ref.device)
            ref.batch = ref.x.shape[0]
            eps = torch.randn(ref.batch, ref.latent, generator=ref.gen, device=ref.device)
            total += float(ref.loss(eps)) * ref.batch
    return total / x_test.shape[0]


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__file__, __doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="folder with mnist-train.npz and mnist-test.npz")
    p.add_argument("--epochs", type=COUNT, default=10)
    p.add_argument("--batch", type=COUNT, default=128)
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    p.add_argument("--torch-device", default="cpu", help="cpu, cuda or none")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--seed", type=NATURAL, default=0)
    args = p.parse_args(argv)
    problem = prepare_out(str(args.out))  # said now, not after the epochs
    if problem:
        p.error(problem)
    x_train, x_test = load(args.data, "train"), load(args.data, "test")
    bk = Backend(args.backend, "float32", seed=args.seed)
    model = VAE(784, hidden=(400,), latent=20, backend=bk)
    ref = None
    if args.torch_device != "none":
        ref = TorchStep(model, bk.asarray(x_train[:1]), args.torch_device, seed=args.seed)
    res = {"protocol": vars(args) | {"data": str(args.data), "out": str(args.out)}}
    res["machine"] = machine_info(bk, None if ref is None else args.torch_device)

    def log(msg: str) -> None:
        print(msg, flush=True)

    res["scratchvae"] = {
        "train_seconds": train_scratch(model, x_train, args.epochs, args.batch, log)
    }
    res["scratchvae"]["test_neg_elbo"] = test_elbo_scratch(model, x_test)
    if ref is not None:
        res["torch"] = {"train_seconds": train_torch(ref, x_train, args.epochs, args.batch, log)}
        res["torch"]["test_neg_elbo"] = test_elbo_torch(ref, x_test)
    res["machine"]["load_avg_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"mnist-{args.epochs}epochs-{args.backend}"
    with atomic_write(args.out / f"{stem}.json", "w") as f:  # the old file whole, or the new
        f.write(json.dumps(res, indent=1) + "\n")
    for k in ("scratchvae", "torch"):
        if k in res:
            r = res[k]
            log(f"{k:10s} {r['train_seconds']:8.1f} s   test -ELBO {r['test_neg_elbo']:.2f} nats")
    log(f"wrote {args.out / f'{stem}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
