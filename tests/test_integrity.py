"""verify="once": a corrupt shard is refused before its first use, naming the file; sound shards are
hashed once per generation, not once per process or epoch."""

import numpy as np
import pytest
from shards import build, make_writable

from streamload import BatchLoader, ShardCorruptError
from streamload.integrity import RECORD, crc32_file
from streamload.manifest import read_manifest


def flip_byte(path, offset: int) -> None:
    with open(make_writable(path), "r+b") as stream:  # shards are written read-only
        stream.seek(offset)
        value = stream.read(1)[0]
        stream.seek(offset)
        stream.write(bytes([value ^ 0x01]))


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_flipped_byte_is_refused_before_use_and_named(tmp_path, fmt) -> None:
    directory, _ = build(tmp_path, 600, fmt, 200)
    manifest = read_manifest(directory)
    root = directory if manifest.generation is None else directory / manifest.generation
    victim = root / manifest.split("train").shards[1].files["x" if fmt == "npy" else "hdf5"].name
    flip_byte(victim, victim.stat().st_size - 10)  # inside the pixel data: readers would serve it silently
    silent = BatchLoader(directory, batch_size=600, shuffle=False)
    assert silent.load(0, 0)[0].shape[0] == 600  # without verification the damage goes unnoticed
    checked = BatchLoader(directory, batch_size=50, shuffle=False, verify="once")
    checked.load(0, 0)  # shard 0 is sound
    with pytest.raises(ShardCorruptError, match=f"{victim.name}.*CRC-32.*--verify"):
        checked.load(0, 5)  # the first batch that needs shard 1


def test_sound_shards_are_hashed_once_per_generation(tmp_path) -> None:
    directory, arrays = build(tmp_path, 600, "npy", 200)
    manifest = read_manifest(directory)
    root = directory if manifest.generation is None else directory / manifest.generation
    first = BatchLoader(directory, batch_size=100, seed=1, verify="once")
    batches = [first.load(0, b) for b in range(first.num_batches)]
    lines = (root / RECORD).read_text().splitlines()
    assert len(lines) == 6  # x and y of three shards, each recorded with its CRC
    for line in lines:
        name, crc = line.split()
        assert int(crc) == crc32_file(root / name)
    second = BatchLoader(directory, batch_size=100, seed=1, verify="once")  # another process would do the same
    second.dataset.reader(0)
    assert (root / RECORD).read_text().splitlines() == lines  # nothing hashed or recorded again
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, (second.load(0, b) for b in range(6))))
