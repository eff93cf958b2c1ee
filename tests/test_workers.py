"""A worker process that dies under ``model.fit(workers=2, use_multiprocessing=True)`` ends ``fit`` with
WorkerError naming it, on TensorFlow and JAX, instead of hanging the parent forever (issue 18 part 2).

The fault is real: a transform, run inside a Keras pool worker while ``fit`` runs, SIGKILLs its own process
in the middle of reading one batch. Each run is a child process with a time limit, so a hang fails the test."""

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import KERAS_BACKENDS, subprocess_env

from streamload import ArraySource, BuildOptions, build_dataset

KILL_DURING_FIT = r"""
import os, signal, sys, threading, time
from pathlib import Path

import keras
import numpy as np

import streamload.adapters.workers
from streamload import StreamingGenerator

directory, mark, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
PARENT = os.getpid()


def fault_at_batch_5(x, y):
    # shuffle=False: x holds each sample's id, batch 5 starts with sample 250
    if os.getpid() != PARENT and int(x[0, 0]) == 250:
        if how == "self":  # the worker dies at once, in the middle of its read
            mark.write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        Path(f"{mark}.pid").write_text(str(os.getpid()))
        time.sleep(120)  # stuck in a read until killed from outside, as the OOM killer would
    return x, y


def kill_from_outside():
    pid_file = Path(f"{mark}.pid")
    while not pid_file.exists():
        time.sleep(0.01)
    pid = int(pid_file.read_text())
    while pid not in streamload.adapters.workers._WATCH.processes:  # a worker the watch has seen alive
        time.sleep(0.01)
    mark.write_text(repr(time.time()))
    os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    gen = StreamingGenerator(directory, batch_size=50, shuffle=False, transform=fault_at_batch_5, workers=2,
                             use_multiprocessing=True)
    if how == "outside":
        threading.Thread(target=kill_from_outside, daemon=True).start()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    try:
        model.fit(gen, epochs=3, verbose=0, shuffle=False)
    except Exception as error:  # the error fit ends with, and how long after the kill it came
        waited = time.time() - float(mark.read_text())
        line = next((line for line in str(error).splitlines() if "worker process" in line), str(error))
        print(f"{type(error).__name__} after {waited:.1f} s | {line}", flush=True)
        sys.exit(3)
    print("fit finished without an error", flush=True)
"""


@pytest.fixture(scope="module")
def ids(tmp_path_factory) -> object:
    folder = tmp_path_factory.mktemp("workers") / "ids"
    x = np.arange(1000, dtype=np.float32)[:, None]
    build_dataset({"train": ArraySource(x=x, y=np.zeros(1000, np.float32))}, folder, BuildOptions(progress=False))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("how", ["self", "outside"])
@pytest.mark.parametrize("backend", [name for name in KERAS_BACKENDS if name in ("tensorflow", "jax")])
def test_a_worker_killed_while_fit_runs_ends_fit_with_a_worker_error(ids, tmp_path, backend, how) -> None:
    """Before: the pool replaced the dead worker, its batch's result never came and fit waited forever.

    ``self``: the worker SIGKILLs itself mid-read at once; the pool may reap it before the watch ever saw it,
    so its signal may be unknown. ``outside``: a worker stuck in a read, seen alive by the watch, is SIGKILLed
    from outside; the message names the signal."""
    mark = tmp_path / "killed-at"
    result = subprocess.run([sys.executable, "-c", KILL_DURING_FIT, str(ids), str(mark), how], capture_output=True,
                            text=True, timeout=120, env=subprocess_env(KERAS_BACKEND=backend))
    assert mark.exists(), "the worker was never killed: " + result.stdout[-2000:] + result.stderr[-2000:]
    assert result.returncode == 3, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    death = "died with signal 9 \\(SIGKILL\\)" if how == "outside" else "died(?: with signal 9 \\(SIGKILL\\))?"
    found = re.search(rf"^(\w+) after ([\d.]+) s \| .*?worker process (\d+) {death} while reading batches of "
                      r"(.+?); fit cannot go on", result.stdout, re.MULTILINE)
    assert found, result.stdout[-2000:]
    kind, waited, _, named = found.groups()
    # JAX iterates Keras' enqueuer in Python: WorkerError itself; TensorFlow reads it inside tf.data, whose
    # UnknownError carries the WorkerError line
    assert kind == {"jax": "WorkerError", "tensorflow": "UnknownError"}[backend]
    assert "WorkerError: worker process" in found.group(0) or kind == "WorkerError"
    assert named == str(ids) and float(waited) < 30
