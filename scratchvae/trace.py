"""A backprop trace: one training step written out op by op, from the loss back to the input.

:func:`trace_step` replays ``VAE.forward`` / ``VAE.backward`` with the op functions themselves
(``dense_*``, the activations, ``dropout_*``, ``reparam_*``, the losses), in the same order and
with the same noise, and records one :class:`TraceRow` per backward op: the op, the shapes of
its forward input and output, the gradient it produces (``dL/d<input>``), that gradient's shape
and norm, and the backward rule. The branch through the sample (z = mu + sigma * eps into mu and
logvar), the KL branch into mu and logvar, and their sum each get their own rows. At the end the
gradients are compared with ``model.loss_and_grads(x, noise)``: the trace is the model's step.

With ``check=True`` every op's backward is also checked on the spot: the op is re-run in float64
on copies of its inputs, and its backward is compared with :func:`~scratchvae.gradcheck.
numerical_vjp` (central differences) along the same upstream gradient; the row shows the
maximum relative error (~1e-8 or less when the backward is right).

Plain, denoising and sparse auto-encoders are traced the same way: the denoising AE's encoder
reads the corrupted x~ while its loss compares with the clean x; the sparse AE adds the sigmoid
code and its sparsity penalty's branch.

:func:`format_trace` prints the rows as a table a student reads top to bottom: the loss first,
the input last. ``scratchvae trace`` (see :func:`add_arguments`, :func:`run_cli`) prints it for
the default VAE on the embedded digits.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .activations import Activation, get_activation
from .backend import Backend, get_backend, get_xp, to_numpy
from .gradcheck import assert_close, numerical_vjp
from .layers import dense_backward, dense_forward, dropout_backward, dropout_forward
from .losses import (
    bernoulli_nll,
    bernoulli_nll_backward,
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
from .models import AE, VAE, DenoisingAE, SparseAE
from .reparam import reparam_backward, reparam_forward

Array = Any
Check = Callable[[], float]

__all__ = ["TraceRow", "add_arguments", "format_trace", "run_cli", "trace_step"]


@dataclass
class TraceRow:
    """One backward op of the step.

    op: the function (or the arithmetic) that produced the gradient; at: where in the model;
    in_shapes / out_shape: the op's forward input(s) and output; grad: the gradient produced
    (``dL/d<input>``), with its shape and L2 norm; rule: the backward formula;
    params: ``name -> (shape, norm)`` of the parameter gradients the op produced;
    rel_err: the numerical check's maximum relative error (None when not checked).
    """

    op: str
    at: str
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    grad: str
    grad_shape: tuple[int, ...]
    grad_norm: float
    rule: str
    params: dict[str, tuple[tuple[int, ...], float]] = field(default_factory=dict)
    rel_err: float | None = None


def _norm(a: Array) -> float:
    return float(to_numpy(get_xp(a).linalg.norm(get_xp(a).ravel(a))))


def _f64(a: Array) -> Array:
    """A float64 copy (the numerical checks run in double precision)."""
    return a.astype("float64") if hasattr(a, "astype") else float(a)


def _vjp_err(forward: Callable[[Array], Array], x: Array, dout: Array, analytic: Array) -> float:
    """Error of ``analytic`` against the numerical J^T dout of ``forward`` at x, relative to the
    gradient's scale: max |a - n| / max(max |a|, max |n|). (An entrywise relative error would
    be dominated by near-zero entries, where the differences' round-off ~1e-10 is all there is.)
    """
    num = numerical_vjp(forward, x, dout)
    xp = get_xp(num)
    scale = max(float(to_numpy(xp.abs(analytic).max())), float(to_numpy(xp.abs(num).max())))
    return float(to_numpy(xp.abs(analytic - num).max())) / max(scale, 1e-300)


class _Tracer:
    """Collects rows (in backward order) and runs each row's check when asked."""

    def __init__(self, check: bool) -> None:
        self.check = check
        self.rows: list[TraceRow] = []

    def add(
        self,
        op: str,
        at: str,
        ins: list[Array],
        out: Array,
        grad: str,
        g: Array,
        rule: str,
        params: Mapping[str, Array] | None = None,
        checker: Check | None = None,
    ) -> None:
        self.rows.append(
            TraceRow(
                op=op,
                at=at,
                in_shapes=[tuple(getattr(a, "shape", ())) for a in ins],
                out_shape=tuple(getattr(out, "shape", ())),
                grad=grad,
                grad_shape=tuple(getattr(g, "shape", ())),
                grad_norm=_norm(g),
                rule=rule,
                params={k: (tuple(v.shape), _norm(v)) for k, v in (params or {}).items()},
                rel_err=checker() if (self.check and checker is not None) else None,
            )
        )


# ============================================================================ the MLP, op by op
def _mlp_forward(net: MLP, params: Mapping[str, Array], x: Array, noise: Mapping) -> tuple:
    """The same ops as ``MLP.forward``; returns out and a per-layer cache (a, h_in, act, mask)."""
    layers = []
    h = x
    for i in range(net.n_layers):
        W, b = params[net.name(i, "W")], params[net.name(i, "b")]
        a, _ = dense_forward(W, b, h)  # (B, n_out)
        if i == net.n_layers - 1:
            layers.append((h, a, None, None, None))
            return a, layers
        y, act_cache = net.act.forward(a)
        mask = noise.get(net.name(i, "dropout")) if noise else None
        h_next, _ = dropout_forward(y, mask)
        layers.append((h, a, y, act_cache, mask))
        h = h_next
    raise AssertionError("unreachable")


def _mlp_backward(
    tr: _Tracer,
    net: MLP,
    params: Mapping[str, Array],
    grads: dict[str, Array],
    layers: list,
    dout: Array,
    in_name: str,
) -> Array:
    """Rows for every layer of ``net`` from its output back to its input; returns dL/dinput."""
    dh = dout
    for i in reversed(range(net.n_layers)):
        h, a, y, act_cache, mask = layers[i]
        if i < net.n_layers - 1:
            d_before = dh
            dh = dropout_backward(mask, dh)
            if mask is not None:
                tr.add(
                    "dropout_backward",
                    net.name(i, "dropout"),
                    [y],
                    y,
                    f"dL/d{net.prefix}.act{i}",
                    dh,
                    "dx = dy * mask",
                    checker=_dropout_check(mask, y, d_before, dh),
                )
            d_before = dh
            dh = net.act.backward(act_cache, dh)
            tr.add(
                f"{net.act.name}_backward",
                net.name(i, net.act.name),
                [a],
                y,
                f"dL/d{net.prefix}.a{i}",
                dh,
                _ACT_RULES[net.act.name],
                checker=_act_check(net.act, a, d_before, dh),
            )
        W, b = params[net.name(i, "W")], params[net.name(i, "b")]
        d_y = dh
        dh, dW, db = dense_backward(W, h, d_y)
        grads[net.name(i, "W")], grads[net.name(i, "b")] = dW, db
        target = f"dL/d{net.prefix}.h{i}" if i > 0 else f"dL/d{in_name}"
        tr.add(
            "dense_backward",
            net.name(i, "dense"),
            [h],
            a,
            target,
            dh,
            "dx = dy W^T;  dW = x^T dy;  db = sum_B dy",
            params={net.name(i, "W"): dW, net.name(i, "b"): db},
            checker=_dense_check(W, b, h, d_y, (dh, dW, db)),
        )
    return dh


_ACT_RULES = {
    "identity": "dx = dy",
    "relu": "dx = dy * 1[x > 0]",
    "leaky_relu": "dx = dy * (1 if x > 0 else 0.01)",
    "elu": "dx = dy * (1 if x > 0 else y + alpha)",
    "tanh": "dx = dy * (1 - y^2)",
    "sigmoid": "dx = dy * y (1 - y)",
    "softplus": "dx = dy * sigmoid(x)",
}


# ============================================================================ per-op checks
def _dense_check(W: Array, b: Array, h: Array, dy: Array, ana: tuple) -> Check:
    def run() -> float:
        W64, b64, h64, dy64 = _f64(W), _f64(b), _f64(h), _f64(dy)
        dx, dW, db = dense_backward(W64, h64, dy64)
        return max(
            _vjp_err(lambda v: dense_forward(W64, b64, v)[0], h64, dy64, dx),
            _vjp_err(lambda v: dense_forward(v, b64, h64)[0], W64, dy64, dW),
            _vjp_err(lambda v: dense_forward(W64, v, h64)[0], b64, dy64, db),
        )

    return run


def _act_check(act: Activation, a: Array, dy: Array, _dx: Array) -> Check:
    def run() -> float:
        a64, dy64 = _f64(a), _f64(dy)
        dx = act.backward(act.forward(a64)[1], dy64)
        return _vjp_err(lambda v: act.forward(v)[0], a64, dy64, dx)

    return run


def _dropout_check(mask: Array, y: Array, dy: Array, _dx: Array) -> Check:
    def run() -> float:
        m64, y64, dy64 = _f64(mask), _f64(y), _f64(dy)
        return _vjp_err(
            lambda v: dropout_forward(v, m64)[0], y64, dy64, dropout_backward(m64, dy64)
        )

    return run


def _reparam_check(mu: Array, lv: Array, eps: Array, dz: Array) -> tuple[Check, Check]:
    mu64, lv64, eps64, dz64 = _f64(mu), _f64(lv), _f64(eps), _f64(dz)

    def grads() -> tuple[Array, Array]:
        return reparam_backward(reparam_forward(mu64, lv64, eps64)[1], dz64)

    def on_mu() -> float:
        return _vjp_err(lambda v: reparam_forward(v, lv64, eps64)[0], mu64, dz64, grads()[0])

    def on_lv() -> float:
        return _vjp_err(lambda v: reparam_forward(mu64, v, eps64)[0], lv64, dz64, grads()[1])

    return on_mu, on_lv


def _kl_check(mu: Array, lv: Array) -> tuple[Check, Check]:
    mu64, lv64 = _f64(mu), _f64(lv)

    def on_mu() -> float:
        ana = gaussian_kl_backward(mu64, lv64)[0]
        return _vjp_err(lambda v: gaussian_kl(v, lv64), mu64, 1.0, ana)

    def on_lv() -> float:
        ana = gaussian_kl_backward(mu64, lv64)[1]
        return _vjp_err(lambda v: gaussian_kl(mu64, v), lv64, 1.0, ana)

    return on_mu, on_lv


# ============================================================================ the likelihood
def _lik_backward(tr: _Tracer, model: AE, out: Array, x: Array) -> Array:
    """Rows for the reconstruction term; returns dL/dout (the decoder output's gradient)."""
    kind = model.lik.kind
    xp = get_xp(out)
    o64, x64 = _f64(out), _f64(x)
    if kind == "bernoulli":
        d = bernoulli_nll_backward(out, x)

        def chk() -> float:
            ana = bernoulli_nll_backward(o64, x64)
            return _vjp_err(lambda v: bernoulli_nll(v, x64), o64, 1.0, ana)

        tr.add(
            "bernoulli_nll_backward",
            "recon",
            [out],
            (),
            "dL/dlogits",
            d,
            "dl = (sigmoid(l) - x) / B",
            checker=chk,
        )
        return d
    if kind == "mse":
        d = squared_error_backward(out, x)

        def chk() -> float:
            ana = squared_error_backward(o64, x64)
            return _vjp_err(lambda v: squared_error(v, x64), o64, 1.0, ana)

        tr.add(
            "squared_error_backward",
            "recon",
            [out],
            (),
            "dL/dy",
            d,
            "dy = 2 (y - x) / B",
            checker=chk,
        )
        return d
    if kind == "gaussian":
        lv = model.lik.fixed_logvar
        d = gaussian_nll_backward(out, x, lv)[0]

        def chk() -> float:
            ana = gaussian_nll_backward(o64, x64, lv)[0]
            return _vjp_err(lambda v: gaussian_nll(v, x64, lv), o64, 1.0, ana)

        tr.add(
            "gaussian_nll_backward",
            "recon",
            [out],
            (),
            "dL/dmean",
            d,
            "dmean = (mean - x) / sigma^2 / B",
            checker=chk,
        )
        return d
    D = out.shape[1] // 2  # gaussian-learned: out = [mean | logvar]
    mean, lv = out[:, :D], out[:, D:]
    dmean, dlv = gaussian_nll_backward(mean, x, lv)

    def chk() -> float:
        m64, l64 = o64[:, :D], o64[:, D:]
        a_m, a_l = gaussian_nll_backward(m64, x64, l64)
        return max(
            _vjp_err(lambda v: gaussian_nll(v, x64, l64), m64, 1.0, a_m),
            _vjp_err(lambda v: gaussian_nll(m64, x64, v), l64, 1.0, a_l),
        )

    d = xp.concatenate([dmean, dlv], axis=1)
    tr.add(
        "gaussian_nll_backward",
        "recon",
        [mean, lv],
        (),
        "dL/d[mean|logvar]",
        d,
        "dmean = (mean - x) e^-lv / B;  dlv = 0.5 (1 - (x - mean)^2 e^-lv) / B",
        checker=chk,
    )
    return d


# ============================================================================ the step
def trace_step(
    model: AE, x: Array, noise: Mapping[str, Array] | None = None, check: bool = False
) -> list[TraceRow]:
    """Rows of one training step's backward pass, the loss first and the input last.

    ``model``: a VAE (or a plain AE); ``x``: (B, D); ``noise``: as from ``model.draw_noise(B)``
    (drawn from the model's backend when None). Raises AssertionError if the replayed gradients
    differ from ``model.loss_and_grads(x, noise)``.
    """
    if type(model) not in (AE, DenoisingAE, SparseAE, VAE):
        raise TypeError(f"trace_step supports AE, DAE, SAE and VAE, got {type(model).__name__}")
    x = model.backend.asarray(x)
    if x.ndim != 2 or x.shape[1] != model.n_features:
        raise ValueError(f"expected x of shape (batch, {model.n_features}), got {tuple(x.shape)}")
    if noise is None:
        noise = model.draw_noise(x.shape[0])
    if isinstance(model, VAE):
        eps = noise.get("eps")
        want = (x.shape[0], model.latent)
        if eps is None or tuple(eps.shape) != want:
            raise ValueError(
                f"noise must hold 'eps' of shape {want}; draw it with model.draw_noise(batch)"
            )
    tr = _Tracer(check)
    grads: dict[str, Array] = {}
    if isinstance(model, VAE):
        _trace_vae(tr, model, x, noise, grads)
    elif isinstance(model, SparseAE):
        _trace_sae(tr, model, x, noise, grads)
    else:
        _trace_ae(tr, model, x, noise, grads)
    _assert_matches_model(model, x, noise, grads)
    return tr.rows


def _trace_vae(tr: _Tracer, model: VAE, x: Array, noise: Mapping, grads: dict) -> None:
    p, L, beta, xp = model.params, model.latent, model.beta, model.xp
    # ---- forward, as VAE.forward
    h, enc = _mlp_forward(model.encoder, p, x, noise)  # (B, 2L)
    mu, logvar = h[:, :L], h[:, L:]
    z, rp_cache = reparam_forward(mu, logvar, noise["eps"])  # (B, L)
    out, dec = _mlp_forward(model.decoder, p, z, noise)
    recon, kl = model.lik.nll(out, x), gaussian_kl(mu, logvar)
    loss = recon + beta * kl
    # ---- backward, loss first
    tr.add(
        "loss = recon + beta * kl",
        "loss",
        [recon, kl],
        loss,
        "dL/dloss",
        xp.asarray(1.0),
        f"dL/drecon = 1;  dL/dkl = beta = {beta:g}",
    )
    dout = _lik_backward(tr, model, out, x)
    dz = _mlp_backward(tr, model.decoder, p, grads, dec, dout, "z")
    dmu_s, dlv_s = reparam_backward(rp_cache, dz)
    c_mu, c_lv = _reparam_check(mu, logvar, noise["eps"], dz)
    tr.add(
        "reparam_backward",
        "z -> mu",
        [mu, logvar, noise["eps"]],
        z,
        "dL/dmu (via z)",
        dmu_s,
        "dmu = dz",
        checker=c_mu,
    )
    tr.add(
        "reparam_backward",
        "z -> logvar",
        [mu, logvar, noise["eps"]],
        z,
        "dL/dlogvar (via z)",
        dlv_s,
        "dlogvar = dz * eps * 0.5 exp(logvar/2)",
        checker=c_lv,
    )
    dmu_k, dlv_k = gaussian_kl_backward(mu, logvar)
    k_mu, k_lv = _kl_check(mu, logvar)
    tr.add(
        "gaussian_kl_backward",
        "kl -> mu",
        [mu, logvar],
        kl,
        "dKL/dmu",
        dmu_k,
        f"dmu = mu / B  (enters times beta = {beta:g})",
        checker=k_mu,
    )
    tr.add(
        "gaussian_kl_backward",
        "kl -> logvar",
        [mu, logvar],
        kl,
        "dKL/dlogvar",
        dlv_k,
        "dlogvar = 0.5 (exp(logvar) - 1) / B",
        checker=k_lv,
    )
    dmu, dlv = dmu_s + beta * dmu_k, dlv_s + beta * dlv_k
    tr.add(
        "sum of branches",
        "mu",
        [dmu_s, dmu_k],
        mu,
        "dL/dmu",
        dmu,
        "dL/dmu = dmu (via z) + beta dKL/dmu",
    )
    tr.add(
        "sum of branches",
        "logvar",
        [dlv_s, dlv_k],
        logvar,
        "dL/dlogvar",
        dlv,
        "dL/dlogvar = dlogvar (via z) + beta dKL/dlogvar",
    )
    dh = xp.concatenate([dmu, dlv], axis=1)
    tr.add(
        "split h = [mu | logvar]",
        "encoder out",
        [h],
        mu,
        "dL/dh",
        dh,
        "dh = concatenate(dmu, dlogvar)",
    )
    _mlp_backward(tr, model.encoder, p, grads, enc, dh, "x")


def _trace_ae(tr: _Tracer, model: AE, x: Array, noise: Mapping, grads: dict) -> None:
    """A plain AE, or a denoising AE: the encoder reads the corrupted x~, the loss the clean x
    (the corruption has no parameters, so the backward ends at x~)."""
    p = model.params
    denoising = isinstance(model, DenoisingAE)
    x_in = model._corrupt(x, noise) if denoising else x  # x~ = x + s n, or x * mask
    code, enc = _mlp_forward(model.encoder, p, x_in, noise)
    out, dec = _mlp_forward(model.decoder, p, code, noise)
    recon = model.lik.nll(out, x)
    rule = "dL/drecon = 1" + ("  (recon of the CLEAN x from the corrupted x~)" if denoising else "")
    tr.add("loss = recon", "loss", [recon], recon, "dL/drecon", model.xp.asarray(1.0), rule)
    dout = _lik_backward(tr, model, out, x)
    dcode = _mlp_backward(tr, model.decoder, p, grads, dec, dout, "code")
    _mlp_backward(tr, model.encoder, p, grads, enc, dcode, "x~" if denoising else "x")


def _trace_sae(tr: _Tracer, model: SparseAE, x: Array, noise: Mapping, grads: dict) -> None:
    """The sparse AE: code h = sigmoid(encoder(x)), loss = recon + beta * sparsity_kl(h)."""
    p, beta, rho, xp = model.params, model.beta, model.rho, model.xp
    # ---- forward, as SparseAE.forward
    a, enc = _mlp_forward(model.encoder, p, x, noise)  # (B, latent), pre-activation
    sigmoid = get_activation("sigmoid")
    h = sigmoid.forward(a)[0]  # the sparse code, in (0, 1)
    out, dec = _mlp_forward(model.decoder, p, h, noise)
    recon, sparsity = model.lik.nll(out, x), sparsity_kl(h, rho)
    loss = recon + beta * sparsity
    # ---- backward, loss first
    tr.add(
        "loss = recon + beta * sparsity",
        "loss",
        [recon, sparsity],
        loss,
        "dL/dloss",
        xp.asarray(1.0),
        f"dL/drecon = 1;  dL/dsparsity = beta = {beta:g}",
    )
    dout = _lik_backward(tr, model, out, x)
    dh_dec = _mlp_backward(tr, model.decoder, p, grads, dec, dout, "h")
    dh_sp = sparsity_kl_backward(h, rho)
    tr.add(
        "sparsity_kl_backward",
        "sparsity -> h",
        [h],
        sparsity,
        "dP/dh",
        dh_sp,
        f"dh = (-rho/r + (1-rho)/(1-r)) / B,  r = mean_B h, rho = {rho:g}  (times beta)",
        checker=_sparsity_check(h, rho),
    )
    dh = dh_dec + beta * dh_sp
    tr.add(
        "sum of branches",
        "h",
        [dh_dec, dh_sp],
        h,
        "dL/dh",
        dh,
        "dL/dh = dh (via decoder) + beta dP/dh",
    )
    da = sigmoid.backward(h, dh)
    tr.add(
        "sigmoid_backward",
        "h -> encoder out",
        [a],
        h,
        "dL/da",
        da,
        "da = dh * h (1 - h)",
        checker=_act_check(sigmoid, a, dh, da),
    )
    _mlp_backward(tr, model.encoder, p, grads, enc, da, "x")


def _sparsity_check(h: Array, rho: float) -> Check:
    def run() -> float:
        h64 = _f64(h)
        return _vjp_err(lambda v: sparsity_kl(v, rho), h64, 1.0, sparsity_kl_backward(h64, rho))

    return run


def _assert_matches_model(model: AE, x: Array, noise: Mapping, grads: dict) -> None:
    """The replay must be the model's own step: same gradients for the same noise."""
    _, ref = model.loss_and_grads(x, noise)
    rtol = 1e-5 if model.backend.dtype.name == "float32" else 1e-10
    for name in ref:
        scale = _norm(ref[name]) / max(ref[name].size, 1) ** 0.5
        assert_close(
            grads[name],
            ref[name],
            rtol=rtol,
            atol=rtol * scale + 1e-30,
            name=f"trace vs model.loss_and_grads, {name}",
        )


# ============================================================================ the table
def _shape(s: tuple[int, ...]) -> str:
    return "()" if not s else "(" + ", ".join(str(d) for d in s) + ")"


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    """ "(8, 20), (8, 20)" or, when all are equal and more than one, "2 x (8, 20)"."""
    if len(shapes) > 1 and len(set(shapes)) == 1:
        return f"{len(shapes)} x {_shape(shapes[0])}"
    return ", ".join(_shape(s) for s in shapes)


def format_trace(rows: list[TraceRow]) -> str:
    """A table read top to bottom: the loss first, the input last; parameter gradients indented
    under the dense layer that produced them."""
    checked = any(r.rel_err is not None for r in rows)
    w_op = max([26, *(len(r.op) + 2 for r in rows)])  # the op column fits the longest op
    w_at = max([17, *(len(r.at) + 2 for r in rows)])
    head = f"{'#':>3}  {'op':<{w_op}}{'at':<{w_at}}{'forward in -> out':<26}{'gradient':<22}"
    head += f"{'shape':<12}{'norm':>10}" + (f"{'rel.err':>10}" if checked else "") + "   rule"
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows, 1):
        fwd = _shapes(r.in_shapes) + " -> " + _shape(r.out_shape)
        err = (
            ""
            if not checked
            else (f"{r.rel_err:>10.1e}" if r.rel_err is not None else " " * 9 + "-")
        )
        lines.append(
            f"{i:>3}  {r.op:<{w_op}}{r.at:<{w_at}}{fwd:<26}{r.grad:<22}"
            f"{_shape(r.grad_shape):<12}{r.grad_norm:>10.4g}{err}   {r.rule}"
        )
        for name, (shape, norm) in r.params.items():
            pad = " " * (5 + w_op + w_at + 26)
            lines.append(f"{pad}{'dL/d' + name:<22}{_shape(shape):<12}{norm:>10.4g}")
    return "\n".join(lines)


# ============================================================================ the CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scratchvae trace``."""
    parser.add_argument(
        "--check",
        action="store_true",
        help="check every op's backward numerically (float64 central differences)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="examples in the batch (8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch and noise (0)")
    parser.add_argument("--data", default="digits", help="data set or path (digits)")
    parser.add_argument(
        "--data-dir", default=None, help="where mnist/ and fashion-mnist/ live (see data.py)"
    )
    parser.add_argument(
        "--hidden", type=int, nargs="*", default=[400], help="hidden layer sizes (400)"
    )
    parser.add_argument("--latent", type=int, default=20, help="latent units (20)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="trace a trained model from this checkpoint (file or run folder)",
    )
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])


def _cli_model(args: argparse.Namespace, backend: Backend, n_features: int) -> AE:
    if args.checkpoint:
        from .checkpoint import load_model  # imported here: the CLI's boundary

        model, _ = load_model(args.checkpoint, backend)
        if model.n_features != n_features:
            raise ValueError(
                f"the checkpoint's model takes {model.n_features} features, the data has "
                f"{n_features}; pass the --data it was trained on"
            )
        return model
    if args.latent < 1 or any(h < 1 for h in args.hidden):
        raise ValueError("--latent and every --hidden size must be >= 1")
    return VAE(n_features, hidden=args.hidden, latent=args.latent, backend=backend)


def run_cli(args: argparse.Namespace) -> int:
    """Print the trace of one training step; returns 0."""
    from .data import load_dataset  # the data layer is an I/O boundary

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    backend = get_backend(args.backend, args.dtype, args.seed)
    ds = load_dataset(args.data, "train", data_dir=getattr(args, "data_dir", None))
    model = _cli_model(args, backend, ds.n_features)
    idx = to_numpy(backend.permutation(ds.n))[: args.batch_size]
    x = backend.asarray(ds.get_batch(idx))
    noise = model.draw_noise(x.shape[0])
    rows = trace_step(model, x, noise, check=args.check)
    terms = model.loss(x, noise, train=True)
    print(f"one training step of {model!r}")
    print(
        f"batch: {x.shape[0]} examples of {ds.name}; loss terms (nats per example, sum over "
        "features, mean over the batch): "
        + ", ".join(f"{k} {float(to_numpy(v)):.3f}" for k, v in terms.items())
    )
    print("backward pass, from the loss (top) to the input (bottom):\n")
    print(format_trace(rows))
    print(
        "\nthe gradients above equal model.loss_and_grads(x, noise) for the same noise"
        + (
            "; rel.err: each op's backward vs central differences in float64"
            if args.check
            else "; add --check to check every op numerically"
        )
    )
    return 0
