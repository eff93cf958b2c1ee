"""One options object for every way of reading batches: ``BatchLoader``, ``StreamingGenerator``, ``as_tf_dataset``.

Validated once, in ``__post_init__``, so a bad value fails at construction with an
:class:`~streamload.errors.InvalidOptionError` naming the argument, not as a numpy error mid-epoch.
Adapters take the same keywords (``StreamingGenerator(d, batch_size=64, seed=3)``) and turn them into
this object with :meth:`LoaderOptions.resolve`, so no option is written out twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from .errors import InvalidOptionError

SHUFFLE_MODES = ("none", "exact", "block")
VERIFY_MODES = ("off", "once")
DEFAULT_PREFETCH_BATCHES = 8
_SEED_LIMIT = 2**63


@dataclass(frozen=True)
class LoaderOptions:
    """Which samples form each batch, and what a batch looks like.

    Sampling: ``batch_size``; ``shuffle`` ``True``/``"exact"`` (a uniform random order per epoch),
    ``"block"`` (contiguous blocks shuffled, samples shuffled inside windows of ``window_blocks``
    blocks of ``block_size`` samples: sequential reads for cold storage), ``False``/``"none"``;
    ``seed``; ``drop_remainder``; ``num_pipelines``/``pipeline_index`` (this pipeline's disjoint share).
    Batches: ``to_fit`` (``(x, y)`` or ``x`` alone), ``one_hot`` labels (``num_classes`` from the
    manifest when None), ``normalize`` inputs by the scale the build recorded (integer images to
    float32 in [0, 1]), ``channel_axis`` for 2-D samples. Reading: ``prefetch_batches`` batches
    ahead hinted to the kernel (0: off), ``verify`` ``"once"`` to check each shard's CRC-32 before its first use.
    Ragged inputs (samples of varying length, see read/batching.py): padded with ``pad_value`` to the batch's longest
    record, cut to ``max_length`` rows when given; ``mask`` adds each one's boolean ``<name>_mask``;
    ``bucket_by_length`` groups records of similar length into batches (see read/sampler.py).
    Encoded images (``build_shards.py --store encoded``): ``image`` is how they are decoded, a
    ``streamload.images.ImageDecodeOptions`` that the readers fill from Keras' keywords (``image_size=(H, W)``,
    ``crop_to_aspect_ratio``, ``interpolation``, ``color_mode``, ``random_resized_crop``, ``horizontal_flip``,
    ``reduced_decode``: see read/decoding.py; this bottom layer cannot name the class), decoded in
    ``decode_threads`` threads (None: one per usable core).
    A dataset in a bucket (``s3://``): ``cache_dir`` and ``cache_bytes`` of its local shard cache (defaults from
    ``STREAMLOAD_CACHE_DIR`` and ``STREAMLOAD_CACHE_BYTES``; see read/remote.py and docs/object-storage.md).
    """

    batch_size: int = 64
    shuffle: bool | str = True
    seed: int = 0
    drop_remainder: bool = False
    block_size: int = 4096
    window_blocks: int = 8
    num_pipelines: int = 1
    pipeline_index: int = 0
    to_fit: bool = True
    one_hot: bool = True
    num_classes: int | None = None
    normalize: bool = True
    channel_axis: bool = True
    prefetch_batches: int = DEFAULT_PREFETCH_BATCHES
    verify: str = "off"
    max_length: int | None = None
    pad_value: int | float = 0
    mask: bool = True
    bucket_by_length: bool = False
    image: Any = None
    decode_threads: int | None = None
    cache_dir: str | None = None  # a dataset in a bucket: its local shard cache (read/remote.py; env defaults)
    cache_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "block_size", "window_blocks", "num_pipelines"):
            self._set_int(name, minimum=1)
        self._set_int("seed", minimum=0, limit=_SEED_LIMIT)
        self._set_int("prefetch_batches", minimum=0)
        self._set_int("pipeline_index", minimum=0, limit=self.num_pipelines)
        if self.num_classes is not None:
            self._set_int("num_classes", minimum=1)
        if self.max_length is not None:
            self._set_int("max_length", minimum=1)
        if self.decode_threads is not None:
            self._set_int("decode_threads", minimum=1)
        if self.image is not None and not hasattr(self.image, "crop_ranges"):
            raise InvalidOptionError(f"image must be an ImageDecodeOptions (or pass image_size=... and the other "
                                     f"image keywords), got {self.image!r}"[:200])
        if self.cache_bytes is not None:
            self._set_int("cache_bytes", minimum=1)
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            object.__setattr__(self, "cache_dir", str(self.cache_dir))
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, Real) or self.pad_value != self.pad_value:
            raise InvalidOptionError(f"pad_value must be a number, got {self.pad_value!r}")
        for name in ("drop_remainder", "to_fit", "one_hot", "normalize", "channel_axis", "mask", "bucket_by_length"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidOptionError(f"{name} must be True or False, got {getattr(self, name)!r}")
        object.__setattr__(self, "shuffle", _shuffle_mode(self.shuffle))
        if self.verify not in VERIFY_MODES:
            raise InvalidOptionError(f"verify must be one of {VERIFY_MODES}, got {self.verify!r}")

    def _set_int(self, name: str, minimum: int, limit: int | None = None) -> None:
        """Check an integer field and store it as a Python int (``np.int64(3)`` becomes ``3``)."""
        object.__setattr__(self, name, check_int(name, getattr(self, name), minimum, limit))

    @classmethod
    def resolve(cls, options: LoaderOptions | None = None, input_context: Any = None,
                **overrides: Any) -> LoaderOptions:
        """``options`` (default: the defaults) with keyword ``overrides`` applied, then an InputContext.

        With a ``tf.distribute.InputContext``, ``batch_size`` is the global batch: this pipeline's
        batches hold ``batch_size // num_replicas_in_sync`` samples for each of its replicas, and it
        reads pipeline ``input_pipeline_id`` of ``num_input_pipelines``. The same in every adapter.
        """
        overrides = {name: value for name, value in overrides.items() if value is not None}
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise InvalidOptionError(f"unknown option(s) {', '.join(unknown)}; options are {', '.join(sorted(fields))}")
        resolved = dataclasses.replace(options or cls(), **overrides)
        return resolved if input_context is None else resolved._for_input_context(input_context)

    def _for_input_context(self, context: Any) -> LoaderOptions:
        if (self.num_pipelines, self.pipeline_index) != (1, 0):
            raise InvalidOptionError("pass either input_context or num_pipelines/pipeline_index, not both")
        replicas = context.num_replicas_in_sync
        if self.batch_size % replicas:
            raise InvalidOptionError(f"the global batch_size {self.batch_size} must be a multiple of the "
                                     f"{replicas} replicas in sync")
        return dataclasses.replace(self, batch_size=self.batch_size // replicas,
                                   num_pipelines=context.num_input_pipelines,
                                   pipeline_index=context.input_pipeline_id)


def check_int(name: str, value: Any, minimum: int, limit: int | None = None) -> int:
    """``value`` as an int, ``minimum <= value < limit``.

    Any integral number (``np.int64`` too) is taken; a bool or a float is refused.
    """
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (limit is not None and value >= limit):
        upper = "" if limit is None else f" and below {limit}"
        raise InvalidOptionError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


def _shuffle_mode(shuffle: Any) -> str:
    """Accept the Keras-style boolean as well as a mode name."""
    if shuffle is True:
        return "exact"
    if shuffle is False:
        return "none"
    if shuffle not in SHUFFLE_MODES:
        raise InvalidOptionError(f"shuffle must be True, False or one of {SHUFFLE_MODES}, got {shuffle!r}")
    return shuffle
