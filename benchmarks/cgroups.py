"""A memory cgroup around one child process: its page cache capped below a file's size, on any machine size.

A dataset "bigger than RAM" needs no 31 GB file if the process reading it gets less memory than
the file: a memory cgroup charges the page cache a process brings in to that process' group, and
reclaims it (from the group alone) once the group reaches its limit. This module finds where this
session may create such a group (cgroup v1's ``memory`` hierarchy, or a delegated cgroup v2 folder
with the memory controller), makes one with a limit, runs a command inside it (a shell joins the
group, then ``exec``s the command, so nothing the child reads is charged elsewhere), reads its peak
and removes it. Where neither is writable, :func:`find_parent` says why, and callers fall back.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

_V1_FILES = {"limit": "memory.limit_in_bytes", "usage": "memory.usage_in_bytes", "peak": "memory.max_usage_in_bytes"}
_V2_FILES = {"limit": "memory.max", "usage": "memory.current", "peak": "memory.peak"}
_CACHE_STAT = {1: "cache", 2: "file"}  # memory.stat line of the group's page cache
_JOIN = 'echo $$ > "$0" && exec "$@"'  # sh: move this shell into the group, then become the command


class CgroupUnavailableError(RuntimeError):
    """No memory cgroup can be made here (the message says why)."""


@dataclass(frozen=True)
class CgroupParent:
    """A folder where this process may create memory cgroups: its own group, or a delegated one."""

    path: Path
    version: int


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, options) of every cgroup mount."""
    found = []
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _device, point, fstype, options = line.split()[:4]
            if fstype in ("cgroup", "cgroup2"):
                found.append((point, fstype, set(options.split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """Controller list (``memory``, or ``""`` for cgroup v2) -> this process' group path."""
    groups = {}
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            _hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                groups[controller] = path
    return groups


def _v1_parent() -> tuple[CgroupParent | None, str]:
    path = _own_groups().get("memory")
    mount = next((point for point, fstype, options in _mounts() if fstype == "cgroup" and "memory" in options), None)
    if path is None or mount is None:
        return None, "no cgroup v1 memory hierarchy"
    folder = Path(mount) / path.lstrip("/")
    if not (folder / _V1_FILES["limit"]).is_file():
        return None, f"{folder}: not this process' memory cgroup (no {_V1_FILES['limit']})"
    if not os.access(folder, os.W_OK):
        return None, f"{folder}: cgroup v1 memory group not writable by this user"
    return CgroupParent(folder, 1), ""


def _v2_parent() -> tuple[CgroupParent | None, str]:
    path = _own_groups().get("")
    mount = next((point for point, fstype, _ in _mounts() if fstype == "cgroup2"), None)
    if path is None or mount is None:
        return None, "no cgroup v2 hierarchy"
    folder = Path(mount) / path.lstrip("/")
    control = folder / "cgroup.subtree_control"
    if not os.access(folder, os.W_OK) or not control.is_file():
        return None, f"{folder}: cgroup v2 group not delegated to this user"
    if "memory" not in control.read_text().split():
        try:
            control.write_text("+memory")  # refused while this group holds processes itself ("no internal tasks")
        except OSError as exc:
            return None, f"{control}: the memory controller is not enabled for child groups ({exc.strerror})"
    return CgroupParent(folder, 2), ""


def find_parent() -> tuple[CgroupParent | None, str]:
    """Where memory cgroups can be made (cgroup v1 first, then v2), or None and every reason why not."""
    reasons = []
    for find in (_v1_parent, _v2_parent):
        try:
            parent, reason = find()
        except OSError as exc:
            parent, reason = None, f"{exc}"
        if parent is not None:
            return parent, ""
        reasons.append(reason)
    return None, "; ".join(reasons)


class MemoryCgroup:
    """One memory cgroup with a limit in bytes; removed by :meth:`remove` (or on leaving ``with``)."""

    def __init__(self, parent: CgroupParent, name: str, limit_bytes: int) -> None:
        self.version, self.limit_bytes = parent.version, int(limit_bytes)
        self.files = _V1_FILES if self.version == 1 else _V2_FILES
        self.path = parent.path / f"{name}-{os.getpid()}"
        self.path.mkdir()
        try:
            (self.path / self.files["limit"]).write_text(str(self.limit_bytes))
        except OSError:
            self.path.rmdir()
            raise

    def command(self, command: list[str]) -> list[str]:
        """``command`` run inside this group from its first instruction."""
        return ["/bin/sh", "-c", _JOIN, str(self.path / "cgroup.procs"), *command]

    def read(self, key: str) -> int | None:
        """``usage``, ``peak`` (None where the kernel keeps no peak) or ``limit``, in bytes."""
        try:
            return int((self.path / self.files[key]).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def page_cache(self) -> int | None:
        """Bytes of page cache charged to the group now."""
        with contextlib.suppress(OSError):
            for line in (self.path / "memory.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == _CACHE_STAT[self.version]:
                    return int(value)
        return None

    def describe(self) -> dict[str, object]:
        return {"path": str(self.path), "version": self.version, "limit_bytes": self.limit_bytes,
                "peak_bytes": self.read("peak")}

    def remove(self, wait_seconds: float = 5.0) -> None:
        """Delete the group once its processes are gone (the kernel refuses while any is left)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
