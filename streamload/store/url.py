"""Where a dataset lives: a local folder or ``s3://bucket/prefix``.

A URL names a place, never a credential: a URL with a user or password in it (``s3://key:secret@bucket``)
is refused rather than parsed, so no secret can reach a manifest, a log line or an error message
through the one string every one of those repeats. Endpoint, region and keys come only from the
standard AWS environment variables and config files, which boto3 reads (:mod:`streamload.store.s3`).

``s3://`` is the one scheme. It is tested against SeaweedFS; other S3-compatible services (AWS S3, MinIO,
Cloudflare R2, Google Cloud Storage's XML API with HMAC keys) are reached the same way, through
``AWS_ENDPOINT_URL``, and are untested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import InvalidOptionError

SCHEMES = ("s3",)
# S3's rules for bucket names: 3-63 lowercase letters, digits, dots and hyphens
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class StoreURL:
    """A bucket and a key prefix in it (no leading or trailing slash; empty for the bucket's root)."""

    scheme: str
    bucket: str
    prefix: str = ""

    def key(self, name: str) -> str:
        """The object key of ``name`` (a path relative to the prefix, ``/``-separated)."""
        name = name.strip("/")
        return f"{self.prefix}/{name}" if self.prefix else name

    def relative(self, key: str) -> str:
        """``key`` without the prefix: the inverse of :meth:`key`."""
        if not self.prefix:
            return key
        if not key.startswith(self.prefix + "/"):
            raise InvalidOptionError(f"{key!r} is not under {self}")
        return key[len(self.prefix) + 1:]

    def child(self, name: str) -> StoreURL:
        """The URL of a folder below this one (a generation, say)."""
        return StoreURL(self.scheme, self.bucket, self.key(name))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}" if self.prefix else f"{self.scheme}://{self.bucket}"


def is_remote(location: object) -> bool:
    """Whether ``location`` (a str or a path) names an object store rather than a local folder."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def parse_url(text: str) -> StoreURL:
    """``s3://bucket/prefix`` as a :class:`StoreURL`.

    Raises InvalidOptionError for another scheme, a bad bucket name, a query, a fragment, ``..`` or
    empty segments in the prefix, and for embedded credentials (whose text is then never repeated).
    """
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidOptionError(f"{parts.scheme}:// URL with credentials in it refused (they are not repeated "
                                 "here); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, instead")
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidOptionError(f"{text!r}: unsupported scheme {scheme or '(none)'}; use s3://bucket/prefix")
    if parts.query or parts.fragment:
        raise InvalidOptionError(f"{text!r}: a store URL takes no query or fragment")
    if not _BUCKET.fullmatch(parts.netloc):
        raise InvalidOptionError(f"{text!r}: {parts.netloc!r} is not a valid bucket name")
    prefix = parts.path.strip("/")
    segments = prefix.split("/") if prefix else []
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidOptionError(f"{text!r}: the prefix has an empty, '.' or '..' segment")
    return StoreURL(scheme, parts.netloc, prefix)
