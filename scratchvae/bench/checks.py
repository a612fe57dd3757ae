"""Checks of ``scratchvae bench``'s options that touch the machine: the output folder, the
file name stem, the cores to keep busy. Each runs before any timing (a benchmark takes
minutes; its results must not be lost to an option that could have been refused at once) and
returns a one-line problem, or None.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..backend import usable_core_ids, usable_cores

__all__ = [
    "check_busy_cores",
    "check_name",
    "check_replaces_results_only",
    "prepare_out",
    "usable_core_ids",
    "usable_cores",
]


def _ranges(cores: list[int]) -> str:
    """'0-3, 8, 10-11' for [0, 1, 2, 3, 8, 10, 11] (a machine may lend a process any set)."""
    spans: list[list[int]] = []
    for c in cores:
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def check_busy_cores(cores: list[int] | None) -> str | None:
    """``--busy-cores``: each one a core this process may use (a spinner pinned elsewhere
    fails silently and leaves the "busy" condition idle)."""
    usable = usable_core_ids()
    bad = [c for c in cores or [] if c not in usable]
    if not bad:
        return None
    return (
        f"--busy-cores {' '.join(map(str, bad))}: not a core this process may use; "
        f"choose among {_ranges(usable)}"
    )


def check_name(name: str | None) -> str | None:
    """``--name``: a file name stem, written inside --out; never a path out of it."""
    if name is None:
        return None
    if not name.strip() or name in (".", "..") or "\0" in name:
        return f"--name {name!r} is not a file name; give a stem such as my-machine"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        return (
            f"--name {name!r} holds a path separator; give a file name stem (the files go "
            "into --out; choose the folder there)"
        )
    return None


def prepare_out(out: str | None) -> str | None:
    """``--out``: created now (a folder, or its missing parents) and writable, so that a file
    in its way or a folder without write permission is said before the run, not after it."""
    if not out:
        return None
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"--out {out} is a file, not a folder; choose a folder for the results"
    except OSError as exc:
        return f"--out {out}: cannot create the folder ({exc.strerror}); choose another --out"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--out {out}: cannot write into this folder; choose another --out"
    return None


def _is_results(path: Path) -> bool:
    """Whether ``path`` is a JSON file that ``scratchvae bench`` wrote (its ``schema``)."""
    try:
        schema = json.loads(path.read_text()).get("schema", "")
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
        return False
    return isinstance(schema, str) and schema.startswith("scratchvae-bench")


def check_replaces_results_only(out: str | None, name: str | None) -> str | None:
    """``--out DIR --name NAME``: the run replaces NAME.json, .md and .png in DIR; that is
    refused when they are not an earlier run's results (no NAME.json of scratchvae bench's
    beside them), so that ``--name notes`` cannot replace a notes.md of the user's."""
    if not out or not name:
        return None  # the default name is the machine's: its files are earlier results
    folder = Path(out).expanduser()
    present = [folder / f"{name}{ext}" for ext in (".json", ".md", ".png")]
    present = [p for p in present if p.exists()]
    if not present or _is_results(folder / f"{name}.json"):
        return None
    return (
        f"--name {name}: {present[0]} is not the results of an earlier scratchvae bench run, "
        "and the run would replace it; choose another --name or --out"
    )
