"""The reference steps: the same VAE, loss and Adam in PyTorch and in JAX, and the checks that
they compute the same numbers as scratchvae before anything is timed.

PyTorch and JAX are optional (the ``bench`` extra): :func:`installed_version` asks for them
without importing them, and they are imported only when a reference step is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from typing import Any

from ..backend import to_numpy
from ..models import VAE
from ..optim import Adam
from .timing import ADAM, ScratchStep

__all__ = [
    "EQ_TOL",
    "JaxStep",
    "TorchGraphStep",
    "TorchStep",
    "check_jax",
    "check_torch",
    "import_torch",
    "installed_version",
]

# equivalence tolerances (max relative difference, normalised by each array's largest entry)
EQ_TOL = {"float32": 2e-4, "float64": 1e-9}


def installed_version(module: str) -> str | None:
    """The installed version of ``module`` (a distribution name), or None; imports nothing."""
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def import_torch() -> Any:
    """``torch``, imported on first use (importing scratchvae.bench does not import it)."""
    import torch

    return torch


def _max_rel(a: dict[str, Any], b: dict[str, Any]) -> float:
    """max over arrays of max|a - b| / max|b| (relative to each array's scale)."""
    worst = 0.0
    for k in b:
        ref = to_numpy(b[k]).astype("float64")
        diff = abs(to_numpy(a[k]).astype("float64") - ref).max()
        worst = max(worst, float(diff / max(abs(ref).max(), 1e-30)))
    return worst


# ============================================================================ PyTorch
class TorchStep:
    """The same VAE in PyTorch: Linear layers holding scratchvae's weights, same loss, Adam."""

    def __init__(self, model: VAE, x: Any, device: str, seed: int = 0) -> None:
        torch = import_torch()
        self.torch, self.device = torch, device
        self.dtype = getattr(torch, model.backend.dtype.name)
        self.latent, self.batch = model.latent, x.shape[0]
        self.enc = self._mlp(model, model.encoder)
        self.dec = self._mlp(model, model.decoder)
        self.x = torch.as_tensor(to_numpy(x), device=device)
        self.opt = torch.optim.Adam(
            self.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"]
        )
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def _mlp(self, model: VAE, net: Any) -> Any:
        torch = self.torch
        layers: list[Any] = []
        for i, (n_in, n_out) in enumerate(zip(net.sizes[:-1], net.sizes[1:], strict=True)):
            lin = torch.nn.Linear(n_in, n_out, dtype=self.dtype, device=self.device)
            with torch.no_grad():  # torch stores W as (out, in): y = x W^T + b
                lin.weight.copy_(torch.as_tensor(to_numpy(model.params[f"{net.prefix}.{i}.W"]).T))
                lin.bias.copy_(torch.as_tensor(to_numpy(model.params[f"{net.prefix}.{i}.b"])))
            layers += [lin, torch.nn.ReLU()]
        return torch.nn.Sequential(*layers[:-1])  # no activation after the last layer

    def _linears(self, model: VAE) -> Iterator[tuple[str, Any]]:
        """(scratchvae's name prefix, torch Linear) of every layer, encoder then decoder."""
        for net, seq in ((model.encoder, self.enc), (model.decoder, self.dec)):
            for i, lin in enumerate(m for m in seq if hasattr(m, "weight")):
                yield f"{net.prefix}.{i}", lin

    def parameters(self) -> list[Any]:
        return [*self.enc.parameters(), *self.dec.parameters()]

    def loss(self, eps: Any) -> Any:
        """-ELBO per example: BCE-with-logits summed over pixels + KL, both averaged over B."""
        F = self.torch.nn.functional
        h = self.enc(self.x)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + self.torch.exp(0.5 * logvar) * eps
        logits = self.dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, self.x, reduction="sum")
        kl = 0.5 * (mu * mu + logvar.exp() - logvar - 1).sum()
        return (recon + kl) / self.batch

    def __call__(self) -> None:
        eps = self.torch.randn(
            self.batch, self.latent, generator=self.gen, dtype=self.dtype, device=self.device
        )
        loss = self.loss(eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def grads_like_scratch(self, model: VAE) -> dict[str, Any]:
        """Gradients as NumPy arrays under scratchvae's names and layouts (W as (in, out))."""
        return self._like_scratch(model, lambda t: t.grad)

    def params_like_scratch(self, model: VAE) -> dict[str, Any]:
        """Weights as NumPy arrays under scratchvae's names and layouts (W as (in, out))."""
        return self._like_scratch(model, lambda t: t)

    def _like_scratch(self, model: VAE, of: Any) -> dict[str, Any]:
        out = {}
        for name, lin in self._linears(model):
            out[f"{name}.W"] = of(lin.weight).detach().cpu().numpy().T
            out[f"{name}.b"] = of(lin.bias).detach().cpu().numpy()
        return out

    def set_grads(self, model: VAE, grads: Any) -> None:
        """Overwrite torch's .grad with scratchvae's gradients (transposing W)."""
        for name, lin in self._linears(model):
            dW = to_numpy(grads[f"{name}.W"]).T.copy()
            lin.weight.grad = self.torch.as_tensor(dW, device=self.device)
            db = to_numpy(grads[f"{name}.b"]).copy()
            lin.bias.grad = self.torch.as_tensor(db, device=self.device)


class TorchGraphStep(TorchStep):
    """The same PyTorch step captured once in a CUDA graph and replayed (PyTorch's recipe:
    warm-up on a side stream, Adam with ``capturable=True``, eps drawn inside the graph from
    the default CUDA generator, whose offset advances on every replay)."""

    def __init__(self, model: VAE, x: Any, device: str, seed: int = 0) -> None:
        super().__init__(model, x, device, seed)
        torch = self.torch
        self.opt = torch.optim.Adam(
            self.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"],
            capturable=True,
        )  # fmt: skip
        torch.cuda.manual_seed(seed)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._plain()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self._captured_loss = self._backward_and_step()

    def _backward_and_step(self) -> Any:
        torch = self.torch
        eps = torch.randn(self.batch, self.latent, dtype=self.dtype, device=self.device)
        loss = self.loss(eps)
        loss.backward()
        self.opt.step()
        return loss

    def _plain(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._backward_and_step()

    def __call__(self) -> None:
        self.graph.replay()


def check_torch(step: ScratchStep, device: str) -> dict[str, Any]:
    """Loss, gradients and one Adam update of scratchvae vs PyTorch: same weights, x and eps."""
    model = step.model
    ref = TorchStep(model, step.x, device)
    noise = model.draw_noise(step.batch)
    terms, grads = model.loss_and_grads(step.x, noise)
    loss_s = float(to_numpy(terms["loss"]))
    eps = ref.torch.as_tensor(to_numpy(noise["eps"]), device=device)
    loss_t = ref.loss(eps)
    loss_t.backward()
    g_rel = _max_rel(grads, ref.grads_like_scratch(model))
    # one Adam step each from equal weights AND equal gradients (scratchvae's, copied into
    # torch): a gradient entry near 0 whose sign differs by rounding would otherwise move by
    # +-lr in one and -+lr in the other, which says nothing about the optimizers.
    ref.set_grads(model, grads)
    opt = Adam(ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    opt.step(model.params, grads)
    ref.opt.step()
    p_rel = _max_rel(model.params, ref.params_like_scratch(model))
    loss_t = loss_t.detach()
    loss_rel = abs(loss_s - float(loss_t)) / abs(float(loss_t))
    tol = EQ_TOL[model.backend.dtype.name]
    return {
        "reference": f"torch-{device}",
        "loss_scratch": loss_s,
        "loss_reference": float(loss_t),
        "loss_rel_diff": loss_rel,
        "grad_max_rel_diff": g_rel,
        "params_after_adam_max_rel_diff": p_rel,
        "tolerance": tol,
        "ok": max(loss_rel, g_rel, p_rel) <= tol,
    }


# ============================================================================ JAX
class JaxStep:
    """The same step in JAX: a pure loss, jax.grad, Adam written out, the whole step jitted."""

    def __init__(self, model: VAE, x: Any, seed: int = 0) -> None:
        import jax
        import jax.numpy as jnp

        if model.backend.dtype.name == "float64":
            jax.config.update("jax_enable_x64", True)
        # true float32 products, as scratchvae's and PyTorch's defaults: on a GPU JAX would
        # otherwise use TF32 (10-bit mantissas) for float32 matrix products
        jax.config.update("jax_default_matmul_precision", "highest")
        self.jax, self.jnp = jax, jnp
        self.latent, self.batch = model.latent, x.shape[0]
        self.dtype = jnp.dtype(model.backend.dtype.name)
        names = [n for n in model.params]
        self.names = names
        self.params = [jnp.asarray(to_numpy(model.params[n])) for n in names]
        self.m = [jnp.zeros_like(p) for p in self.params]
        self.v = [jnp.zeros_like(p) for p in self.params]
        self.t = jnp.asarray(0, dtype=self.dtype)
        self.x = jnp.asarray(to_numpy(x))
        self.key = jax.random.PRNGKey(seed)
        self.n_enc = len(model.encoder.sizes) - 1
        self.n_dec = len(model.decoder.sizes) - 1
        self._step = jax.jit(self._step_impl, donate_argnums=(0, 1, 2))
        self.last = None

    def _mlp(self, ps: list[Any], h: Any) -> Any:
        jnp = self.jnp
        n = len(ps) // 2
        for i in range(n):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < n - 1:
                h = jnp.maximum(h, 0)
        return h

    def loss(self, params: list[Any], x: Any, eps: Any) -> Any:
        jnp = self.jnp
        enc, dec = params[: 2 * self.n_enc], params[2 * self.n_enc :]
        h = self._mlp(enc, x)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = self._mlp(dec, z)
        recon = (self.jax.nn.softplus(logits) - x * logits).sum()
        kl = 0.5 * (mu * mu + jnp.exp(logvar) - logvar - 1).sum()
        return (recon + kl) / x.shape[0]

    def _step_impl(self, params, m, v, t, x, key):  # noqa: ANN001, ANN202 - traced by jax.jit
        jax, jnp = self.jax, self.jnp
        key, sub = jax.random.split(key)
        eps = jax.random.normal(sub, (x.shape[0], self.latent), dtype=self.dtype)
        loss, grads = jax.value_and_grad(self.loss)(params, x, eps)
        t = t + 1
        b1, b2 = ADAM["betas"]
        m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads, strict=True)]
        v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads, strict=True)]
        step = ADAM["lr"] / (1 - b1**t)
        c2 = jnp.sqrt(1 - b2**t)
        params = [
            p - step * mi / (jnp.sqrt(vi) / c2 + ADAM["eps"])
            for p, mi, vi in zip(params, m, v, strict=True)
        ]
        return params, m, v, t, key, loss

    def __call__(self) -> None:
        self.params, self.m, self.v, self.t, self.key, self.last = self._step(
            self.params, self.m, self.v, self.t, self.x, self.key
        )

    def sync(self) -> None:
        if self.last is not None:
            self.last.block_until_ready()


def check_jax(step: ScratchStep) -> dict[str, Any]:
    """Loss and gradients of scratchvae vs JAX autodiff: same weights, x and eps."""
    model = step.model
    ref = JaxStep(model, step.x)
    noise = model.draw_noise(step.batch)
    terms, grads = model.loss_and_grads(step.x, noise)
    eps = ref.jnp.asarray(to_numpy(noise["eps"]))
    loss_j, g_j = ref.jax.value_and_grad(ref.loss)(ref.params, ref.x, eps)
    g_rel = _max_rel(grads, dict(zip(ref.names, g_j, strict=True)))
    loss_s = float(to_numpy(terms["loss"]))
    loss_rel = abs(loss_s - float(loss_j)) / abs(float(loss_j))
    tol = EQ_TOL[model.backend.dtype.name]
    return {
        "reference": f"jax-{ref.jax.default_backend()}",
        "loss_scratch": loss_s,
        "loss_reference": float(loss_j),
        "loss_rel_diff": loss_rel,
        "grad_max_rel_diff": g_rel,
        "tolerance": tol,
        "ok": max(loss_rel, g_rel) <= tol,
    }
