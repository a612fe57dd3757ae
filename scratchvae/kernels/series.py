"""``exp(-|x|)`` and ``log1p`` for Numba kernels, written out as textbook series.

Numba has no vectorised ``exp``/``log1p`` of its own: it calls a scalar libm function per
element, several times slower than NumPy's. The series below are plain multiply-adds, which LLVM
vectorises, so a kernel that calls them stays one vectorised loop (the Bernoulli loss and
log-likelihood kernels of :mod:`scratchvae.kernels.cpu`). Accuracy (tests/kernels): within 0.93
and 1.9 units in the last place of the exact values in float32 (NumPy's: 2.4 and 1.8), 0.85 and
1.9 in float64 (NumPy's: 0.7 and 0.6).

Imported only where Numba is installed.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numba
import numpy as np  # numpy-boundary: Numba's kernels take NumPy arrays and scalars
from llvmlite import ir as llvm_ir
from numba.extending import intrinsic


class SeriesConstants(NamedTuple):
    """The numbers of the Bernoulli kernel's ``exp`` and ``log1p`` (:func:`_exp_minus`,
    :func:`log1p_unit`), all of the arrays' dtype so that float32 arithmetic stays float32."""

    inv_ln2: Any
    ln2_hi: Any  # ln 2 = ln2_hi + ln2_lo (Cody & Waite): ln2_hi has trailing zero bits, so
    ln2_lo: Any  # n * ln2_hi is exact for every n used, and n ln2 - a cancels exactly
    arg_max: Any  # exp(-arg_max) is still a normal number; beyond it exp(-a) is taken as 0
    zero: Any
    half: Any
    two: Any
    exp_taylor: tuple  # 1 / k!:  exp(y) = sum_k y^k / k!  for |y| <= ln2 / 2
    atanh_tail: tuple  # 1 / (2k + 1), k >= 1:  atanh(s) / s - 1 = s^2 / 3 + s^4 / 5 + ...


def _series_constants(
    dtype: Any, ln2_hi: float, ln2_lo: float, arg_max: float, n_exp: int, n_atanh: int
) -> SeriesConstants:
    t = np.dtype(dtype).type
    return SeriesConstants(
        t(1 / math.log(2)),
        t(ln2_hi),
        t(ln2_lo),
        t(arg_max),
        t(0),
        t(0.5),
        t(2),
        tuple(t(1 / math.factorial(k)) for k in range(n_exp)),
        tuple(t(1 / (2 * k + 1)) for k in range(1, n_atanh + 1)),
    )


# Terms kept: truncation errors below the dtype's rounding. float32: Taylor to y^7 leaves
# < 0.347^8 / 8! = 5e-9, the atanh series to s^12 leaves < 9^-7 / 15 = 1.4e-8 (s <= 1/3).
# float64: to y^13, < 0.35^14 / 14! = 5e-18; to s^30, < 9^-16 / 33 = 2e-17. The ln 2 splits
# are Cephes' (float32) and fdlibm's (float64).
SERIES = {
    "float32": _series_constants("float32", 0.693359375, -2.12194440e-4, 87.0, 8, 6),
    "float64": _series_constants(
        "float64", 6.93147180369123816490e-01, 1.90821492927058770002e-10, 708.0, 14, 15
    ),
}


# "contract": a multiply and an add may become one fused multiply-add (one rounding instead of
# two; Horner's rule is a chain of them)
_series_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


@intrinsic
def _pow2(typingctx, n):  # noqa: ANN001, ANN202 - compiled
    """2^n for a whole float n in the normal range, from its IEEE 754 bit pattern: the
    biased exponent (n + 127 in bits 23-30 of a float32, n + 1023 in bits 52-62 of a
    float64) over a zero mantissa. Plain integer and bit operations, so the loop around it
    still vectorises; ``math.ldexp`` would be a libm call per element."""
    bits, bias, shift = (32, 127, 23) if n == numba.float32 else (64, 1023, 52)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        int_t = llvm_ir.IntType(bits)
        biased = builder.add(builder.fptosi(args[0], int_t), llvm_ir.Constant(int_t, bias))
        pattern = builder.shl(biased, llvm_ir.Constant(int_t, shift))
        return builder.bitcast(pattern, context.get_value_type(n))

    return n(n), codegen


@_series_jit
def _horner(coeffs, y):  # noqa: ANN001, ANN202 - compiled
    # coeffs[0] + y (coeffs[1] + y (coeffs[2] + ...))
    acc = coeffs[-1]
    for k in range(len(coeffs) - 2, -1, -1):
        acc = coeffs[k] + y * acc
    return acc


@_series_jit
def _exp_minus(a, c):  # noqa: ANN001, ANN202 - compiled
    # exp(-a) for a in [0, c.arg_max]. Write a = n ln2 - y with n = round(a / ln2), so
    # |y| <= ln2 / 2, and exp(-a) = 2^-n exp(y): a power of two times a short Taylor series.
    n = np.floor(a * c.inv_ln2 + c.half)
    y = (n * c.ln2_hi - a) + n * c.ln2_lo  # n ln2 - a, the large part cancelling exactly
    return _horner(c.exp_taylor, y) * _pow2(-n)


@_series_jit
def exp_minus_abs(x: Any, c: SeriesConstants) -> Any:  # x: a float scalar of c's dtype
    # exp(-|x|) for any x: 0 past c.arg_max (the exact value is below the smallest normal
    # number there), NaN for NaN. NaN and the far tail take arg_max into _exp_minus, so its
    # float-to-integer conversion always has a defined result.
    a = abs(x)
    e = _exp_minus(a if a <= c.arg_max else c.arg_max, c)
    if not a <= c.arg_max:
        e = c.zero if a > c.arg_max else a  # 0, or the NaN itself
    return e


@_series_jit
def log1p_unit(e: Any, c: SeriesConstants) -> Any:  # e: a float scalar of c's dtype
    # log(1 + e) for e in [0, 1]: 1 + e = (1 + s) / (1 - s) with s = e / (2 + e) in
    # [0, 1/3], and log((1 + s) / (1 - s)) = 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + ...).
    # The leading 2s is added last, so the series' rounding is that of a small correction.
    s = e / (c.two + e)
    s2 = s * s
    return c.two * s + c.two * s * (s2 * _horner(c.atanh_tail, s2))
