"""The training step's five large matrix products (784-400-20 VAE, batch 128, float32) on one
and on two threads: NumPy's OpenBLAS, and where installed MKL (``pip install mkl``, called
through ``cblas_sgemm``) and JAX's jit (YNNPACK). Where benchmarks/README.md ("Why JAX leads on
two cores") gets its per-product times.

    python benchmarks/products.py [--reps 9]

Each library and thread count runs in a fresh process pinned to that many cores (JAX sizes
its thread pool from the cores, not from any variable). Prints one line per library, thread
count and product: the median time in us over ``--reps`` repetitions of 200 calls.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402  # numpy-boundary: the products themselves

from scratchvae.bench.report import threads_env  # noqa: E402
from scratchvae.cliargs import COUNT, script_parser  # noqa: E402

B, D, H = 128, 784, 400
# name -> (rows, columns, inner size, A transposed, B transposed) of C = op(A) op(B), row-major
PRODUCTS = {
    "encoder forward x W": (B, H, D, False, False),
    "encoder dW = x^T da": (D, H, B, True, False),
    "decoder forward h W": (B, D, H, False, False),
    "decoder dW = h^T dy": (H, D, B, True, False),
    "decoder dh = dy W^T": (B, H, D, False, True),
}


def _operands(m: int, n: int, k: int, ta: bool, tb: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.random((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.random((n, k) if tb else (k, n), dtype=np.float32)
    return a, b


def _median_us(call, reps: int, calls: int = 200) -> float:
    call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times) * 1e6)


def _numpy(reps: int) -> dict[str, float]:
    out = {}
    for name, (m, n, k, ta, tb) in PRODUCTS.items():
        a, b = _operands(m, n, k, ta, tb)
        c = np.empty((m, n), np.float32)
        a_op, b_op = (a.T if ta else a), (b.T if tb else b)
        out[name] = _median_us(lambda a_op=a_op, b_op=b_op, c=c: np.matmul(a_op, b_op, out=c), reps)
    return out


def _mkl(reps: int) -> dict[str, float] | None:
    prefix = Path(sys.prefix)
    found = sorted(glob.glob(str(prefix / "lib" / "libmkl_rt.so*")))
    if not found:
        return None
    mkl = ctypes.CDLL(found[0])
    mkl.MKL_Set_Num_Threads(int(os.environ["SCRATCHVAE_THREADS"]))
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    mkl.cblas_sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    out = {}
    for name, (m, n, k, ta, tb) in PRODUCTS.items():
        a, b = _operands(m, n, k, ta, tb)
        c = np.empty((m, n), np.float32)
        args = (
            101,
            112 if ta else 111,
            112 if tb else 111,
            m,
            n,
            k,
            1.0,  # row-major
            a.ctypes.data,
            a.shape[1],
            b.ctypes.data,
            b.shape[1],
            0.0,
            c.ctypes.data,
            n,
        )
        mkl.cblas_sgemm(*args)
        a_op, b_op = (a.T if ta else a), (b.T if tb else b)
        assert np.allclose(c, a_op @ b_op, rtol=1e-4), name
        out[name] = _median_us(lambda args=args: mkl.cblas_sgemm(*args), reps)
    return out


def _jax(reps: int) -> dict[str, float] | None:
    try:
        import jax  # noqa: PLC0415 - optional
    except ImportError:
        return None
    jax.config.update("jax_default_matmul_precision", "highest")
    out = {}
    for name, (m, n, k, ta, tb) in PRODUCTS.items():
        a, b = (jax.numpy.asarray(x) for x in _operands(m, n, k, ta, tb))
        f = jax.jit(lambda a, b, ta=ta, tb=tb: (a.T if ta else a) @ (b.T if tb else b))
        out[name] = _median_us(lambda f=f, a=a, b=b: f(a, b).block_until_ready(), reps)
    return out


def _child(library: str, reps: int) -> None:
    run = {"numpy": _numpy, "mkl": _mkl, "jax": _jax}[library]
    if library == "numpy":
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        threadpool_limits(int(os.environ["SCRATCHVAE_THREADS"]))
    print(json.dumps(run(reps)))


def main() -> int:
    parser = script_parser(__file__, __doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=COUNT, default=9)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.reps)
        return 0
    for threads in (1, 2):
        env, pin = threads_env(threads)
        for library in ("numpy", "mkl", "jax"):
            cmd = [sys.executable, __file__, "--child", library, "--reps", str(args.reps)]
            done = subprocess.run(cmd, env=env, preexec_fn=pin, capture_output=True, text=True)  # noqa: PLW1509
            if done.returncode != 0:
                print(f"{library}: failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            times = json.loads(done.stdout.strip().splitlines()[-1])
            if times is None:
                print(f"{library}: not installed")
                continue
            for name, us in times.items():
                print(f"{threads} thread(s)  {library:5s}  {name:22s} {us:7.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
