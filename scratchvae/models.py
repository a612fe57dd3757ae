"""The plain AE and the VAE, built from the ops with hand-written backward passes.

Every model has

* ``params`` / ``grads``: :class:`ParamStore` mappings ``"encoder.0.W" -> array``;
* ``draw_noise(B)``: the noise one training step uses, drawn from the backend generator;
* ``forward(x, noise) -> (terms, cache)`` and ``backward(cache) -> grads``: one op call per
  line, the backward mirroring the forward line by line;
* ``loss_and_grads(x, noise=None) -> (terms, grads)``: both, the one call a trainer needs.

``terms`` maps names to 0-d backend arrays (no host sync): ``loss`` (what is minimised),
``recon`` and ``kl`` (VAE) or ``sparsity`` (SparseAE). All are sum over features, mean over
the batch: nats per example for the likelihood-based terms. The denoising and sparse AEs are in
:mod:`scratchvae.autoencoders`. ``grads`` is the model's own
gradient store, overwritten by the next call: copy it (``grads.copy()``) to keep it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .backend import Backend, get_backend
from .mlp import MLP, MLPCache
from .ops.losses import Likelihood, LikelihoodCache
from .ops.reparam import LatentCache, latent_backward, latent_forward, reparam_forward
from .params import ParamStore, Workspace, scope

Array = Any
Terms = dict[str, Array]
Noise = Mapping[str, Array]


# ============================================================================ the base class
class Model:
    """Shared plumbing: backend, parameter and gradient stores, noise, the training call."""

    kind = "model"
    n_features: int
    latent: int

    def __init__(self, backend: Backend | None, seed: int | None) -> None:
        if backend is None:
            backend = get_backend("numpy", "float32", seed=0 if seed is None else seed)
        self.backend = backend
        self.xp = backend.xp
        self.params, self.grads = ParamStore.with_gradients(self._shapes(), backend)
        self.workspace = Workspace()  # loss_and_grads' reused arrays
        for net in self._nets():
            net.init_params(self.params, backend)

    # -- subclasses provide ---------------------------------------------------------------
    def _nets(self) -> Sequence[MLP]:
        raise NotImplementedError

    def forward(
        self,
        x: Array,
        noise: Noise | None = None,
        train: bool = True,
        kl_weight: float | None = None,
        ws: Workspace | None = None,
    ) -> tuple[Terms, Any]:
        """(terms, cache). ``train=False``: no dropout, no input corruption (a VAE still
        samples). ``kl_weight`` overrides a VAE's beta (the trainer's warm-up); models without a
        KL term ignore it. With a workspace ``ws`` the cache's arrays are its reused arrays."""
        raise NotImplementedError

    def backward(self, cache: Any, ws: Workspace | None = None) -> ParamStore:
        """Every parameter's gradient, written into ``self.grads`` (returned)."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def kl_beta(self) -> float | None:
        """The weight of the model's KL term (a VAE's beta), None for a model without one."""
        return None

    # -- shared ---------------------------------------------------------------------------
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for net in self._nets():
            shapes.update(net.shapes())
        return shapes

    def draw_noise(
        self, batch_size: int, backend: Backend | None = None, train: bool = True
    ) -> dict[str, Array]:
        """All the noise one step uses, from ``backend``'s generator (default: the model's):
        dropout masks in training (subclasses add theirs: eps, input corruption)."""
        masks: dict[str, Array] = {}
        if train:
            for net in self._nets():
                masks.update(net.draw_masks(backend or self.backend, batch_size))
        return masks

    def _noise(self, x: Array, noise: Noise | None, train: bool) -> Noise:
        return self.draw_noise(x.shape[0], train=train) if noise is None else noise

    def loss_and_grads(
        self, x: Array, noise: Noise | None = None, kl_weight: float | None = None
    ) -> tuple[Terms, ParamStore]:
        """One training step's forward and backward. ``noise`` None: drawn from the backend.

        The step's intermediate arrays live in ``self.workspace`` and are reused by the next
        call (the cache never leaves this call, so nothing can see them change)."""
        ws = self.workspace
        terms, cache = self.forward(x, noise, train=True, kl_weight=kl_weight, ws=ws)
        return terms, self.backward(cache, ws)

    def loss(self, x: Array, noise: Noise | None = None, train: bool = False) -> Terms:
        """Forward only (evaluation by default: no dropout, no input corruption)."""
        return self.forward(x, noise, train=train)[0]

    def prepare(self, x: Array) -> Array:
        """x as a (batch, n_features) array of this backend's dtype, or a one-line ValueError."""
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
class AECache(NamedTuple):
    enc: MLPCache  # the encoder's
    dec: MLPCache  # the decoder's
    lik: LikelihoodCache  # the reconstruction loss's


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
        decoder_sizes = (self.latent, *reversed(self.hidden), self.lik.n_out(self.n_features))
        self.decoder = MLP("decoder", decoder_sizes, activation, dropout, init)
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

    def _corrupt(self, x: Array, noise: Noise) -> Array:
        """The encoder's input in training. A plain AE sees x itself (DenoisingAE overrides)."""
        return x

    def forward(self, x, noise=None, train=True, kl_weight=None, ws=None):  # noqa: ANN001, ANN201
        x = self.prepare(x)
        noise = self._noise(x, noise, train)
        masks = noise if train else None
        x_in = self._corrupt(x, noise) if train else x  # x~ for a denoising AE
        code, enc = self.encoder.forward(self.params, x_in, masks, ws)  # (B, latent)
        out, dec = self.decoder.forward(self.params, code, masks, ws)  # (B, D)
        recon, lik = self.lik.forward(out, x, ws=scope(ws, "lik"))  # target: the clean x
        return {"loss": recon, "recon": recon}, AECache(enc, dec, lik)

    def backward(self, cache: AECache, ws: Workspace | None = None) -> ParamStore:
        dout = self.lik.backward(cache.lik, 1.0, scope(ws, "lik"))  # dL/dout, (B, D)
        dcode = self.decoder.backward(self.params, self.grads, cache.dec, dout, ws=ws)
        self.encoder.backward(self.params, self.grads, cache.enc, dcode, False, ws)
        return self.grads

    # -- using a trained model ------------------------------------------------------------
    def encode(self, x: Array) -> Array:
        """The code, (B, latent)."""
        return self.encoder.forward(self.params, self.prepare(x))[0]

    def decode(self, z: Array) -> Array:
        """Decoder output in data space (probabilities or means), (B, D)."""
        out, _ = self.decoder.forward(self.params, self.backend.asarray(z))
        return self.lik.mean(out)

    def reconstruct(self, x: Array) -> Array:
        return self.decode(self.encode(x))

    def sample(self, n: int) -> Array:
        """Decode codes drawn from N(0, I). An AE has no prior: expect poor samples."""
        return self.decode(self.backend.normal((n, self.latent)))


# ============================================================================ VAE
class VAECache(NamedTuple):
    enc: MLPCache  # the encoder's: x -> h = [mu | logvar]
    latent: LatentCache  # the latent layer's: h, eps -> z, KL
    dec: MLPCache  # the decoder's: z -> logits
    lik: LikelihoodCache  # the reconstruction loss's
    beta: float  # the KL weight of this step: dL/dKL


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

    @property
    def kl_beta(self) -> float:
        return self.beta

    def draw_noise(self, batch_size, backend=None, train=True):  # noqa: ANN001, ANN201
        noise = super().draw_noise(batch_size, backend, train)
        noise["eps"] = (backend or self.backend).normal((batch_size, self.latent))
        return noise

    def forward(self, x, noise=None, train=True, kl_weight=None, ws=None):  # noqa: ANN001, ANN201
        """-ELBO and its terms for one eps draw per example."""
        x = self.prepare(x)
        noise = self._noise(x, noise, train)
        if "eps" not in noise:
            raise ValueError("VAE noise needs 'eps' of shape (batch, latent); use draw_noise(B)")
        masks, beta = (noise if train else None), self.beta if kl_weight is None else kl_weight
        h, enc = self.encoder.forward(self.params, x, masks, ws)  # [mu | logvar], (B, 2L)
        (z, kl), lat = latent_forward(h, noise["eps"], scope(ws, "latent"))  # z (B, L), KL
        out, dec = self.decoder.forward(self.params, z, masks, ws)  # logits, (B, D)
        recon, lik = self.lik.forward(out, x, ws=scope(ws, "lik"))  # -log p(x|z)
        terms = {"loss": recon + beta * kl, "recon": recon, "kl": kl}
        return terms, VAECache(enc, lat, dec, lik, float(beta))

    def backward(self, cache: VAECache, ws: Workspace | None = None) -> ParamStore:
        dout = self.lik.backward(cache.lik, 1.0, scope(ws, "lik"))  # dL/dlogits, (B, D)
        dz = self.decoder.backward(self.params, self.grads, cache.dec, dout, ws=ws)  # (B, L)
        dh = latent_backward(cache.latent, dz, cache.beta, scope(ws, "latent")).dh  # (B, 2L)
        self.encoder.backward(self.params, self.grads, cache.enc, dh, False, ws)
        return self.grads

    def encode(self, x: Array) -> tuple[Array, Array]:
        """(mu, logvar) of q(z|x), each (B, L)."""
        h = self.encoder.forward(self.params, self.prepare(x))[0]
        return h[:, : self.latent], h[:, self.latent :]

    def reconstruct(self, x: Array, sample: bool = False) -> Array:
        """decode(mu), or decode(z ~ q(z|x)) with ``sample=True``."""
        mu, logvar = self.encode(x)
        if sample:
            mu = reparam_forward(mu, logvar, self.backend.normal(mu.shape))[0]
        return self.decode(mu)


# ============================================================================ factory
MODEL_KINDS = ("vae", "ae", "dae", "sae")


def model_classes() -> dict[str, type[AE]]:
    """kind -> class: the two here and the AE variants of :mod:`scratchvae.autoencoders`."""
    from .autoencoders import DenoisingAE, SparseAE  # noqa: PLC0415 - they subclass AE

    return {"vae": VAE, "ae": AE, "dae": DenoisingAE, "sae": SparseAE}


def build_model(config: Mapping[str, Any], backend: Backend | None = None) -> AE:
    """Rebuild a model from its ``config`` (as saved in a checkpoint)."""
    config = dict(config)
    kind = config.pop("model", None)
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return model_classes()[kind](backend=backend, **config)
