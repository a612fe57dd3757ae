"""scratchvae.backend.memory: MemAvailable and a container's memory cgroup, on fake /proc and
/sys/fs/cgroup trees (cgroup v1, v2, and a v1 machine with an empty v2 line)."""

from __future__ import annotations

from pathlib import Path

from scratchvae.backend import memory

GIB = 1 << 30


def _write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_meminfo_available_reads_kilobytes(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemFree: 10 kB\nMemAvailable:   2048 kB\n")
    assert memory.meminfo_available(str(meminfo)) == 2048 * 1024
    assert memory.meminfo_available(str(tmp_path / "none")) is None
    meminfo.write_text("MemTotal:  100 kB\nMemFree: 10 kB\n")  # a kernel before 3.14
    assert memory.meminfo_available(str(meminfo)) is None


def test_cgroup_v2_takes_the_tightest_limit_up_the_tree_less_what_is_not_cache(tmp_path) -> None:
    root = tmp_path / "cgroup"
    _write(root, cgroup_controllers="memory", memory_max="max")
    # the container: 4 GiB, 3 GiB used of which 2 GiB file cache -> 3 GiB free
    _write(root / "pod", memory_max=str(4 * GIB), memory_current=str(3 * GIB),
           memory_stat=f"anon {GIB}\nfile {2 * GIB}\n")  # fmt: skip
    # the process's own cgroup inside it: no limit of its own
    _write(root / "pod" / "job", memory_max="max", memory_current=str(GIB), memory_stat="")
    proc = tmp_path / "cgroup-self"
    proc.write_text("0::/pod/job\n")
    assert memory.cgroup_free_memory(str(proc), str(root)) == 3 * GIB
    proc.write_text("0::/\n")  # the root cgroup: no limit
    assert memory.cgroup_free_memory(str(proc), str(root)) is None
    # no file cache to tell apart (no memory.stat, or none of its keys): all usage counts
    (root / "pod" / "memory.stat").write_text("anon 5\n")
    proc.write_text("0::/pod/job\n")
    assert memory.cgroup_free_memory(str(proc), str(root)) == GIB
    (root / "pod" / "memory.stat").unlink()
    assert memory.cgroup_free_memory(str(proc), str(root)) == GIB


def test_cgroup_v1_reads_limit_in_bytes_and_ignores_the_no_limit_number(tmp_path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "memory", memory_limit_in_bytes="9223372036854771712")
    stat = f"cache 0\ntotal_cache {GIB // 2}\n"  # total_: this cgroup and those below it
    _write(root / "memory" / "docker" / "abc", memory_limit_in_bytes=str(2 * GIB),
           memory_usage_in_bytes=str(GIB), memory_stat=stat)  # fmt: skip
    proc = tmp_path / "cgroup-self"
    proc.write_text("12:pids:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n")
    # 2 GiB - (1 GiB - 0.5 GiB cache); the empty v2 line is skipped (no v2 tree at the root)
    assert memory.cgroup_free_memory(str(proc), str(root)) == 2 * GIB - GIB // 2
    (root / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert memory.cgroup_free_memory(str(proc), str(root)) is None


def test_no_cgroup_file_means_unknown(tmp_path) -> None:
    assert memory.cgroup_free_memory(str(tmp_path / "none"), str(tmp_path)) is None
    assert memory.host_available_memory() is None or memory.host_available_memory() > 0
