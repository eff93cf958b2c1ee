"""The operations streamload needs from an object store, whatever the client library behind them.

Keys are relative to the store's URL prefix (``shards/train-00000.npy``, not the full key), so a
dataset reads the same under any prefix. Every method retries transient failures within the budget of
:mod:`streamload.store.retry` and raises the matching error of :mod:`streamload.errors`:
StoreUnavailableError (no answer within the budget), StoreAccessError (credentials), ObjectNotFoundError,
ObjectExistsError (``put_bytes(..., if_absent=True)`` lost the race). None of them ever carries a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    """What ``head`` and ``list`` tell of an object: its key (relative to the prefix), size and ETag."""

    key: str
    size: int
    etag: str | None = None


class ObjectSink(Protocol):
    """Where a whole-object GET writes: ``restart`` before a retried try writes from the first byte again."""

    def restart(self) -> None: ...

    def write(self, data: memoryview) -> None: ...


@runtime_checkable
class ObjectBuffer(ObjectSink, Protocol):
    """A sink with memory of its own (a mapped part file), which a store may read a GET's body straight into.

    Saves copying every byte through a fresh Python buffer and a ``write``: on a cold block-order epoch that
    copy cost more CPU than the GET itself (docs/object-storage.md). ``room()`` is the unwritten rest of the
    buffer; ``filled(count)`` says that ``count`` bytes were read into its start. A store uses this only when
    the object's length equals the room left after ``restart``; otherwise it calls ``write``.
    """

    def room(self) -> memoryview: ...

    def filled(self, count: int) -> None: ...


@runtime_checkable
class ObjectStore(Protocol):
    """A bucket and prefix: get, range reads, put, list, head and delete of objects under it."""

    def get_into(self, key: str, sink: ObjectSink) -> int:
        """Stream the whole object into ``sink`` (restarted on a retry); the number of bytes written."""
        ...

    def get_file(self, key: str, path: Path) -> int:
        """The whole object into a new local file ``path`` (not atomic: callers rename); its size."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole (small) object in memory: a manifest."""
        ...

    def get_ranges(self, key: str, starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        """The bytes ``[start, end)`` of each range, fetched concurrently, in the order asked."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file (in parts when large); the object appears whole or not at all."""
        ...

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write ``data`` atomically; with ``if_absent`` only if no object is there (if-none-match: ``*``),
        else ObjectExistsError: what publishing a manifest needs so two builds never overwrite each other."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size and ETag of one object (ObjectNotFoundError when absent)."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (relative keys), sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; removing an absent one is not an error."""
        ...
