"""Encoded images (records that are image files, ``build_shards.py --store encoded``) decoded as a batch is finished.

The reader's options carry Keras' names (``image_size=(H, W)``, ``crop_to_aspect_ratio``, ``interpolation``,
``color_mode``) and the training augmentation (``random_resized_crop``, ``horizontal_flip``), plus
``reduced_decode``: :func:`resolve_options` folds those keywords into one
:class:`~streamload.images.ImageDecodeOptions` (``LoaderOptions.image``), validated when the loader is
made, so ``StreamingGenerator``, ``BatchLoader`` and ``as_tf_dataset`` take them as keywords without
``LoaderOptions`` growing a field for each. ``image_size`` has no default here, unlike Keras': every
batch needs one shape, and a size chosen silently would be a model input nobody asked for.

Each sample's crop and flip are drawn from ``(seed, epoch, global sample index)`` (the loader's seed, the
data epoch, the sample's position in the split), so a batch is the same whatever the worker threads or
processes, the decode threads, or where a resumed run started. With ``normalize`` the decoded floats (Keras'
0..255) are multiplied by the scale the build recorded for the input (1/255, as for a decoded store's
uint8 pixels), so one model trains on either store; without it they stay Keras' 0..255 floats.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidOptionError
from ..format.records import Records
from ..format.specs import ArraySpec
from ..images import ImageDecodeOptions, decode_batch
from ..options import LoaderOptions

IMAGE_KEYWORDS = ("image_size", "crop_to_aspect_ratio", "interpolation", "color_mode", "random_resized_crop",
                  "horizontal_flip", "reduced_decode")
Where = tuple[Any, int]  # (the batch's global sample indices, in batch order, or None; the data epoch)


def resolve_options(options: LoaderOptions | None = None, input_context: Any = None,
                    **overrides: Any) -> LoaderOptions:
    """``LoaderOptions.resolve`` that also takes the image keywords, folded into ``LoaderOptions.image``."""
    image = {name: overrides.pop(name) for name in IMAGE_KEYWORDS if overrides.get(name) is not None}
    for name in IMAGE_KEYWORDS:
        overrides.pop(name, None)
    resolved = LoaderOptions.resolve(options, input_context, **overrides)
    if not image:
        return resolved
    if resolved.image is None:
        if "image_size" not in image:
            raise InvalidOptionError(f"{', '.join(image)} needs image_size=(height, width) too: the size every "
                                     "decoded image of a batch takes")
        return dataclasses.replace(resolved, image=ImageDecodeOptions(**image))
    return dataclasses.replace(resolved, image=dataclasses.replace(resolved.image, **image))


def usable_threads() -> int:
    """Decode threads when none are asked for: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DecodedImages:
    """An encoded-image input: its records decoded into one float32 (B, H, W, C) array."""

    key: str
    image: ImageDecodeOptions
    scale: float | None  # what normalize multiplies the 0..255 floats by (None: normalize=False)
    seed: int
    threads: int

    def outputs(self, records: Records, where: Where) -> list[tuple[str, np.ndarray]]:
        indices, epoch = where
        if not len(records):
            return [(self.key, np.empty((0, *self.image.image_size, self.image.channels), np.float32))]
        if indices is None or len(indices) != len(records):
            raise InvalidOptionError(f"decoding input {self.key!r} needs the global index of each of its "
                                     f"{len(records)} samples (their random crops and flips depend on it)")
        flat, offsets = memoryview(np.ascontiguousarray(records.values)), records.offsets.tolist()
        views = [flat[start:stop] for start, stop in zip(offsets[:-1], offsets[1:])]
        pixels = decode_batch(views, [int(i) for i in indices], epoch, self.seed, self.image, self.threads)
        if self.scale is not None and self.scale != 1:
            np.multiply(pixels, np.float32(self.scale), out=pixels)  # as a decoded store's uint8 input is scaled
        return [(self.key, pixels)]


def image_input(key: str, spec: ArraySpec, options: LoaderOptions, scale: float | None) -> DecodedImages:
    """The finisher's step for encoded-image input ``key``; refused without ``image_size``."""
    if options.image is None:
        raise InvalidOptionError(f"input {key!r} holds encoded image files; pass image_size=(height, width) to "
                                 "decode them to one shape (and optionally crop_to_aspect_ratio, interpolation, "
                                 "color_mode, random_resized_crop, horizontal_flip)")
    return DecodedImages(key, options.image, scale, options.seed, options.decode_threads or usable_threads())


def refuse_unused_image_options(specs: dict[str, ArraySpec], features: tuple[str, ...],
                                options: LoaderOptions) -> None:
    """Image options on a dataset with no encoded-image input would be ignored: refused instead."""
    if options.image is not None and not any(specs[key].encoded_image for key in features):
        raise InvalidOptionError("image_size and the other image options decode encoded images, and this dataset "
                                 "stores none (a decoded store's size was fixed when it was built); leave them out")
