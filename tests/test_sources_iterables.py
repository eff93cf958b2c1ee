"""Tests for streamload.write.sources.iterables: pairs, triples and dicts of named arrays (multi-input models)
built into real shards and read back; the count from len, num_samples or a spill to disk; mistakes named."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import read_split

from streamload.errors import SourceFormatError, SourceMismatchError
from streamload.format.manifest import read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import IterableSource, split_validation

RNG = np.random.default_rng(0)


def _multi_input_items(count: int) -> list[dict[str, np.ndarray | int]]:
    return [{"image": RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8),
             "meta": RNG.standard_normal(4).astype(np.float32), "label": int(RNG.integers(0, 7))}
            for _ in range(count)]


def _round_trip(sources: dict, out: Path) -> dict[str, dict[str, np.ndarray]]:
    build_dataset(sources, out, BuildOptions(progress=False, shard_size=9))
    return {split: read_split(out, split) for split in sources}


def test_dicts_of_named_arrays_for_a_multi_input_model(tmp_path: Path) -> None:
    items = _multi_input_items(40)
    source = IterableSource(items, target="label")
    assert source.num_samples == 40 and source.features == ("image", "meta") and source.target == "label"
    back = _round_trip({"train": source}, tmp_path / "ds")["train"]
    for key in ("image", "meta", "label"):
        np.testing.assert_array_equal(back[key], np.stack([np.asarray(item[key]) for item in items]))
    manifest = read_manifest(tmp_path / "ds")
    assert manifest.features == ("image", "meta") and manifest.target == "label" and manifest.sample_weight is None


def test_keras_style_pairs_and_triples(tmp_path: Path) -> None:
    inputs = [{"a": RNG.standard_normal(2), "b": RNG.integers(0, 9, 3)} for _ in range(15)]
    pairs = [(inputs[i], i % 4) for i in range(15)]
    back = _round_trip({"train": IterableSource(pairs)}, tmp_path / "pairs")["train"]
    np.testing.assert_array_equal(back["a"], np.stack([item["a"] for item in inputs]))
    np.testing.assert_array_equal(back["y"], [i % 4 for i in range(15)])
    assert read_manifest(tmp_path / "pairs").features == ("a", "b")
    triples = [(np.full(3, i, np.int16), float(i), 0.5 + i) for i in range(10)]
    source = IterableSource(triples)
    assert (source.features, source.target, source.sample_weight) == (("x",), "y", "sample_weight")
    back = _round_trip({"train": source}, tmp_path / "triples")["train"]
    np.testing.assert_array_equal(back["sample_weight"], 0.5 + np.arange(10))
    assert read_manifest(tmp_path / "triples").sample_weight == "sample_weight"


def _generated(count: int) -> Iterator[tuple[np.ndarray, int]]:
    for number in range(count):
        yield np.full((3, 2), number, dtype=np.int32), number % 5


@pytest.mark.parametrize("chunk_rows", [1, 64, 8192])
def test_generator_of_unknown_length_is_spilled_to_disk_and_freed(tmp_path: Path, chunk_rows: int) -> None:
    source = IterableSource(_generated(300), spill_dir=tmp_path)
    (spill,) = tmp_path.glob("streamload-spill-*")
    assert source.num_samples == 300 and source.reiterable
    for _ in range(2):  # spilled items can be read again, e.g. once per split
        chunks = list(source.iter_chunks(chunk_rows))
        assert all(len(chunk["x"]) <= chunk_rows for chunk in chunks)
        np.testing.assert_array_equal(np.concatenate([c["x"] for c in chunks])[:, 0, 0], np.arange(300))
    del source, chunks
    gc.collect()
    assert not spill.exists()


def test_spilling_holds_a_chunk_not_the_dataset(tmp_path: Path) -> None:
    def items() -> Iterator[tuple[np.ndarray, int]]:
        for number in range(2000):
            yield np.full(8192, number, dtype=np.float32), number  # 32 kB each, 64 MB in all

    tracemalloc.start()
    try:
        source = IterableSource(items(), spill_dir=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert source.num_samples == 2000 and peak < 24 * 2**20  # an 8 MB write buffer and one item, of 64 MB
    x = np.concatenate([chunk["x"][:, 0] for chunk in source.iter_chunks(512)])
    np.testing.assert_array_equal(x, np.arange(2000))


def test_num_samples_takes_the_first_items_of_an_endless_generator(tmp_path: Path) -> None:
    def endless() -> Iterator[tuple[np.ndarray, int]]:
        number = 0
        while True:
            yield np.array([number, -number], np.int64), number
            number += 1

    source = IterableSource(endless(), num_samples=25)
    assert not source.reiterable
    back = _round_trip({"train": source}, tmp_path / "ds")["train"]
    np.testing.assert_array_equal(back["y"], np.arange(25))
    with pytest.raises(SourceMismatchError, match="one-shot iterator was already read"):
        list(source.iter_chunks())


def test_too_few_items_for_num_samples(tmp_path: Path) -> None:
    source = IterableSource(_generated(5), num_samples=8)
    with pytest.raises(SourceMismatchError, match="ended after 5 of 8 items"):
        list(source.iter_chunks())


def test_items_that_disagree_with_the_first_are_named() -> None:
    items = [(np.zeros(3, np.int8), 1), (np.zeros(4, np.int8), 2)]
    with pytest.raises(SourceMismatchError, match=r"item 1: 'x' is int8 \(4,\), the first item's was \|i1 \(3,\)"):
        list(IterableSource(items).iter_chunks())
    widened = [(np.zeros(3, np.int16), 1), (np.zeros(3, np.int8), 2)]  # int8 fits int16: a safe cast
    (chunk,) = IterableSource(widened).iter_chunks()
    assert chunk["x"].dtype == np.int16
    narrowed = [(np.zeros(3, np.int8), 1), (np.zeros(3, np.float64), 2)]
    with pytest.raises(SourceMismatchError, match="item 1: 'x' is float64"):
        list(IterableSource(narrowed).iter_chunks())
    renamed = [{"a": 1, "b": 2}, {"a": 1, "c": 2}]
    with pytest.raises(SourceMismatchError, match=r"item 1 has \['a', 'c'\], the first had \['a', 'b'\]"):
        list(IterableSource(renamed, target="b").iter_chunks())


def test_item_shapes_and_roles_are_checked_up_front() -> None:
    with pytest.raises(SourceFormatError, match="item 0 is a int; items must be"):
        IterableSource([1, 2, 3])
    with pytest.raises(SourceFormatError, match="holds no items"):
        IterableSource([])
    with pytest.raises(SourceFormatError, match=r"target 'label' .* must name arrays of the items \['a', 'b'\]"):
        IterableSource([{"a": 1, "b": 2}], target="label")
    with pytest.raises(SourceFormatError, match="has dtype <U5; shards hold numbers"):
        IterableSource([("hello", 1)])


def test_a_list_can_be_split_into_train_and_validation(tmp_path: Path) -> None:
    items = _multi_input_items(50)
    sources = split_validation({"train": IterableSource(items, target="label")}, 0.2, seed=7)
    back = _round_trip(sources, tmp_path / "ds")
    assert len(back["validation"]["label"]) == 10 and len(back["train"]["label"]) == 40
    everything = np.concatenate([back["train"]["meta"], back["validation"]["meta"]])
    np.testing.assert_array_equal(np.sort(everything, axis=0), np.sort([item["meta"] for item in items], axis=0))
    assert read_manifest(tmp_path / "ds").features == ("image", "meta")
