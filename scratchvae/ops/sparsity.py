"""The sparse auto-encoder's penalty: the KL divergence of each hidden unit's mean activation
over the batch from the target rho (about 5%), summed over the units.

    P = sum_j KL(rho || r_j),   r_j = mean_B h_j,   h = sigmoid(a) (B, H) in (0, 1)

A batch-level penalty, not a per-example loss: the model multiplies it by its weight beta and
adds it to the reconstruction loss (docs/derivations.md, the sparse AE).

The op takes the code's logits a, not h: in float32 sigmoid(a) rounds to 1 for a > 16.6 (to
0 below about -103), and a unit saturated on every row of a batch (a batch of one, say) made
1 - r_j = 0, the penalty inf and its gradient NaN, where the true values are finite. From the
logits, log h = -softplus(-a) and log(1 - h) = -softplus(a) hold at any a, and so do log r_j
and log(1 - r_j) as log-mean-exps of them (1 - r_j is the mean of 1 - h = sigmoid(-a), never
1 minus a rounded r_j).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import get_xp, op

Array = Any


# ---------------------------------------------------------------------------- sparsity KL
class SparsityCache(NamedTuple):
    log_h: Array  # (B, H) log sigmoid(a)
    log_1mh: Array  # (B, H) log(1 - sigmoid(a)) = log sigmoid(-a)
    log_r: Array  # (H,) log of the mean activation r_j
    log_1mr: Array  # (H,) log(1 - r_j)
    rho: float  # the target mean activation


def _log_mean_exp(v: Array) -> Array:
    """log(mean_B exp(v)) over the rows of v (B, H) -> (H,), without overflow or underflow."""
    xp = get_xp(v)
    top = v.max(axis=0)  # (H,)
    return top + xp.log(xp.exp(v - top).mean(axis=0))


@op
def sparsity_kl_forward(a: Array, rho: float = 0.05) -> tuple[Array, SparsityCache]:
    """Sparse-AE penalty sum_j KL(rho || r_j), r_j = mean_B sigmoid(a_j), from the logits a (B, H).

    KL(rho || r) = rho (log rho - log r) + (1 - rho) (log(1 - rho) - log(1 - r))
    log h = -softplus(-a),  log(1 - h) = -softplus(a)            (softplus(x) = log(1 + e^x))
    log r_j = log mean_B h_bj,  log(1 - r_j) = log mean_B (1 - h_bj)
    A batch-level penalty (not per example); the model multiplies it by its weight beta.
    """
    xp = get_xp(a)
    log_h, log_1mh = -xp.logaddexp(0, -a), -xp.logaddexp(0, a)  # (B, H) each
    log_r, log_1mr = _log_mean_exp(log_h), _log_mean_exp(log_1mh)  # (H,) each
    kl = rho * (math.log(rho) - log_r) + (1 - rho) * (math.log(1 - rho) - log_1mr)  # (H,)
    return kl.sum(), SparsityCache(log_h, log_1mh, log_r, log_1mr, rho)


@op
def sparsity_kl_backward(cache: SparsityCache, dloss: Any) -> Array:
    """dP/da_bj = (-rho / r_j + (1 - rho) / (1 - r_j)) / B * h_bj (1 - h_bj), times dloss.

    dP/dr_j = -rho / r_j + (1 - rho) / (1 - r_j),  dr_j/dh_bj = 1/B,  dh/da = h (1 - h).
    Each term as one exponential of logs: h (1 - h) / r_j <= B (1 - h) and
    h (1 - h) / (1 - r_j) <= B h, so neither overflows, and a saturated unit still gets its
    restoring gradient (r_j - rho) / B (at h -> 1 it is (1 - rho) / B, not 0 x inf).  (B, H)
    """
    xp = get_xp(cache.log_h)
    log_hh = cache.log_h + cache.log_1mh  # (B, H) log h (1 - h)
    rho, B = cache.rho, cache.log_h.shape[0]
    dpenalty_da = -rho * xp.exp(log_hh - cache.log_r) + (1 - rho) * xp.exp(log_hh - cache.log_1mr)
    return dpenalty_da * (dloss / B)
