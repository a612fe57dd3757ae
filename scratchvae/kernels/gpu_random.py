"""Random numbers on the GPU that a CUDA graph can replay: counter-based draws.

The i-th number of the c-th draw is a function of (seed, c, i) alone: a 64-bit hash
(SplitMix64's finaliser, applied three times) turned into a uniform number in (0, 1), and two
uniforms into a standard normal by Box and Muller's formula z = sqrt(-2 log u1) cos(2 pi u2).
The counter c lives in device memory and a one-thread kernel advances it after every draw, so
the same draw captured once into a CUDA graph gives new numbers at every replay (a cuRAND call
captured into a graph would replay the numbers of its capture). Nothing is stored but the seed
and c: a checkpoint saves the two and a resumed run continues the same stream.

Tests (``tests/kernels/test_gpu_kernels.py``, ``-m gpu``): moments of the draws, fresh numbers
between draws and between graph replays, the same numbers for the same seed and counter.
"""

from __future__ import annotations

from typing import Any

from ..backend import import_cupy

Array = Any

_HASH = r"""
__device__ unsigned long long svae_mix(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
__device__ unsigned long long svae_hash(unsigned long long seed, unsigned long long c,
                                        unsigned long long i) {
    return svae_mix(svae_mix(seed ^ svae_mix(c)) + i);
}
"""
# uniform in [0, 1) with as many random bits as the type holds exactly (24 or 53)
_UNIFORM = r"""
unsigned long long h = svae_hash(seed, counter[0], (unsigned long long)i);
out = sizeof(T) == 4 ? (T)((h >> 40) * (1.0 / 16777216.0))
                     : (T)((h >> 11) * (1.0 / 9007199254740992.0));
"""
# standard normal from two uniforms in (0, 1] and [0, 1)
_NORMAL = r"""
unsigned long long c = counter[0], j = 2 * (unsigned long long)i;
double u1 = ((svae_hash(seed, c, j) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
double u2 = (svae_hash(seed, c, j + 1) >> 11) * (1.0 / 9007199254740992.0);
out = (T)(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
"""
_KERNELS: dict[str, Any] = {}


def _kernel(name: str) -> Any:
    if name not in _KERNELS:
        xp = import_cupy()
        if name == "advance":
            _KERNELS[name] = xp.ElementwiseKernel(
                "", "raw uint64 counter", "counter[0] += 1", "svae_rng_advance"
            )
        else:
            body = _UNIFORM if name == "uniform" else _NORMAL
            _KERNELS[name] = xp.ElementwiseKernel(
                "raw uint64 counter, uint64 seed",
                "T out",
                body,
                f"svae_rng_{name}",
                preamble=_HASH,
            )
    return _KERNELS[name]


class CounterRNG:
    """The generator a CuPy :class:`~scratchvae.backend.Backend` draws from (its ``rng``):
    ``random(shape, dtype)`` and ``standard_normal(shape, dtype)`` like NumPy's generator."""

    def __init__(self, seed: int, counter: int = 0) -> None:
        xp = import_cupy()
        self.seed = int(seed) % (1 << 64)
        self.counter = xp.full(1, counter, dtype=xp.uint64)  # advanced on the device

    def _draw(self, kind: str, shape: Any, dtype: Any) -> Array:
        xp = import_cupy()
        out = xp.empty(shape, dtype=dtype)
        _kernel(kind)(self.counter, xp.uint64(self.seed), out)
        _kernel("advance")(self.counter, size=1)
        return out

    def random(self, shape: Any = None, dtype: Any = "float64") -> Array:
        """Uniform draws on [0, 1)."""
        return self._draw("uniform", () if shape is None else shape, dtype)

    def standard_normal(self, shape: Any = None, dtype: Any = "float64") -> Array:
        """Standard normal draws."""
        return self._draw("normal", () if shape is None else shape, dtype)

    def state(self) -> dict[str, int]:
        """{"seed", "counter"}: everything needed to continue this stream (one device read)."""
        return {"seed": self.seed, "counter": int(self.counter.get()[0])}
