"""How much memory this process can still take on the host: Linux's MemAvailable, and, in a
container, what its memory cgroup still allows.

A container's limit is not in ``/proc/meminfo``, which shows the whole host: a model that fits
the host but not a 4 GB container would pass a check against MemAvailable alone and be killed
by the kernel while its weights were written. So :func:`host_available_memory` also reads the
process's memory cgroup (``/proc/self/cgroup``; cgroup v2 ``memory.max`` / v1
``memory.limit_in_bytes``), at its level and every level above it, and takes the tightest
limit less what the cgroup holds that is not file cache (the kernel reclaims cache before it
kills anything). None where nothing can be read (not Linux).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["cgroup_free_memory", "host_available_memory", "meminfo_available"]

_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63


def meminfo_available(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes (None where there is no such file or line)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _stat(path: Path, *keys: str) -> int:
    """The first of ``keys`` found in a memory.stat file (0 if none)."""
    text = _read(path) or ""
    values = dict(line.split(maxsplit=1) for line in text.splitlines() if " " in line)
    for key in keys:
        if key in values and values[key].isdigit():
            return int(values[key])
    return 0


def _level_free(directory: Path) -> int | None:
    """limit - (usage - file cache) of one cgroup folder, v2 or v1; None without a limit."""
    v2_limit = _read(directory / "memory.max")
    cache_keys: tuple[str, ...]  # the file cache's names in memory.stat
    if v2_limit is not None:
        usage, cache_keys = _read(directory / "memory.current"), ("file",)
        limit = None if v2_limit == "max" else v2_limit
    else:
        limit = _read(directory / "memory.limit_in_bytes")
        usage, cache_keys = _read(directory / "memory.usage_in_bytes"), ("total_cache", "cache")
    if limit is None or usage is None or not limit.isdigit() or not usage.isdigit():
        return None
    if int(limit) >= _NO_LIMIT:
        return None
    held = max(0, int(usage) - _stat(directory / "memory.stat", *cache_keys))
    return max(0, int(limit) - held)


def cgroup_free_memory(
    proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup"
) -> int | None:
    """Bytes the process's memory cgroup still allows: the tightest of its own limit and its
    ancestors', each less what that cgroup holds besides file cache; None without a limit."""
    text = _read(Path(proc_cgroup))
    if not text:
        return None
    tightest = None
    for line in text.splitlines():  # "4:memory:/a/b" (v1) or "0::/a/b" (v2)
        parts = line.split(":", 2)
        if len(parts) != 3 or not (parts[1] == "memory" or parts[:2] == ["0", ""]):
            continue
        base = Path(root, "memory") if parts[1] == "memory" else Path(root)
        if parts[1] == "" and not (base / "cgroup.controllers").exists():
            continue  # no cgroup v2 hierarchy at the root (a v1 or hybrid machine)
        path = base.joinpath(*[p for p in parts[2].split("/") if p])
        while True:
            free = _level_free(path)
            if free is not None:
                tightest = free if tightest is None else min(tightest, free)
            if path == base:
                break
            path = path.parent
    return tightest


def host_available_memory() -> int | None:
    """The smaller of MemAvailable and what the memory cgroup allows (None: unknown)."""
    known = [m for m in (meminfo_available(), cgroup_free_memory()) if m is not None]
    return min(known) if known else None
