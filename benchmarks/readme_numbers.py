"""Rerun what produced the README's checked numbers (the claims listed below; timings aside)
and compare, within tolerance.

    python benchmarks/readme_numbers.py                       # the digits: a few minutes
    python benchmarks/readme_numbers.py --data-dir DIR        # and the MNIST table (DIR/mnist/)
    python benchmarks/readme_numbers.py --only default-run    # one group

Every claim reads its value from README.md itself (the pattern next to it below), so the README
and this check cannot drift apart unnoticed; then it runs the command the README names (in a
temporary folder), takes the same figure and checks |ours - README| <= tolerance. Tolerances:
float32 training rounds differently with and without the compiled kernels and with another
BLAS, and 100 epochs turn that rounding into about 0.01 nats on the digits, hence 0.02 there;
the MNIST protocol (4,690 steps, 784-400-20) moves by up to 0.3 nats; the SNR table's decoder
column by 10%, its encoder columns (a trained encoder's SNR, sensitive to the training's
rounding) by 40%. Timings are not checked: the README names the machine and the results file
each comes from. Writes ``readme-numbers.md`` and ``.json`` into ``--out`` (default
benchmarks/results/) and exits 1 when a number does not reproduce.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from scratchvae.atomic import atomic_write  # noqa: E402
from scratchvae.backend import kernels  # noqa: E402
from scratchvae.checkpoint import load_model  # noqa: E402
from scratchvae.cli import main as cli_main  # noqa: E402
from scratchvae.cliargs import script_parser  # noqa: E402
from scratchvae.data import load_dataset  # noqa: E402
from scratchvae.evaluate import evaluate  # noqa: E402


@dataclass
class Claim:
    group: str  # what reproduces it (one run serves the group's claims)
    name: str
    pattern: str  # a regex whose first group is the README's number
    key: str  # the figure in the group's results
    tolerance: float  # absolute, or relative when ``relative``
    relative: bool = False


NUM = r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)"
CLAIMS = [
    # the default run, as `pip install ".[test]"` installs it (the Numba kernels), then NumPy alone
    Claim("default-run", "-ELBO", rf"-ELBO\s+{NUM}\s+\(recon", "neg_elbo", 0.02),
    Claim("default-run", "recon", rf"-ELBO\s+[\d.]+\s+\(recon {NUM}", "recon", 0.02),
    Claim("default-run", "KL", rf"-ELBO\s+[\d.]+\s+\(recon [\d.]+ \+ KL {NUM}", "kl", 0.02),
    Claim("default-run", "IW bound", rf"IW bound\s+log p\(x\) >= {NUM}", "iw_bound", 0.02),
    Claim("default-run-numpy", "-ELBO", rf"NumPy alone[^)]*?ends at {NUM}", "neg_elbo", 0.02),
    Claim("default-run-numpy", "IW bound", rf"NumPy alone[^)]*?IW bound {NUM}", "iw_bound", 0.02),
    # the MNIST table, seed 0
    Claim("mnist", "test -ELBO", rf"\| 0 \| \*\*{NUM}\*\*", "neg_elbo", 0.3),
    Claim("mnist", "recon", rf"\| 0 \| \*\*[\d.]+\*\* \| {NUM} \+", "recon", 0.3),
    Claim("mnist", "KL", rf"\| 0 \| \*\*[\d.]+\*\* \| [\d.]+ \+ {NUM} \|", "kl", 0.3),
    Claim(
        "mnist",
        "IW -log p(x)",
        rf"\| 0 \| \*\*[\d.]+\*\* \| [\d.]+ \+ [\d.]+ \| {NUM}",
        "iw_nll",
        0.3,
    ),
    # the examples' table
    Claim(
        "vae_digits",
        "test -ELBO",
        rf"vae_digits.py` \| reconstructions.*?-ELBO {NUM}",
        "neg_elbo",
        0.05,
    ),
    Claim("vae_digits", "-log p(x)", rf"vae_digits.py` \| .*?-log p\(x\) <= {NUM}", "iw_nll", 0.05),
    Claim(
        "ae_vs_vae",
        "AE distance",
        rf"AE samples are far from any digit \(distance {NUM}",
        "AE",
        0.05,
        True,
    ),
    Claim("ae_vs_vae", "VAE distance", rf"VAE samples are close \({NUM}", "VAE", 0.05, True),
    Claim("ae_vs_vae", "real digits", rf"real digits {NUM}\)", "test_nn", 0.05, True),
    Claim(
        "denoising_ae", "DAE Gaussian", rf"error to the clean image {NUM} /", "gaussian", 0.05, True
    ),
    Claim(
        "denoising_ae", "DAE mask", rf"error to the clean image [\d.]+ / {NUM}", "mask", 0.05, True
    ),
    Claim(
        "denoising_ae",
        "AE Gaussian",
        rf"vs {NUM} / [\d.]+ for a plain AE",
        "ae_gaussian",
        0.05,
        True,
    ),
    Claim(
        "sparse_ae", "mean activation", rf"mean hidden activation {NUM}", "mean_activation", 0.003
    ),
    Claim(
        "linear_ae_pca",
        "largest angle (deg)",
        rf"largest principal angle {NUM} degrees",
        "angle",
        1e-3,
    ),
    Claim(
        "imputation", "VAE error", rf"missing pixels filled by the VAE: error {NUM}", "vae", 0.003
    ),
    Claim("imputation", "mean image", rf"filled by the VAE: error [\d.]+ vs {NUM}", "mean", 0.003),
]
# the SNR table: one claim per cell
for _k in (1, 10, 100, 1000):
    for _i, _col in enumerate(("pathwise", "stl", "dreg", "decoder")):
        _cells = r" \| [\d.]+" * _i
        CLAIMS.append(Claim("iwae_snr", f"k={_k} {_col}", rf"\n  \| {_k}{_cells} \| {NUM}",
                            f"{_col}{_k}", 0.10 if _col == "decoder" else 0.40, True))  # fmt: skip


# ------------------------------------------------------------------------------ the runs
def _quiet(fn: Callable[[], Any]) -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


def default_run(compiled: bool) -> dict[str, float]:
    """`scratchvae train` with no arguments, then what `scratchvae evaluate` prints."""
    with tempfile.TemporaryDirectory() as tmp, kernels(compiled):
        out = str(Path(tmp) / "run")
        if _quiet(lambda: cli_main(["train", "--no-progress", "--no-figures", "--out", out])):
            raise RuntimeError("scratchvae train failed")
        model, _ = load_model(out)
        r = evaluate(model, load_dataset("digits", "test").x, iw_samples=1000)
    return {**r, "iw_bound": -r["iw_nll"]}


def mnist_run(data_dir: str) -> dict[str, float]:
    """The README's MNIST commands (seed 0)."""
    argv = ["train", "--data", "mnist", "--data-dir", data_dir, "--hidden", "400", "--latent",
            "20", "--activation", "relu", "--init", "uniform", "--epochs", "10", "--batch-size",
            "128", "--lr", "1e-3", "--binarize", "none", "--val-fraction", "0", "--seed", "0",
            "--no-progress", "--no-figures"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        if _quiet(lambda: cli_main([*argv, "--out", out])):
            raise RuntimeError("scratchvae train --data mnist failed")
        model, _ = load_model(out)
        test = load_dataset("mnist", "test", data_dir=data_dir)
        return evaluate(model, test.x, iw_samples=1000)


def example(name: str) -> dict[str, float]:
    """examples/<name>.py with its defaults on the digits; the README's figures from it."""
    module = __import__(name)
    with tempfile.TemporaryDirectory() as tmp:
        r = _quiet(lambda: module.main(["--out", tmp]))
    if name == "vae_digits":
        return r["latent"]
    if name == "ae_vs_vae":
        return {"AE": r["AE"]["nn"], "VAE": r["VAE"]["nn"], "test_nn": r["test_nn"]}
    if name == "denoising_ae":
        e = r["errors"]
        return {"gaussian": e["gaussian"]["DAE gaussian"], "mask": e["mask"]["DAE mask"],
                "ae_gaussian": e["gaussian"]["plain AE"]}  # fmt: skip
    if name == "sparse_ae":
        return r
    if name == "linear_ae_pca":
        return {"angle": r["max_angle_deg"]}
    if name == "imputation":
        e = r["errors"]["bottom-half"]
        return {"vae": e["VAE z = mu"], "mean": e["mean image"]}
    if name == "iwae_snr":
        cells = {}
        for row in r["rows"]:
            column = {"pathwise": "pathwise", "stl": "stl", "dreg": "dreg"}[row.estimator]
            cells[f"{column}{row.k}"] = row.encoder_snr
            if row.estimator == "pathwise":
                cells[f"decoder{row.k}"] = row.decoder_snr
        return cells
    raise ValueError(name)


def run_group(group: str, data_dir: str | None) -> dict[str, float] | None:
    if group == "default-run":
        return default_run(True)
    if group == "default-run-numpy":
        return default_run(False)
    if group == "mnist":
        return None if data_dir is None else mnist_run(data_dir)
    return example(group)


# ------------------------------------------------------------------------------ the check
def readme_value(text: str, claim: Claim) -> float:
    found = re.search(claim.pattern, text, flags=re.S)
    if found is None:
        raise LookupError(f"README.md no longer has the number for {claim.group}: {claim.name}")
    return float(found.group(1))


def check(claims: list[Claim], data_dir: str | None) -> list[dict[str, Any]]:
    text = (ROOT / "README.md").read_text()
    results, rows = {}, []
    for claim in claims:
        if claim.group not in results:
            t0 = time.perf_counter()
            print(f"running {claim.group} ...", flush=True)
            results[claim.group] = run_group(claim.group, data_dir)
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
        ours_all = results[claim.group]
        want = readme_value(text, claim)
        if ours_all is None:
            rows.append({"group": claim.group, "name": claim.name, "readme": want, "ours": None,
                         "tolerance": claim.tolerance, "relative": claim.relative,
                         "ok": None})  # fmt: skip
            continue
        ours = float(ours_all[claim.key])
        allowed = claim.tolerance * (abs(want) if claim.relative else 1.0)
        rows.append({"group": claim.group, "name": claim.name, "readme": want, "ours": ours,
                     "tolerance": claim.tolerance, "relative": claim.relative,
                     "ok": abs(ours - want) <= allowed})  # fmt: skip
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | figure | README | reproduced | tolerance | |", "|---" * 6 + "|"]
    for r in rows:
        tol = f"{100 * r['tolerance']:.0f}%" if r["relative"] else f"{r['tolerance']:g}"
        ours = "not run (no data)" if r["ours"] is None else f"{r['ours']:.5g}"
        mark = {True: "ok", False: "**differs**", None: "-"}[r["ok"]]
        lines.append(f"| {r['group']} | {r['name']} | {r['readme']:g} | {ours} | {tol} | {mark} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__file__, __doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="a folder holding mnist/ (the MNIST table; else skipped)")
    groups = list(dict.fromkeys(c.group for c in CLAIMS))
    p.add_argument("--only", nargs="+", choices=groups, metavar="GROUP",
                   help="these groups only: " + ", ".join(groups))  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    claims = [c for c in CLAIMS if not args.only or c.group in args.only]
    rows = check(claims, args.data_dir)
    table = report(rows)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    only = f" --only {' '.join(args.only)}" if args.only else ""  # a partial rerun says so
    with atomic_write(out / "readme-numbers.md", "w") as f:
        f.write(
            f"# README numbers, rerun ({stamp})\n\n`python benchmarks/readme_numbers.py"
            f"{' --data-dir DIR' if args.data_dir else ''}{only}`\n\n{table}\n"
        )
    with atomic_write(out / "readme-numbers.json", "w") as f:
        f.write(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
