"""What the build, loader and memory benchmarks share: the machine they ran on, the report they leave,
the real build CLI they call, and children whose memory is polled from outside.

Light at import time (the standard library and streamload's core; h5py only when ``machine_info``
is called), so that importing it adds nothing to what a measured process holds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from streamload import __version__
from streamload.base.procstats import PeakMemorySampler, read_meminfo
from streamload.errors import InvalidOptionError

MB = 2**20
DISK_MARGIN = 1.1
REPO_ROOT = Path(__file__).resolve().parent.parent  # benchmarks/ sits beside streamload/ and scripts/
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_shards.py"
Result = dict[str, Any]


def log(message: str) -> None:
    """Progress for the person at the terminal: stderr, so stdout stays the Markdown report."""
    print(message, file=sys.stderr, flush=True)


def fail(prog: str, error: BaseException) -> int:
    """Report a failed benchmark the way argparse reports a bad option; the exit status of ``main``."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def emit(results: Result, markdown: str, json_path: Path | None) -> None:
    """Print the Markdown report, and write every figure to ``json_path`` when one was asked for."""
    print(markdown)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def measure_and_emit(prog: str, measure: Callable[[], Result], render: Callable[[Result], str],
                     json_path: Path | None, errors: tuple[type[BaseException], ...]) -> int:
    """A benchmark's ``main`` after parsing: measure, then ``emit``; one of ``errors`` is reported as ``fail`` does."""
    try:
        results = measure()
    except errors as error:
        return fail(prog, error)
    emit(results, render(results), json_path)
    return 0


def options_of(args: argparse.Namespace) -> Result:
    """The parsed options as JSON can hold them (paths as strings)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that ran ``script`` (relative to the repository), as a results file records it."""
    return " ".join(["python3", script, *(sys.argv[1:] if argv is None else argv)])


def build_command(fmt: str, out: Path, *options: str, source: str | os.PathLike | None = None) -> list[str]:
    """``scripts/build_shards.py`` run by this interpreter: the real CLI, as a user would run it."""
    command = [sys.executable, str(BUILD_SCRIPT), "--format", fmt, "--out", str(out), *options]
    if source is not None:
        command += ["--source", str(source)]
    return command


def run_json_child(module_args: list[str], spec: Result, env: dict[str, str], timeout: float, what: str) -> Result:
    """``python3 -m MODULE_ARGS... SPEC.json`` (``spec`` written to a temporary file): the last line it prints,
    as JSON; RuntimeError naming ``what`` with the end of its stderr if it fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as stream:
        json.dump(spec, stream)
    try:
        done = subprocess.run([sys.executable, "-m", *module_args, stream.name], capture_output=True, text=True,
                              env=env, timeout=timeout)
    finally:
        os.unlink(stream.name)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def process_cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of process ``pid`` (every thread) so far, from ``/proc/<pid>/stat``: for a
    process that is not a child of this one (a server), or for this process while children run."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def sha256_bytes_per_cpu_s(size: int = 256 << 20) -> float:
    """SHA-256's speed on this machine, bytes per CPU second (what checking every download costs at least)."""
    data = os.urandom(size)
    started = time.process_time()
    hashlib.sha256(data).digest()
    return size / max(time.process_time() - started, 1e-9)


def check_free_space(folder: Path, needed: int, hint: str) -> None:
    """Fail before writing anything rather than filling a shared disk halfway through."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed * DISK_MARGIN:
        raise InvalidOptionError(
            f"{folder}: about {needed * DISK_MARGIN / MB:,.0f} MB of free disk needed, "
            f"{free / MB:,.0f} MB free; {hint}"
        )


def _start_sampler(pid: int, interval: float) -> PeakMemorySampler | None:
    """Poll ``pid``; None when it already exited (a child that failed at once, reported by its status)."""
    try:
        return PeakMemorySampler(pid, interval).start()
    except ProcessLookupError:
        return None


def run_sampled(command: list[str], interval: float, log_file: IO[bytes], env: dict[str, str] | None = None,
                watch: Callable[[int], AbstractContextManager[object]] | None = None,
                ) -> tuple[int, float, PeakMemorySampler | None]:
    """Run ``command`` to its end, output in ``log_file``, polling its memory: exit status, seconds, sampler.

    ``watch(pid)``, if given, is entered while the child runs (another poller, of its workers say).
    Not ``wait4``'s ru_maxrss: Linux carries the pre-exec peak of the forked (or vforked) parent
    into it, so it would report this benchmark's own arrays. VmHWM belongs to the exec'd image.
    """
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        sampler = _start_sampler(child.pid, interval)
        with watch(child.pid) if watch is not None else contextlib.nullcontext():
            returncode = child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    seconds = time.perf_counter() - started
    if sampler is not None:
        sampler.stop()
    return returncode, seconds, sampler


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def _mount_of(path: Path) -> Result:
    """Device and filesystem type of the mount holding ``path`` (its longest matching mount point)."""
    best = {"device": "?", "mount_point": "/", "fstype": "?"}
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, fstype = line.split()[:3]
            inside = path == Path(point) or Path(point) in path.parents
            if inside and len(point) >= len(best["mount_point"]):
                best = {"device": device, "mount_point": point, "fstype": fstype}
    return best


def machine_info(workdir: Path) -> Result:
    """What a figure depends on besides the code: cores, RAM, versions, and the disk under ``workdir``."""
    import h5py
    import numpy as np

    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "cpu_model": _cpu_model(),
            "total_ram_bytes": read_meminfo("MemTotal").get("MemTotal", 0), "kernel": platform.release(),
            "python": platform.python_version(), "numpy": np.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "streamload": __version__, "workdir": str(workdir),
            "workdir_mount": _mount_of(workdir), "workdir_free_bytes": shutil.disk_usage(workdir).free}


def cpus_and_ram(machine: Result, gib: str = "GiB") -> str:
    """The start of every report's first line: usable cores, CPU model and RAM (2^30 bytes, named ``gib``)."""
    return (f"{machine['usable_cpus']} CPUs ({machine['cpu_model']}), {machine['total_ram_bytes'] / 2**30:.0f} {gib} "
            "RAM")
