"""scratchvae: auto-encoders and VAEs from scratch, every backward pass written by hand.

The names a user needs, importable from the package itself::

    from scratchvae import Backend, VAE, Adam, fit, TrainConfig, load_model

They are loaded on first use (``import scratchvae`` itself stays cheap). The layers underneath:
``scratchvae.ops`` (forward/backward pairs) -> ``scratchvae.models`` (AE, VAE: one op call per
line) -> ``scratchvae.train`` / ``scratchvae.evaluate`` -> ``scratchvae.cli`` and
``scratchvae.lab``; ``scratchvae.backend`` picks NumPy or CuPy and each op's kernel.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AE",
    "SGD",
    "VAE",
    "Adam",
    "Backend",
    "DenoisingAE",
    "SparseAE",
    "TrainConfig",
    "__version__",
    "build_model",
    "fit",
    "load_dataset",
    "load_model",
]

_WHERE = {
    "Backend": "backend",
    "AE": "models",
    "VAE": "models",
    "build_model": "models",
    "DenoisingAE": "autoencoders",
    "SparseAE": "autoencoders",
    "Adam": "optim",
    "SGD": "optim",
    "fit": "train",
    "TrainConfig": "train",
    "load_model": "checkpoint",
    "load_dataset": "data",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scratchvae")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'scratchvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
