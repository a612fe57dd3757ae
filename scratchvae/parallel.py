"""The training step's batch split across CPU threads (NumPy backend).

Every loss here is a mean over the batch's rows, and each row's term depends on that row (and
its noise) only. So for a batch of B rows cut into chunks c of B_c consecutive rows,

    loss  = sum_c (B_c / B) loss_c           loss_c: the mean over chunk c's rows
    grads = sum_c (B_c / B) grads_c          by linearity of the gradient

and each chunk's forward and backward pass can run on its own thread: the model's own code on
fewer rows, in a replica of the model that shares its parameters and has its own gradient
store and workspace. The noise is drawn once for the whole batch, as the serial step draws
it, and each chunk takes its rows of it: the split step computes the serial step's numbers,
up to the rounding of the sum above. The chunks are summed in their order, element by
element, so a given seed and thread count give the same numbers every time.

When it splits (:meth:`scratchvae.models.Model.loss_and_grads` asks
:func:`scratchvae.backend.row_chunks`): on NumPy, with more than one thread, for a model whose
rows are independent (not the sparse AE: its penalty is on the batch's mean activation), into
as many chunks as there are threads but none under ``MIN_ROWS`` rows (128: measured,
``benchmarks/README.md``, "CPU threads"). BLAS runs on one thread meanwhile
(:mod:`scratchvae.backend.threads` says why).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .backend import get_xp, one_blas_thread, op, run_parallel
from .params import ParamStore, Workspace

if TYPE_CHECKING:
    from .models import Model

Array = Any
__all__ = ["split_loss_and_grads", "split_noise", "weighted_sum"]


def split_noise(noise: Mapping[str, Array], start: int, stop: int, rows: int) -> dict:
    """Rows start:stop of each noise array of a batch of ``rows`` rows, contiguous:

    (B, ...)      rows start:stop                (eps, a dropout mask, input corruption)
    (k, B, L)     [:, start:stop]                (eps of k draws per example)
    (k B, ...)    rows start:stop of each draw   (a decoder's masks for the k draws)
    """
    out = {}
    for name, a in noise.items():
        xp = get_xp(a)
        if a.ndim == 3:
            part = a[:, start:stop]
        elif a.shape[0] == rows:
            part = a[start:stop]
        else:
            k = a.shape[0] // rows
            part = a.reshape(k, rows, *a.shape[1:])[:, start:stop].reshape(-1, *a.shape[1:])
        out[name] = xp.ascontiguousarray(part)
    return out


@op
def weighted_sum(out: Array, parts: Array, weights: Array) -> None:
    """out = weights[0] parts[0] + weights[1] parts[1] + ..., in place and summed in that
    order: out (P,), parts (C, P), weights (C,)."""
    total = weights[0] * parts[0]
    for c in range(1, parts.shape[0]):
        total += weights[c] * parts[c]
    out[...] = total


_OWN = ("grads", "workspace", "_replicas")  # a replica's own attributes; the rest: the model's


def _replicas(model: Model, n: int) -> tuple[list[Model], Array]:
    """``n`` replicas of ``model`` (kept on it for the next steps): its parameters and
    settings, their own workspace, and their own gradients, the rows of one (n, P) array (also
    returned). Every call gives them the model's attributes again: a setting changed since
    the last split (``vae.beta = 2.0``) holds in this one."""
    replicas, grads = model.__dict__.get("_replicas", ([], None))
    if len(replicas) != n:
        grads = model.backend.zeros((n, model.grads.size))
        replicas = []
        for i in range(n):
            twin = copy.copy(model)
            twin.grads = ParamStore(model.grads.shapes, model.backend, flat=grads[i])
            twin.workspace = Workspace()
            twin.__dict__.pop("_replicas", None)
            replicas.append(twin)
        model.__dict__["_replicas"] = (replicas, grads)
    shared = {k: v for k, v in model.__dict__.items() if k not in _OWN}
    for twin in replicas:
        twin.__dict__.update(shared)
    return replicas, grads


def split_loss_and_grads(
    model: Model,
    x: Array,
    noise: Mapping[str, Array],
    kl_weight: float | None,
    chunks: Sequence[tuple[int, int]],
) -> tuple[dict[str, Array], ParamStore]:
    """``model.loss_and_grads(x, noise, kl_weight)`` with the rows of each chunk on their own
    thread, in a replica of the model; the terms and gradients weighted by each chunk's share
    of the rows and summed into ``model.grads``."""
    rows = x.shape[0]
    workers, grads = _replicas(model, len(chunks))

    def step(worker: Model, start: int, stop: int) -> tuple[dict, ParamStore]:
        part = split_noise(noise, start, stop, rows)
        ws = worker.workspace
        terms, cache = worker.forward(x[start:stop], part, True, kl_weight, ws)
        return terms, worker.backward(cache, ws)

    tasks = [lambda w=w, c=c: step(w, *c) for w, c in zip(workers, chunks, strict=True)]
    with one_blas_thread():
        results = run_parallel(tasks)
    weights = [(stop - start) / rows for start, stop in chunks]
    share = model.backend.xp.asarray(weights, dtype=grads.dtype)  # (C,)
    weighted_sum(model.grads.flat, grads, share)
    terms = {}
    for name in results[0][0]:
        # sum_c share_c terms_c in the terms' dtype: NumPy 1 makes a float32 scalar float64
        # when a Python float multiplies it or when sum()'s 0 is added to it
        first, *rest = (share[c] * t[name] for c, (t, _) in enumerate(results))
        terms[name] = sum(rest, first)
    return terms, model.grads
