"""``python -m scratchvae.bench``: the same as ``scratchvae bench``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
