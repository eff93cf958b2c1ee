"""The object store on S3 (and S3-compatible servers) through boto3, the client chosen by measurement
(docs/object-storage.md, results/s3-clients.json: obstore reads ranges faster, but hangs in a forked
child, which is how Keras starts its data workers).

boto3 is imported only when a store is first used, so ``import streamload`` never needs it (it is the
``s3`` extra). boto3 itself resolves endpoint, region and credentials from the standard AWS variables
and files (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_PROFILE``, ``~/.aws/config`` and ``~/.aws/credentials``, SSO and roles included); streamload
passes it none. A client is made per process (a new one after a fork: a pooled connection must never be
shared by two processes) and shared by that process's threads, which boto3 documents as safe. Its
own retries are off; :func:`streamload.store.retry.with_retries` owns the budget.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    MissingDependencyError,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStoreError,
    StoreAccessError,
)
from .protocol import ObjectBuffer, ObjectInfo, ObjectSink
from .retry import TransientError, with_retries
from .url import StoreURL

CONNECT_TIMEOUT_S = 5  # a server that does not accept a connection in this long counts as down (then retried)
READ_TIMEOUT_S = 30  # a response that sends nothing for this long counts as lost (then retried)
RANGE_CONCURRENCY = 64  # range GETs in flight per process (threads sharing one client)
CHUNK_BYTES = 8 << 20  # whole-object GETs are written in pieces of about this size
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
           "AllAccessDisabled"}
_EXISTS = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
T = TypeVar("T")


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise MissingDependencyError("reading or writing s3:// needs boto3: pip install 'streamload[s3]'") from None
    return boto3


def _no_continue_for_an_empty_body(params: dict[str, Any], **_: Any) -> None:
    """Drop botocore's ``Expect: 100-continue`` from a request with an empty body (a generation's ``.claim``).

    SeaweedFS answers such a request and then sends a late "100 Continue", which the next request on the
    pooled connection reads as its own answer: it waited out the read timeout, 30 s per build. botocore
    knows the problem (``BOTO_EXPERIMENTAL__NO_EMPTY_CONTINUE``); a body of zero bytes has nothing to hold back.
    """
    from botocore.utils import determine_content_length

    body = params.get("body")
    if body is not None and hasattr(body, "read") and determine_content_length(body) == 0:
        params["headers"].pop("Expect", None)


class S3ObjectStore:
    """An :class:`~streamload.store.protocol.ObjectStore` for ``url``, configured by the AWS environment."""

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._pid = -1
        self._lock = threading.Lock()
        self._client: Any = None
        self._secrets: tuple[str, ...] = ()
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"S3ObjectStore({str(self.url)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url}  # a pickled store (a spawned worker) makes its own client

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"])  # type: ignore[misc]

    def _ready(self) -> Any:
        """This process's client (a new one, and a new thread pool, after a fork)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                from botocore.config import Config

                session = _boto3().session.Session()
                config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                                retries={"max_attempts": 1, "mode": "standard"},
                                max_pool_connections=RANGE_CONCURRENCY)
                self._client = session.client("s3", config=config)
                self._client.meta.events.register_last("before-call.s3", _no_continue_for_an_empty_body)
                credentials = session.get_credentials()
                frozen = credentials.get_frozen_credentials() if credentials is not None else None
                self._secrets = tuple(s for s in (frozen.secret_key, frozen.token) if s) if frozen else ()
                self._pool, self._pid = None, os.getpid()
            return self._client

    def _threads(self) -> ThreadPoolExecutor:
        self._ready()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(RANGE_CONCURRENCY, thread_name_prefix="streamload-s3")
            return self._pool

    def _what(self, key: str) -> str:
        return f"{self.url.scheme}://{self.url.bucket}/{self.url.key(key)}"

    def _call(self, key: str, request: Callable[[Any], T]) -> T:
        """``request(client)`` with retries; boto3's errors turned into streamload's, scrubbed of secrets."""

        def attempt() -> T:
            try:
                return request(self._ready())
            except (MissingDependencyError, ObjectStoreError):
                raise
            except Exception as exc:  # noqa: BLE001 - sorted into retryable or named errors below
                raise self._translate(exc, key) from None

        return with_retries(attempt, self._what(key))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _translate(self, exc: Exception, key: str) -> Exception:
        from botocore.exceptions import ClientError, NoCredentialsError

        what, reason = self._what(key), self._scrub(str(exc)).replace("\n", " ")[:300] or type(exc).__name__
        if isinstance(exc, NoCredentialsError):
            return StoreAccessError(f"{what}: no credentials for bucket {self.url.bucket}; set AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        if not isinstance(exc, ClientError):
            return TransientError(f"{type(exc).__name__}: {reason}")  # connection refused, reset, timed out
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _DENIED:
            return StoreAccessError(f"{what}: access to bucket {self.url.bucket} denied ({code}); check "
                                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile")
        if code in _NOT_FOUND:
            return ObjectNotFoundError(f"{what}: no such {'bucket' if code == 'NoSuchBucket' else 'object'}")
        if code in _EXISTS:
            return ObjectExistsError(f"{what}: an object is already there; it was not overwritten")
        if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "InternalError"):
            return TransientError(f"{code or status}: {reason}")
        return ObjectStoreError(f"{what}: {code or status}: {reason}")

    # --- reads -------------------------------------------------------------------------------------------

    def get_into(self, key: str, sink: ObjectSink) -> int:
        def fetch(client: Any) -> int:
            sink.restart()
            answer = client.get_object(Bucket=self.url.bucket, Key=self.url.key(key))
            body = answer["Body"]
            try:
                if isinstance(sink, ObjectBuffer) and int(answer.get("ContentLength", -1)) == len(sink.room()):
                    return _read_into(body, sink)
                written = 0
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    sink.write(memoryview(chunk))
                    written += len(chunk)
                return written
            finally:
                body.close()

        return self._call(key, fetch)

    def get_file(self, key: str, path: Path) -> int:
        with open(path, "wb") as out:
            return self.get_into(key, _FileSink(out))

    def get_bytes(self, key: str) -> bytes:
        return self._call(key, lambda client: client.get_object(Bucket=self.url.bucket,
                                                                Key=self.url.key(key))["Body"].read())

    def get_ranges(self, key: str, starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        if len(starts) != len(ends):
            raise ValueError(f"{len(starts)} starts but {len(ends)} ends")

        def one(span: tuple[int, int]) -> bytes:
            header = f"bytes={int(span[0])}-{int(span[1]) - 1}"
            return self._call(key, lambda client: client.get_object(
                Bucket=self.url.bucket, Key=self.url.key(key), Range=header)["Body"].read())

        return list(self._threads().map(one, zip(starts, ends)))

    def head(self, key: str) -> ObjectInfo:
        answer = self._call(key, lambda client: client.head_object(Bucket=self.url.bucket, Key=self.url.key(key)))
        return ObjectInfo(key, int(answer["ContentLength"]), answer.get("ETag"))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        def listing(client: Any) -> list[ObjectInfo]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.url.bucket,
                                                                      Prefix=self.url.key(prefix) if prefix else
                                                                      (self.url.prefix + "/" if self.url.prefix
                                                                       else ""))
            return sorted((ObjectInfo(self.url.relative(item["Key"]), int(item["Size"]), item.get("ETag"))
                           for page in pages for item in page.get("Contents", [])), key=lambda info: info.key)

        return self._call(prefix, listing)

    # --- writes ------------------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path) -> None:
        self._call(key, lambda client: client.upload_file(str(path), self.url.bucket, self.url.key(key)))

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        self._call(key, lambda client: client.put_object(Bucket=self.url.bucket, Key=self.url.key(key),
                                                         Body=bytes(data), **extra))

    def delete(self, key: str) -> None:
        try:
            self._call(key, lambda client: client.delete_object(Bucket=self.url.bucket, Key=self.url.key(key)))
        except ObjectNotFoundError:
            pass


def _read_into(body: Any, sink: ObjectBuffer) -> int:
    """The body straight into the sink's room, in pieces (each hashed while the next arrives); botocore checks
    the length, so a body cut short raises (and is retried) instead of returning fewer bytes."""
    room, written = sink.room(), 0
    while written < len(room):
        count = body.readinto(room[written:written + CHUNK_BYTES])
        if not count:
            break
        sink.filled(count)
        written += count
    return written


class _FileSink:
    """An ObjectSink writing to an open binary file from its first byte (truncated on restart)."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()

    def write(self, data: memoryview) -> None:
        self.out.write(data)
