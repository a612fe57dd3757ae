"""A backprop trace: one real training step, op by op, as the step executes it.

:func:`trace_step` runs ``model.loss_and_grads(x, noise)`` (and, if given, the optimizer's
update) inside :func:`scratchvae.backend.tracing`, so every op the step calls reports itself:
its name, the implementation that ran (``numba`` or ``cuda`` for a kernel, ``numpy`` or
``cupy`` for the op's readable body), where in the model it ran (the workspace scope, e.g.
``encoder.0``), the shapes in and out and, for a backward op, every gradient it produced with
its norm. Nothing is replayed: the rows are the step.

With ``check=True`` each backward op is also checked on the spot against its forward: both are
re-run in float64 on copies of the recorded inputs (through the same dispatch, so a kernel is
checked as a kernel), and for every gradient ``d<input>`` the backward returns, the directional
derivative of sum_k <out_k, dout_k> along random directions v, by central differences, is
compared with <d<input>, v>. The row shows the largest error relative to |d<input>| |v|
(about 1e-9 or less when the backward is right) and ``ok`` or ``FAIL`` against
:data:`CHECK_TOLERANCE`; :func:`check_summary` says how many passed.

:func:`format_trace` prints the rows (the forward pass, then the backward pass from the loss to
the input, then the update); :func:`format_weights` the K-sample step's importance weights;
:func:`backward_rules` the formulas of each backward op, from its docstring (its lines with =).
``scratchvae trace`` (:func:`add_arguments`, :func:`run_cli`) prints it for a 400-20 VAE on the
embedded digits (``--hidden``, ``--latent``), or for a trained model.
"""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from ..backend import get_xp, threads, to_numpy, tracing
from ..gradcheck import directional_derivative
from ..models import Model
from ..optim import Optimizer
from ..params import Workspace

Array = Any

__all__ = [
    "CHECK_TOLERANCE",
    "TraceRow",
    "add_arguments",
    "backward_rules",
    "check_summary",
    "format_trace",
    "format_weights",
    "run_cli",
    "trace_step",
]


@dataclass
class TraceRow:
    """One op call of the step.

    phase: "forward", "backward" or "update"; depth: 0 for an op the model (or optimizer)
    called, 1 for an op called inside another op's body; where: the workspace scope it wrote
    into; grads: for a backward op, ``name -> (shape, norm)`` of each gradient it returned;
    rel_err: the numerical check's largest relative error (None when not checked)."""

    op: str
    impl: str
    phase: str
    depth: int
    where: str
    in_shapes: list[tuple[int, ...]]
    out_shapes: list[tuple[int, ...]]
    grads: dict[str, tuple[tuple[int, ...], float]] = field(default_factory=dict)
    rel_err: float | None = None
    rule: list[str] = field(default_factory=list)  # a backward op's formulas, from its code
    weights: Any = None  # iw_bound_forward: the normalised importance weights w~ (K, B), host


@dataclass
class _Call:
    fn: Any  # the dispatched op
    label: str
    depth: int
    args: tuple
    kwargs: dict
    result: Any = None
    snapshot: tuple | None = None  # (args, douts) copied at call time, when checking


def _arrays_of(value: Any) -> list[Any]:
    if isinstance(value, tuple):
        return [a for v in value for a in _arrays_of(v)]
    return [value] if hasattr(value, "shape") and hasattr(value, "dtype") else []


def _copy(value: Any) -> Any:
    """Arrays copied (also inside tuples and named tuples); anything else as it is."""
    if isinstance(value, tuple):
        items = [_copy(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value.copy() if hasattr(value, "copy") and hasattr(value, "dtype") else value


class Tracer:
    """Receives every op call inside :func:`~scratchvae.backend.tracing` (see there)."""

    def __init__(self, keep_inputs: bool) -> None:
        self.keep_inputs = keep_inputs
        self.calls: list[_Call] = []
        self.depth = 0

    def call(self, fn: Any, impl: Any, label: str, args: tuple, kwargs: dict) -> Any:
        record = _Call(fn, label, self.depth, args, kwargs)
        if self.keep_inputs:
            record.snapshot = _copy(args)
        self.calls.append(record)
        self.depth += 1
        try:
            record.result = impl(*args, **kwargs)
        finally:
            self.depth -= 1
        return record.result


# ============================================================================ the numerical check
def _float64(value: Any) -> Any:
    """A float64 copy of every float array (also inside caches); workspaces become None."""
    if isinstance(value, Workspace):
        return None
    if isinstance(value, tuple):
        items = [_float64(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f":
        return value.astype("float64")
    return value


def _no_destinations(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k != "ws" and not k.startswith("out")}


def _argument(call: _Call, name: str, default: Any) -> Any:
    """The argument ``name`` of an op call as it was passed (``default`` when it was not)."""
    bound = inspect.signature(call.fn.reference).bind_partial(*call.args, **call.kwargs)
    return bound.arguments.get(name, default)


def _estimator(call: _Call) -> str:
    """The ``estimator`` argument of a backward call ("pathwise" when it takes none)."""
    return _argument(call, "estimator", "pathwise")


def _check(forward: _Call, backward: _Call, directions: int = 3) -> float | None:
    """The largest error of the backward's gradients against central differences of the
    forward, along random directions, relative to |grad| |v| (float64). None for a backward
    run with the stl or dreg estimator: it leaves out terms that are zero only in expectation,
    so it is not the derivative of the forward (tests/ops/test_iwae.py checks it statistically)."""
    if _estimator(backward) != "pathwise":
        return None
    assert forward.snapshot is not None and backward.snapshot is not None  # taken when checking
    fwd_args = [_float64(a) for a in forward.snapshot]
    fwd_kwargs = _no_destinations(forward.kwargs)
    out, cache = forward.fn(*fwd_args, **fwd_kwargs)
    n_out = len(out) if isinstance(out, tuple) else 1
    douts = [_float64(d) for d in backward.snapshot[1 : 1 + n_out]]
    rest = [None if isinstance(a, Workspace) else _float64(a) for a in backward.snapshot]
    grads = backward.fn(cache, *douts, *rest[1 + n_out :], **_no_destinations(backward.kwargs))
    names = list(inspect.signature(forward.fn.reference).parameters)
    named = grads._asdict() if hasattr(grads, "_asdict") else {_first_input(backward): grads}

    def objective(i: int) -> Any:
        def s(a: Array) -> Any:
            args = [*fwd_args[:i], a, *fwd_args[i + 1 :]]
            outs = forward.fn(*args, **fwd_kwargs)[0]
            outs = outs if isinstance(outs, tuple) else (outs,)
            return sum(get_xp(o).sum(o * d) for o, d in zip(outs, douts, strict=True))

        return s

    worst = 0.0
    for name, g in named.items():
        if g is None:
            continue
        i = names.index(name[1:])  # dmu -> the forward's argument mu
        xp = get_xp(g)
        rng = xp.random.default_rng(i)
        for _ in range(directions):
            v = rng.standard_normal(g.shape)
            analytic = float(to_numpy(xp.sum(g * v)))
            scale = float(to_numpy(xp.linalg.norm(g.ravel()) * xp.linalg.norm(v.ravel())))
            worst = max(worst, _direction_error(objective(i), fwd_args[i], v, analytic, scale))
    return worst


CHECK_TOLERANCE = 1e-6  # float64 central differences of a right backward: about 1e-9 or less
CHECK_STEPS = (1e-6, 1e-7, 1e-8)  # central-difference steps, each tried when the last failed


def _direction_error(f: Any, x: Array, v: Array, analytic: float, scale: float) -> float:
    """|central difference - analytic| along v, relative to |grad| |v| (a zero gradient against
    a non-zero derivative: 1, not 1e300); the smallest over :data:`CHECK_STEPS`, a smaller step
    tried only when the larger one failed. A difference whose two points straddle a kink (a
    trained ReLU's pre-activation within h |dv| of 0) is wrong at that step alone; a wrong
    backward is wrong at every step."""
    error = math.inf
    for h in CHECK_STEPS:
        numerical = directional_derivative(f, x, v, h)
        error = min(error, abs(numerical - analytic) / max(scale, abs(numerical), 1e-300))
        if error < CHECK_TOLERANCE:
            break
    return error


def check_summary(rows: list[TraceRow]) -> tuple[str, list[str]]:
    """A line saying how many checked backward ops agree with their forward's central
    differences (rel.err below :data:`CHECK_TOLERANCE`), and the names of those that do not."""
    checked = [(r.op, r.rel_err) for r in rows if r.rel_err is not None]
    failed = [op for op, err in checked if not err < CHECK_TOLERANCE]  # NaN fails too
    if failed:
        return (
            f"FAIL: {len(failed)} of {len(checked)} checked backward ops disagree with their "
            f"forward (rel.err >= {CHECK_TOLERANCE:g}): {', '.join(failed)}"
        ), failed
    return (
        f"ok: all {len(checked)} checked backward ops agree with their forward's central "
        f"differences (rel.err < {CHECK_TOLERANCE:g})"
    ), failed


# ============================================================================ the step
def _phase(name: str) -> str:
    if name.endswith("_backward"):
        return "backward"
    return "update" if name.endswith("_update") else "forward"


def _norm(a: Array) -> float:
    return float(to_numpy(get_xp(a).linalg.norm(a.ravel()))) if a.size else 0.0


def _first_input(backward: _Call) -> str:
    """'d' + the name of the first argument of the backward op's forward (dx, dlogits, ...)."""
    module = sys.modules[backward.fn.__module__]
    forward = getattr(module, backward.fn.op_name.replace("_backward", "_forward"), None)
    names = list(inspect.signature(forward.reference).parameters) if forward else ["x"]
    return f"d{names[0]}"


def _row(call: _Call) -> TraceRow:
    name = call.fn.op_name
    where = next((a.prefix.rstrip(".") for a in call.args if isinstance(a, Workspace)), "")
    where = where or (call.kwargs["ws"].prefix.rstrip(".") if call.kwargs.get("ws") else "")
    result, phase = call.result, _phase(name)
    ins = call.args[1:2] if phase == "backward" else call.args  # dout, or the inputs
    made_cache = phase == "forward" and isinstance(result, tuple) and len(result) == 2
    outs = result[0] if made_cache else result  # (out, cache) -> out
    row = TraceRow(
        op=name,
        impl=call.label,
        phase=phase,
        depth=call.depth,
        where=where,
        in_shapes=[tuple(a.shape) for a in _arrays_of(ins)],
        out_shapes=[tuple(a.shape) for a in _arrays_of(outs)],
    )
    if phase == "backward":
        fields = result._asdict() if hasattr(result, "_asdict") else {_first_input(call): result}
        row.grads = {k: (tuple(g.shape), _norm(g)) for k, g in fields.items() if g is not None}
        doc = inspect.getdoc(call.fn.reference) or ""
        row.rule = [line.strip() for line in doc.splitlines() if "=" in line]
    return row


def trace_step(
    model: Model,
    x: Array,
    noise: dict[str, Array] | None = None,
    check: bool = False,
    optimizer: Optimizer | None = None,
) -> list[TraceRow]:
    """The rows of one training step of ``model`` on the batch x (B, D): every op call of
    ``model.loss_and_grads(x, noise)`` (noise drawn from the model's backend when None) and,
    with an ``optimizer``, of its update. ``check``: check each backward op numerically."""
    x = model.prepare(x)
    noise = model.draw_noise(x.shape[0]) if noise is None else noise
    tracer = Tracer(keep_inputs=check)
    with tracing(tracer), threads(1):  # the whole batch on this thread: the ops in order
        _, grads = model.loss_and_grads(x, noise)
        if optimizer is not None:
            optimizer.step(model.params, grads)
    rows = [_row(c) for c in tracer.calls]
    for row, call in zip(rows, tracer.calls, strict=True):
        # the IWAE step: keep the normalised importance weights it computed (the K-sample
        # ELBO's, objective "elbo" with stl, are 1/K each: not importance weights)
        if row.op == "iw_bound_forward" and _argument(call, "combine", "") == "logmeanexp":
            row.weights = to_numpy(call.result[1].weights)
    if check:
        made_by = {
            id(c.result[1]): c
            for c in tracer.calls
            if _phase(c.fn.op_name) == "forward"
            and isinstance(c.result, tuple)
            and len(c.result) == 2
        }
        for row, call in zip(rows, tracer.calls, strict=True):
            forward = made_by.get(id(call.args[0])) if row.phase == "backward" else None
            if forward is not None and row.depth == 0:
                row.rel_err = _check(forward, call)
    return rows


# ============================================================================ the table
def _shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"


def format_trace(rows: list[TraceRow], depth: int = 0) -> str:
    """The rows (ops nested deeper than ``depth`` left out) as a table under 100 columns, each
    backward op with its gradients' shapes and norms (the formulas: :func:`backward_rules`)."""
    checked = any(r.rel_err is not None for r in rows)
    lines, phase = [], None
    head = f"{'#':>3}  {'op':<24}{'impl':<7}{'at':<19}{'in -> out':<33}" + (
        f"{'rel.err':>9}" if checked else ""
    )
    for i, r in enumerate(rows, 1):
        if r.depth > depth:
            continue
        if r.phase != phase:
            phase = r.phase
            lines += ["", f"{phase} pass" if phase != "update" else "update", head, "-" * len(head)]
        shapes = ", ".join(_shape(s) for s in r.in_shapes[:2]) + " -> "
        shapes += ", ".join(_shape(s) for s in r.out_shapes[:2])
        ok = r.rel_err is not None and r.rel_err < CHECK_TOLERANCE
        err = "" if r.rel_err is None else f"{r.rel_err:>9.1e} {'ok' if ok else 'FAIL'}"
        indent = "  " * r.depth
        lines.append(f"{i:>3}  {indent + r.op:<24}{r.impl:<7}{r.where:<19}{shapes:<33}{err}")
        for name, (shape, norm) in r.grads.items():
            lines.append(f"{'':>29}{name:>9} {_shape(shape):<14}|{name}| = {norm:.4g}")
    return "\n".join(lines[1:])


def format_weights(rows: list[TraceRow], examples: int = 4, samples: int = 6) -> str:
    """The IWAE step's normalised importance weights w~_k = softmax_k log w_k (the IWAE
    gradient is sum_k w~_k d log w_k; DReG's encoder gradient weights by w~_k^2) for the first
    ``examples`` examples: the largest weight, the effective sample size 1 / sum_k w~_k^2
    (K when the weights are equal, 1 when one sample takes all) and the first ``samples``
    weights. "" when the step has no importance-weighted bound (the K-sample ELBO has none)."""
    found = [r.weights for r in rows if r.weights is not None]
    if not found:
        return ""
    weights = found[0]  # (K, B)
    K, B = weights.shape
    lines = [
        f"importance weights w~ (K = {K} samples per example, first {min(examples, B)} of {B}):",
        f"{'example':>9}{'largest':>10}{'ESS':>8}   w~ of samples 1..{min(samples, K)}",
    ]
    for b in range(min(examples, B)):
        w = weights[:, b]
        # every log w_k -inf, or one +inf or NaN (ops.iwae.why_not_finite): the step stored
        # w~ = 0 (0/0, inf/inf); a finite largest one always keeps its weight >= 1/K
        if not w.any():
            lines.append(f"{b:>9}{'none: largest log-weight not finite':>41}")
            continue
        shown = " ".join(f"{v:.3f}" for v in w[:samples]) + (" ..." if K > samples else "")
        lines.append(f"{b:>9}{w.max():>10.3f}{1.0 / (w**2).sum():>8.2f}   {shown}")
    return "\n".join(lines)


def backward_rules(rows: list[TraceRow]) -> str:
    """Each backward op of the rows once, with the formulas from its docstring."""
    seen, lines = set(), []
    for r in rows:
        if r.phase == "backward" and r.depth == 0 and r.op not in seen:
            seen.add(r.op)
            lines += [f"{r.op}:", *(f"    {line}" for line in r.rule)]
    return "\n".join(lines)


# the command line, in its own module: ``scratchvae trace`` imports add_arguments and run_cli here
from .trace_cli import add_arguments, run_cli  # noqa: E402
