"""Finding MNIST: a folder named by option or environment variable, else the usual Keras download.

Offline machines (CI, clusters without internet) name a local folder of IDX files; when nothing is
found and the download fails, the error says exactly what to pass instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ...base.names import display_name
from ...errors import AmbiguousSourceError, SourceFormatError, SourceNotFoundError
from .arrays import NpzArraySource
from .base import SplitSource
from .idx import IdxPairSource

MNIST_DIR_ENV = "STREAMLOAD_MNIST_DIR"
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NPZ_MEMBERS = {"train": {"x": "x_train", "y": "y_train"}, "test": {"x": "x_test", "y": "y_test"}}
KERAS_NPZ_NAME = "mnist.npz"
_HELP = (
    f"pass --source DIR (or set {MNIST_DIR_ENV}=DIR) naming a folder with the four MNIST IDX files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz]) or Keras' mnist.npz, or run once with internet access so Keras can "
    "download it"
)


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    """The one file of ``stem`` under a standard name, gzipped or not, or the common ``train-images.idx3-ubyte``.

    Two of them (``x`` and ``x.gz`` side by side, say) are refused, naming both, even when they hold
    the same data: which one a build read would be a guess, and comparing them would read both.
    """
    dotted = stem.replace("-idx", ".idx")
    names = [name for name in dict.fromkeys((stem, f"{stem}.gz", dotted, f"{dotted}.gz"))
             if os.path.lexists(folder / name)]
    if len(names) > 1:
        raise AmbiguousSourceError(f"{display_name(folder)}: holds {' and '.join(names)}, the same IDX file "
                                   "twice; keep one (building would have to guess which)")
    if not names:
        return None
    path = folder / names[0]
    if not path.is_file():  # a FIFO would hang the build, a folder or a dangling link cannot be read
        raise SourceFormatError(f"{display_name(path)}: not a regular file")
    return path


def sources_from_path(path: str | os.PathLike) -> dict[str, SplitSource]:
    """Train and test sources from an IDX folder, a folder holding mnist.npz, or an .npz file."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return {split: NpzArraySource(path, members) for split, members in NPZ_MEMBERS.items()}
    if not path.is_dir():
        raise SourceNotFoundError(f"{display_name(path)}: no such folder or .npz file; {_HELP}")
    found = {split: [_find_idx_file(path, stem) for stem in stems] for split, stems in IDX_STEMS.items()}
    if all(None not in files for files in found.values()):
        return {split: IdxPairSource(*files) for split, files in found.items()}  # type: ignore[arg-type]
    if (path / KERAS_NPZ_NAME).is_file():
        return sources_from_path(path / KERAS_NPZ_NAME)
    missing = [stem for split, stems in IDX_STEMS.items() for stem, file in zip(stems, found[split]) if file is None]
    raise SourceNotFoundError(f"{display_name(path)}: MNIST IDX files missing: {', '.join(missing)}; {_HELP}")


def keras_mnist_npz() -> Path:
    """The Keras download of mnist.npz (cached under ~/.keras/datasets), the usual way online."""
    try:
        from keras.utils import get_file
    except ImportError as exc:
        raise SourceNotFoundError(f"no local MNIST and Keras is not installed to download it; {_HELP}") from exc
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints its progress; stdout is for results
            return Path(get_file(
                KERAS_NPZ_NAME,
                origin="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
                file_hash="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
            ))
    except Exception as exc:  # Keras wraps network errors in several exception types
        raise SourceNotFoundError(f"no local MNIST found and the Keras download failed ({exc}); {_HELP}") from exc


def _cached_keras_npz(environ: Mapping[str, str]) -> Path | None:
    cache = Path(environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / KERAS_NPZ_NAME
    return cache if cache.is_file() else None


def mnist_sources(source: str | os.PathLike | None = None, *, download: bool = True,
                  environ: Mapping[str, str] | None = None) -> dict[str, SplitSource]:
    """Resolve MNIST in order: ``source``, ``$STREAMLOAD_MNIST_DIR``, Keras' cache, Keras' download."""
    environ = os.environ if environ is None else environ
    if source is not None:
        return sources_from_path(source)
    if environ.get(MNIST_DIR_ENV):
        return sources_from_path(environ[MNIST_DIR_ENV])
    cached = _cached_keras_npz(environ)
    if cached is not None:
        return sources_from_path(cached)
    if not download:
        raise SourceNotFoundError(f"no local MNIST found and downloading is off; {_HELP}")
    return sources_from_path(keras_mnist_npz())
