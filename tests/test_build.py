"""Tests for streamload.write.build: exact round trips, bad input that leaves the output alone, overwrite,
and the label facts a build records (and the labels it refuses). Killed, concurrent and out-of-space
builds are in test_staging.py."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import MakeMnist, SyntheticMnist, leftovers, read_split, tree_snapshot

from streamload.errors import (
    DatasetExistsError,
    ForeignDataError,
    IdxFormatError,
    InvalidOptionError,
    LabelRangeError,
    SourceMismatchError,
    SourceNotFoundError,
)
from streamload.format.manifest import MANIFEST_NAME, LabelInfo, read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource
from streamload.write.sources.idx import write_idx
from streamload.write.sources.mnist import MNIST_DIR_ENV, mnist_sources, sources_from_path
from streamload.write.verify import verify_dataset

QUIET = {"progress": False}


def _build(src: Path, out: Path, **options: object) -> None:
    build_dataset(sources_from_path(src), out, BuildOptions(**{**QUIET, **options}))  # type: ignore[arg-type]


def _assert_holds(out: Path, mnist: SyntheticMnist) -> None:
    for split in ("train", "test"):
        back = read_split(out, split)
        for key in ("x", "y"):
            assert back[key].dtype == mnist.arrays[split][key].dtype.newbyteorder("=")
            np.testing.assert_array_equal(back[key], mnist.arrays[split][key])


FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip"), ("hdf5", "lzf")]


@pytest.mark.parametrize("fmt, compression", FORMATS, ids=["npy", "hdf5", "hdf5-gzip", "hdf5-lzf"])
@pytest.mark.parametrize("shard_size", [None, 64, 203, 1000], ids=["default", "uneven", "exact", "over"])
def test_round_trip(synthetic_mnist: SyntheticMnist, tmp_path: Path, fmt: str, compression: str | None,
                    shard_size: int | None) -> None:
    out = tmp_path / "ds"
    _build(synthetic_mnist.folder, out, format=fmt, compression=compression, shard_size=shard_size, chunk_rows=50)
    manifest = read_manifest(out)
    assert manifest.format == fmt
    per_shard = shard_size or 10**9
    assert len(manifest.split("train").shards) == math.ceil(203 / per_shard)
    assert [s.num_samples for s in manifest.split("test").shards] == [min(37, per_shard)] * math.ceil(37 / per_shard)
    _assert_holds(out, synthetic_mnist)
    assert verify_dataset(out, progress=False) == []
    assert leftovers(out) == []


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_shard_size_one(make_mnist: MakeMnist, tmp_path: Path, fmt: str) -> None:
    mnist = make_mnist(n_train=12, n_test=3)
    _build(mnist.folder, tmp_path / "ds", format=fmt, shard_size=1)
    assert [s.num_samples for s in read_manifest(tmp_path / "ds").split("train").shards] == [1] * 12
    _assert_holds(tmp_path / "ds", mnist)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
@pytest.mark.parametrize("image_dtype", [">i2", ">f4", "i1"])
def test_any_idx_dtype_is_stored_native_endian(make_mnist: MakeMnist, tmp_path: Path, fmt: str,
                                               image_dtype: str) -> None:
    mnist = make_mnist(n_train=40, n_test=9, image_dtype=image_dtype)
    _build(mnist.folder, tmp_path / "ds", format=fmt, shard_size=16)
    manifest = read_manifest(tmp_path / "ds")
    native = np.dtype(image_dtype).newbyteorder("=")
    assert manifest.split("train").arrays["x"].dtype == native.str
    assert read_split(tmp_path / "ds", "train")["x"].dtype.isnative
    _assert_holds(tmp_path / "ds", mnist)


def test_empty_existing_folder_is_a_valid_target(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    _build(synthetic_mnist.folder, tmp_path / "ds")
    _assert_holds(tmp_path / "ds", synthetic_mnist)


def test_missing_parent_folders_are_created(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    _build(synthetic_mnist.folder, tmp_path / "a" / "b" / "ds")
    _assert_holds(tmp_path / "a" / "b" / "ds", synthetic_mnist)


def test_overwrite_replaces_a_dataset_completely(make_mnist: MakeMnist, tmp_path: Path) -> None:
    first, second = make_mnist("first", seed=1), make_mnist("second", n_train=50, n_test=5, seed=2)
    out = tmp_path / "ds"
    _build(first.folder, out, format="npy", shard_size=30)
    _build(second.folder, out, format="hdf5", shard_size=20, overwrite=True)
    assert read_manifest(out).format == "hdf5"
    assert not list(out.glob("*.npy"))  # nothing of the old dataset is left inside
    assert verify_dataset(out, progress=False) == []
    _assert_holds(out, second)
    assert leftovers(out) == []


# --- bad input leaves the output untouched -------------------------------------------------------


def _wrong_magic(mnist: SyntheticMnist) -> None:
    path = mnist.folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x00\x01\x08\x01" + len(mnist.arrays["train"]["y"]).to_bytes(4, "big") + bytes(3000))


def _truncate(name: str) -> object:
    def damage(mnist: SyntheticMnist) -> None:
        path = mnist.folder / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.8)])  # late in the file: some shards are written first
    return damage


def _count_mismatch(mnist: SyntheticMnist) -> None:
    write_idx(mnist.folder / "t10k-labels-idx1-ubyte.gz", mnist.arrays["test"]["y"][:-1])


def _no_source(mnist: SyntheticMnist) -> None:
    (mnist.folder / "train-images-idx3-ubyte.gz").unlink()


def _swap_images_and_labels(mnist: SyntheticMnist) -> None:
    images, labels = mnist.folder / "train-images-idx3-ubyte.gz", mnist.folder / "train-labels-idx1-ubyte.gz"
    images.rename(mnist.folder / "swap")
    labels.rename(images)
    (mnist.folder / "swap").rename(labels)


def _cut_gzip_trailer(mnist: SyntheticMnist) -> None:
    path = mnist.folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])  # the payload is complete; its CRC-32 and length are gone


def _flip_gzip_crc(mnist: SyntheticMnist) -> None:
    path = mnist.folder / "train-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01
    path.write_bytes(bytes(data))


def _append(name: str, extra: bytes, gz: bool) -> object:
    def damage(mnist: SyntheticMnist) -> None:
        path = mnist.folder / name
        if gz:  # inside the compressed stream: the decompressed file is longer than its header says
            path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + extra))
        else:
            path.write_bytes(path.read_bytes() + extra)
    return damage


def _label(value: int, dtype: str = "u1") -> object:
    def damage(mnist: SyntheticMnist) -> None:
        labels = mnist.arrays["train"]["y"].astype(dtype)
        labels[2500] = value  # late: shards before it are written first
        write_idx(mnist.folder / "train-labels-idx1-ubyte.gz", labels)
    return damage


# name -> (damage, error, raw IDX files?, build options, text the one-line message must hold)
SOURCE_DAMAGE = {
    "wrong-magic": (_wrong_magic, IdxFormatError, False, {}, "wrong IDX magic number"),
    "truncated-gz": (_truncate("train-images-idx3-ubyte.gz"), IdxFormatError, False, {}, "IDX payload"),
    "truncated-raw": (_truncate("train-images-idx3-ubyte"), IdxFormatError, True, {}, "truncated IDX payload"),
    "count-mismatch": (_count_mismatch, SourceMismatchError, False, {}, "must pair up"),
    "no-source": (_no_source, SourceNotFoundError, False, {}, "MNIST IDX files missing"),
    "swapped-images-labels": (_swap_images_and_labels, SourceMismatchError, False, {}, "labels must have rank 1"),
    "gzip-trailer-cut": (_cut_gzip_trailer, IdxFormatError, False, {}, "end of the gzip stream"),
    "gzip-crc-wrong": (_flip_gzip_crc, IdxFormatError, False, {}, "CRC check failed"),
    "raw-trailing-bytes": (_append("train-labels-idx1-ubyte", b"\0\0\0", False), IdxFormatError, True, {},
                           "3 trailing bytes after the IDX payload"),
    "gz-trailing-bytes": (_append("train-images-idx3-ubyte.gz", b"x" * 10, True), IdxFormatError, False, {},
                          "trailing bytes after the IDX payload"),
    "label-over-num-classes": (_label(10), LabelRangeError, False, {"num_classes": 10},
                               "label 10 at sample 2500 lies outside the class range [0, 10)"),
    "negative-label": (_label(-1, "i1"), LabelRangeError, False, {},
                       "label -1 at sample 2500 lies outside the class range"),
}
BAD_OPTIONS = {
    "shard-size-0": ({"shard_size": 0}, InvalidOptionError),
    "shard-size-negative": ({"shard_size": -3}, InvalidOptionError),
    "unknown-format": ({"format": "zarr"}, InvalidOptionError),
    "npy-compression": ({"format": "npy", "compression": "gzip"}, InvalidOptionError),
    "unknown-compression": ({"format": "hdf5", "compression": "zstd"}, InvalidOptionError),
    "chunk-rows-0": ({"chunk_rows": 0}, InvalidOptionError),
}


@pytest.fixture(params=["existing-dataset", "no-target"])
def target(request: pytest.FixtureRequest, make_mnist: MakeMnist, tmp_path: Path) -> Path:
    """An output path that holds a sound dataset, or does not exist yet."""
    out = tmp_path / "out" / "ds"
    if request.param == "existing-dataset":
        _build(make_mnist("old", n_train=30, n_test=5, seed=9).folder, out, shard_size=7)
    return out


def _attempt(src: Path, out: Path, options: dict[str, object]) -> None:
    build_dataset(mnist_sources(src, download=False), out, BuildOptions(**{**QUIET, **options}))  # type: ignore[arg-type]


@pytest.mark.parametrize("case", SOURCE_DAMAGE)
def test_bad_source_leaves_target_untouched(make_mnist: MakeMnist, target: Path, case: str) -> None:
    damage, error, raw, options, message = SOURCE_DAMAGE[case]
    mnist = make_mnist(gz=not raw, n_train=3000, n_test=10)
    damage(mnist)
    before = tree_snapshot(target)
    with pytest.raises(error) as caught:
        _attempt(mnist.folder, target, {"overwrite": True, "shard_size": 100, "chunk_rows": 100, **options})
    assert str(mnist.folder) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert tree_snapshot(target) == before
    assert leftovers(target) == []
    if before is not None:
        assert verify_dataset(target, progress=False) == []


def test_missing_source_error_names_the_ways_out(target: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError) as caught:
        _attempt(tmp_path / "nowhere", target, {"overwrite": True})
    assert "--source" in str(caught.value) and MNIST_DIR_ENV in str(caught.value)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_options_leave_target_untouched(synthetic_mnist: SyntheticMnist, target: Path, case: str) -> None:
    options, error = BAD_OPTIONS[case]
    before = tree_snapshot(target)
    with pytest.raises(error):
        _attempt(synthetic_mnist.folder, target, {"overwrite": True, **options})
    assert tree_snapshot(target) == before
    assert leftovers(target) == []


def test_existing_dataset_needs_overwrite(make_mnist: MakeMnist, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _build(make_mnist("old", seed=1).folder, out)
    before = tree_snapshot(out)
    with pytest.raises(DatasetExistsError, match=f"{out}: .*--overwrite"):
        _build(make_mnist("new", seed=2).folder, out)
    assert tree_snapshot(out) == before and leftovers(out) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_non_dataset_folder_is_never_replaced(synthetic_mnist: SyntheticMnist, tmp_path: Path,
                                              overwrite: bool) -> None:
    out = tmp_path / "home"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "thesis.tex").write_text("precious")
    before = tree_snapshot(out)
    with pytest.raises(DatasetExistsError, match=f"{out}: folder is not empty and holds no {MANIFEST_NAME}"):
        _build(synthetic_mnist.folder, out, overwrite=overwrite)
    assert tree_snapshot(out) == before and leftovers(out) == []


def test_file_at_target_is_never_replaced(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.write_text("not a folder")
    with pytest.raises(DatasetExistsError, match="not a folder"):
        _build(synthetic_mnist.folder, out, overwrite=True)
    assert out.read_text() == "not a folder" and leftovers(out) == []


def _foreign_manifest(out: Path) -> None:
    (out / MANIFEST_NAME).write_text('{"name": "my web app", "start_url": "/"}')  # a web app's manifest


def _generation_without_lock(out: Path) -> None:
    """A streamload-looking manifest naming gen-000123, a folder of the user's (no .lock, no manifest copy)."""
    import shutil

    _build_arrays(out)
    generation = read_manifest(out).generation
    shutil.rmtree(out / str(generation))
    (out / MANIFEST_NAME).write_text((out / MANIFEST_NAME).read_text().replace(str(generation), "gen-000123"))
    (out / "gen-000123").mkdir()
    (out / "gen-000123" / "results.csv").write_text("the user's own results")


def _build_arrays(out: Path) -> None:
    build_dataset({"train": ArraySource(x=np.zeros((4, 2), "u1"), y=np.arange(4, dtype="u1"))}, out,
                  BuildOptions(**QUIET))  # type: ignore[arg-type]


@pytest.mark.parametrize("plant", [_foreign_manifest, _generation_without_lock])
def test_overwrite_never_replaces_what_streamload_did_not_write(synthetic_mnist: SyntheticMnist, tmp_path: Path,
                                                                plant) -> None:
    out = tmp_path / "app"
    out.mkdir()
    plant(out)
    (out / "index.html").write_text("<html>the user's page</html>")
    before = tree_snapshot(out)
    with pytest.raises(ForeignDataError, match=f"refusing to replace {out}") as caught:
        _build(synthetic_mnist.folder, out, overwrite=True)
    assert isinstance(caught.value, DatasetExistsError) and "\n" not in str(caught.value)
    assert tree_snapshot(out) == before and not list(tmp_path.glob(".app.*"))


def test_a_dangling_out_link_is_one_clear_error(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.symlink_to(tmp_path / "unmounted" / "data")
    with pytest.raises(ForeignDataError, match=f"{out}: is a symbolic link to .*unmounted.*which does not exist"):
        _build(synthetic_mnist.folder, out)
    assert os.readlink(out) == str(tmp_path / "unmounted" / "data") and not (tmp_path / "unmounted").exists()


# --- class labels --------------------------------------------------------------------------------


class _CountingSource(ArraySource):
    """An ArraySource that counts the chunks a build takes from it, and may name its classes."""

    def __init__(self, class_names: tuple[str, ...] | None = None, **arrays: np.ndarray) -> None:
        super().__init__(**arrays)
        self.chunks_read = 0
        if class_names is not None:
            self.class_names = class_names

    def iter_chunks(self, chunk_rows: int = 8192):  # noqa: ANN201 - same as the base
        for chunk in super().iter_chunks(chunk_rows):
            self.chunks_read += 1
            yield chunk


def _labelled(labels: list[int], dtype: str = "u1", **kwargs: object) -> _CountingSource:
    y = np.array(labels, dtype=dtype)
    return _CountingSource(x=np.zeros((len(y), 3), np.float32), y=y, **kwargs)  # type: ignore[arg-type]


def test_label_facts_are_recorded_in_one_pass(tmp_path: Path) -> None:
    train, test = _labelled([3, 1, 4, 1, 5, 9, 2, 6]), _labelled([2, 7])
    manifest = build_dataset({"train": train, "test": test}, tmp_path / "ds", BuildOptions(chunk_rows=3, **QUIET))
    assert manifest.labels == LabelInfo(num_classes=10, minimum=1, maximum=9, class_names=None)
    assert read_manifest(tmp_path / "ds").labels == manifest.labels
    assert (train.chunks_read, test.chunks_read) == (3, 1)  # ceil(8 / 3), ceil(2 / 3): no second pass


def test_num_classes_and_class_names_are_recorded(tmp_path: Path) -> None:
    given = build_dataset({"train": _labelled([0, 3])}, tmp_path / "a", BuildOptions(num_classes=12, **QUIET))
    assert given.labels == LabelInfo(num_classes=12, minimum=0, maximum=3)
    names = tuple("abcde")
    named = build_dataset({"train": _labelled([4, 0], class_names=names)}, tmp_path / "b", BuildOptions(**QUIET))
    assert named.labels == LabelInfo(num_classes=5, minimum=0, maximum=4, class_names=names)
    assert read_manifest(tmp_path / "b").labels == named.labels


def test_class_names_and_num_classes_must_agree(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="--num-classes is 3, but .* names 5 classes"):
        build_dataset({"train": _labelled([0], class_names=tuple("abcde"))}, tmp_path / "ds",
                      BuildOptions(num_classes=3, **QUIET))
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path / "ds") == []


@pytest.mark.parametrize("labels, dtype, num_classes, message", [
    ([0, 1, 2, 3, 10, 4], "u1", 10, "split 'test'): label 10 at sample 4 lies outside the class range [0, 10)"),
    ([0, 1, 2, 3, 4, -2], "i1", None, "split 'test'): label -2 at sample 5 lies outside the class range"),
    ([0, 1, 2, 3, 4, 5], "i8", 5, "label 5 at sample 5 lies outside the class range [0, 5)"),
    ([0, 7, 3, 12, 1, 1], "u1", 5, "label 7 at sample 1 lies outside"),  # the first offender, not the largest
], ids=["over", "negative", "last", "first-offender"])
def test_labels_outside_the_class_range_fail_the_build(tmp_path: Path, labels: list[int], dtype: str,
                                                        num_classes: int | None, message: str) -> None:
    out = tmp_path / "ds"
    sources = {"train": _labelled([0, 1], dtype), "test": _labelled(labels, dtype)}
    with pytest.raises(LabelRangeError) as caught:
        build_dataset(sources, out, BuildOptions(num_classes=num_classes, chunk_rows=2, **QUIET))
    assert message in str(caught.value) and str(caught.value).startswith("arrays (split 'test')")
    assert not out.exists() and leftovers(out) == []


def test_float_targets_carry_no_label_facts(tmp_path: Path) -> None:
    source = ArraySource(x=np.zeros((4, 2), np.float32), y=np.linspace(-1, 1, 4, dtype=np.float32))
    assert build_dataset({"train": source}, tmp_path / "ds", BuildOptions(**QUIET)).labels is None
    with pytest.raises(InvalidOptionError, match="--num-classes 3 applies to integer class labels"):
        build_dataset({"train": source}, tmp_path / "other", BuildOptions(num_classes=3, **QUIET))


@pytest.mark.parametrize("value", [0, -1, True, 2.5])
def test_num_classes_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(InvalidOptionError, match="number of classes must be a positive integer"):
        BuildOptions(num_classes=value)  # type: ignore[arg-type]


def test_integral_numbers_of_any_type_are_taken_as_ints() -> None:
    options = BuildOptions(shard_size=np.int64(5), num_classes=np.int32(10), chunk_rows=np.uint16(7))
    assert (options.shard_size, options.num_classes, options.chunk_rows) == (5, 10, 7)
    assert all(type(value) is int for value in (options.shard_size, options.num_classes, options.chunk_rows))
    with pytest.raises(InvalidOptionError, match="shard size must be a positive number of samples, got 2.5"):
        BuildOptions(shard_size=2.5)  # type: ignore[arg-type]
