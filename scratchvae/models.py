"""The plain AE and the VAE, built from the ops with hand-written backward passes.

Every model has

* ``params`` / ``grads``: :class:`ParamStore` mappings ``"encoder.0.W" -> array``;
* ``draw_noise(B)``: the noise one training step uses, drawn from the backend generator;
* ``forward(x, noise) -> (terms, cache)`` and ``backward(cache) -> grads``: one op call per
  line, the backward mirroring the forward line by line;
* ``loss_and_grads(x, noise=None) -> (terms, grads)``: both, the one call a trainer needs.

``terms`` maps names to 0-d backend arrays (no host sync): ``loss`` (what is minimised),
``recon``, ``kl`` (VAE; the k log-weights step has none) or ``sparsity`` (SparseAE), summed
over features, averaged over the batch (nats per example). ``grads`` is the model's own store,
overwritten by the next call: copy it. A cache made by ``forward(..., ws=workspace)`` holds that
workspace's arrays: a later forward into the same workspace overwrites it (backward first).
The AE variants are in :mod:`scratchvae.autoencoders`; the caches in :mod:`.model_caches`; the
VAE's k log-weights step (IWAE, stl, dreg) in :mod:`.vae_weighted`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .backend import Backend, get_backend, is_floating, row_chunks
from .factory import MODEL_KINDS, build_model, model_classes  # noqa: F401 - the public names
from .inputs import (
    check_backend,
    check_codes,
    check_targets,
    foreign_cache,
    layer_sizes,
    real,
    whole,
)
from .mlp import MLP
from .model_caches import AECache, IWCache, VAECache
from .ops.iwae import ESTIMATORS
from .ops.losses import Likelihood, weighted
from .ops.reparam import (
    all_rows,
    latent_backward,
    latent_forward,
    noise_eps,
    per_sample,
    reparam_forward,
    repeat_backward,
    repeat_forward,
)
from .params import ParamStore, Workspace, scope
from .vae_weighted import _backward_weighted, _forward_weighted

Array = Any
OBJECTIVES = ("elbo", "iwae")
Terms = dict[str, Array]
Noise = Mapping[str, Array]


# ============================================================================ the base class
class Model:
    """Shared plumbing: backend, parameter and gradient stores, noise, the training call."""

    kind = "model"
    rows_independent = True  # each row's loss term depends on that row only (see .parallel)
    n_features: int
    latent: int
    lik: Likelihood  # the decoder's likelihood: its output -> the reconstruction loss

    def __init__(self, backend: Backend | None, seed: int | None) -> None:
        check_backend(backend, seed)
        if backend is None:
            backend = get_backend("numpy", "float32", seed=0 if seed is None else seed)
        self.backend = backend
        self.xp = backend.xp
        self.params, self.grads = ParamStore.with_gradients(self._shapes(), backend)
        self.workspace = Workspace()  # loss_and_grads' reused arrays
        for net in self._nets():
            net.init_params(self.params, backend)

    # -- what a subclass defines (and lik) -----------------------------------------------
    def _nets(self) -> Sequence[MLP]:
        """The networks whose parameters the model holds (encoder, decoder)."""
        raise NotImplementedError(f"{type(self).__name__} must define _nets(): its MLPs")

    @property
    def config(self) -> dict[str, Any]:
        """What :func:`build_model` rebuilds the model from (saved in checkpoints)."""
        raise NotImplementedError(f"{type(self).__name__} must define config: its settings")

    def forward(
        self,
        x: Array,
        noise: Noise | None = None,
        train: bool = True,
        kl_weight: float | None = None,
        ws: Workspace | None = None,
    ) -> tuple[Terms, Any]:
        """(terms, cache). train=False: no dropout or corruption; kl_weight: a VAE's beta."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(): the loss")

    def backward(self, cache: Any, ws: Workspace | None = None) -> ParamStore:
        """``self.grads`` for the loss whose ``cache`` forward made, of the class's own cache
        type (a subclass narrows it: ``ignore[override]``; another's: ``foreign_cache``)."""
        raise NotImplementedError(f"{type(self).__name__} must define backward(): the grads")

    kl_beta = property(lambda self: None, doc="The KL term's weight (a VAE's beta), else None.")

    # -- shared ---------------------------------------------------------------------------
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for net in self._nets() for name, shape in net.shapes().items()}

    def draw_noise(
        self, batch_size: int, backend: Backend | None = None, train: bool = True
    ) -> dict[str, Array]:
        """All the noise one step uses, from ``backend``'s generator (default: the model's):
        dropout masks in training (subclasses add theirs: eps, input corruption)."""
        masks: dict[str, Array] = {}
        batch_size = whole(batch_size, "batch_size", 0)
        if train:
            for net in self._nets():
                masks.update(net.draw_masks(backend or self.backend, batch_size))
        return masks

    def _noise(self, x: Array, noise: Noise | None, train: bool) -> Noise:
        return self.draw_noise(x.shape[0], train=train) if noise is None else noise

    def loss_and_grads(
        self, x: Array, noise: Noise | None = None, kl_weight: float | None = None
    ) -> tuple[Terms, ParamStore]:
        """One training step's forward and backward (``noise`` None: drawn from the backend).
        Its arrays live in ``self.workspace``, reused by the next call (the cache never leaves
        this call). On NumPy a large batch is split across the CPU threads (:mod:`.parallel`)."""
        x, split = self.prepare(x, 1), self.rows_independent and self.backend.name == "numpy"
        noise, chunks = self._noise(x, noise, True), row_chunks(x.shape[0]) if split else None
        if chunks:
            from .parallel import split_loss_and_grads  # noqa: PLC0415 - the split step's

            return split_loss_and_grads(self, x, noise, kl_weight, chunks)
        terms, cache = self.forward(x, noise, True, kl_weight, self.workspace)
        return terms, self.backward(cache, self.workspace)

    def loss(self, x: Array, noise: Noise | None = None, train: bool = False) -> Terms:
        """Forward only (evaluation by default: no dropout, no input corruption)."""
        return self.forward(x, noise, train=train)[0]

    def prepare(self, x: Array, min_rows: int = 0) -> Array:
        """x as a (batch, n_features) array of this backend's dtype with at least ``min_rows``
        rows (a loss: 1, its mean over an empty batch has no value), or a one-line ValueError.
        Input that is not floating point (uint8 grey levels 0..255, ints, bools, a list) is
        checked against the likelihood (finite; in [0, 1] for Bernoulli); float input is not
        (every training step would pay for it): ``fit`` and ``evaluate`` check their data."""
        floating = is_floating(x)  # float input: no check (the step's path stays as it was)
        if not floating and getattr(getattr(x, "dtype", None), "kind", "") == "c":
            raise ValueError(f"input has dtype {x.dtype}; expected real numbers (uint8 or float)")
        x = self.backend.asarray(x)  # (a complex cast would drop the imaginary part)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected input of shape (batch, {self.n_features}), got {x.shape}")
        if x.shape[0] < min_rows:
            raise ValueError("a loss needs at least one example; the batch is empty")
        if not floating:
            check_targets(x, self.lik.kind)
        return x

    n_params = property(lambda self: self.params.size, doc="Scalars in all parameters.")

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
        self.n_features, self.hidden, self.latent = layer_sizes(n_features, hidden, latent)
        self.activation = activation
        self.dropout = float(real(dropout, "dropout"))  # type: ignore[arg-type]  # not None
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
        sizes = {"n_features": self.n_features, "hidden": list(self.hidden), "latent": self.latent}
        return {"model": self.kind, **sizes, "activation": self.activation,
                "likelihood": self.lik.kind, "decoder_std": self.lik.std,
                "dropout": self.dropout, "init": self.init}  # fmt: skip

    def _corrupt(self, x: Array, noise: Noise) -> Array:
        """The encoder's input in training. A plain AE sees x itself (DenoisingAE overrides)."""
        return x

    def forward(
        self,
        x: Array,
        noise: Noise | None = None,
        train: bool = True,
        kl_weight: float | None = None,
        ws: Workspace | None = None,
    ) -> tuple[Terms, AECache]:
        x = self.prepare(x, 1)
        noise = self._noise(x, noise, train)
        masks = noise if train else None  # each MLP reads its dropout masks by name from it
        x_in = self._corrupt(x, noise) if train else x  # x~ for a denoising AE
        code, enc = self.encoder.forward(self.params, x_in, masks, ws)  # (B, latent)
        out, dec = self.decoder.forward(self.params, code, masks, ws)  # e.g. logits, (B, D)
        recon, lik = self.lik.forward(out, x, ws=scope(ws, "lik"))  # target: the clean x
        return {"loss": recon, "recon": recon}, AECache(enc, dec, lik)

    def backward(self, cache: AECache, ws: Workspace | None = None) -> ParamStore:
        isinstance(cache, AECache) or foreign_cache(cache, self)  # else one line
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
        z = check_codes(self.backend.asarray(z), self.latent)  # (B, latent), else ValueError
        return self.lik.mean(self.decoder.forward(self.params, z)[0])

    def reconstruct(self, x: Array) -> Array:
        return self.decode(self.encode(x))

    def sample(self, n: int) -> Array:
        """Decode codes drawn from N(0, I). An AE has no prior: expect poor samples."""
        return self.decode(self.backend.normal((whole(n, "n", 0), self.latent)))


# ============================================================================ VAE
class VAE(AE):
    """Variational auto-encoder (Kingma & Welling 2014).

    encoder:  x -> [mu | logvar]  (B, 2L)    q(z|x) = N(mu, diag(exp(logvar)))
    sample:   z = mu + exp(logvar/2) * eps,  eps ~ N(0, I)      (reparameterization)
    decoder:  z -> p(x|z)  (Bernoulli logits or Gaussian mean)
    loss = -ELBO = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I))    (beta = 1: the ELBO)

    With ``k`` samples per example the ``objective`` says how they combine: ``"elbo"`` the mean
    of k single-sample ELBOs (the step above, on k copies of each example), ``"iwae"`` the
    importance-weighted bound L_k (:mod:`scratchvae.ops.iwae`), whose encoder gradient the
    ``estimator`` gives (pathwise, stl, dreg). With k = 1 the IWAE bound is the ELBO and the
    pathwise step is the one above; ``stl`` (and ``dreg``, the same at k = 1) use log w, from
    k = 1 draws of shape (1, B, L).
    """

    kind = "vae"

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (400,),
        latent: int = 20,
        beta: float = 1.0,
        objective: str = "elbo",
        k: int = 1,
        estimator: str = "pathwise",
        **kwargs: Any,
    ) -> None:
        if not 0 <= real(beta, "beta") < math.inf:  # type: ignore[operator]  # NaN, "1" too
            raise ValueError(f"KL weight beta must be >= 0 and finite, got {beta}")
        if objective not in OBJECTIVES or estimator not in ESTIMATORS:
            raise ValueError(
                f"objective must be one of {', '.join(OBJECTIVES)}, estimator one of "
                f"{', '.join(ESTIMATORS)}; got {objective!r}, {estimator!r}"
            )
        if estimator == "dreg" and objective != "iwae":
            raise ValueError("the dreg estimator needs the iwae objective; use pathwise or stl")
        self.beta, self.k = float(beta), whole(k, "k")  # 2.7 draws: refused, not truncated
        self.objective, self.estimator = objective, estimator
        # the k log-weights path: the IWAE bound (k > 1), or any estimator but pathwise
        self.weighted = estimator != "pathwise" or (objective == "iwae" and self.k > 1)
        super().__init__(n_features, hidden, latent, **kwargs)

    def _encoder_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, 2 * self.latent)

    @property
    def config(self) -> dict[str, Any]:
        config = {**super().config, "beta": self.beta}
        if (self.objective, self.k, self.estimator) != ("elbo", 1, "pathwise"):  # older files
            config.update(objective=self.objective, k=self.k, estimator=self.estimator)
        return config

    kl_beta = property(lambda self: self.beta, doc="The KL weight beta of the loss.")

    def draw_noise(
        self, batch_size: int, backend: Backend | None = None, train: bool = True
    ) -> dict[str, Array]:
        """eps (B, L); in training (k, B, L) for k samples per example when k > 1 or the
        estimator is stl or dreg (the log-weights path, k = 1 included)."""
        noise = super().draw_noise(batch_size, backend, train)
        bk, k, B, L = backend or self.backend, self.k if train else 1, int(batch_size), self.latent
        if k > 1:  # the decoder runs on k B draws: one dropout mask row each
            noise.update(self.decoder.draw_masks(bk, k * B))
        noise["eps"] = bk.normal((k, B, L) if k > 1 or (train and self.weighted) else (B, L))
        return noise

    def forward(  # type: ignore[override]  # a VAE's caches, not an AE's (Model.backward)
        self,
        x: Array,
        noise: Noise | None = None,
        train: bool = True,
        kl_weight: float | None = None,
        ws: Workspace | None = None,
    ) -> tuple[Terms, VAECache | IWCache]:
        """-ELBO and its terms (the mean over k draws), or -L_k (iwae; train=False: -ELBO)."""
        x = self.prepare(x, 1)
        noise = self._noise(x, noise, train)
        eps = noise_eps(noise, x.shape[0], self.latent)  # (B, L) or (k, B, L), else ValueError
        masks, beta = (noise if train else None), self.beta if kl_weight is None else kl_weight
        h, enc = self.encoder.forward(self.params, x, masks, ws)  # [mu | logvar], (B, 2L)
        if self.weighted and eps.ndim == 3:
            return self._forward_weighted(x, h, enc, eps, masks, float(beta), ws)
        k = eps.size // (x.shape[0] * self.latent)  # k draws per example
        hk, copies = repeat_forward(h, k)  # (k B, 2L): k copies (k = 1: h itself)
        (z, kl), lat = latent_forward(hk, eps.reshape(-1, self.latent), scope(ws, "latent"))
        out, dec = self.decoder.forward(self.params, z, masks, ws)  # e.g. logits, (k B, D)
        recon, lik = self.lik.forward(per_sample(out, k), x, ws=scope(ws, "lik"))  # -log p(x|z)
        terms = {"loss": recon + weighted(beta, kl), "recon": recon, "kl": kl}
        return terms, VAECache(enc, copies, lat, dec, lik, float(beta))

    def backward(self, cache: VAECache | IWCache, ws: Workspace | None = None) -> ParamStore:  # type: ignore[override]  # its own caches
        isinstance(cache, (VAECache, IWCache)) or foreign_cache(cache, self)  # else one line
        if isinstance(cache, IWCache):
            return self._backward_weighted(cache, ws)
        dout = self.lik.backward(cache.lik, 1.0, scope(ws, "lik"))  # dL/dout: (k, B, D) or (B, D)
        dz = self.decoder.backward(self.params, self.grads, cache.dec, all_rows(dout), ws=ws)
        dhk = latent_backward(cache.latent, dz, cache.beta, scope(ws, "latent")).dh  # (k B, 2L)
        dh = repeat_backward(cache.copies, dhk)  # the k copies' sum, (B, 2L)
        self.encoder.backward(self.params, self.grads, cache.enc, dh, False, ws)
        return self.grads

    # the k log-weights step (IWAE, stl, dreg): scratchvae/vae_weighted.py
    _forward_weighted, _backward_weighted = _forward_weighted, _backward_weighted

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
