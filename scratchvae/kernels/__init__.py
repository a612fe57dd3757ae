"""Fast versions of ops, kept together: ``cpu`` (Numba) and ``gpu`` (CuPy).

Each kernel has the name, the arguments and the results of the readable op it replaces, and a
test compares the two on the same input. :func:`scratchvae.backend.op` is the only caller.
"""
