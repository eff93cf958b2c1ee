"""Tests for streamload.format.manifest: what a build records, every way a manifest file can be wrong, and
the index -> (shard, offset) map."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import SyntheticMnist
from shards import build, shard_folder

from streamload import __version__
from streamload.errors import InvalidOptionError, ManifestError, ManifestVersionError
from streamload.format.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ArraySpec,
    FileInfo,
    Manifest,
    ShardInfo,
    SplitInfo,
    check_format,
    read_manifest,
    sha256_file,
)
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources.mnist import sources_from_path


@pytest.fixture(params=["npy", "hdf5"])
def built(request: pytest.FixtureRequest, synthetic_mnist: SyntheticMnist, tmp_path: Path) -> tuple[Path, Manifest]:
    out = tmp_path / "ds"
    options = BuildOptions(format=request.param, shard_size=50, progress=False)
    return out, build_dataset(sources_from_path(synthetic_mnist.folder), out, options)


def test_manifest_records_counts_sizes_and_hashes(built: tuple[Path, Manifest]) -> None:
    out, returned = built
    manifest = read_manifest(out)
    assert manifest == returned
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.created_by == f"streamload {__version__}"
    expected_counts = {"train": [50, 50, 50, 50, 3], "test": [37]}
    assert manifest.generation == "gen-000001"
    gen = out / manifest.generation
    files_seen = set()
    for name, split in manifest.splits.items():
        assert [shard.num_samples for shard in split.shards] == expected_counts[name]
        assert split.num_samples == sum(expected_counts[name])
        assert split.arrays == {"x": ArraySpec("|u1", (28, 28), scale=1 / 255), "y": ArraySpec("|u1", ())}
        for shard in split.shards:
            expected_roles = {"x", "y"} if manifest.format == "npy" else {"hdf5"}
            assert set(shard.files) == expected_roles
            for info in shard.files.values():
                data = (gen / info.name).read_bytes()
                assert info.bytes == len(data)
                assert info.sha256 == hashlib.sha256(data).hexdigest()
                files_seen.add(info.name)
    assert {path.name for path in out.iterdir()} == {MANIFEST_NAME, ".build.lock", manifest.generation}
    assert {path.name for path in gen.iterdir()} == files_seen | {MANIFEST_NAME, ".lock"}
    assert read_manifest(gen) == manifest  # the generation's immutable copy


def test_manifest_json_layout(built: tuple[Path, Manifest]) -> None:
    out, manifest = built
    data = json.loads((out / MANIFEST_NAME).read_text())
    assert data["format_version"] == FORMAT_VERSION and data["format"] == manifest.format
    assert data["splits"]["train"]["num_samples"] == 203
    assert data["splits"]["test"]["arrays"]["x"] == {"dtype": "|u1", "shape": [28, 28], "scale": 1 / 255}
    assert data["splits"]["test"]["arrays"]["y"] == {"dtype": "|u1", "shape": []}  # targets get no scale
    first = data["splits"]["train"]["shards"][0]
    assert first["num_samples"] == 50
    assert all(set(info) == {"name", "bytes", "sha256", "crc32"} for info in first["files"].values())
    assert data["features"] == ["x"] and data["target"] == "y"


# --- read_manifest errors ----------------------------------------------------------------------


def _valid_dict() -> dict:
    split = SplitInfo(arrays={"x": ArraySpec("|u1", (2,))},
                      shards=(ShardInfo(3, {"x": FileInfo("train-00000.x.npy", 134, "ab" * 32)}),))
    return json.loads(Manifest(format="npy", splits={"train": split}, target=None).to_json())


def _write(directory: Path, text: str) -> Path:
    (directory / MANIFEST_NAME).write_text(text)
    return directory / MANIFEST_NAME


def test_valid_dict_reads_back(tmp_path: Path) -> None:
    _write(tmp_path, json.dumps(_valid_dict()))
    manifest = read_manifest(tmp_path)
    assert manifest.split("train").num_samples == 3
    with pytest.raises(KeyError, match="'valid'.*train"):
        manifest.split("valid")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=f"{tmp_path / MANIFEST_NAME}: no manifest"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got \\[1, 2\\]"),
    ('"manifest"', "must be a JSON object, got 'manifest'"),
    ("{}", "format_version: must be an integer >= 1, missing"),
    ('{"format_version": "1"}', "format_version: must be an integer >= 1, got '1'"),
    ('{"format_version": true}', "format_version: must be an integer >= 1, got True"),
    ('{"format_version": 0}', "format_version: must be an integer >= 1, got 0"),
    ('{"format_version": -1}', "format_version: must be an integer >= 1, got -1"),
])
def test_unparsable_manifest_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ManifestError, match=match) as caught:
        read_manifest(tmp_path)
    assert str(caught.value).startswith(f"{path}: ")


def test_binary_garbage_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError, match=str(tmp_path / MANIFEST_NAME)):
        read_manifest(tmp_path)


SHARD = r"splits\.train\.shards\[0\]"


def _two_huge_shards(data: dict) -> None:
    """Each shard's count is allowed, their sum is not (it would overflow int64 sample indices)."""
    split = data["splits"]["train"]
    split.pop("num_samples")
    split["shards"][0]["num_samples"] = 2**48
    split["shards"].append(json.loads(json.dumps(split["shards"][0])))

DAMAGES = {  # what is broken -> the field the error must name
    "no splits": (lambda d: d.pop("splits"), "splits: must be a JSON object, missing"),
    "no sha256": (lambda d: d["splits"]["train"]["shards"][0]["files"]["x"].pop("sha256"),
                  f"{SHARD}.files.x.sha256: must be 64 lowercase hex digits, missing"),
    "short sha256": (lambda d: d["splits"]["train"]["shards"][0]["files"]["x"].update(sha256="ab"),
                     f"{SHARD}.files.x.sha256: must be 64"),
    "unknown format": (lambda d: d.update(format="parquet"), "format: must be one of \\['npy', 'hdf5'\\]"),
    "splits as a list": (lambda d: d.update(splits=["train"]), "splits: must be a JSON object"),
    "shape of text": (lambda d: d["splits"]["train"]["arrays"]["x"].update(shape=["a"]),
                      "splits.train.arrays.x.shape\\[0\\]: must be an integer >= 0"),
    "unknown dtype": (lambda d: d["splits"]["train"]["arrays"]["x"].update(dtype="nonsense"),
                      "splits.train.arrays.x.dtype: must be a numeric numpy dtype"),
    "deprecated dtype alias": (lambda d: d["splits"]["train"]["arrays"]["x"].update(dtype="a"),  # numpy warns
                               "splits.train.arrays.x.dtype: must be a numeric numpy dtype"),
    "object dtype": (lambda d: d["splits"]["train"]["arrays"]["x"].update(dtype="|O"),
                     "splits.train.arrays.x.dtype: must be a numeric numpy dtype"),
    "null count": (lambda d: d["splits"]["train"]["shards"][0].update(num_samples=None),
                   f"{SHARD}.num_samples: must be an integer >= 0 <= {2**48}, got None"),
    "bytes as text": (lambda d: d["splits"]["train"]["shards"][0]["files"]["x"].update(bytes="134"),
                      f"{SHARD}.files.x.bytes: must be an integer >= 0, got '134'"),
    "negative count": (lambda d: d["splits"]["train"]["shards"][0].update(num_samples=-3),
                       f"{SHARD}.num_samples: must be an integer >= 0 <= {2**48}, got -3"),
    "total beyond limits": (_two_huge_shards, f"splits.train.shards: hold more than {2**48} samples in all"),
    "count beyond int64": (lambda d: d["splits"]["train"]["shards"][0].update(num_samples=2**64),  # found by fuzzing
                           f"{SHARD}.num_samples: must be an integer >= 0 <= {2**48}, got {2**64}"),
    "total disagrees": (lambda d: d["splits"]["train"].update(num_samples=4),
                        "splits.train.num_samples: says 4 samples but the shards hold 3"),
    "file outside the folder": (lambda d: d["splits"]["train"]["shards"][0]["files"]["x"].update(name="../e.npy"),
                                f"{SHARD}.files.x.name: must be a plain file name"),
    "file role missing": (lambda d: d["splits"]["train"]["shards"][0].update(files={}),
                          f"{SHARD}.files: holds files for \\[\\], this format needs \\['x'\\]"),
    "hdf5 roles on npy": (lambda d: d.update(format="hdf5"), f"{SHARD}.files: holds files for \\['x'\\]"),
    "target not stored": (lambda d: d.update(target="y"), "target: names \\['y'\\], which split 'train' does not"),
    "labels out of range": (lambda d: d.update(labels={"num_classes": 2, "min": 0, "max": 5}),
                            "labels: label range \\[0, 5\\] does not lie in \\[0, 2\\)"),
    "generation with a path": (lambda d: d.update(generation="../x"), "generation: must be a plain file name"),
}


def _named(name: str) -> Callable[[dict], None]:
    return lambda d: d["splits"]["train"]["shards"][0]["files"]["x"].update(name=name)


NOT_SHARD_NAMES = {  # a name streamload never writes; newlines would become lines of the .verified record
    "newline": "train-00000.x\nimport os; os.system(0).npy",
    "carriage return": "train-00000.x\r.npy",
    "escape sequence": "train-00000.\x1b[2Jx.npy",
    "unicode line separator": "train-00000.x\u2028.npy",
    "another file of the dataset": "manifest.json",
    "the .verified record": ".verified",
    "no shard number": "train.x.npy",
    "short shard number": "train-0.x.npy",
    "another suffix": "train-00000.x.pth",
    "another split's file": "test-00000.x.npy",
}


@pytest.mark.parametrize("name", NOT_SHARD_NAMES.values(), ids=list(NOT_SHARD_NAMES))
def test_shard_names_other_than_streamloads_are_refused(tmp_path: Path, name: str) -> None:
    data = _valid_dict()
    _named(name)(data)
    _write(tmp_path, json.dumps(data))
    with pytest.raises(ManifestError, match=f"{SHARD}.files.x.name: must be a shard file name as streamload writes "
                                            "them for split 'train'") as caught:
        read_manifest(tmp_path)
    message = str(caught.value)
    assert message.isprintable() and ascii(name)[:120] in message  # shown escaped, never raw


@pytest.mark.parametrize("name", ["train-00000.x.npy", "train-123456.image feature.npy", "train-00042.h5"])
def test_shard_names_streamload_writes_are_accepted(tmp_path: Path, name: str) -> None:
    data = _valid_dict()
    _named(name)(data)
    _write(tmp_path, json.dumps(data))
    assert read_manifest(tmp_path).split("train").shards[0].files["x"].name == name


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_malformed_manifest_names_the_file_and_field(tmp_path: Path, damage: str) -> None:
    data = _valid_dict()
    change, message = DAMAGES[damage]
    change(data)
    path = _write(tmp_path, json.dumps(data))
    with pytest.raises(ManifestError, match=message) as caught:
        read_manifest(tmp_path)
    assert str(caught.value).startswith(f"{path}: ")


def test_newer_version_is_a_version_error(tmp_path: Path) -> None:
    data = _valid_dict()
    data["format_version"] = FORMAT_VERSION + 1
    data["future_field"] = {"anything": True}
    path = _write(tmp_path, json.dumps(data))
    with pytest.raises(ManifestVersionError, match=f"{path}: .*version {FORMAT_VERSION + 1}.*upgrade") as caught:
        read_manifest(tmp_path)
    assert isinstance(caught.value, ManifestError)


def test_check_format() -> None:
    assert check_format("npy") == "npy" and check_format("hdf5") == "hdf5"
    with pytest.raises(InvalidOptionError, match="'csv'"):
        check_format("csv")


# --- locate --------------------------------------------------------------------------------------


def _split(counts: list[int]) -> SplitInfo:
    shards = tuple(ShardInfo(count, {}) for count in counts)
    return SplitInfo(arrays={"x": ArraySpec("|u1", ())}, shards=shards)


@pytest.mark.parametrize("counts", [[3, 5, 1, 4], [7], [1, 1, 1], [10, 10, 2]])
def test_locate_matches_a_brute_force_table(counts: list[int]) -> None:
    split = _split(counts)
    table = [(shard, offset) for shard, count in enumerate(counts) for offset in range(count)]
    assert split.num_samples == len(table)
    indices = np.random.default_rng(0).permutation(len(table))
    shard, offset = split.locate(indices)
    assert shard.dtype == np.int64 and offset.dtype == np.int64
    assert list(zip(shard.tolist(), offset.tolist())) == [table[i] for i in indices]
    assert split.shard_starts.tolist() == [0, *np.cumsum(counts).tolist()]


def test_locate_rejects_out_of_range_and_accepts_empty() -> None:
    split = _split([3, 5, 1, 4])
    for bad in ([13], [-1], [0, 12, 13], [-13]):
        with pytest.raises(IndexError, match=r"\[0, 13\)"):
            split.locate(np.array(bad))
    shard, offset = split.locate(np.array([], dtype=np.int64))
    assert shard.size == 0 and offset.size == 0
    shard, offset = split.locate(np.array([12, 0, 12]))
    assert shard.tolist() == [3, 0, 3] and offset.tolist() == [3, 0, 3]


def test_shard_starts_is_read_only() -> None:
    starts = _split([2, 2]).shard_starts
    with pytest.raises(ValueError):
        starts[0] = 5


def test_array_spec_of_and_sample_bytes() -> None:
    spec = ArraySpec.of(np.zeros((5, 3, 4), dtype=">f4"))
    assert spec == ArraySpec("<f4", (3, 4)) and spec.sample_bytes == 48
    assert ArraySpec.of(np.zeros(5, np.uint8)).sample_bytes == 1


def test_sha256_file_matches_hashlib_across_blocks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(9 * 2**20 + 17)  # more than two hashing blocks
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen: list[int] = []
    assert sha256_file(path, seen.append) == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data) and len(seen) == 3


def test_an_input_scale_round_trips_and_its_absence_keeps_old_manifests_as_they_were(tmp_path: Path) -> None:
    old = _valid_dict()  # written with no scale, as before scales were recorded
    assert "scale" not in old["splits"]["train"]["arrays"]["x"]
    old_manifest = Manifest.from_dict(old, tmp_path / MANIFEST_NAME)
    assert old_manifest.split("train").arrays["x"].scale is None
    assert json.loads(old_manifest.to_json()) == old  # nothing added: same text, same fingerprint
    scaled = json.loads(json.dumps(old))
    scaled["splits"]["train"]["arrays"]["x"]["scale"] = 1 / 255
    manifest = Manifest.from_dict(scaled, tmp_path / MANIFEST_NAME)
    assert manifest.split("train").arrays["x"].scale == 1 / 255 and json.loads(manifest.to_json()) == scaled
    assert manifest.fingerprint != old_manifest.fingerprint  # another scale is other batches


@pytest.mark.parametrize("bad", [0, -1, "1/255", True, [1], 1e400], ids=repr)
def test_a_bad_input_scale_is_named(tmp_path: Path, bad: object) -> None:
    data = _valid_dict()
    data["splits"]["train"]["arrays"]["x"]["scale"] = bad
    _write(tmp_path, json.dumps(data))
    with pytest.raises(ManifestError, match=r"splits\.train\.arrays\.x\.scale: must be a positive number or null"):
        read_manifest(tmp_path)


def _encoded_dict() -> dict:
    """A split whose x holds image files (``--store encoded``): ragged uint8 records marked as images."""
    split = SplitInfo(arrays={"x": ArraySpec("|u1", (None,), encoding="image")},
                      shards=(ShardInfo(3, {"x": FileInfo("train-00000.x.npy", 200, "ab" * 32),
                                            "x.offsets": FileInfo("train-00000.x.offsets.npy", 160, "cd" * 32)}),))
    return json.loads(Manifest(format="npy", splits={"train": split}, target=None).to_json())


def test_an_image_encoding_round_trips_and_its_absence_keeps_old_manifests_as_they_were(tmp_path: Path) -> None:
    assert "encoding" not in _valid_dict()["splits"]["train"]["arrays"]["x"]  # written as before
    data = _encoded_dict()
    assert data["splits"]["train"]["arrays"]["x"]["encoding"] == "image"
    manifest = Manifest.from_dict(data, tmp_path / MANIFEST_NAME)
    assert manifest.split("train").arrays["x"].encoded_image and json.loads(manifest.to_json()) == data
    plain = json.loads(json.dumps(data))
    del plain["splits"]["train"]["arrays"]["x"]["encoding"]
    unmarked = Manifest.from_dict(plain, tmp_path / MANIFEST_NAME)
    assert unmarked.split("train").arrays["x"].encoding is None and json.loads(unmarked.to_json()) == plain
    assert unmarked.fingerprint != manifest.fingerprint  # decoded images, not token ids: other batches


@pytest.mark.parametrize(("change", "match"), [
    ({"encoding": "jpeg"}, r"arrays\.x\.encoding: must be one of \['image'\], got 'jpeg'"),
    ({"encoding": 1}, r"arrays\.x\.encoding: must be one of"),
    ({"dtype": "<i4"}, r"arrays\.x\.encoding: 'image' needs an array of dtype \|u1 and shape \[null\]"),
    ({"shape": [None, 3]}, r"arrays\.x\.encoding: 'image' needs an array of dtype \|u1"),
], ids=["unknown", "not-text", "dtype", "shape"])
def test_a_bad_encoding_is_named(tmp_path: Path, change: dict, match: str) -> None:
    data = _encoded_dict()
    data["splits"]["train"]["arrays"]["x"].update(change)
    _write(tmp_path, json.dumps(data))
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_splits_file_bytes_are_its_shard_files_sizes_on_disk(tmp_path: Path, fmt: str) -> None:
    directory, _ = build(tmp_path, 250, fmt, 100)
    split, root = read_manifest(directory).split("train"), shard_folder(directory)
    on_disk = sum((root / file.name).stat().st_size for shard in split.shards for file in shard.files.values())
    assert split.file_bytes == on_disk and len(split.shards) == 3
