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
import os
import sys
from typing import Any

# OpenBLAS's idle threads spin for 2^28 cycles (about 0.1 s) after each product before they
# sleep. On a machine busy with something else, those spinning threads take the cores the
# one thread still computing needs, and the training step fell to a third of its speed (with
# one competing process) or to 1/40 (with several). 2^4 cycles: they sleep at once; an idle
# machine loses nothing measurable (benchmarks/README.md, "CPU threads"). OpenBLAS reads it
# when it loads, so only if NumPy is not loaded yet, and never over the user's own value.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

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
