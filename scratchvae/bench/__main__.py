"""``python -m scratchvae.bench``: the same as ``scratchvae bench``."""

import sys

from .cli import main

sys.exit(main())
