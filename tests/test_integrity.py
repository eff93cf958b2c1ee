"""verify="once": a corrupt shard is refused before its first use, naming the file; sound shards are
hashed once per generation, not once per process or epoch."""

import numpy as np
import pytest
from shards import build, make_writable

from streamload import BatchLoader, ShardCorruptError
from streamload.format.manifest import read_manifest
from streamload.read.integrity import RECORD, crc32_file


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


@pytest.mark.parametrize("dangling", [False, True])
def test_a_planted_record_link_is_refused_and_its_target_untouched(tmp_path, dangling) -> None:
    from streamload.errors import UnsafeFileError

    directory, _ = build(tmp_path, 200, "npy", 100)
    root = directory / read_manifest(directory).generation
    target = tmp_path / ("usercustomize.pth" if dangling else "users-file.txt")  # a .pth line runs at startup
    if not dangling:
        target.write_text("the user's file\n")
    (root / RECORD).symlink_to(target)
    loader = BatchLoader(directory, batch_size=50, shuffle=False, verify="once")
    with pytest.raises(UnsafeFileError, match=f"{RECORD}: is a symbolic link") as caught:
        loader.load(0, 0)
    assert "\n" not in str(caught.value)
    assert (target.read_text() == "the user's file\n") if not dangling else not target.exists()


def test_the_verify_command_a_corrupt_shard_suggests_works_as_printed(tmp_path) -> None:
    import re
    import shlex
    import subprocess

    from conftest import subprocess_env

    directory, _ = build(tmp_path, 200, "npy", 100, name="my data")  # a space: the command must quote it
    manifest = read_manifest(directory)
    victim = directory / manifest.generation / manifest.split("train").shards[1].files["x"].name
    flip_byte(victim, victim.stat().st_size - 10)
    with pytest.raises(ShardCorruptError) as caught:
        BatchLoader(directory, batch_size=50, shuffle=False, verify="once").load(0, 3)
    command = re.search(r"`([^`]+)` checks every shard", str(caught.value)).group(1)
    run = subprocess.run(shlex.split(command), capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert run.returncode == 1, run.stderr  # 1: it ran and found the bad shard (2 would be a usage error)
    assert f"BAD {victim.name}" in run.stderr and "Traceback" not in run.stderr


def test_a_ragged_arrays_offsets_file_is_checked_before_use(tmp_path) -> None:
    from shards import build_sequences, shard_folder

    directory, _, _ = build_sequences(tmp_path, 60, "npy", 30)
    victim = shard_folder(directory) / "train-00001.x.offsets.npy"
    flip_byte(victim, victim.stat().st_size - 8)  # the low byte of the last offset: sound-looking, wrong
    checked = BatchLoader(directory, batch_size=10, shuffle=False, verify="once")
    checked.load(0, 0)  # shard 0 is sound
    with pytest.raises(ShardCorruptError, match=f"{victim.name}.*CRC-32"):
        checked.load(0, 3)
