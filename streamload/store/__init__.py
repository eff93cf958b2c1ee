"""Datasets in object storage: URLs, the object-store interface and its S3 implementation, the shard cache.

This layer sits just above the base helpers (errors, options, durable writes) and below everything that
reads or writes datasets, which call it; it knows nothing of manifests or formats. The S3 client
(boto3, the ``s3`` extra) is imported only when a store is first used.
"""

from __future__ import annotations

from .cache import Lease, ShardCache
from .cachefiles import ShardTable
from .protocol import ObjectInfo, ObjectStore
from .retry import RETRY_ATTEMPTS, RETRY_BUDGET_S
from .url import StoreURL, is_remote, parse_url

__all__ = ["RETRY_ATTEMPTS", "RETRY_BUDGET_S", "Lease", "ObjectInfo", "ObjectStore", "ShardCache", "ShardTable",
           "StoreURL", "is_remote", "open_store", "parse_url"]


def open_store(url: str | StoreURL) -> ObjectStore:
    """The object store at ``url`` (``s3://bucket/prefix``), configured from the standard AWS environment."""
    from .s3 import S3ObjectStore

    return S3ObjectStore(parse_url(url) if isinstance(url, str) else url)
