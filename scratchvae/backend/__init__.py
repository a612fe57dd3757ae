"""The backend: arrays (NumPy or CuPy, dtype, seeded generator) and the op dispatch.

``arrays.py`` is the only module that imports numpy, cupy, scipy.special and cupyx;
``dispatch.py`` makes every op pick its own implementation (a Numba or CuPy kernel, or its
readable body) for the arrays it is given; ``threads.py`` says how many CPU threads the training
step uses. Everything is importable from ``scratchvae.backend``.
"""

from .arrays import *  # noqa: F403
from .arrays import __all__ as _arrays_all
from .dispatch import *  # noqa: F403
from .dispatch import __all__ as _dispatch_all
from .threads import *  # noqa: F403
from .threads import __all__ as _threads_all

__all__ = [*_arrays_all, *_dispatch_all, *_threads_all]
