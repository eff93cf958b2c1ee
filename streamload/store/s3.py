"""The object store on S3 (and S3-compatible servers) through obstore, the client chosen by measurement
(docs/object-storage.md, results/s3-clients.json).

obstore is imported only when a store is first used, so ``import streamload`` never needs it (it is the
``s3`` extra). Its client (a Rust runtime and connection pool) is made per process: an obstore client
used in a forked child hangs (measured: ``benchmarks/s3_clients.py``'s fork check), so a store that
finds itself in a new process (a Keras worker, a DataLoader worker) makes a new one before its first
request there. Its own retries are off; :func:`streamload.store.retry.with_retries` owns the budget.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    MissingDependencyError,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStoreError,
    StoreAccessError,
)
from .protocol import ObjectInfo, ObjectSink
from .retry import TransientError, with_retries
from .settings import S3Settings, load_settings
from .url import StoreURL

CONNECT_TIMEOUT_S = 5  # a server that does not accept a connection in this long counts as down (then retried)
READ_TIMEOUT_S = 30  # a response that sends nothing for this long counts as lost (then retried)
REQUEST_TIMEOUT_S = 1800  # one whole request, a large shard's body included
RANGE_CONCURRENCY = 64  # range GETs in flight per get_ranges call
CHUNK_BYTES = 8 << 20  # whole-object GETs are written in pieces of about this size
_CLIENT_4XX = re.compile(r"status code: 4(?!29)\d\d")  # a 4xx other than 429 "slow down": retrying cannot help
T = TypeVar("T")


def _obstore() -> Any:
    try:
        import obstore
    except ImportError:
        raise MissingDependencyError("reading or writing s3:// needs obstore: pip install 'streamload[s3]'") from None
    return obstore


class S3ObjectStore:
    """An :class:`~streamload.store.protocol.ObjectStore` for ``url``, configured from the AWS environment."""

    def __init__(self, url: StoreURL, settings: S3Settings | None = None) -> None:
        self.url = url
        self.settings = settings if settings is not None else load_settings()
        self._client: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3ObjectStore({str(self.url)!r}, {self.settings.describe()})"

    def _store(self) -> Any:
        """This process's obstore client (a new one after a fork)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = self._make_client(), os.getpid()
            return self._client

    def _make_client(self) -> Any:
        from obstore.store import S3Store

        _obstore()
        config: dict[str, Any] = {"region": self.settings.region or "us-east-1"}
        if self.settings.endpoint:
            config["endpoint"] = self.settings.endpoint
        for name in ("access_key_id", "secret_access_key", "session_token"):
            if getattr(self.settings, name):
                config[name] = getattr(self.settings, name)
        client = {"connect_timeout": timedelta(seconds=CONNECT_TIMEOUT_S),
                  "read_timeout": timedelta(seconds=READ_TIMEOUT_S), "timeout": timedelta(seconds=REQUEST_TIMEOUT_S),
                  "allow_http": (self.settings.endpoint or "").startswith("http://")}
        return S3Store(self.url.bucket, prefix=self.url.prefix or None, config=config, client_options=client,
                       retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1)})

    def _what(self, key: str) -> str:
        return f"{self.url.scheme}://{self.url.bucket}/{self.url.key(key)}"

    def _call(self, key: str, request: Callable[[], T]) -> T:
        """``request()`` with retries; obstore's errors turned into streamload's, scrubbed of secrets."""

        def attempt() -> T:
            try:
                return request()
            except Exception as exc:  # noqa: BLE001 - sorted into retryable or named errors below
                raise self._translate(exc, key) from None

        return with_retries(attempt, self._what(key))

    def _translate(self, exc: BaseException, key: str) -> BaseException:
        errors = _obstore().exceptions
        reason = self.settings.scrub(str(exc)).splitlines()[0][:300] if str(exc) else type(exc).__name__
        what = self._what(key)
        if isinstance(exc, (errors.PermissionDeniedError, errors.UnauthenticatedError)):
            return StoreAccessError(f"{what}: access denied to bucket {self.url.bucket} ({self.settings.describe()}); "
                                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile")
        if isinstance(exc, errors.NotFoundError):
            return ObjectNotFoundError(f"{what}: no such object")
        if isinstance(exc, (errors.AlreadyExistsError, errors.PreconditionError)):
            return ObjectExistsError(f"{what}: an object is already there; it was not overwritten")
        if isinstance(exc, (errors.GenericError, OSError, TimeoutError)) and not _CLIENT_4XX.search(reason):
            return TransientError(reason)
        if "SignatureDoesNotMatch" in reason or "InvalidAccessKeyId" in reason or "AccessDenied" in reason:
            return StoreAccessError(f"{what}: access denied to bucket {self.url.bucket} ({self.settings.describe()}); "
                                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile")
        return ObjectStoreError(f"{what}: {type(exc).__name__}: {reason}")

    # --- reads -------------------------------------------------------------------------------------------

    def get_into(self, key: str, sink: ObjectSink) -> int:
        obstore = _obstore()

        def fetch() -> int:
            sink.restart()
            written = 0
            for chunk in obstore.get(self._store(), key).stream(min_chunk_size=CHUNK_BYTES):
                view = memoryview(chunk)
                sink.write(view)
                written += len(view)
            return written

        return self._call(key, fetch)

    def get_file(self, key: str, path: Path) -> int:
        with open(path, "wb") as out:
            return self.get_into(key, _FileSink(out))

    def get_ranges(self, key: str, starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        if len(starts) != len(ends):
            raise ValueError(f"{len(starts)} starts but {len(ends)} ends")
        obstore = _obstore()

        async def fetch_all() -> list[bytes]:
            gate, store = asyncio.Semaphore(RANGE_CONCURRENCY), self._store()

            async def one(start: int, end: int) -> bytes:
                async with gate:
                    return bytes(await obstore.get_range_async(store, key, start=int(start), end=int(end)))

            return list(await asyncio.gather(*(one(start, end) for start, end in zip(starts, ends))))

        return self._call(key, lambda: asyncio.run(fetch_all()))

    def head(self, key: str) -> ObjectInfo:
        meta = self._call(key, lambda: _obstore().head(self._store(), key))
        return ObjectInfo(key, int(meta["size"]), meta.get("e_tag"))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        def listing() -> list[ObjectInfo]:
            found = []
            for page in _obstore().list(self._store(), prefix or None, chunk_size=1000):
                found += [ObjectInfo(meta["path"], int(meta["size"]), meta.get("e_tag")) for meta in page]
            return sorted(found, key=lambda info: info.key)

        return self._call(prefix, listing)

    # --- writes ------------------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path) -> None:
        self._call(key, lambda: _obstore().put(self._store(), key, Path(path)))

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        mode = "create" if if_absent else "overwrite"
        self._call(key, lambda: _obstore().put(self._store(), key, bytes(data), mode=mode, use_multipart=False))

    def delete(self, key: str) -> None:
        try:
            self._call(key, lambda: _obstore().delete(self._store(), key))
        except ObjectNotFoundError:
            pass


class _FileSink:
    """An ObjectSink writing to an open binary file from its first byte (truncated on restart)."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()

    def write(self, data: memoryview) -> None:
        self.out.write(data)
