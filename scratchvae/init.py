"""Weight initialisers, drawing from the backend's seeded generator.

Glorot and He keep the variance of activations (Glorot: also of gradients) roughly constant
across layers; their biases start at zero. ``uniform`` is PyTorch's ``nn.Linear`` default
(weights AND biases ~ U(-1/sqrt(n_in), 1/sqrt(n_in))), for comparisons with PyTorch code.
"""

from __future__ import annotations

import math
from typing import Any

from .backend import Backend

Array = Any


def glorot_uniform(backend: Backend, n_in: int, n_out: int) -> Array:
    """W ~ U(-a, a), a = sqrt(6 / (n_in + n_out))  (Glorot & Bengio 2010). Shape (n_in, n_out)."""
    a = math.sqrt(6.0 / (n_in + n_out))
    return (2 * backend.uniform((n_in, n_out)) - 1) * a


def he_normal(backend: Backend, n_in: int, n_out: int) -> Array:
    """W ~ N(0, 2 / n_in)  (He et al. 2015), for ReLU-family layers. Shape (n_in, n_out)."""
    return backend.normal((n_in, n_out)) * math.sqrt(2.0 / n_in)


def fan_in_uniform(backend: Backend, n_in: int, n_out: int) -> Array:
    """W ~ U(-1/sqrt(n_in), 1/sqrt(n_in)): PyTorch's nn.Linear default
    (kaiming_uniform with a = sqrt(5)). Shape (n_in, n_out)."""
    return fan_in_uniform_bias(backend, n_in, (n_in, n_out))


def fan_in_uniform_bias(backend: Backend, n_in: int, shape: Any) -> Array:
    """U(-1/sqrt(n_in), 1/sqrt(n_in)) of any shape (PyTorch also draws biases this way)."""
    return (2 * backend.uniform(shape) - 1) / math.sqrt(n_in)


INITIALISERS = {"glorot": glorot_uniform, "he": he_normal, "uniform": fan_in_uniform}


def default_init(activation: str) -> str:
    """He for the ReLU family, Glorot otherwise."""
    return "he" if activation in ("relu", "leaky_relu", "elu") else "glorot"
