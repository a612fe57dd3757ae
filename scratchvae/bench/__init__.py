"""Benchmarks: scratchvae's training step against PyTorch and JAX, the matmul bound, memory,
and the cost of the importance-weighted evaluation.

``scratchvae bench`` (or ``python benchmarks/run.py``) measures, for the MNIST-shaped VAE
784-400-20 and a wider 784-1024-1024-50 (ReLU, Bernoulli decoder, Adam 1e-3):

* throughput of one training step (draw eps, forward, backward, Adam update) in samples/s,
  for several batch sizes and dtypes, on the chosen backend (NumPy, or CuPy on a GPU; on
  NumPy on the CPU threads a training run would take: the cores other processes leave free);
* the same step in PyTorch (same architecture, loss, optimizer) and in JAX (``jax.jit``),
  timed in the same run, interleaved repetition by repetition so load changes hit all alike;
  before timing, both are checked to give the same loss, gradients and Adam update for the
  same weights, data and eps (a reference that does not stops the run, nothing timed);
* the matrix-product bound: the step's products alone (same shapes, dtype, backend), and the
  fraction ``matmul time / step time`` the step reaches;
* memory: peak and growth over many steps (tracemalloc and RSS; the GPU's pools on CuPy);
* evaluation: the importance-weighted bound with k samples on N inputs (time, peak memory).

Results go to ``<out>/<machine>.json`` and ``.md``, and a plot ``<machine>.png``. PyTorch and
JAX are optional (extra ``bench``); what is missing is skipped and said so: they are imported
only when a reference runs. Timings are medians of repetitions with their quartiles (and
min/max); the machine, BLAS, library versions, the load average before and after, and the
cores other processes kept busy while the steps were timed are written next to them.

The modules, by concern:

=================  ==========================================================================
``timing``         the timed step (:class:`ScratchStep`), interleaved timing, the matmul bound
``references``     the PyTorch and JAX steps, and their adapters for the check below
``equivalence``    the check that a reference computes scratchvae's weights, loss, gradients
                   and Adam update, before anything is timed
``memory``         memory probes in fresh processes, tracemalloc, the evaluation's cost
``report``         machine information, the JSON / Markdown files and the throughput plot
``options``        the options, their defaults and the checks that need no machine
``cli``            the whole run (``scratchvae bench``)
``checks``         the checks that touch the machine: --out, --name, --busy-cores
=================  ==========================================================================
"""

from __future__ import annotations

from .cli import SCHEMA, add_arguments, main, run_benchmarks, run_cli
from .memory import eval_cost, memory_probe
from .references import JaxStep, TorchStep, check_jax, check_torch
from .report import machine_info, machine_name, markdown_report, plot_throughput, write_outputs
from .timing import ADAM, CONFIGS, ScratchStep, matmul_bound_fn, summarize, time_interleaved

__all__ = [
    "ADAM",
    "CONFIGS",
    "SCHEMA",
    "JaxStep",
    "ScratchStep",
    "TorchStep",
    "add_arguments",
    "check_jax",
    "check_torch",
    "eval_cost",
    "machine_info",
    "machine_name",
    "main",
    "markdown_report",
    "matmul_bound_fn",
    "memory_probe",
    "plot_throughput",
    "run_benchmarks",
    "run_cli",
    "summarize",
    "time_interleaved",
    "write_outputs",
]
