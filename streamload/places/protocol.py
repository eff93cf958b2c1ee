"""What every place a dataset lives offers the readers: a leased generation and its manifest.

``open`` reads the current manifest and pins its generation: whatever rebuilds publish afterwards, the
lease reads that generation until it is released (locally a shared ``flock``; in a bucket a generation's
objects are never rewritten, so its prefix is the pin). ``check_split`` is the cheap check before training
starts that the split's files are where the manifest says, at their sizes.
"""

from __future__ import annotations

from typing import Protocol

from ..format.manifest import Manifest, SplitInfo


class GenerationHold(Protocol):
    """One leased generation: its manifest, name, and ``release`` (idempotent); pickles as its identity."""

    manifest: Manifest

    @property
    def generation(self) -> str | None: ...

    def release(self) -> None: ...


class Place(Protocol):
    """A local folder or a bucket prefix holding a dataset."""

    remote: bool

    @property
    def location(self) -> str:
        """The folder or URL, as messages name it (never a credential)."""
        ...

    def open(self) -> GenerationHold:
        """Read the manifest and lease its generation."""
        ...

    def check_split(self, hold: GenerationHold, split: SplitInfo) -> None:
        """ShardFormatError if a file of ``split`` is missing or of the wrong size (before any read)."""
        ...
