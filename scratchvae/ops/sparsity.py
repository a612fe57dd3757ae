"""The sparse auto-encoder's penalty: the KL divergence of each hidden unit's mean activation
over the batch from the target rho (about 5%), summed over the units.

    P = sum_j KL(rho || rho_hat_j),   rho_hat_j = mean_B h_j,   h (B, H) in (0, 1)

A batch-level penalty, not a per-example loss: the model multiplies it by its weight beta and
adds it to the reconstruction loss (docs/derivations.md, the sparse AE).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_xp, op

Array = Any


# ---------------------------------------------------------------------------- sparsity KL
class SparsityCache(NamedTuple):
    h: Array  # (B, H) the code, in (0, 1)
    rho: float  # the target mean activation


@op
def sparsity_kl_forward(h: Array, rho: float = 0.05) -> tuple[Array, SparsityCache]:
    """Sparse-AE penalty sum_j KL(rho || rho_hat_j), rho_hat_j = mean_B h_j (h in (0, 1)).

    KL(rho || r) = rho log(rho / r) + (1 - rho) log((1 - rho) / (1 - r))     h: (B, H)
    A batch-level penalty (not per example); the model multiplies it by its weight beta.
    """
    xp = get_xp(h)
    r = h.mean(axis=0)  # (H,)
    penalty = (rho * xp.log(rho / r) + (1 - rho) * xp.log((1 - rho) / (1 - r))).sum()
    return penalty, SparsityCache(h, rho)


@op
def sparsity_kl_backward(cache: SparsityCache, dloss: Any) -> Array:
    """dP/dh_bj = (-rho / r_j + (1 - rho) / (1 - r_j)) / B  for every b, times dloss.  (B, H)"""
    h, rho = cache
    r = h.mean(axis=0)  # (H,)
    dpenalty_dr = -rho / r + (1 - rho) / (1 - r)  # (H,);  dr_j/dh_bj = 1/B
    return get_xp(h).broadcast_to(dpenalty_dr * (dloss / h.shape[0]), h.shape)
