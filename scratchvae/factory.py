"""Models by kind: the classes, and a model rebuilt from the ``config`` a checkpoint saved.
Re-exported by :mod:`scratchvae.models`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .backend import Backend

if TYPE_CHECKING:
    from .models import AE

MODEL_KINDS = ("vae", "ae", "dae", "sae")


def model_classes() -> dict[str, type[AE]]:
    """kind -> class: AE and VAE (:mod:`scratchvae.models`) and the AE variants of
    :mod:`scratchvae.autoencoders`."""
    from .autoencoders import DenoisingAE, SparseAE  # noqa: PLC0415 - they subclass AE
    from .models import AE, VAE  # noqa: PLC0415 - it imports this module

    return {"vae": VAE, "ae": AE, "dae": DenoisingAE, "sae": SparseAE}


def build_model(config: Mapping[str, Any], backend: Backend | None = None) -> AE:
    """Rebuild a model from its ``config`` (as saved in a checkpoint)."""
    from .checkpoint_checks import check_settings  # noqa: PLC0415 - it imports this module

    config = dict(config)
    kind = config.pop("model", None)
    check_settings(kind, config)  # the kind and its settings' names, else one line
    return model_classes()[kind](backend=backend, **config)
