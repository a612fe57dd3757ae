"""AE, DenoisingAE, SparseAE and VAE, built from the ops with hand-written backward passes.

Every model has

* ``params`` / ``grads``: :class:`ParamStore` mappings ``"encoder.0.W" -> array``;
* ``draw_noise(B)``: the noise one training step uses, drawn from the backend generator;
* ``forward(x, noise) -> (terms, cache)`` and ``backward(cache) -> grads``;
* ``loss_and_grads(x, noise=None) -> (terms, grads)``: both, the one call a trainer needs.

``terms`` maps names to 0-d backend arrays (no host sync): ``loss`` (what is minimised),
``recon`` and ``kl`` (VAE) or ``sparsity`` (SparseAE). All are sum over features, mean over
the batch: nats per example for the likelihood-based terms. ``grads`` is the model's own
gradient store, overwritten by the next call: copy it (``grads.copy()``) to keep it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from . import compiled
from .activations import sigmoid_backward, sigmoid_forward
from .backend import Backend, cupy_kernel, get_backend, get_xp, is_cupy
from .losses import (
    bernoulli_nll,
    bernoulli_nll_and_grad,
    bernoulli_nll_backward,
    bernoulli_work_needed,
    gaussian_kl,
    gaussian_kl_backward,
    gaussian_nll,
    gaussian_nll_backward,
    sparsity_kl,
    sparsity_kl_backward,
    squared_error,
    squared_error_backward,
)
from .mlp import MLP
from .params import ParamStore, Workspace, scratch
from .reparam import reparam_backward, reparam_forward

Array = Any
Terms = dict[str, Array]

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned", "mse")


# ============================================================================ decoder likelihoods
class Likelihood:
    """What the decoder's output means and how it is scored against the target x (B, D).

    bernoulli         out = logits (B, D);          -log p = softplus(l) - x l
    gaussian          out = mean (B, D), fixed std;  -log N(x; mean, std^2)
    gaussian-learned  out = [mean | logvar] (B, 2D); -log N(x; mean, exp(logvar))
    mse               out = reconstruction (B, D);   sum (out - x)^2   (not a log-likelihood)
    """

    def __init__(self, kind: str = "bernoulli", std: float = 1.0) -> None:
        if kind not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {kind!r}; choose one of {', '.join(LIKELIHOODS)}")
        if std <= 0:
            raise ValueError(f"decoder std must be > 0, got {std}")
        self.kind = kind
        self.std = float(std)
        self.fixed_logvar = 2.0 * math.log(self.std)

    def n_out(self, n_features: int) -> int:
        return 2 * n_features if self.kind == "gaussian-learned" else n_features

    def _split(self, out: Array) -> tuple[Array, Array]:
        D = out.shape[1] // 2
        return out[:, :D], out[:, D:]

    def nll(self, out: Array, x: Array) -> Array:
        """Scalar: sum over features, mean over the batch."""
        if self.kind == "bernoulli":
            return bernoulli_nll(out, x)
        if self.kind == "gaussian":
            return gaussian_nll(out, x, self.fixed_logvar)
        if self.kind == "gaussian-learned":
            mean, logvar = self._split(out)
            return gaussian_nll(mean, x, logvar)
        return squared_error(out, x)

    def nll_and_cache(
        self, out: Array, x: Array, ws: Workspace | None = None
    ) -> tuple[Array, Array | None]:
        """:meth:`nll` and what :meth:`backward` can reuse (Bernoulli: the gradient itself,
        computed in the same pass as the loss)."""
        if self.kind == "bernoulli":
            dout = scratch(ws, "lik.dout", out.shape)
            needed = bernoulli_work_needed(out)  # NumPy's path only: not CuPy's, not Numba's
            work = scratch(ws, "lik.work", (2, *out.shape)) if needed else None
            return bernoulli_nll_and_grad(out, x, out=dout, work=work)
        return self.nll(out, x), None

    def backward(
        self, out: Array, x: Array, cache: Array | None = None, ws: Workspace | None = None
    ) -> Array:
        """dL/dout, the shape of ``out``. ``cache`` from :meth:`nll_and_cache` saves a pass."""
        if self.kind == "bernoulli":
            return bernoulli_nll_backward(out, x) if cache is None else cache
        if self.kind == "gaussian":
            return gaussian_nll_backward(out, x, self.fixed_logvar)[0]
        if self.kind == "gaussian-learned":
            mean, logvar = self._split(out)
            dmean, dlogvar = gaussian_nll_backward(mean, x, logvar)
            return get_xp(out).concatenate([dmean, dlogvar], axis=1)
        return squared_error_backward(out, x)

    def mean(self, out: Array) -> Array:
        """The decoder's output in data space: probabilities (Bernoulli) or means."""
        if self.kind == "bernoulli":
            return sigmoid_forward(out)[0]
        if self.kind == "gaussian-learned":
            return self._split(out)[0]
        return out


# ============================================================================ the base class
class Model:
    """Shared plumbing: backend, parameter and gradient stores, configuration."""

    kind = "model"

    def __init__(self, backend: Backend | None, seed: int | None) -> None:
        if backend is None:
            backend = get_backend("numpy", "float32", seed=0 if seed is None else seed)
        self.backend = backend
        self.xp = backend.xp
        self.params, self.grads = ParamStore.with_gradients(self._shapes(), backend)
        self.workspace = Workspace(backend)  # loss_and_grads' reused buffers
        for net in self._nets():
            net.init_params(self.params, backend)

    # -- subclasses provide ---------------------------------------------------------------
    def _nets(self) -> Sequence[MLP]:
        raise NotImplementedError

    def forward(
        self,
        x: Array,
        noise: Mapping[str, Array] | None = None,
        train: bool = True,
        workspace: Workspace | None = None,
    ):
        """(terms, cache). With a ``workspace`` the cache's arrays are its reused buffers."""
        raise NotImplementedError

    def backward(self, cache: Any) -> ParamStore:
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for net in self._nets():
            shapes.update(net.shapes())
        return shapes

    def _masks(self, batch_size: int) -> dict[str, Array]:
        masks: dict[str, Array] = {}
        for net in self._nets():
            masks.update(net.draw_masks(self.backend, batch_size))
        return masks

    def draw_noise(self, batch_size: int) -> dict[str, Array]:
        """All the noise one training step uses (dropout masks; subclasses add theirs)."""
        return self._masks(batch_size)

    def loss_and_grads(
        self, x: Array, noise: Mapping[str, Array] | None = None, **forward_options: Any
    ) -> tuple[Terms, ParamStore]:
        """One training step's forward and backward. ``noise`` None: drawn from the backend.

        The step's intermediate arrays live in ``self.workspace`` and are reused by the next
        call (the cache never leaves this call, so nothing can see them change).
        ``forward_options``: e.g. ``kl_weight`` for a VAE."""
        terms, cache = self.forward(
            x, noise, train=True, workspace=self.workspace, **forward_options
        )
        return terms, self.backward(cache)

    def _buffer(self, ws: Workspace | None, name: str, shape: tuple[int, ...]) -> Array:
        """The workspace's array ``name`` (kept from step to step), or a new one without one."""
        a = scratch(ws, name, shape)
        return self.xp.empty(shape, dtype=self.backend.dtype) if a is None else a

    def loss(
        self, x: Array, noise: Mapping[str, Array] | None = None, train: bool = False
    ) -> Terms:
        """Forward only (evaluation by default: no dropout, no input corruption)."""
        return self.forward(x, noise, train=train)[0]

    def _prepare(self, x: Array) -> Array:
        x = self.backend.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"expected input of shape (batch, {self.n_features}), got {tuple(x.shape)}"
            )
        return x

    @property
    def n_params(self) -> int:
        return self.params.size

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, {self.n_params} parameters, {self.backend})"


# ============================================================================ plain auto-encoder
class AE(Model):
    """x -> encoder -> code (linear, ``latent`` units) -> decoder -> reconstruction of x.

    ``loss = recon``: the decoder likelihood's negative log-likelihood (or squared error).
    With ``activation="identity"``, ``hidden=()`` and ``likelihood="mse"`` this is the linear AE
    whose decoder spans the principal subspace.
    """

    kind = "ae"

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (400,),
        latent: int = 20,
        activation: str = "relu",
        likelihood: str = "bernoulli",
        decoder_std: float = 1.0,
        dropout: float = 0.0,
        init: str | None = None,
        backend: Backend | None = None,
        seed: int | None = None,
    ) -> None:
        self.n_features = int(n_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.latent = int(latent)
        if self.n_features < 1 or self.latent < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(
                f"layer sizes must be >= 1 (features, hidden, latent); got "
                f"n_features={self.n_features}, hidden={list(self.hidden)}, latent={self.latent}"
            )
        self.activation = activation
        self.dropout = float(dropout)
        self.init = init
        self.lik = Likelihood(likelihood, decoder_std)
        self.encoder = MLP("encoder", self._encoder_sizes(), activation, dropout, init)
        self.decoder = MLP(
            "decoder",
            (self.latent, *reversed(self.hidden), self.lik.n_out(self.n_features)),
            activation,
            dropout,
            init,
        )
        super().__init__(backend, seed)

    def _encoder_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, self.latent)

    def _nets(self) -> Sequence[MLP]:
        return (self.encoder, self.decoder)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "model": self.kind,
            "n_features": self.n_features,
            "hidden": list(self.hidden),
            "latent": self.latent,
            "activation": self.activation,
            "likelihood": self.lik.kind,
            "decoder_std": self.lik.std,
            "dropout": self.dropout,
            "init": self.init,
        }

    # -- the training objective -----------------------------------------------------------
    def _corrupt(self, x: Array, noise: Mapping[str, Array]) -> Array:
        """The encoder's input. A plain AE sees x itself (DenoisingAE overrides this)."""
        return x

    def forward(
        self,
        x: Array,
        noise: Mapping[str, Array] | None = None,
        train: bool = True,
        workspace: Workspace | None = None,
    ):
        x = self._prepare(x)
        if train and noise is None:
            noise = self.draw_noise(x.shape[0])
        noise = noise if train else {}
        ws = workspace
        x_in = self._corrupt(x, noise) if train else x
        code, enc_cache = self.encoder.forward(self.params, x_in, noise, ws=ws)
        out, dec_cache = self.decoder.forward(self.params, code, noise, ws=ws)
        recon, lik_cache = self.lik.nll_and_cache(out, x, ws)  # the target is always the clean x
        terms = {"loss": recon, "recon": recon}
        return terms, (x, out, lik_cache, enc_cache, dec_cache, ws)

    def backward(self, cache: Any) -> ParamStore:
        x, out, lik_cache, enc_cache, dec_cache, ws = cache
        dout = self.lik.backward(out, x, lik_cache, ws)  # (B, D) or (B, 2D)
        dcode = self.decoder.backward(
            self.params, self.grads, dec_cache, dout, ws=ws
        )  # (B, latent)
        self.encoder.backward(self.params, self.grads, enc_cache, dcode, need_dx=False, ws=ws)
        return self.grads

    # -- using a trained model ------------------------------------------------------------
    def encode(self, x: Array) -> Array:
        """The code, (B, latent)."""
        return self.encoder.forward(self.params, self._prepare(x))[0]

    def decode(self, z: Array) -> Array:
        """Decoder output in data space (probabilities or means), (B, D)."""
        out, _ = self.decoder.forward(self.params, self.backend.asarray(z))
        return self.lik.mean(out)

    def reconstruct(self, x: Array) -> Array:
        return self.decode(self.encode(x))

    def sample(self, n: int) -> Array:
        """Decode codes drawn from N(0, I). An AE has no prior: expect poor samples."""
        return self.decode(self.backend.normal((n, self.latent)))


# ============================================================================ denoising AE
class DenoisingAE(AE):
    """An AE trained to reconstruct the clean x from a corrupted copy (training only).

    noise="gaussian":  x_in = x + sigma * n,   n ~ N(0, I)          (``noise_level`` = sigma)
    noise="mask":      x_in = x * m,           m ~ Bernoulli(1 - p)  (``noise_level`` = p:
                       the fraction of input pixels zeroed; no rescaling)
    """

    kind = "dae"

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (400,),
        latent: int = 20,
        noise: str = "gaussian",
        noise_level: float = 0.3,
        **kwargs: Any,
    ) -> None:
        if noise not in ("gaussian", "mask"):
            raise ValueError(f"unknown noise {noise!r}; choose 'gaussian' or 'mask'")
        if noise == "mask" and not 0.0 <= noise_level < 1.0:
            raise ValueError(f"masking fraction must be in [0, 1), got {noise_level}")
        if noise_level < 0:
            raise ValueError(f"noise level must be >= 0, got {noise_level}")
        self.noise = noise
        self.noise_level = float(noise_level)
        super().__init__(n_features, hidden, latent, **kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "noise": self.noise, "noise_level": self.noise_level}

    def draw_noise(self, batch_size: int) -> dict[str, Array]:
        noise = super().draw_noise(batch_size)
        shape = (batch_size, self.n_features)
        if self.noise == "gaussian":
            noise["input_noise"] = self.backend.normal(shape)
        else:
            noise["input_mask"] = self.backend.bernoulli(1.0 - self.noise_level, shape)
        return noise

    def corrupt(self, x: Array) -> Array:
        """A corrupted copy of x with fresh noise (for showing what the model is given)."""
        return self._corrupt(self._prepare(x), self.draw_noise(x.shape[0]))

    def _corrupt(self, x: Array, noise: Mapping[str, Array]) -> Array:
        if self.noise == "gaussian":
            return x + self.noise_level * noise["input_noise"]
        return x * noise["input_mask"]


# ============================================================================ sparse AE
class SparseAE(AE):
    """An AE whose code h = sigmoid(encoder(x)) is pushed to a mean activation rho per unit.

    loss = recon + beta * sum_j KL(rho || rho_hat_j),  rho_hat_j = mean over the batch of h_j.
    """

    kind = "sae"

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (),
        latent: int = 100,
        rho: float = 0.05,
        beta: float = 3.0,
        **kwargs: Any,
    ) -> None:
        if not 0.0 < rho < 1.0:
            raise ValueError(f"target activation rho must be in (0, 1), got {rho}")
        self.rho = float(rho)
        self.beta = float(beta)
        super().__init__(n_features, hidden, latent, **kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "rho": self.rho, "beta": self.beta}

    def forward(
        self,
        x: Array,
        noise: Mapping[str, Array] | None = None,
        train: bool = True,
        workspace: Workspace | None = None,
    ):
        x = self._prepare(x)
        if train and noise is None:
            noise = self.draw_noise(x.shape[0])
        noise = noise if train else {}
        ws = workspace
        a, enc_cache = self.encoder.forward(self.params, x, noise, ws=ws)  # (B, latent) pre-act.
        h, _ = sigmoid_forward(a)  # the sparse code, in (0, 1)
        out, dec_cache = self.decoder.forward(self.params, h, noise, ws=ws)
        recon, lik_cache = self.lik.nll_and_cache(out, x, ws)
        sparsity = sparsity_kl(h, self.rho)
        terms = {"loss": recon + self.beta * sparsity, "recon": recon, "sparsity": sparsity}
        return terms, (x, h, out, lik_cache, enc_cache, dec_cache, ws)

    def backward(self, cache: Any) -> ParamStore:
        x, h, out, lik_cache, enc_cache, dec_cache, ws = cache
        dout = self.lik.backward(out, x, lik_cache, ws)
        dh = self.decoder.backward(self.params, self.grads, dec_cache, dout, ws=ws)  # (B, latent)
        dh = dh + self.beta * sparsity_kl_backward(h, self.rho)
        da = sigmoid_backward(h, dh)  # dh * h (1 - h)
        self.encoder.backward(self.params, self.grads, enc_cache, da, need_dx=False, ws=ws)
        return self.grads

    def encode(self, x: Array) -> Array:
        """The sparse code sigmoid(encoder(x)), (B, latent), in (0, 1)."""
        return sigmoid_forward(super().encode(x))[0]


# ============================================================================ VAE
class VAE(AE):
    """Variational auto-encoder (Kingma & Welling 2014).

    encoder:  x -> [mu | logvar]  (B, 2L)    q(z|x) = N(mu, diag(exp(logvar)))
    sample:   z = mu + exp(logvar/2) * eps,  eps ~ N(0, I)      (reparameterization)
    decoder:  z -> p(x|z)  (Bernoulli logits or Gaussian mean)
    loss = -ELBO = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I))    (beta = 1: the ELBO)
    """

    kind = "vae"

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (400,),
        latent: int = 20,
        beta: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if beta < 0:
            raise ValueError(f"KL weight beta must be >= 0, got {beta}")
        self.beta = float(beta)
        super().__init__(n_features, hidden, latent, **kwargs)

    def _encoder_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, 2 * self.latent)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "beta": self.beta}

    def draw_noise(self, batch_size: int) -> dict[str, Array]:
        noise = super().draw_noise(batch_size)
        noise["eps"] = self.backend.normal((batch_size, self.latent))
        return noise

    def forward(
        self,
        x: Array,
        noise: Mapping[str, Array] | None = None,
        train: bool = True,
        kl_weight: float | None = None,
        workspace: Workspace | None = None,
    ):
        """-ELBO and its terms for one eps draw per example. ``kl_weight`` overrides beta
        (the trainer's warm-up). ``train=False`` turns dropout off, not the sampling."""
        x = self._prepare(x)
        if noise is None:
            noise = self.draw_noise(x.shape[0])
        beta = self.beta if kl_weight is None else float(kl_weight)
        ws = workspace
        h, enc_cache = self.encoder.forward(self.params, x, noise if train else None, ws=ws)
        if "eps" not in noise:
            raise ValueError("VAE noise needs 'eps' of shape (batch, latent); use draw_noise(B)")
        z, rp_cache, kl = self._sample_and_kl(h, noise["eps"], ws)
        out, dec_cache = self.decoder.forward(self.params, z, noise if train else None, ws=ws)
        recon, lik_cache = self.lik.nll_and_cache(out, x, ws)
        terms = {"loss": recon + beta * kl, "recon": recon, "kl": kl}
        cache = (x, h, out, lik_cache, beta, enc_cache, rp_cache, dec_cache, ws)
        return terms, cache

    def _sample_and_kl(
        self, h: Array, eps: Array, ws: Workspace | None
    ) -> tuple[Array, tuple[Array, Array], Array]:
        """z = mu + sigma * eps, its cache (eps, sigma), and KL(q(z|x) || N(0, I)), from the
        encoder's output h = [mu | logvar] (B, 2L)."""
        L = self.latent
        mu, logvar = h[:, :L], h[:, L:]  # (B, L) each
        if compiled.applies(h, eps):  # the same two calls, one compiled pass
            z = self._buffer(ws, "latent.z", eps.shape)
            sigma = self._buffer(ws, "latent.sigma", eps.shape)
            return z, (eps, sigma), compiled.latent_forward(h, eps, z, sigma)
        z, rp_cache = reparam_forward(mu, logvar, eps)
        return z, rp_cache, gaussian_kl(mu, logvar)

    def backward(self, cache: Any) -> ParamStore:
        x, h, out, lik_cache, beta, enc_cache, rp_cache, dec_cache, ws = cache
        dout = self.lik.backward(out, x, lik_cache, ws)  # (B, D): sigmoid(l) - x, over B
        dz = self.decoder.backward(self.params, self.grads, dec_cache, dout, ws=ws)  # (B, L)
        # dL/d[mu | logvar] (B, 2L), each half written in place (no concatenate):
        #   dL/dmu = dz + beta dKL/dmu,   dL/dlogvar = dz eps sigma/2 + beta dKL/dlogvar
        L = self.latent
        mu, logvar = h[:, :L], h[:, L:]
        dh = self._buffer(ws, "latent.dh", h.shape)
        if is_cupy(dz):  # GPU: the lines below as one kernel (tests/test_fastpath.py, -m gpu)
            _cupy_latent_backward(dz, rp_cache, mu, logvar, beta / mu.shape[0], dh)
        elif compiled.applies(dz, h, dh, *rp_cache):  # Numba: the same lines, one pass
            compiled.latent_backward(dz, *rp_cache, h, beta, out=dh)
        else:
            dmu, dlogvar = reparam_backward(rp_cache, dz)  # through the sample
            dmu_kl, dlogvar_kl = gaussian_kl_backward(mu, logvar)  # through the KL
            self.xp.multiply(dmu_kl, beta, out=dh[:, :L])
            dh[:, :L] += dmu
            self.xp.multiply(dlogvar_kl, beta, out=dh[:, L:])
            dh[:, L:] += dlogvar
        self.encoder.backward(self.params, self.grads, enc_cache, dh, need_dx=False, ws=ws)
        return self.grads

    def encode(self, x: Array) -> tuple[Array, Array]:
        """(mu, logvar) of q(z|x), each (B, L)."""
        h = self.encoder.forward(self.params, self._prepare(x))[0]
        return h[:, : self.latent], h[:, self.latent :]

    def reconstruct(self, x: Array, sample: bool = False) -> Array:
        """decode(mu), or decode(z ~ q(z|x)) with ``sample=True``."""
        mu, logvar = self.encode(x)
        if sample:
            mu = reparam_forward(mu, logvar, self.backend.normal(mu.shape))[0]
        return self.decode(mu)

    def sample(self, n: int) -> Array:
        """n draws from the model: z ~ N(0, I), decoded to probabilities/means, (n, D)."""
        return self.decode(self.backend.normal((n, self.latent)))


def _cupy_latent_backward(
    dz: Array, rp_cache: tuple[Array, Array], mu: Array, logvar: Array, c: float, dh: Array
) -> None:
    """CuPy: reparam_backward + beta * gaussian_kl_backward in one kernel (c = beta / B),
    written into the halves of dh (B, 2L)."""
    eps, sigma = rp_cache
    L = mu.shape[1]
    kernel = cupy_kernel(
        "scratchvae_latent_bwd",
        "T dz, T eps, T sigma, T mu, T lv, T c",
        "T dmu, T dlv",
        "dmu = dz + c * mu; dlv = dz * eps * (T)0.5 * sigma + c * (T)0.5 * (exp(lv) - (T)1)",
    )
    kernel(dz, eps, sigma, mu, logvar, mu.dtype.type(c), dh[:, :L], dh[:, L:])


# ============================================================================ factory
MODELS: dict[str, type[AE]] = {"ae": AE, "dae": DenoisingAE, "sae": SparseAE, "vae": VAE}


def build_model(config: Mapping[str, Any], backend: Backend | None = None) -> AE:
    """Rebuild a model from its ``config`` (as saved in a checkpoint)."""
    config = dict(config)
    kind = config.pop("model", None)
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    return MODELS[kind](backend=backend, **config)
