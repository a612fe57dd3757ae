"""``python -m scratchvae``: the ``scratchvae`` command (:func:`scratchvae.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
