"""scratchvae: auto-encoders and VAEs with hand-written forward and backward passes."""

__version__ = "0.1.0"
