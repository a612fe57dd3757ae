"""The CPU contention figures, run after run: ``scratchvae bench --contention`` several times in a
row (each a fresh process), then one table of what each run says against the targets.

    python benchmarks/contention_runs.py OUT [--runs 6] [--reps 9]
    python benchmarks/contention_runs.py OUT --summarize RUN.json [RUN.json ...] [--note TEXT]

A single contention run is one draw from a noisy host: its "busy" figure alone has ranged over
0.89-1.16x JAX in one hour. The table gives every run, so a claim rests on all of them. Writes
``OUT/run-N/`` (each run's own files) and ``OUT/<machine>-contention-runs.md``/``.json``;
``--summarize`` tabulates result files written before, runs nothing. The JSON holds every
run's whole result too.

Columns (batch 128 unless the runs say otherwise): idle samples/s of scratchvae and its ratio
to PyTorch and JAX; busy: the share of its idle speed scratchvae kept and its ratio to JAX;
pair: the share each of the two trainings got of a lone one's (the run's idle figure).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scratchvae.atomic import atomic_write  # noqa: E402
from scratchvae.cliargs import COUNT, one_line_error, script_parser  # noqa: E402

TARGETS = "busy: kept >= 60% and >= 1.00x JAX; pair: each >= 45%; idle: >= 1.5x PyTorch, > 1x JAX"


def _rate(rows: list[dict], batch: int, condition: str, impl: str) -> float | None:
    for r in rows:
        if (r["batch"], r["condition"], r["impl"]) == (batch, condition, impl):
            return float(r["samples_per_s"])
    return None


def _partner(rows: list[dict], batch: int) -> float | None:
    for r in rows:
        if (r["batch"], r["condition"], r["impl"]) == (batch, "pair", "scratchvae"):
            return r.get("partner_samples_per_s")
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summary_row(result: dict[str, Any], batch: int) -> dict[str, Any]:
    """What one contention run says about the item's figures at ``batch``."""
    rows = result["rows"]
    idle = _rate(rows, batch, "idle", "scratchvae")
    busy, pair = _rate(rows, batch, "busy", "scratchvae"), _rate(rows, batch, "pair", "scratchvae")
    return {
        "batch": batch,
        "idle": idle,
        "idle_x_torch": _ratio(idle, _rate(rows, batch, "idle", "torch")),
        "idle_x_jax": _ratio(idle, _rate(rows, batch, "idle", "jax")),
        "busy_kept": _ratio(busy, idle),
        "busy_x_jax": _ratio(busy, _rate(rows, batch, "busy", "jax")),
        "pair_kept": _ratio(pair, idle),
        "partner_kept": _ratio(_partner(rows, batch), idle),
        "load_avg_start": result["machine"].get("load_avg_start"),
    }


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(machine: str, names: list[str], rows: list[dict[str, Any]], note: str = "") -> str:
    lines = [
        f"# Contention runs, one after the other: {machine}",
        "",
        "Each row is one `scratchvae bench --contention` run (`benchmarks/contention_runs.py`). "
        f"The targets: {TARGETS}.",
        *(["", note] if note else []),
        "",
        "| run | batch | idle /s | idle x torch | idle x jax | busy kept | busy x jax "
        "| pair kept | partner kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in zip(names, rows, strict=True):
        lines.append(
            f"| {name} | {r['batch']} | {_cell(r['idle'], '.0f')} "
            f"| {_cell(r['idle_x_torch'], '.2f')} | {_cell(r['idle_x_jax'], '.2f')} "
            f"| {_cell(r['busy_kept'], '.0%')} | {_cell(r['busy_x_jax'], '.2f')} "
            f"| {_cell(r['pair_kept'], '.0%')} | {_cell(r['partner_kept'], '.0%')} |"
        )
    return "\n".join(lines) + "\n"


def run_names(paths: list[Path]) -> list[str]:
    """Each run's name: its folder's (run-N) where those differ, else the shortest tail of its
    path (without .json) that no other run shares."""
    if len({p.parent.name for p in paths}) == len(paths):
        return [p.parent.name for p in paths]
    parts = [p.resolve().with_suffix("").parts for p in paths]
    for n in range(1, max(len(q) for q in parts) + 1):
        tails = ["/".join(q[-n:]) for q in parts]
        if len(set(tails)) == len(tails):
            return tails
    return [str(p) for p in paths]  # the same file twice


def summarize(paths: list[Path], out: Path, note: str = "") -> Path:
    """Tabulate the contention results ``paths`` into ``out``; return the table's path."""
    results = [json.loads(p.read_text()) for p in paths]
    names, rows = [], []
    for path, result in zip(run_names(paths), results, strict=True):
        for batch in result["settings"]["batch_sizes"]:
            names.append(path)
            rows.append(summary_row(result, batch))
    machine = results[0]["machine"]
    stem = Path(paths[0]).name.removesuffix("-contention.json") + "-contention-runs"
    title = f"{machine['cpu']} ({machine['cores']} cores)"
    doc = {"schema": "scratchvae-contention-runs/1", "machine": machine, "targets": TARGETS,
           "runs": [{"run": n, **r} for n, r in zip(names, rows, strict=True)],
           "note": note, "results": results}  # fmt: skip
    table = out / f"{stem}.md"
    for path, text in ((out / f"{stem}.json", json.dumps(doc, indent=1) + "\n"),
                       (table, markdown(title, names, rows, note))):  # fmt: skip
        with atomic_write(path, "w") as f:
            f.write(text)
    return table


def main() -> None:
    parser = script_parser(__file__, "the CPU contention figures, run after run")
    parser.add_argument("out", type=Path, help="folder for the runs and the table")
    parser.add_argument("--runs", type=COUNT, default=6)
    parser.add_argument("--reps", type=COUNT, default=9)
    parser.add_argument("--note", default="", help="a line for the table (the commit, the host)")
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="RUN.json",
                        help="tabulate these contention result files; run nothing")  # fmt: skip
    opts = parser.parse_args()
    paths = opts.summarize
    if paths is None:
        paths = []
        for i in range(1, opts.runs + 1):
            run_dir = opts.out / f"run-{i}"
            cmd = [sys.executable, "-m", "scratchvae", "bench", "--contention",
                   "--reps", str(opts.reps), "--out", str(run_dir)]  # fmt: skip
            if subprocess.run(cmd).returncode != 0:  # it said why, on its own stderr
                parser.exit(1, one_line_error(f"run {i} failed; see above", parser.prog) + "\n")
            paths += sorted(run_dir.glob("*-contention.json"))
    try:
        table = summarize(paths, opts.out, opts.note)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        parser.error(f"cannot tabulate the runs ({why}); give the *-contention.json files "
                     "that `scratchvae bench --contention` wrote")  # fmt: skip
    print(table.read_text(), end="")


if __name__ == "__main__":
    main()
