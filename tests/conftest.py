"""Shared fixtures: small synthetic MNIST-like IDX folders with known arrays, the real MNIST copy,
and helpers that read shards back with plain numpy/h5py (independently of streamload's readers)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamload.format.manifest import HDF5_FILE_ROLE, MANIFEST_NAME, Manifest, read_manifest
from streamload.places.layout import (
    BUILD_LOCK_NAME,
    FLAT_LOCK_NAME,
    LOCK_NAME,
    STAGING_PREFIX,
    TRASH_PREFIX,
    list_generations,
    shard_root,
)
from streamload.write.sources.idx import write_idx
from streamload.write.sources.mnist import IDX_STEMS, MNIST_DIR_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = Path("/work/shared/datasets/mnist")


@dataclass(frozen=True)
class SyntheticMnist:
    """An IDX folder on disk and the arrays it was written from (the reference for every check)."""

    folder: Path
    arrays: dict[str, dict[str, np.ndarray]]  # split -> {"x": images, "y": labels}


def synthetic_arrays(n_train: int, n_test: int, *, seed: int = 0, image_dtype: str = "u1",
                     image_shape: tuple[int, ...] = (28, 28)) -> dict[str, dict[str, np.ndarray]]:
    """Random images of ``image_dtype`` (full value range for integers) and labels 0-9."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n_train), ("test", n_test)):
        dtype = np.dtype(image_dtype)
        shape = (count, *image_shape)
        if dtype.kind == "f":
            images = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            images = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype.newbyteorder("="))
            images = images.astype(dtype)
        arrays[split] = {"x": images, "y": rng.integers(0, 10, size=count, dtype=np.uint8)}
    return arrays


def write_idx_folder(folder: Path, arrays: dict[str, dict[str, np.ndarray]], *, gz: bool = True) -> Path:
    """The four files under their standard names, gzip-compressed or raw."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images_stem, labels_stem) in IDX_STEMS.items():
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{images_stem}{suffix}", arrays[split]["x"])
        write_idx(folder / f"{labels_stem}{suffix}", arrays[split]["y"])
    return folder


MakeMnist = Callable[..., SyntheticMnist]


@pytest.fixture()
def make_mnist(tmp_path: Path) -> MakeMnist:
    """Factory: ``make_mnist(name, n_train=..., n_test=..., gz=..., seed=..., image_dtype=...)``."""

    def make(name: str = "src", *, n_train: int = 203, n_test: int = 37, gz: bool = True, seed: int = 0,
             image_dtype: str = "u1") -> SyntheticMnist:
        arrays = synthetic_arrays(n_train, n_test, seed=seed, image_dtype=image_dtype)
        return SyntheticMnist(write_idx_folder(tmp_path / name, arrays, gz=gz), arrays)

    return make


@pytest.fixture(params=["gz", "raw"])
def synthetic_mnist(request: pytest.FixtureRequest, make_mnist: MakeMnist) -> SyntheticMnist:
    """A small MNIST-like IDX folder (203 train, 37 test samples), once gzipped and once raw."""
    return make_mnist(gz=request.param == "gz")


def under_ci() -> bool:
    """CI sets CI=true (.ci/run, and every CI service): there a missing dataset is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture()
def mnist_dir() -> Path:
    """The real MNIST IDX folder: $STREAMLOAD_MNIST_DIR, else the shared copy; skipped when absent, except
    under CI, where the real-MNIST tests would otherwise pass by not running."""
    folder = Path(os.environ.get(MNIST_DIR_ENV) or SHARED_MNIST)
    if not (folder / "train-images-idx3-ubyte.gz").is_file() and not (folder / "train-images-idx3-ubyte").is_file():
        missing = f"real MNIST not found at {folder}; set {MNIST_DIR_ENV} to a folder of the four IDX files"
        if under_ci():
            pytest.fail(f"{missing} (CI=true: the real-MNIST tests must run)", pytrace=False)
        pytest.skip(missing)
    return folder


def read_split(directory: Path, split: str) -> dict[str, np.ndarray]:
    """Every array of ``split`` of the current generation, from its shards, read with np.load(mmap) or h5py."""
    manifest = read_manifest(directory)
    return read_shards(shard_root(directory, manifest), manifest, split)


def read_shards(root: Path, manifest: Manifest, split: str, shards: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of the first ``shards`` shards (all by default) of ``split``, whose files lie in ``root``."""
    info = manifest.split(split)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in info.arrays}
    for shard in info.shards[:shards]:
        if manifest.format == "npy":
            for key in info.arrays:
                mapped = np.load(root / shard.files[key].name, mmap_mode="r")
                assert isinstance(mapped, np.memmap)
                parts[key].append(np.array(mapped))
        else:
            import h5py

            with h5py.File(root / shard.files[HDF5_FILE_ROLE].name, "r") as handle:
                for key in info.arrays:
                    parts[key].append(handle[key][()])
    return {key: np.concatenate(chunks) if chunks else np.empty((0, *info.arrays[key].shape), info.arrays[key].dtype)
            for key, chunks in parts.items()}


_LOCKS = {LOCK_NAME, BUILD_LOCK_NAME, FLAT_LOCK_NAME}


def tree_snapshot(path: Path) -> dict[str, str] | None:
    """Relative path -> SHA-256 of every data file under ``path`` (None when it does not exist).

    Left out: lock files (empty, or who holds them: coordination, not data) and hidden staging and
    trash folders of builds (``leftovers`` lists those).
    """
    if not path.exists():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(file.relative_to(path)): hashlib.sha256(file.read_bytes()).hexdigest()
            for file in sorted(path.rglob("*")) if file.is_file() and file.name not in _LOCKS
            and not file.relative_to(path).parts[0].startswith((STAGING_PREFIX, TRASH_PREFIX))}


def leftovers(out: Path) -> list[str]:
    """What builds of ``out`` left behind: folders next to it, and inside it staging and trash folders,
    generations other than the current one and version-1 files waiting for collection."""
    beside = sorted(p.name for p in out.parent.glob(f"{glob.escape(f'.{out.name}.')}*"))
    if not (out / MANIFEST_NAME).is_file():
        return beside
    current = read_manifest(out).generation
    inside = [name for name in sorted(os.listdir(out))
              if name.startswith((STAGING_PREFIX, TRASH_PREFIX, ".flat-leftovers"))
              or (name in list_generations(out) and name != current)]
    return beside + inside


def subprocess_env(**overrides: str | None) -> dict[str, str]:
    """This environment plus ``overrides`` (None removes a variable), with the repo importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


BUILD_SCRIPT = [sys.executable, str(REPO_ROOT / "scripts" / "build_shards.py")]


LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX if sys.argv[2] == "ex" else fcntl.LOCK_SH)
print("locked", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def lock_held(path: Path, mode: str = "ex") -> Iterator[subprocess.Popen[str]]:
    """A real process holding an flock (``ex`` or ``sh``) on ``path`` until the block ends (SIGKILL)."""
    child = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        yield child
    finally:
        child.kill()
        child.wait()


# --- model.fit on every installed Keras backend ------------------------------------------------------

FIT_SCENARIOS = Path(__file__).with_name("keras_fit_scenarios.py")
KERAS_BACKENDS = [name for name in ("tensorflow", "jax", "torch") if importlib.util.find_spec(name) is not None]


def id_dataset(folder: Path, n: int) -> Path:
    """x holds each sample's id (float32, exact), y a float target: what the fit scenarios' model logs."""
    from streamload import ArraySource, BuildOptions, build_dataset

    ids = np.arange(n, dtype=np.float32)[:, None]
    build_dataset({"train": ArraySource(x=ids, y=np.zeros(n, np.float32))}, folder, BuildOptions(progress=False))
    return folder


@pytest.fixture(scope="session")
def id_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ids")
    return id_dataset(root / "ids", 1000), id_dataset(root / "tiny", 120)


@pytest.fixture(scope="session", params=KERAS_BACKENDS)
def fit_runs(request: pytest.FixtureRequest, id_data: tuple[Path, Path], tmp_path_factory) -> dict:
    """Every scenario of keras_fit_scenarios.py, run once per backend in a fresh process."""
    out = tmp_path_factory.mktemp(request.param) / "runs.json"
    result = subprocess.run([sys.executable, str(FIT_SCENARIOS), *map(str, id_data), str(out)], capture_output=True,
                            text=True, timeout=900, env=subprocess_env(KERAS_BACKEND=request.param))
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads(out.read_text())
    assert runs["backend"] == request.param
    return runs["results"]


# --- a real S3 server (SeaweedFS on loopback): tests/s3server.py ---------------------------------------

from s3server import aws_env, own_s3_server, s3, s3_server  # noqa: E402,F401  (fixtures, by name)


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs, e.g. "1m"), mounted at ``mount`` for a test; skipped where mounting
    is not permitted."""
    mount.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip()}); needs root or CAP_SYS_ADMIN")
    try:
        yield mount
    finally:  # lazily where a file there is still open (a shard cache keeps its lock file open)
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), mounted for the test; skipped where mounting is not permitted."""
    with tmpfs(tmp_path / "small", "1m") as mount:
        yield mount
