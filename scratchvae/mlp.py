"""A multilayer perceptron built from Dense, an activation and (optionally) Dropout.

    h_0 = x
    a_i = h_{i-1} @ W_i + b_i,   h_i = dropout(act(a_i))      for the hidden layers i < n
    out = h_{n-1} @ W_n + b_n                                 (last layer linear)

Parameters are named ``<prefix>.<i>.W`` / ``<prefix>.<i>.b``; the MLP only knows the names,
the arrays live in the model's :class:`~scratchvae.params.ParamStore`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import compiled
from .activations import get_activation
from .backend import Backend, cupy_kernel, get_xp, is_cupy
from .init import INITIALISERS, default_init, fan_in_uniform, fan_in_uniform_bias
from .layers import (
    dense_backward,
    dense_forward,
    dropout_backward,
    dropout_forward,
    dropout_mask,
)
from .params import Workspace, scratch

Array = Any

# per layer: parameters, dropout mask, and the workspace buffers of forward and backward
_KEYS = ("W", "b", "dropout", "a", "h", "h_drop", "dh_drop", "da", "dx")


def _bias_relu(a: Array, b: Array, out: Array) -> Array:
    """relu(a + b) into ``out``: :func:`scratchvae.compiled.bias_relu`, or one CuPy kernel."""
    if is_cupy(a):
        kernel = cupy_kernel(
            "scratchvae_bias_relu", "T a, T b", "T h", "T v = a + b; h = v <= (T)0 ? (T)0 : v"
        )
        return kernel(a, b, out)
    return compiled.bias_relu(a, b, out=out)


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
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"{prefix}: layer sizes must be >= 1 and at least two, got {sizes}")
        self.prefix = prefix
        self.sizes = tuple(int(s) for s in sizes)
        self.act = get_activation(activation)
        self.dropout = float(dropout)
        self.init_name = init or default_init(activation)
        if self.init_name not in INITIALISERS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITIALISERS)}")
        # the names forward and backward look up, built once: keys[i]["W"] == name(i, "W")
        self.keys = [{what: self.name(i, what) for what in _KEYS} for i in range(self.n_layers)]

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
    ) -> tuple[Array, list]:
        """x: (B, sizes[0]) -> out: (B, sizes[-1]). ``masks`` None means evaluation (no dropout).

        With a workspace ``ws`` every result (and the returned ``out``) is one of its buffers,
        overwritten by the next pass."""
        cache = []
        h = x
        B = x.shape[0]
        for i, key in enumerate(self.keys):
            W, b = params[key["W"]], params[key["b"]]
            hidden = i < self.n_layers - 1
            a_out = scratch(ws, key["a"], (B, W.shape[1]))
            h_out = scratch(ws, key["h"], (B, W.shape[1])) if hidden else None
            if hidden and self._fused_relu(h, a_out, h_out):
                # the same two ops, fast: x @ W by BLAS, then bias + ReLU in one pass
                a = get_xp(h).matmul(h, W, out=a_out)
                dense_cache, h = h, _bias_relu(a, b, out=h_out)
                act_cache = h  # ReLU's cache: its output
            else:
                a, dense_cache = dense_forward(W, b, h, out=a_out)
                if not hidden:
                    cache.append((dense_cache, None, None))
                    return a, cache
                h, act_cache = self.act.forward(a, out=h_out)
            mask = masks.get(key["dropout"]) if masks else None
            if mask is not None:
                h, _ = dropout_forward(h, mask, out=scratch(ws, key["h_drop"], h.shape))
            cache.append((dense_cache, act_cache, mask))
        raise AssertionError("unreachable")

    def _compiled_relu(self, *arrays: Array) -> bool:
        """Whether the fused bias + ReLU kernels apply (:mod:`scratchvae.compiled`): a ReLU
        network, Numba on, NumPy arrays, and buffers from a workspace to write into."""
        return self.act.name == "relu" and arrays[-1] is not None and compiled.applies(*arrays)

    def _fused_relu(self, *arrays: Array) -> bool:
        """The forward's fused bias + ReLU: with Numba on NumPy, or as a CuPy kernel on a GPU."""
        if self.act.name == "relu" and arrays[-1] is not None and is_cupy(arrays[0]):
            return True
        return self._compiled_relu(*arrays)

    def backward(
        self,
        params: Mapping[str, Array],
        grads: Mapping[str, Array],
        cache: list,
        dout: Array,
        need_dx: bool = True,
        ws: Workspace | None = None,
    ) -> Array | None:
        """Writes dL/dW_i, dL/db_i into ``grads``; returns dL/dx (B, sizes[0]) or None.

        With a workspace ``ws`` the intermediate gradients (and dL/dx) are its buffers."""
        dh = dout
        for i in reversed(range(self.n_layers)):
            dense_cache, act_cache, mask = cache[i]
            key = self.keys[i]
            db = grads[key["b"]]
            bias_done = False
            if i < self.n_layers - 1:  # undo dropout, then the activation: da = dh * act'(a)
                if mask is not None:
                    dh_drop = scratch(ws, key["dh_drop"], dh.shape)
                    dh = dropout_backward(mask, dh, out=dh_drop)
                da = scratch(ws, key["da"], dh.shape)
                if self._compiled_relu(act_cache, dh, db, da):
                    # the same two ops, fast: ReLU's backward and the bias gradient in one pass
                    dh, bias_done = compiled.relu_backward_bias_grad(act_cache, dh, da, db), True
                else:
                    dh = self.act.backward(act_cache, dh, out=da)
            want_dx = need_dx or i > 0
            dh, _, _ = dense_backward(
                params[key["W"]],
                dense_cache,
                dh,
                out_dW=grads[key["W"]],
                out_db=db,
                need_dx=want_dx,
                out_dx=scratch(ws, key["dx"], dense_cache.shape) if want_dx else None,
                need_db=not bias_done,
            )
        return dh
