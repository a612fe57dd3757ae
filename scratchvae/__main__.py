"""``python -m scratchvae``: the ``scratchvae`` command (:func:`scratchvae.cli.run`)."""

from .cli import run

if __name__ == "__main__":
    run()
