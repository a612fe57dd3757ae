"""Optimizers: SGD (momentum, Nesterov) and Adam, with optional global-norm clipping.

``opt.step(params, grads)`` updates ``params`` in place. ``params`` and ``grads`` are mappings
with the same keys (a model's :class:`ParamStore` pair, or plain dicts of arrays). For a
ParamStore the update runs on its one flat buffer: a few whole-buffer operations, whatever the
number of layers. The optimizer's state (velocities, moments, step count) lives here, apart
from the parameters, and is exported by :meth:`state_dict` for checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .backend import get_xp, op
from .inputs import real
from .params import ParamStore, Workspace, buffer

Array = Any


def _pairs(
    params: Mapping[str, Array], grads: Mapping[str, Array]
) -> list[tuple[str, Array, Array]]:
    """(key, param, grad) triples; one 'flat' triple for a pair of ParamStores."""
    if isinstance(params, ParamStore) and isinstance(grads, ParamStore):
        return [("flat", params.flat, grads.flat)]
    if params.keys() != grads.keys():
        raise ValueError("params and grads must have the same keys")
    return [(k, params[k], grads[k]) for k in params]


def global_norm(grads: list[Array]) -> Array:
    """sqrt(sum over all gradients of g^2), a 0-d array (no host sync)."""
    xp = get_xp(grads[0])
    return xp.sqrt(sum(xp.vdot(g.ravel(), g.ravel()) for g in grads))


def clip_by_global_norm(grads: list[Array], max_norm: float) -> Array:
    """Scale all gradients in place by min(1, max_norm / ||g||). Returns ||g|| before clipping.

    The factor is computed on the device: no branch on its value, so no sync on GPU.
    """
    xp = get_xp(grads[0])
    norm = global_norm(grads)
    scale = xp.minimum(1.0, max_norm / (norm + 1e-12)).astype(grads[0].dtype)
    for g in grads:
        g *= scale
    return norm


def _whole_number(t: Any) -> bool:
    """Whether ``t`` is one whole number >= 0: a Python int or a 0-d integer array."""
    if isinstance(t, bool) or not isinstance(t, int) and getattr(t, "dtype", None) is None:
        return False
    if not isinstance(t, int) and (t.dtype.kind not in "iu" or t.ndim != 0):
        return False
    return int(t) >= 0


class Optimizer:
    """Base: step counting, clipping, state export and checks. A subclass defines the update
    of one parameter array (``_update``) and the state it keeps (``state_shapes``)."""

    def __init__(self, lr: float, clip_norm: float | None = None) -> None:
        if not 0 < lr < math.inf:  # NaN too
            raise ValueError(f"learning rate must be > 0 and finite, got {lr}")
        if clip_norm is not None and not clip_norm > 0:  # NaN too: it would scale by NaN
            raise ValueError(f"clip norm must be > 0, got {clip_norm}")
        self.lr = float(lr)
        self.clip_norm = clip_norm
        self._t_host = 0  # steps taken, until the first step makes the counter below
        self._t: Array | None = None  # steps taken: a 0-d array of the parameters' module
        self.state: dict[str, Array] = {}
        self.last_grad_norm: Array | None = None  # before clipping; set when clipping is on
        self.workspace = Workspace()  # the update's scratch (not part of the state)

    @property
    def t(self) -> int:
        """The number of steps taken (reads the device counter on a GPU: a sync)."""
        return self._t_host if self._t is None else int(self._t)

    @t.setter
    def t(self, value: int) -> None:
        self._t_host, self._t = int(value), None

    def step(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
        """One update of ``params`` in place. The step count is advanced where the parameters
        live (``t += 1`` on the device on a GPU), so a step replayed from a CUDA graph counts
        too."""
        pairs = _pairs(params, grads)
        if self.clip_norm is not None:
            self.last_grad_norm = clip_by_global_norm([g for _, _, g in pairs], self.clip_norm)
        if self._t is None:
            self._t = get_xp(pairs[0][1]).asarray(self._t_host, dtype="int64")
        self._t += 1
        for key, p, g in pairs:
            self._update(key, p, g)

    # A subclass defines the two methods below: the update rule and the state it keeps.
    def _update(self, key: str, p: Array, g: Array) -> None:
        """Update the parameter array ``p`` (named ``key``) in place from its gradient ``g``."""
        raise NotImplementedError(
            f"{type(self).__name__} must define _update(key, p, g): the update of one "
            "parameter array in place"
        )

    def _state_array(self, name: str, like: Array) -> Array:
        """The state array ``name`` (kept between steps, saved in checkpoints), zero at first."""
        if name not in self.state:
            self.state[name] = get_xp(like).zeros_like(like)
        return self.state[name]

    def state_dict(self) -> dict[str, Any]:
        """Step count and COPIES of the state arrays (backend arrays; convert at the saving
        boundary). Copies: a live reference would change under a restored optimizer's feet."""
        return {"t": self.t, **{k: v.copy() for k, v in self.state.items()}}

    def state_shapes(self, params: Mapping[str, Array]) -> dict[str, tuple[int, ...]]:
        """The state arrays a step on ``params`` keeps, by key, with their shapes (what
        :meth:`check_state` holds a loaded state to)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define state_shapes(params): the state arrays its "
            "step keeps, by key, with their shapes ({} when it keeps none)"
        )

    def check_state(self, state: Mapping[str, Any], params: Mapping[str, Array]) -> None:
        """Raise ValueError (one line) unless ``state`` is a state this optimizer could have
        made for ``params``: the step count a whole number >= 0, exactly the keys of
        :meth:`state_shapes` (or none before the first step), each array of that shape, of the
        parameters' dtype and finite. Run before anything is loaded: a state of the wrong size
        would otherwise reach the compiled update, which indexes every array by the
        parameters' size."""
        t: Any = state.get("t")  # an int or a 0-d integer array once checked
        if not _whole_number(t):
            raise ValueError(f"optimizer step count must be a whole number >= 0, got {t!r}")
        expected = self.state_shapes(params)
        given = {k for k in state if k != "t"}
        if given != set(expected) and not (int(t) == 0 and not given):
            missing, extra = sorted(set(expected) - given), sorted(given - set(expected))
            raise ValueError(f"optimizer state keys differ: missing {missing}, unexpected {extra}")
        dtype = next(iter(params.values())).dtype
        for key in sorted(given):
            a = state[key]
            if tuple(a.shape) != expected[key] or a.dtype != dtype:
                raise ValueError(
                    f"optimizer state {key} is {a.dtype.name}{list(a.shape)}, "
                    f"expected {dtype.name}{list(expected[key])}"
                )
            if not bool(get_xp(a).isfinite(a).all()):
                raise ValueError(f"optimizer state {key} holds NaN or infinite values")

    def load_state_dict(
        self, state: Mapping[str, Any], params: Mapping[str, Array] | None = None
    ) -> None:
        """Restore :meth:`state_dict` output; with ``params``, first :meth:`check_state`."""
        if params is not None:
            self.check_state(state, params)
        self.t = int(state["t"])
        self.state = {k: v.copy() for k, v in state.items() if k != "t"}  # own its buffers


class SGD(Optimizer):
    """Stochastic gradient descent with (Nesterov) momentum, in PyTorch's convention:

    v = momentum * v + g
    p = p - lr * v                       (plain momentum)
    p = p - lr * (g + momentum * v)      (Nesterov)
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_norm)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = nesterov

    def state_shapes(self, params: Mapping[str, Array]) -> dict[str, tuple[int, ...]]:
        if self.momentum == 0.0:
            return {}
        return {f"v.{key}": tuple(p.shape) for key, p, _ in _pairs(params, params)}

    def _update(self, key: str, p: Array, g: Array) -> None:
        if self.momentum == 0.0:
            p -= self.lr * g
            return
        v = self._state_array(f"v.{key}", p)
        v *= self.momentum
        v += g
        if self.nesterov:
            p -= self.lr * (g + self.momentum * v)
        else:
            p -= self.lr * v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction:

        m = b1 m + (1 - b1) g              first moment
        v = b2 v + (1 - b2) g^2            second moment
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    The first step moves every parameter by lr * g / (|g| + eps) ~ lr in magnitude.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        clip_norm: float | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__(lr, clip_norm)
        pair = isinstance(betas, (tuple, list)) and len(betas) == 2
        b1, b2 = (float(real(b, "Adam betas") or 0.0) for b in betas) if pair else (-1.0, -1.0)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):  # NaN too
            raise ValueError(f"Adam betas must be two numbers in [0, 1), got {betas}")
        # eps > 0: with 0 a gradient of 0 is a step 0/0, and a moment v flushed to 0 below the
        # smallest normal number (m not) a step of inf, where PyTorch's v stays subnormal
        eps = float(real(eps, "Adam eps") or 0.0)  # a string: one-line TypeError
        if not 0.0 < eps < math.inf:  # NaN too
            raise ValueError(f"Adam eps must be > 0 and finite, got {eps}")
        self.b1, self.b2, self.eps = b1, b2, eps
        self.fused = bool(fused)  # False: the readable reference update (same result to rounding)

    def _update(self, key: str, p: Array, g: Array) -> None:
        m, v = self._moments(key, p)
        if self.fused:
            self._update_fused(key, p, g, m, v)
        else:
            self._update_reference(p, g, m, v)

    def _moments(self, key: str, p: Array) -> tuple[Array, Array]:
        """(m, v) for the parameter ``key``, zero at first: the two rows of one allocation,
        for the huge pages of :meth:`scratchvae.params.ParamStore.with_gradients`."""
        m, v = self.state.get(f"m.{key}"), self.state.get(f"v.{key}")
        if m is None or v is None:
            both = get_xp(p).zeros((2, *p.shape), dtype=p.dtype)
            m = self.state[f"m.{key}"] = both[0]
            v = self.state[f"v.{key}"] = both[1]
        return m, v

    def state_shapes(self, params: Mapping[str, Array]) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for key, p, _ in _pairs(params, params):
            shapes[f"m.{key}"] = shapes[f"v.{key}"] = tuple(p.shape)
        return shapes

    def check_state(self, state: Mapping[str, Any], params: Mapping[str, Array]) -> None:
        super().check_state(state, params)
        for key, v in state.items():
            if key.startswith("v.") and bool((v < 0).any()):
                raise ValueError(f"optimizer state {key} (second moment) has negative values")

    def load_state_dict(
        self, state: Mapping[str, Any], params: Mapping[str, Array] | None = None
    ) -> None:
        super().load_state_dict(state, params)
        for key in [k[2:] for k in self.state if k.startswith("m.")]:
            m, v = self.state[f"m.{key}"], self.state.get(f"v.{key}")
            if v is not None and m.shape == v.shape and m.dtype == v.dtype:
                both = get_xp(m).stack([m, v])  # one allocation again, as _moments makes
                self.state[f"m.{key}"], self.state[f"v.{key}"] = both[0], both[1]

    def _update_reference(self, p: Array, g: Array, m: Array, v: Array) -> None:
        """The update as written in the paper (the readable version; temporaries allocated)."""
        xp = get_xp(p)
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * (g * g)
        # lr * m_hat / (sqrt(v_hat) + eps), each correction a scalar: m_hat = m / (1 - b1^t)
        # as lr / (1 - b1^t) on the step, sqrt(v_hat) = sqrt(v) / sqrt(1 - b2^t); eps is added
        # to sqrt(v_hat), after the correction, as in the paper
        step_size = self.lr / (1 - self.b1**self.t)
        denom = xp.sqrt(v)
        denom /= math.sqrt(1 - self.b2**self.t)
        denom += self.eps
        p -= step_size * m / denom

    def _update_fused(self, key: str, p: Array, g: Array, m: Array, v: Array) -> None:
        """The same update as :func:`adam_update` (one op: one pass with a kernel)."""
        ws = self.workspace.scope(key)
        adam_update(p, g, m, v, self._t, self.lr, self.b1, self.b2, self.eps, ws)


@op
def adam_update(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    t: Array,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    ws: Workspace | None = None,
) -> None:
    """Adam's step number ``t`` (>= 1, a 0-d integer array) on p, g, m, v (any shape, the same
    for all), in place, one work buffer:

    m = b1 m + (1 - b1) g
    v = b2 v + (1 - b2) g^2
    p -= step * m / (sqrt(v) + eps c2)      step = lr c2 / (1 - b1^t),  c2 = sqrt(1 - b2^t)

    (the bias corrections m / (1 - b1^t) and v / (1 - b2^t) folded into two scalars:
    multiply the numerator and the denominator of lr m_hat / (sqrt(v_hat) + eps) by c2).
    t is an array, not a number, so that on a GPU the corrections are computed on the device
    from the device's step count, and a step replayed from a CUDA graph uses the right ones.

    A moment below the smallest normal number (``finfo.tiny``) is stored as 0 (NaN stays
    NaN). A weight whose gradient stays 0 (a pixel never on, a dead ReLU unit) has
    m = 0.9^t m_0: subnormal after about 800 steps in float32, and arithmetic on subnormal
    numbers takes the CPU's slow path (this update ran 3.4x slower on the MNIST VAE once 10%
    of m was subnormal). The parameter moves by less than step * tiny / (eps c2) =
    lr tiny / ((1 - b1^t) eps) either way, far below its rounding.
    """
    xp = get_xp(p)
    c2 = xp.sqrt(1 - b2**t)
    step, eps_hat = lr * c2 / (1 - b1**t), eps * c2
    tmp = buffer(ws, "tmp", p.shape, p)
    # b1 m + (1 - b1) g, PyTorch's documented formula: m = g exactly when b1 = 0
    # (m + (1 - b1)(g - m) was off by up to ulp(old m)); v's two terms are >= 0, so v is exact
    # to rounding for any b2
    m *= b1
    xp.multiply(g, 1 - b1, out=tmp)
    m += tmp
    v *= b2
    xp.multiply(g, g, out=tmp)
    tmp *= 1 - b2
    v += tmp
    tiny = xp.finfo(p.dtype).tiny  # m = m * 1[|m| >= tiny],  v = v * 1[v >= tiny]
    xp.greater_equal(xp.abs(m, out=tmp), tiny, out=tmp)
    m *= tmp
    xp.greater_equal(v, tiny, out=tmp)
    v *= tmp
    xp.sqrt(v, out=tmp)
    tmp += eps_hat.astype(p.dtype)
    xp.divide(m, tmp, out=tmp)
    tmp *= step.astype(p.dtype)
    p -= tmp


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def build_optimizer(
    name: str, lr: float, clip_norm: float | None = None, **kwargs: Any
) -> Optimizer:
    """``adam`` or ``sgd`` by name."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr=lr, clip_norm=clip_norm, **kwargs)
