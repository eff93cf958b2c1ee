"""Property-based fuzzing (hypothesis) of the two parsers that read untrusted bytes: the IDX reader and
the manifest loader. Each test feeds at least 1,000 generated malformed inputs (truncations, bit flips,
random headers, appended bytes, random JSON, mutated manifests) and requires that only the declared
exceptions come out: IdxFormatError / SourceMismatchError for IDX, ManifestError for manifests.
Whatever is accepted must also be right: an IDX file read back has its header's shape, and an
accepted manifest survives a write/read round trip unchanged."""

from __future__ import annotations

import gzip
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamload.errors import IdxFormatError, ManifestError, SourceMismatchError
from streamload.format.manifest import MANIFEST_NAME, Manifest, read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource
from streamload.write.sources.idx import IDX_DTYPES, IdxPairSource, iter_idx_rows, read_idx, read_idx_header, write_idx

pytestmark = pytest.mark.fuzz
EXAMPLES = 1000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- IDX -----------------------------------------------------------------------------------------


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """A valid uncompressed IDX file: any dtype code, 1-3 dimensions of 0-6."""
    code = draw(st.sampled_from(sorted(IDX_DTYPES)))
    shape = draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
    size = int(np.prod(shape)) * IDX_DTYPES[code].itemsize
    return struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape) + draw(st.binary(min_size=size,
                                                                                            max_size=size))


def _flip(data: bytes, positions: list[int], masks: list[int]) -> bytes:
    out = bytearray(data)
    for position, mask in zip(positions, masks):
        out[position % len(out)] ^= mask
    return bytes(out)


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> tuple[str, bytes]:
    """One malformation of ``data``, always a change: (kind, new bytes)."""
    kind = draw(st.sampled_from(["truncate", "flip", "header", "append", "random", "dims"]))
    if kind == "truncate":
        return kind, data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        positions = draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4, unique=True))
        return kind, _flip(data, positions, draw(st.lists(st.integers(1, 255), min_size=4, max_size=4)))
    if kind == "header":  # the magic number and dimensions overwritten with random bytes
        header = min(len(data), 4 + 4 * data[3]) if len(data) > 3 else len(data)
        masks = draw(st.lists(st.integers(1, 255), min_size=header, max_size=header))
        return kind, _flip(data, list(range(header)), masks)
    if kind == "append":
        return kind, data + draw(st.binary(min_size=1, max_size=64))
    if kind == "dims":  # a plausible magic with random, possibly enormous dimensions and a short payload
        ndim = draw(st.integers(1, 40))
        dims = draw(st.lists(st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
        code = draw(st.sampled_from(sorted(IDX_DTYPES)))
        return kind, struct.pack(f">HBB{ndim}I", 0, code, ndim, *dims) + draw(st.binary(max_size=64))
    blob = draw(st.binary(max_size=200))
    return kind, blob if blob != data else blob + b"\0"


def _check_idx(path: Path, labels: Path, as_images: bool) -> str:
    """Read ``path`` as a file, then as half of an image/label pair, as a build does; only declared errors."""
    try:
        array = read_idx(path)
        header = read_idx_header(path)
        assert array.shape == header.shape and array.dtype == header.dtype.newbyteorder("=")
        assert sum(len(chunk) for chunk in iter_idx_rows(path, 3)) == header.num_rows
    except IdxFormatError:
        return "file refused"
    try:
        source = IdxPairSource(path, labels) if as_images else IdxPairSource(labels, path)
        assert sum(len(chunk["x"]) for chunk in source.iter_chunks(4)) == source.num_samples
    except (IdxFormatError, SourceMismatchError):
        return "file read, pair refused"
    return "file and pair read"


def test_idx_reader_raises_only_its_declared_errors(folder: Path) -> None:
    labels = write_idx(folder / "labels", np.zeros(2, np.uint8))
    seen: Counter[tuple[str, str, str]] = Counter()

    @FUZZ
    @given(valid=idx_files(), data=st.data(), container=st.sampled_from(["raw", "gz-outside", "gz-inside"]),
           as_images=st.booleans())
    def fuzz(valid: bytes, data: st.DataObject, container: str, as_images: bool) -> None:
        if container == "gz-outside":  # damage the compressed stream: deflate blocks, CRC-32, length
            kind, content = data.draw(mutations(gzip.compress(valid, mtime=0)))
        else:
            kind, content = data.draw(mutations(valid))
            content = gzip.compress(content, mtime=0) if container == "gz-inside" else content
        path = folder / "fuzzed"
        path.write_bytes(content)
        seen[container, kind, _check_idx(path, labels, as_images)] += 1

    fuzz()
    print(f"\nIDX fuzz: {sum(seen.values())} malformed inputs: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= EXAMPLES
    broken = sum(count for (container, kind, verdict), count in seen.items()
                 if kind in ("truncate", "append") and container != "gz-outside" and verdict != "file refused")
    assert broken == 0  # a cut or lengthened file is never read as other data


# --- manifests -----------------------------------------------------------------------------------


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                      max_size=4),
                    max_leaves=20)


@pytest.fixture(scope="module")
def valid_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real manifest (two splits, labels, class names) as parsed JSON: the seed of every mutation."""
    out = tmp_path_factory.mktemp("valid") / "ds"
    rng = np.random.default_rng(0)
    source = ArraySource(x=rng.integers(0, 256, (7, 3, 2), dtype=np.uint8), y=np.arange(7, dtype=np.uint8) % 3)
    source.class_names = ("a", "b", "c")  # type: ignore[attr-defined]
    test = ArraySource(x=np.zeros((2, 3, 2), np.uint8), y=np.zeros(2, np.uint8))
    build_dataset({"train": source, "test": test}, out, BuildOptions(shard_size=3, progress=False))
    return json.loads((out / MANIFEST_NAME).read_text())


BOUNDARIES = [-2**63 - 1, -2**63, -1, 0, 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64]


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and list indices) to a value inside a parsed JSON document."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    return [prefix] + [path for key, child in children for path in _paths(child, (*prefix, key))]


@st.composite
def mutated_manifests(draw: st.DrawFn, valid: dict[str, Any]) -> tuple[str, str]:
    """(kind, manifest text): a value replaced, removed or added somewhere, or the text cut or flipped."""
    kind = draw(st.sampled_from(["replace", "number", "remove", "add", "truncate", "flip", "random"]))
    if kind == "random":
        return kind, json.dumps(draw(JSON))
    if kind == "number":  # an integer field set to a boundary value (int64 and uint32 edges, 2**53...)
        document = json.loads(json.dumps(valid))
        numbers = [path for path in _paths(document) if type(_at(document, path)) is int]
        path = draw(st.sampled_from(numbers))
        _at(document, path[:-1])[path[-1]] = draw(st.sampled_from(BOUNDARIES) | st.integers())
        return kind, json.dumps(document)
    text = json.dumps(valid, indent=2)
    if kind == "truncate":
        return kind, text[:draw(st.integers(0, len(text) - 1))]
    if kind == "flip":
        raw = bytearray(text.encode())
        for position in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4, unique=True)):
            raw[position] ^= draw(st.integers(1, 255))
        return kind, raw.decode("utf-8", errors="surrogateescape")
    document = json.loads(text)
    path = draw(st.sampled_from(_paths(document)[1:]))
    parent = _at(document, path[:-1])
    if kind == "replace":
        parent[path[-1]] = draw(JSON.filter(lambda value: value != parent[path[-1]]))
    elif kind == "remove":
        del parent[path[-1]]
    else:
        target = parent[path[-1]] if isinstance(parent[path[-1]], (dict, list)) else parent
        if isinstance(target, dict):
            target[draw(st.text(max_size=8).filter(lambda key: key not in target))] = draw(JSON)
        else:
            target.insert(draw(st.integers(0, len(target))), draw(JSON))
    return kind, json.dumps(document)


def test_manifest_loader_raises_only_manifest_errors(folder: Path, valid_manifest: dict[str, Any]) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    path = folder / MANIFEST_NAME

    @FUZZ
    @given(mutated=mutated_manifests(valid_manifest))
    def fuzz(mutated: tuple[str, str]) -> None:
        kind, text = mutated
        path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        try:
            manifest = read_manifest(folder)
        except ManifestError:
            seen[kind, "refused"] += 1
            return
        seen[kind, "accepted"] += 1
        assert Manifest.from_dict(json.loads(manifest.to_json()), path) == manifest  # what it writes, it reads
        for split in manifest.splits.values():
            assert split.num_samples == sum(shard.num_samples for shard in split.shards)

    fuzz()
    print(f"\nmanifest fuzz: {sum(seen.values())} malformed inputs: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= EXAMPLES
