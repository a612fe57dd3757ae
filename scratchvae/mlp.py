"""A multilayer perceptron: hidden layers (dense + activation, then dropout), a linear output.

    h_0     = x
    h_{i+1} = dropout(act(h_i @ W_i + b_i))      for the hidden layers i = 0 .. n-2
    out     = h_{n-1} @ W_{n-1} + b_{n-1}        (the last layer, i = n-1, is linear)

with n = ``n_layers`` = len(sizes) - 1. Layer i's parameters are named ``<prefix>.<i>.W`` /
``<prefix>.<i>.b`` (W_i: (sizes[i], sizes[i+1])); the MLP only knows the names,
the arrays live in the model's :class:`~scratchvae.params.ParamStore`, and the gradients go into
a second store with the same names. Each line below is one op call; backward is forward read
from the bottom up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .backend import Backend
from .init import INITIALISERS, default_init, fan_in_uniform, fan_in_uniform_bias
from .inputs import real, whole
from .ops.activations import get_activation
from .ops.layers import (
    DenseCache,
    DropoutCache,
    dense_backward,
    dense_forward,
    dropout_backward,
    dropout_forward,
    dropout_mask,
    hidden_layer,
)
from .params import Workspace, scope

Array = Any


class LayerNames(NamedTuple):
    W: str  # "<prefix>.<i>.W"
    b: str  # "<prefix>.<i>.b"
    dropout: str  # the key of this layer's dropout mask in the noise
    scope: str  # "<prefix>.<i>": the layer's arrays in a workspace


class MLPCache(NamedTuple):
    hidden: list[Any]  # per hidden layer: the dense + activation op's cache
    dropout: list[DropoutCache | None]  # per hidden layer: its dropout's (None: no dropout)
    out: DenseCache  # the linear output layer's cache


class MLP:
    """``sizes = (n_in, h_1, ..., n_out)``; ``activation`` between layers, none after the last."""

    def __init__(
        self,
        prefix: str,
        sizes: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        init: str | None = None,
    ) -> None:
        try:
            whole_sizes = tuple(whole(s, "size") for s in sizes)  # 2.5 or "2": refused, not cut
        except ValueError:
            whole_sizes = ()
        if len(whole_sizes) < 2:
            raise ValueError(
                f"{prefix}: layer sizes must be >= 1 and at least two (whole numbers), got {sizes}"
            )
        self.prefix = prefix
        self.sizes = whole_sizes
        self.act = get_activation(activation)  # (an unknown name fails here)
        # a hidden layer's op pair: dense_relu_forward/_backward (one fused op) for "relu",
        # else dense_act_forward/_backward with this activation (ops/layers.py::hidden_layer)
        self.hidden_forward, self.hidden_backward = hidden_layer(activation)
        self.dropout = float(real(dropout, "dropout"))  # type: ignore[arg-type]  # never None
        if not 0.0 <= self.dropout < 1.0:  # NaN too
            raise ValueError(
                f"dropout must be in [0, 1) (the fraction of units zeroed), got {dropout}"
            )
        self.init_name = init or default_init(activation)
        if self.init_name not in INITIALISERS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITIALISERS)}")
        self.names = [  # (mypy can't count the three names a generator unpacks: call-arg)
            LayerNames(*(self.name(i, what) for what in ("W", "b", "dropout")), f"{prefix}.{i}")  # type: ignore[call-arg]
            for i in range(self.n_layers)
        ]

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def name(self, i: int, what: str) -> str:
        return f"{self.prefix}.{i}.{what}"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            shapes[self.name(i, "W")] = (n_in, n_out)
            shapes[self.name(i, "b")] = (n_out,)
        return shapes

    def init_params(self, params: Mapping[str, Array], backend: Backend) -> None:
        """He (ReLU family) or Glorot for hidden layers, Glorot for the linear output layer,
        zero biases; or ``uniform`` (PyTorch's default) for every weight and bias."""
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            W, b = self.name(i, "W"), self.name(i, "b")
            if self.init_name == "uniform":
                params[W][...] = fan_in_uniform(backend, n_in, n_out)
                params[b][...] = fan_in_uniform_bias(backend, n_in, (n_out,))
                continue
            init = INITIALISERS["glorot" if i == self.n_layers - 1 else self.init_name]
            params[W][...] = init(backend, n_in, n_out)
            params[b][...] = 0

    def draw_masks(self, backend: Backend, batch_size: int) -> dict[str, Array]:
        """Dropout masks for the hidden layers (empty without dropout)."""
        if self.dropout == 0.0:
            return {}
        return {
            self.name(i, "dropout"): dropout_mask(backend, (batch_size, n), self.dropout)
            for i, n in enumerate(self.sizes[1:-1])
        }

    def forward(
        self,
        params: Mapping[str, Array],
        x: Array,
        masks: Mapping[str, Array] | None = None,
        ws: Workspace | None = None,
    ) -> tuple[Array, MLPCache]:
        """x: (B, sizes[0]) -> out: (B, sizes[-1]). ``masks`` None means evaluation (no
        dropout); in training (``masks`` given) an MLP with dropout needs every hidden layer's
        mask, of that layer's shape (else a one-line ValueError: not a silent step without
        dropout, nor one row's mask broadcast over the batch). With a workspace every result
        is one of its arrays, reused by the next pass."""
        train = masks is not None and self.dropout > 0  # (no dropout layer: no mask read)
        masks = (masks or {}) if self.dropout > 0 else {}
        hidden, dropout = [], []
        h = x
        for names in self.names[:-1]:
            lws = scope(ws, names.scope)
            h, layer = self.hidden_forward(h, params[names.W], params[names.b], lws)  # act(hW+b)
            mask = masks.get(names.dropout)  # None: no dropout layer, or evaluation
            if train:
                self._check_mask(names.dropout, mask, h.shape)
            h, drop = (
                dropout_forward(h, mask, scope(lws, "dropout")) if mask is not None else (h, None)
            )
            hidden.append(layer)
            dropout.append(drop)
        last = self.names[-1]
        out, out_cache = dense_forward(h, params[last.W], params[last.b], scope(ws, last.scope))
        return out, MLPCache(hidden, dropout, out_cache)

    @staticmethod
    def _check_mask(name: str, mask: Array | None, shape: tuple[int, ...]) -> None:
        if mask is None or tuple(mask.shape) != tuple(shape):
            got = "none" if mask is None else f"shape {tuple(mask.shape)}"
            raise ValueError(
                f"dropout needs the mask {name!r} of shape {tuple(shape)} for this batch, "
                f"got {got}; use model.draw_noise({shape[0]})"
            )

    def backward(
        self,
        params: Mapping[str, Array],
        grads: Mapping[str, Array],
        cache: MLPCache,
        dout: Array,
        need_dx: bool = True,
        ws: Workspace | None = None,
    ) -> Array | None:
        """Writes dL/dW_i, dL/db_i into ``grads``; returns dL/dx (B, sizes[0]), or None with
        ``need_dx=False`` (the encoder's input is the data: nothing to send it back to)."""
        last = self.names[-1]
        dh = dense_backward(
            cache.out,
            dout,
            scope(ws, last.scope),
            need_dx or self.n_layers > 1,
            grads[last.W],
            grads[last.b],
        ).dx
        for i in reversed(range(self.n_layers - 1)):
            names, lws = self.names[i], scope(ws, self.names[i].scope)
            if cache.dropout[i] is not None:
                dh = dropout_backward(cache.dropout[i], dh, scope(lws, "dropout"))
            dh = self.hidden_backward(
                cache.hidden[i], dh, lws, need_dx or i > 0, grads[names.W], grads[names.b]
            ).dx
        return dh

    def input_grad(self, params: Mapping[str, Array], cache: MLPCache, dout: Array) -> Array:
        """dL/dx alone (for the gradient estimators, which differentiate with respect to the
        MLP's input): the weight gradients are computed into new arrays (``out=None``) and
        dropped."""
        scratch = {name: None for name in self.shapes()}
        return self.backward(params, scratch, cache, dout)
