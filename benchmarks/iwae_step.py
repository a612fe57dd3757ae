"""One IWAE training step (k = 50, batch 20, the 784-200-200-50 tanh model of Burda et al.)
with scratchvae and with a PyTorch reference of exactly the same step, in one interleaved run.

    python benchmarks/iwae_step.py [--k 50] [--batch 20] [--reps 9] [--threads N]
        [--out benchmarks/results]

The step: draw eps (k, B, L), encode, k draws z, decode the k B draws, the IWAE bound
log (1/k) sum_k w_k, its pathwise gradient, Adam (eps 1e-4). Both start from the same weights
and, before timing, are checked to give the same loss, gradients and Adam update for the same
x and eps (:func:`scratchvae.bench.equivalence.compare`, as ``scratchvae bench`` checks its
references); a disagreement ends the run in one line, before timing.
Needs PyTorch (``pip install torch==2.13.0``: the CPU build). Prints and writes
``iwae-step-<machine>.json``: samples per second of each and the ratio.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402  # numpy-boundary: comparing host arrays

from scratchvae.atomic import atomic_write  # noqa: E402
from scratchvae.backend import Backend, to_numpy  # noqa: E402
from scratchvae.bench import machine_info, machine_name  # noqa: E402
from scratchvae.bench.checks import prepare_out  # noqa: E402
from scratchvae.bench.equivalence import ReferenceMismatch, compare, raise_if_disagrees  # noqa: E402
from scratchvae.bench.references import installed_version  # noqa: E402
from scratchvae.cliargs import COUNT, POSITIVE, script_parser  # noqa: E402
from scratchvae.kernels.cpu import warm_up  # noqa: E402
from scratchvae.models import VAE  # noqa: E402
from scratchvae.optim import Adam  # noqa: E402

ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-4}


class TorchIWAE:
    """The same model and step in PyTorch (autograd), holding scratchvae's weights."""

    def __init__(self, model: VAE, x: np.ndarray, k: int) -> None:
        import torch

        self.torch, self.k, self.latent = torch, k, model.latent
        self.nets = [self._mlp(model, net) for net in (model.encoder, model.decoder)]
        self.x = torch.as_tensor(x)
        params = [p for net in self.nets for p in net.parameters()]
        self.opt = torch.optim.Adam(params, lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
        self.gen = torch.Generator().manual_seed(0)

    def _mlp(self, model: VAE, net) -> object:  # noqa: ANN001
        torch = self.torch
        layers = []
        for i, (n_in, n_out) in enumerate(zip(net.sizes[:-1], net.sizes[1:], strict=True)):
            lin = torch.nn.Linear(n_in, n_out)
            with torch.no_grad():
                lin.weight.copy_(torch.as_tensor(to_numpy(model.params[f"{net.prefix}.{i}.W"]).T))
                lin.bias.copy_(torch.as_tensor(to_numpy(model.params[f"{net.prefix}.{i}.b"])))
            layers += [lin, torch.nn.Tanh()]
        return torch.nn.Sequential(*layers[:-1])

    def loss(self, eps):  # noqa: ANN001, ANN201
        torch, F = self.torch, self.torch.nn.functional
        enc, dec = self.nets
        h = enc(self.x)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + torch.exp(0.5 * logvar) * eps  # (k, B, L)
        logits = dec(z.reshape(-1, self.latent)).reshape(self.k, *self.x.shape)
        log_px = -(F.softplus(logits) - self.x * logits).sum(-1)
        c = 0.5 * self.latent * math.log(2 * math.pi)
        log_pz = -0.5 * (z * z).sum(-1) - c
        log_qz = -0.5 * ((z - mu) ** 2 / logvar.exp() + logvar).sum(-1) - c
        bound = torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(self.k)
        return -bound.mean()

    def __call__(self) -> None:
        eps = self.torch.randn(self.k, *self.x.shape[:1], self.latent, generator=self.gen)
        loss = self.loss(eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def weights(self, model: VAE) -> dict[str, np.ndarray]:
        return self._like_scratch(model, lambda t: t)

    def grads(self, model: VAE) -> dict[str, np.ndarray]:
        return self._like_scratch(model, lambda t: t.grad)

    def set_grads(self, model: VAE, grads: dict[str, np.ndarray]) -> None:
        for name, lin in self._linears(model):
            lin.weight.grad = self.torch.as_tensor(np.ascontiguousarray(grads[f"{name}.W"].T))
            lin.bias.grad = self.torch.as_tensor(grads[f"{name}.b"].copy())

    def _linears(self, model: VAE):  # noqa: ANN202
        for net, seq in zip((model.encoder, model.decoder), self.nets, strict=True):
            for i, lin in enumerate(m for m in seq if hasattr(m, "weight")):
                yield f"{net.prefix}.{i}", lin

    def _like_scratch(self, model: VAE, of) -> dict[str, np.ndarray]:  # noqa: ANN001
        out = {}
        for name, lin in self._linears(model):
            out[f"{name}.W"] = of(lin.weight).detach().numpy().T.copy()
            out[f"{name}.b"] = of(lin.bias).detach().numpy().copy()
        return out


class Reference:
    """:class:`TorchIWAE` as :func:`~scratchvae.bench.equivalence.compare` sees a reference."""

    name = "torch-cpu"

    def __init__(self, model: VAE, ref: TorchIWAE) -> None:
        self.model, self.ref = model, ref

    def weights(self) -> dict[str, np.ndarray]:
        return self.ref.weights(self.model)

    def loss_and_grads(self, eps: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        self.ref.opt.zero_grad(set_to_none=True)
        loss = self.ref.loss(self.ref.torch.as_tensor(eps))
        loss.backward()
        return float(loss.detach()), self.ref.grads(self.model)

    def adam(self, grads: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        for g in grads:  # torch.optim.Adam, as timed, fed the gradients given
            self.ref.set_grads(self.model, g)
            self.ref.opt.step()
        return self.weights()


def check(model: VAE, x, k: int, opt: Adam) -> dict:  # noqa: ANN001
    """Weights, loss, gradients and two Adam updates of scratchvae (``model`` on ``x``, Adam
    with ``opt``'s settings) vs a :class:`TorchIWAE` of its own: same x and eps. The row of
    :func:`~scratchvae.bench.equivalence.compare`; the model's weights are as before."""
    step = SimpleNamespace(model=model, x=x, batch=x.shape[0], opt=opt)
    row = compare(step, Reference(model, TorchIWAE(model, to_numpy(x), k)))
    return {"config": f"IWAE k={k}", "dtype": "float32", "batch": x.shape[0], **row}


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__file__, __doc__.split("\n\n")[0])
    p.add_argument("--k", type=COUNT, default=50)
    p.add_argument("--batch", type=COUNT, default=20)
    p.add_argument("--reps", type=COUNT, default=9)
    p.add_argument("--seconds", type=POSITIVE, default=1.0, help="time per repetition")
    p.add_argument("--threads", type=COUNT, default=None, help="torch threads (default: its own)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    if installed_version("torch") is None:  # said before minutes of work, not after
        p.error("needs PyTorch (pip install 'scratchvae[bench]')")
    problem = prepare_out(str(args.out))
    if problem:
        p.error(problem)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    warm_up("float32")
    bk = Backend("numpy", "float32", seed=0)
    model = VAE(784, hidden=[200, 200], latent=50, activation="tanh", objective="iwae",
                k=args.k, backend=bk)  # fmt: skip
    x = bk.asarray(bk.uniform((args.batch, 784)) < 0.3)
    opt = Adam(ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    row = check(model, x, args.k, opt)
    try:
        raise_if_disagrees(row)
    except ReferenceMismatch as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 1
    diff = max(row["loss_rel_diff"], row["grad_max_rel_diff"])
    ref = TorchIWAE(model, to_numpy(x), args.k)  # the timed one: fresh moments

    def scratch() -> None:
        _, grads = model.loss_and_grads(x)
        opt.step(model.params, grads)

    steps = {"scratchvae": scratch, "torch": ref}
    for fn in steps.values():
        for _ in range(5):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, fn in steps.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                fn()
                n += 1
            times[name].append((time.perf_counter() - t0) / n)
    med = {name: statistics.median(t) for name, t in times.items()}
    ratios = sorted(t / s for s, t in zip(times["scratchvae"], times["torch"], strict=True))
    info = machine_info(bk, "cpu")
    result = {
        "k": args.k, "batch": args.batch, "max_rel_diff": diff, "equivalence": row,
        "step_s": times,
        "samples_per_s": {name: args.batch / t for name, t in med.items()},
        "speedup_vs_torch": statistics.median(ratios), "ratios": ratios, "machine": info,
        "torch_threads": torch.get_num_threads(), "load_avg_end": list(os.getloadavg()),
    }  # fmt: skip
    print(
        f"IWAE k={args.k} batch {args.batch} (same loss and gradients: max rel. diff {diff:.1e}; "
        f"Adam update {row['adam_update_max_rel_diff']:.1e}): "
        f"scratchvae {med['scratchvae'] * 1e3:.2f} ms, torch {med['torch'] * 1e3:.2f} ms a step; "
        f"{result['speedup_vs_torch']:.2f}x torch (median of {args.reps} interleaved pairs)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"iwae-step-{machine_name(info, 'numpy')}.json"
    with atomic_write(path, "w") as f:
        f.write(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
