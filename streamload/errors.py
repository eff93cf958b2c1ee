"""Exceptions raised by streamload.

Each subclasses the built-in a caller would already catch for that kind of problem (a bad file is a
``ValueError``, a missing one a ``FileNotFoundError``), so generic handlers keep working, while
``except StreamloadError`` catches everything this package raises on purpose.
"""

from __future__ import annotations


class StreamloadError(Exception):
    """Base class of every error streamload raises on purpose."""


class IdxFormatError(StreamloadError, ValueError):
    """An IDX file has a wrong magic number, a bad header or a truncated payload."""


class SourceMismatchError(StreamloadError, ValueError):
    """Arrays that must pair up (images and labels) disagree, for instance in sample count."""


class SourceNotFoundError(StreamloadError, FileNotFoundError):
    """No dataset could be found locally and none could be downloaded."""


class ShardFormatError(StreamloadError, ValueError):
    """A shard file is not what the manifest says it is."""


class ManifestError(StreamloadError, ValueError):
    """A manifest is missing, unreadable or inconsistent."""


class ManifestVersionError(ManifestError):
    """A manifest was written by a newer streamload than this one."""


class InvalidOptionError(StreamloadError, ValueError):
    """An option has a value outside its domain (a non-positive shard size, an unknown format...)."""


class DatasetExistsError(StreamloadError, FileExistsError):
    """The output folder already holds data and overwriting was not asked for (or is not safe)."""


class LabelRangeError(StreamloadError, ValueError):
    """A class label lies outside ``[0, num_classes)``: at build (a bad source or --num-classes) or at read
    (a corrupt shard)."""


class ShardCorruptError(StreamloadError, ValueError):
    """A shard's bytes do not match the checksum its manifest recorded."""


class SourceFormatError(StreamloadError, ValueError):
    """A source file (a CSV table, a .npy array, an image) is malformed or holds what shards cannot store."""


class ImageDecodeError(SourceFormatError):
    """An image file cannot be decoded (unreadable, truncated, not an image); ``--strict`` refuses it."""


class MissingDependencyError(StreamloadError, ImportError):
    """An optional dependency (Pillow for image folders) is not installed; the message says what to install."""


class WorkerError(StreamloadError, RuntimeError):
    """A worker process (image decoding, a Keras data worker under fit) failed or died; the message names it."""


class DatasetBusyError(StreamloadError, BlockingIOError):
    """Another build holds the dataset folder's build lock; builds of one folder never run at once."""


class GenerationGoneError(StreamloadError, FileNotFoundError):
    """A dataset generation a reader asked for no longer exists (it was garbage-collected)."""


class OutOfSpaceError(StreamloadError, OSError):
    """The device filled up while a build was writing; the message names the dataset folder."""


class AmbiguousSourceError(StreamloadError, ValueError):
    """A source folder holds two files for one role (an IDX file raw and gzipped); building would have to guess."""


class ForeignDataError(DatasetExistsError):
    """Something streamload did not write is where it would replace or delete; it is left as it is."""


class UnsafeFileError(ForeignDataError):
    """A file streamload writes or locks is a symbolic link or not a regular file; it is never followed."""


class CheckpointError(StreamloadError, ValueError):
    """A training checkpoint file is unreadable, or names something outside its checkpoint folder."""


class ShardChangedError(ShardFormatError):
    """A shard file changed (truncated, rewritten, touched) after a reader opened it; its map is no longer safe."""


class ShardDecodeError(ShardCorruptError):
    """A compressed HDF5 chunk of a shard cannot be read back (its bytes were damaged)."""


class ObjectStoreError(StreamloadError, OSError):
    """An object store (an S3 bucket) refused or failed a request; the message names the bucket and key, never
    a credential."""


class StoreUnavailableError(ObjectStoreError, ConnectionError):
    """The object store did not answer within the retry budget (attempts and seconds, named in the message)."""


class StoreAccessError(ObjectStoreError, PermissionError):
    """The object store rejected the credentials or denied access to the bucket."""


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """No object (or no bucket) at the key asked for."""


class ObjectExistsError(ObjectStoreError, FileExistsError):
    """A put that must not overwrite (if-none-match) found an object already at its key."""


class CacheFullError(StreamloadError, OSError):
    """The local shard cache cannot take a shard without passing its byte limit (every shard in it is leased),
    or its disk is full; nothing was evicted from under a reader."""
