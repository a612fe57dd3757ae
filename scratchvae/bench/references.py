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
from .equivalence import compare
from .timing import ADAM, ScratchStep

__all__ = [
    "JaxStep",
    "TorchGraphStep",
    "TorchStep",
    "check_jax",
    "check_torch",
    "import_torch",
    "installed_version",
]


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


class _TorchReference:
    """:class:`TorchStep` as :func:`~scratchvae.bench.equivalence.compare` sees a reference."""

    def __init__(self, model: VAE, x: Any, device: str) -> None:
        self.model, self.step, self.name = model, TorchStep(model, x, device), f"torch-{device}"

    def weights(self) -> dict[str, Any]:
        return self.step.params_like_scratch(self.model)

    def loss_and_grads(self, eps: Any) -> tuple[float, dict[str, Any]]:
        step = self.step
        step.opt.zero_grad(set_to_none=True)
        loss = step.loss(step.torch.as_tensor(eps, device=step.device))
        loss.backward()
        return float(loss.detach()), step.grads_like_scratch(self.model)

    def adam(self, grads: list[dict[str, Any]]) -> dict[str, Any]:
        for g in grads:  # torch.optim.Adam, as timed, fed the gradients given
            self.step.set_grads(self.model, g)
            self.step.opt.step()
        return self.step.params_like_scratch(self.model)


def check_torch(step: ScratchStep, device: str) -> dict[str, Any]:
    """Weights, loss, gradients and Adam updates of scratchvae vs PyTorch: same x and eps."""
    return compare(step, _TorchReference(step.model, step.x, device))


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
        jax = self.jax
        key, sub = jax.random.split(key)
        eps = jax.random.normal(sub, (x.shape[0], self.latent), dtype=self.dtype)
        loss, grads = jax.value_and_grad(self.loss)(params, x, eps)
        params, m, v, t = self.adam(params, m, v, t, grads)
        return params, m, v, t, key, loss

    def adam(self, params, m, v, t, grads):  # noqa: ANN001, ANN201 - jax arrays, traced
        """One Adam step (lists of arrays in ``self.names``' order), as the timed step runs it."""
        jnp = self.jnp
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
        return params, m, v, t

    def __call__(self) -> None:
        self.params, self.m, self.v, self.t, self.key, self.last = self._step(
            self.params, self.m, self.v, self.t, self.x, self.key
        )

    def sync(self) -> None:
        if self.last is not None:
            self.last.block_until_ready()


class _JaxReference:
    """:class:`JaxStep` as :func:`~scratchvae.bench.equivalence.compare` sees a reference."""

    def __init__(self, model: VAE, x: Any) -> None:
        self.step = JaxStep(model, x)
        self.name = f"jax-{self.step.jax.default_backend()}"

    def _named(self, arrays: list[Any]) -> dict[str, Any]:
        return {
            n: to_numpy(self.step.jax.device_get(a))
            for n, a in zip(self.step.names, arrays, strict=True)
        }

    def weights(self) -> dict[str, Any]:
        return self._named(self.step.params)

    def loss_and_grads(self, eps: Any) -> tuple[float, dict[str, Any]]:
        s = self.step
        loss, grads = s.jax.value_and_grad(s.loss)(s.params, s.x, s.jnp.asarray(eps))
        return float(loss), self._named(grads)

    def adam(self, grads: list[dict[str, Any]]) -> dict[str, Any]:
        s = self.step
        params, m, v, t = s.params, s.m, s.v, s.t
        for g in grads:  # the Adam of the timed (jitted) step, fed the gradients given
            params, m, v, t = s.adam(params, m, v, t, [s.jnp.asarray(g[n]) for n in s.names])
        return self._named(params)


def check_jax(step: ScratchStep) -> dict[str, Any]:
    """Weights, loss, gradients and Adam updates of scratchvae vs JAX: same x and eps."""
    return compare(step, _JaxReference(step.model, step.x))
