"""Before anything is timed: does a reference compute scratchvae's numbers?

:func:`compare` takes scratchvae's step and a :class:`Reference` (the PyTorch or JAX step
behind a small adapter, or a fake in the tests) and checks, on the same data and the same eps:

* the weights: the reference holds an exact copy of scratchvae's initial weights;
* the loss and every gradient, from those weights;
* the update: two Adam steps from zero moments, both sides fed scratchvae's gradients (two
  different draws, so that the betas matter: one step from zero moments is ``lr * g / (|g| +
  eps)`` whatever they are). The update (weights after minus before) is compared with its own
  scale, ``lr``, so an eps of 1e-7 instead of 1e-8 shows; compared with the weights' scale it
  would hide under their rounding. Each array's update has its own tolerance, the most its
  rounding allows (:func:`update_tolerance`): in float32 from 3e-5 (the biases) to 1.5e-4
  (the decoder's first weights, up to 1.16), where one figure for all arrays was 2e-4.

The loss and the gradients have tolerances derived the same way (:func:`step_tolerances`):
float32 6.0e-6 and 6.9e-6 for the MNIST config at batch 128, where one figure of 2e-4 let a
gradient 1e-5 off pass; measured differences are 1e-7 and 5e-7.

Feeding both optimizers the same gradients keeps the update check about the optimizers: a
gradient entry near 0 whose sign differs by rounding would move by +lr in one and -lr in the
other. :func:`raise_if_disagrees` turns a failed comparison into one line naming the worst
figure, before the timing starts.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from ..backend import to_numpy
from ..models import VAE
from ..optim import Adam

__all__ = [
    "EQ_TOL",
    "Reference",
    "ReferenceMismatch",
    "Step",
    "compare",
    "raise_if_disagrees",
    "step_tolerances",
    "update_tolerance",
]

# the one tolerance of the loss and gradients that rows written before step_tolerances carry
# (their "tolerance"); compare no longer uses it
EQ_TOL = {"float32": 2e-4, "float64": 1e-9}
_EPS = {"float32": 2.0**-23, "float64": 2.0**-52}  # the spacing of numbers in [1, 2)


def _ulp(x: float, dtype: str) -> float:
    """The spacing of ``dtype``'s numbers at ``x`` (math.ulp is float64's)."""
    return math.ulp(x) * (_EPS[dtype] / _EPS["float64"])


def update_tolerance(before: Any, update: Any, dtype: str, t: int, b2: float) -> float:
    """The largest difference, relative to max|update|, that rounding allows between two
    faithful ``t``-step Adam updates (weights after minus ``before``) of one array in ``dtype``.

    * Each side stores the weights after each step: each store rounds by half a unit in the
      last place of the largest weight, W = max|before| + max|update|, so each side's update
      is off by t/2 ulp(W) at most, the two by t ulp(W). Measured as a difference of
      weights, the update cannot be compared more closely than this: for the MNIST config's
      decoder weights (up to 1.16, ulp 1.2e-7) and an update of 2 lr = 2e-3, 1.2e-4.
    * The step itself, lr m_hat / (sqrt(v_hat) + eps), a dozen roundings: 16 eps, relative.
    * The bias correction 1 - b2^t, computed in ``dtype`` by JAX's Adam (b2 rounded first,
      scratchvae and PyTorch use float64): b2's rounding, eps/2 relative, is t eps/2 of b2^t,
      t eps / (2 (1 - b2^t)) of 1 - b2^t, half that after the square root:
      t eps / (4 (1 - b2^t)), 3.0e-5 in float32 for t = 2, b2 = 0.999.

    So a planted error shows as soon as it passes these: lr 0.01% off (1e-4 relative) in the
    biases' update, which one tolerance of 2e-4 for all arrays let through."""
    eps, scale = _EPS[dtype], float(abs(update).max())
    weights = t * _ulp(float(abs(before).max()) + scale, dtype)
    return weights / max(scale, 1e-30) + 16 * eps + t * eps / (4 * (1 - b2**t))


def step_tolerances(model: VAE, batch: int, dtype: str, loss: float) -> tuple[float, float]:
    """(loss, gradients): the largest relative differences that rounding allows between two
    faithful computations of one training step of ``model`` on ``batch`` examples in ``dtype``
    whose loss is ``loss``. As :func:`compare` measures them: the loss's relative difference;
    each gradient array's largest difference over its own largest entry.

    * The step is matrix products and sums. A sum of k terms in any order (OpenBLAS's
      blocks, XLA's trees, cuBLAS's splits: the GPU references' orders too) is off by
      sqrt(k) u sum|terms|, u the unit roundoff (2^-24 float32, 2^-53 float64), when the
      roundings are independent and of either sign (Higham and Mary 2019's probabilistic
      bound; k u is the worst case, 4.7e-5 for k = 784 in float32, which no BLAS comes
      near). The magnitudes: at an array's largest entries the terms share a sign
      (sum|terms| about |result|), and the figure is taken relative to those entries.
    * A result computed from results inherits their errors; independent ones add in
      quadrature, so along the step each side is off by u sqrt(K), K the sum of the inner
      dimensions on the way. Gradients: every layer's forward product (inner dimension n_in)
      and backward one (n_out), and the weight gradient's sum over the rows (the batch times
      the draws per example): for the MNIST config (784-400-40, 20-400-784) at batch 128,
      K = 3228 + 128 = 3356. The loss: the forward products (sum n_in), the sum over the
      features and the one over the rows: K = 1604 + 784 + 128 = 2516.
    * Two sides, each off by at most that: 2 u sqrt(K) (float32, MNIST, batch 128: 6.0e-6 for
      the loss, 6.9e-6 for the gradients; float64 1.1e-14 and 1.3e-14).
    * An IWAE bound (k > 1 draws) weights each draw's gradient by w~_k = exp(log w_k - lse),
      whose relative error is the absolute error of log w_k - lse: each side rounds log w_k
      and the lse, numbers of the size of the loss L (nats per example), u|L| each, so the
      gradients get 4 u |L| more (float32, L = 549: 1.3e-4; measured 2.3e-5 to 3.7e-5).

    Every committed run (benchmarks/results/*.json: CPU and GPU, PyTorch and JAX, float32
    and float64) is within 0.08 of these, the IWAE step's 2.6e-5 at 0.19; a gradient 1e-5 off
    is caught in the MNIST config (in the wide one, 784-1024-1024-50, from 1.2e-5). TF32
    products on a GPU (u = 2^-11) are not float32 arithmetic and would fail, as they should.
    """
    u = _EPS[dtype] / 2
    shapes = [tuple(model.params[n].shape) for n in model.params if n.endswith(".W")]
    draws = int(getattr(model, "k", 1))
    rows = batch * draws
    n_out = shapes[-1][1] if shapes else 0  # the decoder's output: the loss sums over it
    k_loss = sum(n_in for n_in, _ in shapes) + n_out + rows
    k_grad = sum(n_in + n_out for n_in, n_out in shapes) + rows
    weights = (
        4 * u * abs(loss) if getattr(model, "objective", "elbo") == "iwae" and draws > 1 else 0
    )
    return 2 * u * math.sqrt(k_loss), 2 * u * math.sqrt(k_grad) + weights


class ReferenceMismatch(RuntimeError):
    """A reference computes other numbers than scratchvae: timing it would compare nothing."""


class Step(Protocol):
    """What :func:`compare` reads of scratchvae's side: a model, its batch ``x`` of ``batch``
    rows and the Adam it is timed with (:class:`~scratchvae.bench.timing.ScratchStep`, or
    a script's own step: ``benchmarks/iwae_step.py``)."""

    model: VAE
    x: Any
    batch: int
    opt: Adam


class Reference(Protocol):
    """A reference step seen as NumPy arrays under scratchvae's names and layouts (W (in, out))."""

    name: str

    def weights(self) -> dict[str, Any]:
        """The weights it holds now."""

    def loss_and_grads(self, eps: Any) -> tuple[float, dict[str, Any]]:
        """Loss and gradients on its copy of the data, with this eps, at its current weights."""

    def adam(self, grads: list[dict[str, Any]]) -> dict[str, Any]:
        """Its weights after one Adam step per gradient dict, from zero moments."""


def max_rel(a: dict[str, Any], b: dict[str, Any]) -> float:
    """max over arrays of max|a - b| / max|b| (relative to each array's scale)."""
    worst = 0.0
    for k in b:
        ref = to_numpy(b[k]).astype("float64")
        diff = abs(to_numpy(a[k]).astype("float64") - ref).max()
        worst = max(worst, float(diff / max(abs(ref).max(), 1e-30)))
    return worst


def _numpy(store: Any) -> dict[str, Any]:
    return {n: to_numpy(store[n]).copy() for n in store}


def compare(step: Step, ref: Reference) -> dict[str, Any]:
    """Weights, loss, gradients and two Adam updates of scratchvae vs ``ref``, built from
    ``step.model`` and ``step.x``; the model's weights are as before when it returns."""
    model, bk = step.model, step.model.backend
    before = _numpy(model.params)
    weights_rel = max_rel(ref.weights(), before)
    noise = model.draw_noise(step.batch)
    terms, grads = model.loss_and_grads(step.x, noise)
    loss_s, grads_s = float(to_numpy(terms["loss"])), _numpy(grads)
    loss_r, grads_r = ref.loss_and_grads(to_numpy(noise["eps"]))
    second = _numpy(model.loss_and_grads(step.x, model.draw_noise(step.batch))[1])
    timed = step.opt  # a fresh Adam with the settings of the one timed
    opt = Adam(timed.lr, betas=(timed.b1, timed.b2), eps=timed.eps)
    for g in (grads_s, second):
        opt.step(model.params, {n: bk.asarray(v) for n, v in g.items()})
    update_s = {n: to_numpy(model.params[n]) - before[n] for n in before}
    for n, v in before.items():  # the timed steps start from the weights checked here
        model.params[n] = v
    after_r = ref.adam([grads_s, second])
    update_r = {n: to_numpy(after_r[n]) - before[n] for n in before}
    loss_rel = abs(loss_s - loss_r) / max(abs(loss_r), 1e-30)
    grad_rel, update_rel = max_rel(grads_s, grads_r), max_rel(update_s, update_r)
    dtype = bk.dtype.name
    loss_tol, grad_tol = step_tolerances(model, step.batch, dtype, loss_r)
    # each array's update against its own tolerance; the worst of them by that measure
    per_array = {
        n: (max_rel({n: update_s[n]}, {n: update_r[n]}),
            update_tolerance(before[n], update_r[n], dtype, 2, timed.b2))
        for n in before
    }  # fmt: skip
    worst = max(per_array, key=lambda n: per_array[n][0] / per_array[n][1])
    return {
        "reference": ref.name,
        "weights_max_rel_diff": weights_rel,
        "loss_scratch": loss_s,
        "loss_reference": loss_r,
        "loss_rel_diff": loss_rel,
        "grad_max_rel_diff": grad_rel,
        "adam_update_max_rel_diff": update_rel,
        "adam_update_worst": {
            "array": worst,
            "rel_diff": per_array[worst][0],
            "tolerance": per_array[worst][1],
        },
        "loss_tolerance": loss_tol,
        "grad_tolerance": grad_tol,
        "tolerance": max(loss_tol, grad_tol),  # the one figure a report's column shows
        "ok": weights_rel == 0
        and loss_rel <= loss_tol
        and grad_rel <= grad_tol
        and per_array[worst][0] <= per_array[worst][1],
    }


def raise_if_disagrees(row: dict[str, Any]) -> None:
    """:class:`ReferenceMismatch` with one line naming the worst figure, unless ``row['ok']``."""
    if row["ok"]:
        return
    where = f"{row.get('config', '?')} {row.get('dtype', '?')} batch {row.get('batch', '?')}"
    if row["weights_max_rel_diff"] != 0:
        what = f"its copy of the initial weights differs ({row['weights_max_rel_diff']:.1e})"
    else:
        # rows written before step_tolerances have one "tolerance" for all three figures
        tol, update = row["tolerance"], row.get("adam_update_worst")
        figures = {  # figure: (relative difference, its tolerance, where)
            "loss": (row["loss_rel_diff"], row.get("loss_tolerance", tol), ""),
            "gradients": (row["grad_max_rel_diff"], row.get("grad_tolerance", tol), ""),
            "Adam update": (row["adam_update_max_rel_diff"], tol, "")
            if update is None  # a row written before each array had its own tolerance
            else (update["rel_diff"], update["tolerance"], f" in {update['array']}"),
        }
        worst = max(figures, key=lambda k: figures[k][0] / figures[k][1])
        diff, allowed, where_ = figures[worst]
        what = (
            f"its {worst} differ{'s' * (worst != 'gradients')} by {diff:.1e}{where_} "
            f"(relative; tolerance {allowed:.1e})"
        )
    raise ReferenceMismatch(
        f"{row['reference']} does not compute scratchvae's step ({where}): {what}; "
        "nothing was timed"
    )
