"""Callbacks through model.fit: EpochSync follows Keras' epoch, and TrainingCheckpoint survives SIGKILL."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import KERAS_BACKENDS, id_dataset, subprocess_env

from streamload import BatchLoader

BATCH, SEED = 50, 7  # as in keras_fit_scenarios.py
TRAINING = Path(__file__).with_name("resumable_training.py")


def batches(sampler, epoch: int, count: int) -> list[list[int]]:
    return [sampler.batch_indices(epoch, b).tolist() for b in range(count)]


def test_epoch_sync_follows_initial_epoch(fit_runs, id_data) -> None:
    sampler = BatchLoader(id_data[0], batch_size=BATCH, seed=SEED).sampler
    run = fit_runs["initial_epoch_synced"]
    assert [e["keras_epoch"] for e in run] == [2, 3]
    assert [e["batches"] for e in run] == [batches(sampler, 2, 20), batches(sampler, 3, 20)]


def test_epoch_sync_is_exact_for_epochs_of_two_batches(fit_runs, id_data) -> None:
    tiny = BatchLoader(id_data[1], batch_size=60, seed=SEED).sampler
    assert [e["batches"] for e in fit_runs["tiny_synced"]] == [batches(tiny, k, 2) for k in range(3)]


def run_until(command: list[str], env: dict, line: str) -> subprocess.Popen:
    """Start ``command`` and return once it printed ``line`` (then the caller kills it)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for printed in process.stdout:
        if printed.strip() == line:
            return process
    process.wait()
    raise AssertionError(f"the run ended (status {process.returncode}) before printing {line!r}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_training_killed_mid_epoch_resumes_on_the_same_sample_sequence(tmp_path, backend) -> None:
    n, epochs = 1000, 3
    data = id_dataset(tmp_path / "ids", n)
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "totals.json"
    command = [sys.executable, str(TRAINING), str(data), str(checkpoints), str(out), str(epochs), "7"]
    env = subprocess_env(KERAS_BACKEND=backend)
    victim = run_until(command, env, "trained 1 10")  # 11 batches into epoch 1; checkpoints after 7 and 14
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert (checkpoints / "latest.json").is_file() and not out.exists()
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    trained = finished.stdout.splitlines()
    # from the checkpoint after 7 batches of epoch 1: its 13 other batches and epoch 2's 20, nothing else;
    # Keras counts the resumed epoch's steps from 0 (13 + 7 of the next data epoch, then 13 and a stop)
    assert len(trained) == 13 + 20 and trained[0] == "trained 1 0" and trained[-1] == "trained 2 12"
    ids = np.arange(n, dtype=np.float64)
    expected = [epochs * n, epochs * ids.sum(), epochs * np.mod(ids * 7919, 1009).sum()]
    assert json.loads(out.read_text()) == expected  # every sample of every epoch trained exactly once in the end
    assert not checkpoints.exists()  # removed after a successful run


def test_checkpoint_options_are_checked_and_a_finished_run_removes_only_its_own_files(tmp_path) -> None:
    import keras

    from streamload import InvalidOptionError, StreamingGenerator, TrainingCheckpoint

    data = id_dataset(tmp_path / "ids", 300)
    gen = StreamingGenerator(data, batch_size=50, seed=1)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidOptionError, match="save_freq"):
            TrainingCheckpoint(tmp_path / "ck", gen, save_freq=bad)
    assert TrainingCheckpoint(tmp_path / "ck", gen, save_freq=np.int64(7)).save_freq == 7  # any integral number
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's own file")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    saves = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            saves.append(sorted(path.name for path in folder.iterdir()))

    checkpoint = TrainingCheckpoint(folder, gen, save_freq=2)
    model.fit(gen, epochs=2, verbose=0, shuffle=False, callbacks=[checkpoint, Watch()])
    assert ["checkpoint-000000-000000004", "latest.json", "notes.txt"] in saves  # one checkpoint at a time
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]


def _fit_with_checkpoints(tmp_path, folder: Path, epochs: int = 2, **options) -> list[list[str]]:
    """model.fit with a TrainingCheckpoint in ``folder``; the folder's listing after every batch."""
    import keras

    from streamload import StreamingGenerator, TrainingCheckpoint

    data = tmp_path / "ids" if (tmp_path / "ids").exists() else id_dataset(tmp_path / "ids", 300)
    gen = StreamingGenerator(data, batch_size=50, seed=1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    listings = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            listings.append(sorted(path.name for path in folder.iterdir()) if folder.exists() else [])

    model.fit(gen, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[TrainingCheckpoint(folder, gen, save_freq=2, **options), Watch()])
    return listings


def test_checkpoints_never_touch_the_users_files_of_similar_names(tmp_path) -> None:
    folder = tmp_path / "ck"
    planted = {"checkpoint-best/model.keras": "the user's best model", "checkpoint-03.keras": "epoch 3",
               "checkpoint-000000-000000008/notes.txt": "named like ours (never saved here), holds the user's file",
               ".latest.json-mine.tmp": "the user's"}
    for name, text in planted.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    listings = _fit_with_checkpoints(tmp_path, folder)
    assert any("checkpoint-000000-000000004" in listing for listing in listings)  # it did save and remove its own
    assert {name: (folder / name).read_text() for name in planted} == planted
    assert sorted(path.name for path in folder.iterdir()) == sorted({name.split("/")[0] for name in planted})


def test_a_checkpoint_name_of_ours_holding_the_users_files_is_refused_not_replaced(tmp_path) -> None:
    from streamload.errors import ForeignDataError

    folder = tmp_path / "ck" / "checkpoint-000000-000000002"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("the user's")
    with pytest.raises(ForeignDataError, match=f"{folder}: not a checkpoint this callback wrote"):
        _fit_with_checkpoints(tmp_path, tmp_path / "ck")
    assert (folder / "notes.txt").read_text() == "the user's" and sorted(p.name for p in folder.iterdir()) == [
        "notes.txt"]


def _outside_checkpoint(tmp_path) -> Path:
    """A complete checkpoint of an earlier run, moved outside the checkpoint folder."""
    import shutil

    folder = tmp_path / "elsewhere"
    _fit_with_checkpoints(tmp_path, folder, epochs=1, keep_on_success=True)
    name = json.loads((folder / "latest.json").read_text())["checkpoint"]
    shutil.move(folder / name, tmp_path / "outside")
    return tmp_path / "outside"


@pytest.mark.parametrize("pointer", ["absolute", "dotdot", "garbage-bytes", "not-json", "list", "meta-garbage"])
def test_a_hostile_or_damaged_pointer_is_one_line_naming_the_file(tmp_path, pointer) -> None:
    from streamload.errors import CheckpointError

    outside = _outside_checkpoint(tmp_path)
    folder = tmp_path / "ck"
    folder.mkdir()
    latest = folder / "latest.json"
    named = {"absolute": str(outside), "dotdot": "../outside"}
    if pointer in named:
        latest.write_text(json.dumps({"checkpoint": named[pointer]}))
    elif pointer == "meta-garbage":
        (folder / "checkpoint-000000-000000002").mkdir()
        (folder / "checkpoint-000000-000000002" / "model.weights.h5").write_bytes(b"")
        (folder / "checkpoint-000000-000000002" / "meta.json").write_bytes(b"\xff\xfe{")
        latest.write_text(json.dumps({"checkpoint": "checkpoint-000000-000000002"}))
    else:
        latest.write_bytes({"garbage-bytes": b"\xff\xfe\x00", "not-json": b"{oops", "list": b"[1]"}[pointer])
    before = {path: path.read_bytes() for path in outside.iterdir()}
    with pytest.raises(CheckpointError) as caught:
        _fit_with_checkpoints(tmp_path, folder)
    message = str(caught.value)
    assert "\n" not in message and (str(latest) in message or "meta.json" in message)
    assert {path: path.read_bytes() for path in outside.iterdir()} == before  # nothing loaded or changed there
