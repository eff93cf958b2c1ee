"""A folder of images in class subfolders, the layout of ``keras.utils.image_dataset_from_directory``.

Files are listed as Keras lists them (class folders sorted by name, hidden ones left out; files
found by walking each class folder, sorted; extensions .bmp .gif .jpeg .jpg .png in any case), so a
sample's position and label equal Keras' with ``shuffle=False``. A folder whose subfolders are all
named ``train``, ``test``, ``validation`` (or ``val``) holds splits; their labels follow the class
folders of ``train``. Labels are the smallest unsigned integer type that holds ``num_classes - 1``
(uint8 up to 256 classes). Pixels: see :mod:`.imaging`.

Two stores (``store``, ``build_shards.py --store``): ``decoded`` (the default) stores every image decoded
and resized to ``image_size`` as fixed-size uint8 pixels; ``encoded`` stores each file's bytes exactly as
found, one ragged uint8 record per image marked ``encoding: "image"`` in the manifest, and leaves the
size, crop and colour mode to the reader (``image_size=(H, W)`` on ``StreamingGenerator`` and friends,
:mod:`streamload.images`). Either way every file is checked decodable first, so both stores hold the
same images and the same labels. docs/your-own-data.md says which store to choose.

A shard writer must be told the sample count before the first sample, but whether an image decodes
is only known by decoding it (a truncated JPEG passes Pillow's ``verify()`` and fails at ``load()``).
So the source decodes twice: a check pass at construction (JPEGs at 1/8 scale, which still reads
every byte of the stream) finds the unreadable files, which are listed on stderr and left out, or
refused with ``strict``; the build's pass then decodes and resizes the rest. Files that are not
regular files (FIFOs, devices, links to them), not BMP, GIF, JPEG or PNG whatever their name says,
or larger than ``max_image_pixels`` are unreadable in the same way, found without decoding them
(see :mod:`.imaging`). Both passes run on ``jobs`` processes with a bounded number of batches in
flight, so memory is bounded by the batch size (about 4 MB of pixels), not by the dataset.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...base.names import display_name
from ...errors import ImageDecodeError, InvalidOptionError, SourceFormatError, SourceNotFoundError
from ...format.records import Records
from ...format.specs import IMAGE_ENCODING, ArraySpec
from ...format.writer import TARGET_SHARD_BYTES
from .base import DEFAULT_CHUNK_ROWS, Chunk, label_dtype
from .imaging import (
    COLOR_MODES,
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_EXTENSIONS,
    DecodeTask,
    check_images,
    decode_images,
    import_pillow,
    open_regular,
)
from .parallel import MAX_TASK_BYTES, WorkerPool, usable_cpus
from .splits import validation_count, validation_mask

SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
TASK_PIXEL_BYTES = 4 * 2**20  # decoded pixels one worker sends back at a time
MAX_TASK_FILES = 256
TASK_PATH_BYTES = MAX_TASK_BYTES - 2**10  # room for the rest of the task message
STORES = ("decoded", "encoded")
DEFAULT_SIZE = (256, 256)  # Keras' default image_size
ENCODED_CHUNK_BYTES = 64 * 2**20  # file bytes read into one chunk of an encoded store
_READ_TIME = ("image_size", "crop_to_aspect_ratio", "color_mode")  # what an encoded store leaves to the reader


@dataclass(frozen=True)
class ImageOptions:
    """What Keras' ``image_dataset_from_directory`` takes, plus how to decode (processes, strictness) and store.

    ``store="decoded"`` fixes ``image_size`` (default 256x256), ``color_mode`` (default rgb) and
    ``crop_to_aspect_ratio`` at build time; ``store="encoded"`` keeps the files as found and takes none of
    them (they are the reader's options then): passing one is refused rather than silently ignored.
    """

    image_size: tuple[int, int] | None = None  # (height, width); decoded: None means Keras' default, 256x256
    color_mode: str | None = None  # "grayscale" (1 channel), "rgb" (3, the default) or "rgba" (4)
    crop_to_aspect_ratio: bool = False
    jobs: int | None = None  # decoding processes; None: every usable core
    strict: bool = False  # refuse unreadable images instead of skipping them
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images (width x height) are unreadable
    progress: bool = True
    store: str = "decoded"  # or "encoded": each file's bytes as found, decoded on read

    def __post_init__(self) -> None:
        if self.store not in STORES:
            raise InvalidOptionError(f"--store {self.store!r}: choose one of {', '.join(STORES)}")
        if self.store == "encoded":
            self._check_encoded()
        elif self.image_size is None:
            object.__setattr__(self, "image_size", DEFAULT_SIZE)
        object.__setattr__(self, "color_mode", self.color_mode or "rgb")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
                raise InvalidOptionError(f"--image-size needs two positive integers HEIGHT WIDTH, got "
                                         f"{self.image_size}")
            object.__setattr__(self, "image_size", size)
        if self.color_mode not in COLOR_MODES:
            raise InvalidOptionError(f"--color-mode {self.color_mode!r}: choose one of {', '.join(COLOR_MODES)}")
        if self.jobs is not None and self.jobs < 1:
            raise InvalidOptionError(f"--jobs must be at least 1, got {self.jobs}")
        pixels = self.max_image_pixels
        if not isinstance(pixels, numbers.Integral) or isinstance(pixels, bool) or pixels < 1:
            raise InvalidOptionError(f"--max-image-pixels must be a positive integer, got {pixels!r}")
        object.__setattr__(self, "max_image_pixels", int(pixels))  # np.int64 too, as a plain int for the workers

    def _check_encoded(self) -> None:
        given = [name for name in _READ_TIME if getattr(self, name) not in (None, False)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise InvalidOptionError(f"{flag} applies to --store decoded; --store encoded keeps the files as found, "
                                     f"and the reader decodes them ({given[0]}=... on StreamingGenerator, BatchLoader "
                                     "or as_tf_dataset)")

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode][1]  # type: ignore[index]


class ImageFolderSource:
    """Image files with their labels; construction finds (and lists, or refuses) the unreadable ones."""

    action = "decoding"
    shard_size: int | None = None  # samples per shard when the build is given none (encoded: from the file sizes)

    def __init__(self, files: Sequence[str | os.PathLike], labels: Sequence[int] | np.ndarray,
                 class_names: Sequence[str], options: ImageOptions = ImageOptions(), *, name: str = "images",
                 pool: WorkerPool | None = None) -> None:
        import_pillow()  # fail here, clearly, rather than in a worker
        self.options, self.name = options, name
        self.pool = pool or WorkerPool(options.jobs or usable_cpus())
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        files, labels = [os.fspath(file) for file in files], np.asarray(labels)
        if len(files) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() < self.num_classes):
            raise InvalidOptionError(f"{name}: need one label in [0, {self.num_classes}) per file")
        readable = self._readable(files)
        if not readable.any():
            raise ImageDecodeError(f"{name}: none of its {len(files)} images can be decoded")
        self.files = [file for file, keep in zip(files, readable) if keep]
        self.labels = labels[readable].astype(label_dtype(self.num_classes))
        self.skipped = len(files) - len(self.files)
        self.num_samples = len(self.files)
        y = ArraySpec(self.labels.dtype.str, ())
        classes = f"{self.num_samples} images in {self.num_classes} classes"
        if options.store == "encoded":
            self.action = "reading"
            self.sizes = np.fromiter((os.stat(file).st_size for file in self.files), np.int64, len(self.files))
            self.shard_size = max(1, TARGET_SHARD_BYTES // max(1, int(self.sizes.mean()) + y.sample_bytes))
            self.specs = {"x": ArraySpec("|u1", (None,), encoding=IMAGE_ENCODING), "y": y}
            self.description = f"{name}: {classes} (files stored as found)"
            return
        height, width = options.image_size  # type: ignore[misc]
        self.specs = {"x": ArraySpec("|u1", (height, width, options.channels)), "y": y}
        self.description = f"{name}: {classes} ({options.color_mode}, {height}x{width})"

    def _map(self, function: Callable, files: list[str], limit: int) -> Iterator[tuple[int, int, Any]]:
        """(start, stop, ``function``'s result) for batches ``files[start:stop]``, in order, on ``jobs`` processes."""
        options = self.options
        if self.pool.jobs > 1:  # small enough batches to give every process a few
            limit = max(1, min(limit, -(-len(files) // (4 * self.pool.jobs))))
        spans = _spans(files, limit)
        size = options.image_size or DEFAULT_SIZE  # the check pass (all an encoded store runs) resizes nothing
        tasks = (DecodeTask(files[start:stop], size, options.color_mode, options.crop_to_aspect_ratio,  # type: ignore
                            options.max_image_pixels) for start, stop in spans)
        results = self.pool.map(function, tasks, len(spans))
        with closing(results):
            for result, (start, stop) in zip(results, spans):  # results first: zip then runs the map to its end
                yield start, stop, result

    def _readable(self, files: list[str]) -> np.ndarray:
        """Check pass: True for every file that decodes; the others are reported (or refused)."""
        readable = np.ones(len(files), dtype=bool)
        with closing(self._map(check_images, files, MAX_TASK_FILES)) as results, tqdm(
                total=len(files), desc=f"{self.name}: checking images", unit="image",
                disable=not self.options.progress, file=sys.stderr) as bar:
            for start, stop, failures in results:
                for position, reason in failures:
                    path = display_name(files[start + position])
                    if self.options.strict:
                        raise ImageDecodeError(f"{path}: cannot decode image ({reason}); --strict refuses it")
                    readable[start + position] = False
                    tqdm.write(f"skipped unreadable image {path}: {reason}", file=sys.stderr)
                bar.update(stop - start)
        return readable

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        if self.options.store == "encoded":
            yield from self._encoded_chunks(chunk_rows)
            return
        limit = min(chunk_rows, MAX_TASK_FILES, max(1, TASK_PIXEL_BYTES // self.specs["x"].sample_bytes))
        with closing(self._map(decode_images, self.files, limit)) as results:
            for start, stop, (pixels, failures) in results:
                if failures:
                    position, reason = failures[0]
                    raise ImageDecodeError(f"{display_name(self.files[start + position])}: decoded when checked, "
                                           f"not now ({reason})")
                yield {"x": pixels, "y": self.labels[start:stop]}

    def _encoded_chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        """The files' bytes as found, as records: chunks of at most ``chunk_rows`` files and about 64 MB."""
        ends = np.cumsum(self.sizes)
        start = 0
        while start < self.num_samples:
            budget = (ends[start - 1] if start else 0) + ENCODED_CHUNK_BYTES
            stop = min(start + chunk_rows, max(start + 1, int(np.searchsorted(ends, budget, side="right"))))
            yield {"x": self._read_files(start, stop), "y": self.labels[start:stop]}
            start = stop

    def _read_files(self, start: int, stop: int) -> Records:
        """Files ``start..stop`` read whole into one buffer; one whose size changed since it was checked is refused."""
        offsets = np.concatenate(([0], np.cumsum(self.sizes[start:stop])))
        values = np.empty(int(offsets[-1]), np.uint8)
        for position, file in enumerate(self.files[start:stop]):
            first, last = int(offsets[position]), int(offsets[position + 1])
            with open_regular(file) as stream:
                read = stream.readinto(memoryview(values)[first:last])
                if read != last - first or stream.read(1):
                    raise ImageDecodeError(f"{display_name(file)}: changed since it was checked ({last - first} "
                                           "bytes then); rebuild once the folder stops changing")
        return Records(values, offsets)


def _spans(files: list[str], rows: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive batches of at most ``rows`` files whose paths fit in one task message."""
    spans, start, size = [], 0, 0
    for position, file in enumerate(files):
        size += len(file.encode(errors="surrogateescape")) + 8
        if position > start and (position - start == rows or size > TASK_PATH_BYTES):
            spans.append((start, position))
            start, size = position, len(file.encode(errors="surrogateescape")) + 8
    return [*spans, (start, len(files))] if files else spans


def class_folders(folder: Path) -> list[str]:
    """Subfolder names, sorted, hidden ones left out: Keras' class names."""
    return sorted(name for name in os.listdir(folder) if not name.startswith(".") and (folder / name).is_dir())


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` in Keras' order: walked folders sorted by path, files by name."""
    return [os.path.join(root, name) for root, _, names in sorted(os.walk(folder), key=lambda entry: entry[0])
            for name in sorted(names) if name.lower().endswith(IMAGE_EXTENSIONS)]


def index_folder(folder: Path, class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Files of every class folder of ``folder`` and their labels (positions in ``class_names``)."""
    unknown = sorted(set(class_folders(folder)) - set(class_names))
    if unknown:
        raise SourceFormatError(f"{display_name(folder / unknown[0])}: class folder not among the training "
                                f"classes ({', '.join(display_name(name) for name in class_names)})")
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = list_images(folder / name) if (folder / name).is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        raise SourceFormatError(f"{display_name(folder)}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class "
                                "subfolders")
    return files, np.asarray(labels, dtype=np.int64)


def split_layout(root: Path) -> dict[str, Path]:
    """Split name -> folder: the split subfolders when every subfolder is one, else ``{"train": root}``."""
    names = class_folders(root)
    if "train" not in names or not all(name in SPLIT_FOLDERS for name in names):
        return {"train": root}
    if {"val", "validation"} <= set(names):
        raise SourceFormatError(f"{display_name(root)}: has both val/ and validation/; keep one")
    order = ["train", "validation", "val", "test"]
    return {SPLIT_FOLDERS[name]: root / name for name in sorted(names, key=order.index)}


def image_folder_sources(root: str | os.PathLike, options: ImageOptions = ImageOptions(), *,
                         validation_split: float | None = None, seed: int = 0) -> dict[str, ImageFolderSource]:
    """Split name -> source for an image folder; ``validation_split`` cuts validation off train's file list."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceNotFoundError(f"{display_name(root)}: no such folder")
    layout = split_layout(root)
    class_names = class_folders(layout["train"])
    if not class_names:
        raise SourceFormatError(f"{display_name(layout['train'])}: no class subfolders; put each class's images "
                                "in a subfolder named after it (keras.utils.image_dataset_from_directory's layout)")
    listed = {split: index_folder(folder, class_names) for split, folder in layout.items()}
    pool = WorkerPool(options.jobs or usable_cpus())  # one set of decoding processes for every split
    if validation_split is not None:
        if "validation" in listed:
            raise InvalidOptionError(f"--validation-split: {display_name(layout['validation'])} is already a "
                                     "validation split")
        files, labels = listed.pop("train")
        mask = validation_mask(len(files), validation_count(len(files), validation_split), seed)
        listed = {"train": ([f for f, cut in zip(files, mask) if not cut], labels[~mask]),
                  "validation": ([f for f, cut in zip(files, mask) if cut], labels[mask]), **listed}
    return {split: ImageFolderSource(files, labels, class_names, options, name=split, pool=pool)
            for split, (files, labels) in listed.items()}
