"""A dataset in a bucket, ``s3://bucket/prefix``: the local generation model carried over to objects.

Layout under the prefix::

    manifest.json             the current manifest (it names its generation); overwritten by each build (one PUT)
    gen-000007/.claim         taken first, with if-none-match: two builds never write the same generation
    gen-000007/train-*.npy    that generation's shards, uploaded before anything names them
    gen-000007/manifest.json  its manifest, published last with if-none-match: never rewritten

A build uploads every shard of a new generation, then its manifest, then overwrites the top-level
``manifest.json``; a reader that finds a manifest therefore finds every shard it names. A reader reads the
top-level manifest once, then only the immutable ``gen-NNNNNN/`` objects it names: a rebuild publishes a
new generation beside it and never changes what a running reader reads. Old generations are not deleted
(buckets have no reader locks to say when that is safe): remove them with the bucket's own tools, or a
lifecycle rule, once no job reads them.

Nothing secret is written: the manifest holds names, sizes and hashes; messages name the URL, never a key.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ManifestError, ObjectExistsError, ObjectNotFoundError
from ..format.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, SplitInfo
from ..store import ObjectStore, ShardTable, StoreURL, open_store, parse_url
from .generations import acquire
from .layout import generation_name, generation_number

CLAIM_NAME = ".claim"


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest from its bytes; ManifestError naming ``where`` (a URL) when it is not one."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{where}: manifest is not valid JSON: {exc}") from None
    return Manifest.from_dict(parsed, where)  # type: ignore[arg-type] - only printed


@dataclasses.dataclass
class BucketGeneration:
    """A reader's pin on one generation of a bucket: its objects are never rewritten, so nothing to lock."""

    url: StoreURL
    generation: str
    manifest: Manifest

    def release(self) -> None:
        pass

    @property
    def locked(self) -> bool:
        return False


class BucketPlace:
    """The dataset at ``s3://bucket/prefix`` (endpoint, region and keys from the AWS environment)."""

    remote = True

    def __init__(self, url: str | StoreURL) -> None:
        self.url = parse_url(url) if isinstance(url, str) else url
        self.store: ObjectStore = open_store(self.url)

    @property
    def location(self) -> str:
        return str(self.url)

    def __repr__(self) -> str:
        return f"BucketPlace({self.location!r})"

    # --- reading -----------------------------------------------------------------------------------------

    def _manifest(self, key: str) -> Manifest:
        where = f"{self.url}/{key}"
        try:
            data = self.store.get_bytes(key)
        except ObjectNotFoundError:
            raise ManifestError(f"{where}: no manifest; build the dataset there with "
                                f"`build_shards.py --out {self.url}` (or --upload a local one)") from None
        return parse_manifest(data, where)

    def open(self) -> BucketGeneration:
        """The current manifest's generation, pinned: its immutable manifest copy is what is read from now on."""
        current = self._manifest(MANIFEST_NAME)
        generation = current.generation
        if generation_number(generation) is None:
            raise ManifestError(f"{self.url}/{MANIFEST_NAME}: names no generation (gen-NNNNNN), which every "
                                "dataset in a bucket has; publish it with build_shards.py")
        manifest = self._manifest(f"{generation}/{MANIFEST_NAME}")
        if manifest.generation != generation:
            raise ManifestError(f"{self.url}/{generation}/{MANIFEST_NAME}: names generation "
                                f"{manifest.generation!r}, but lies under {generation}/")
        return BucketGeneration(self.url, str(generation), manifest)

    def check_split(self, hold: BucketGeneration, split: SplitInfo) -> None:
        """Nothing to check before reading: every shard is checked (size, SHA-256) as it is downloaded."""

    def shard_table(self, hold: BucketGeneration, split: SplitInfo) -> tuple[ShardTable, int]:
        """Every file of ``split`` as a cache table (file ``j`` of shard ``s`` at ``s * k + j``), and ``k``."""
        roles = sorted(split.shards[0].files)
        files = [shard.files[role] for shard in split.shards for role in roles]
        table = ShardTable.of([f"{hold.generation}/{file.name}" for file in files], [file.bytes for file in files],
                              [file.sha256 for file in files])
        return table, len(roles)

    # --- publishing --------------------------------------------------------------------------------------

    def generations(self) -> list[str]:
        """Generation prefixes with any object under them (published or not), oldest first."""
        names = {info.key.split("/", 1)[0] for info in self.store.list() if "/" in info.key}
        return sorted((name for name in names if generation_number(name) is not None), key=generation_number)

    def _claim(self) -> str:
        """A generation number no build has used: one above any seen, taken with an if-none-match PUT."""
        number = 1 + max((generation_number(name) or 0 for name in self.generations()), default=0)
        while True:
            name = generation_name(number)
            try:
                self.store.put_bytes(f"{name}/{CLAIM_NAME}", b"", if_absent=True)
                return name
            except ObjectExistsError:
                number += 1  # another build took it first

    def publish(self, directory: str | os.PathLike,
                on_file: Callable[[str, int], object] | None = None) -> Manifest:
        """Upload the current generation of the local dataset ``directory`` as a new generation here.

        Shards first, then the generation's manifest (if-none-match), then the top-level ``manifest.json``.
        The local generation stays leased while it is read; the manifest gets the new generation's name.
        """
        with acquire(directory) as lease:
            generation = self._claim()
            root: Path = lease.root
            for split in lease.manifest.splits.values():
                for shard in split.shards:
                    for file in shard.files.values():
                        self.store.put_file(f"{generation}/{file.name}", root / file.name)
                        if on_file is not None:
                            on_file(file.name, file.bytes)
            manifest = dataclasses.replace(lease.manifest, generation=generation, format_version=FORMAT_VERSION)
            text = manifest.to_json().encode("utf-8")
            self.store.put_bytes(f"{generation}/{MANIFEST_NAME}", text, if_absent=True)
            self.store.put_bytes(MANIFEST_NAME, text)  # one PUT: readers see the old manifest or the new one
        return manifest

