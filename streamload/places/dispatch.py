"""``open_place``: a location (a folder or ``s3://bucket/prefix``) to its :class:`Place`."""

from __future__ import annotations

import os

from ..store.url import is_remote
from .protocol import Place


def open_place(location: str | os.PathLike) -> Place:
    """The place ``location`` names: ``s3://bucket/prefix`` (a :class:`BucketPlace`) or a local folder."""
    if is_remote(location):
        from .bucket import BucketPlace

        return BucketPlace(str(location))
    from .local import LocalPlace

    return LocalPlace(location)
