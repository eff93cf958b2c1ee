"""Multi-worker training with ``MultiWorkerMirroredStrategy``: one worker's run, and a local launcher.

Every worker opens the same dataset folder (on one machine, or on shared storage such as NFS), or
the same ``s3://bucket/prefix`` (each machine fetching what its workers read into its shard cache),
and builds its input with ``distribute_datasets_from_function``: TensorFlow hands each worker an
``InputContext``, and :func:`~streamload.adapters.tfdata.as_tf_dataset` then reads only that worker's
disjoint share of each epoch, so no sample is read twice and nothing is copied between workers.

The launcher starts N workers as local processes on loopback, each with its own ``TF_CONFIG``:
the same code that runs on several machines, where each machine sets ``TF_CONFIG`` itself and
runs the worker. TensorFlow is imported inside the worker functions so the launcher stays light.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apps.arguments import dataset_manifest
from apps.plan import ImageReading, ModelPlan, plan_model
from streamload.errors import InvalidOptionError

MODELS = ("cnn", "tiny")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class WorkerConfig:
    data: str | Path  # a dataset folder or s3://bucket/prefix
    epochs: int = 1
    batch_size: int = 64  # global: split evenly between all replicas of all workers
    steps_per_epoch: int | None = None  # default: one epoch of each worker's share
    model: str = "cnn"  # "cnn" (the tutorial's) or "tiny" (one dense layer, for quick checks)
    shuffle: str = "exact"
    seed: int = 0
    out_dir: Path | None = None  # worker-K.json (metrics) and, with record_indices, worker-K-indices.npy
    record_indices: bool = False
    verbose: int = 2
    reading: ImageReading = ImageReading()  # how images stored as their files are decoded (--store encoded)


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Ports free right now (the OS picks them); a worker binds its port a few seconds later."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(addresses: list[str], index: int) -> str:
    """``TF_CONFIG`` for worker ``index`` of a cluster of ``addresses`` (worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def launch_local_workers(worker_command: list[str], num_workers: int, timeout: float | None = None,
                         env: dict[str, str] | None = None) -> list[int]:
    """Run ``worker_command`` as ``num_workers`` processes on loopback; return their exit codes.

    Workers see no GPU (local workers would fight over it). If one fails the others would wait
    for it forever in their collectives, so they are stopped; so are all at ``timeout``.
    """
    if num_workers <= 0:
        raise InvalidOptionError(f"workers must be positive, got {num_workers}")
    addresses = [f"{LOOPBACK}:{port}" for port in free_ports(num_workers)]
    base = dict(os.environ if env is None else env, CUDA_VISIBLE_DEVICES="")
    base.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    processes = [subprocess.Popen(worker_command, env={**base, "TF_CONFIG": tf_config(addresses, index)})
                 for index in range(num_workers)]
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            codes = [process.poll() for process in processes]  # every one: any() would stop at the first
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        _stop(processes)
    return [process.returncode for process in processes]


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ReadLog:
    """The (epoch, sample index) of every sample a worker read; filled from tf.data's threads.

    Reads, not training steps: batches prefetched and never trained on are in it too (under a
    strategy, Keras reads a batch to build the model from an iterator it then discards).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[np.ndarray] = []

    def __call__(self, epoch: int, batch: int, indices: np.ndarray) -> None:
        rows = np.stack([np.full(len(indices), epoch, dtype=np.int64), indices.astype(np.int64)], axis=1)
        with self._lock:
            self._parts.append(rows)

    def rows(self) -> np.ndarray:
        """Sorted by epoch, then index: which batch came first depends on thread timing."""
        with self._lock:
            rows = np.concatenate(self._parts) if self._parts else np.empty((0, 2), dtype=np.int64)
        return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def check_model(kind: str, plan: ModelPlan | None) -> None:
    """The model ``kind`` can be built for ``plan``'s dataset (before Keras loads, before workers start)."""
    if kind not in MODELS:
        raise InvalidOptionError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    if kind == "tiny" and plan is not None and (len(plan.inputs) != 1 or plan.num_classes is None):
        raise InvalidOptionError("--model tiny needs one input and class labels; use --model cnn")


def build_model(kind: str, plan: ModelPlan | None = None) -> Any:
    """A compiled model for ``plan``'s dataset (MNIST's when None): the one ``train.py`` builds for it (the
    tutorial's CNN on MNIST, a small CNN on decoded images), or a single dense layer that trains in milliseconds."""
    from apps.training import compile_model, compile_softmax_regression, compile_tutorial_cnn

    check_model(kind, plan)
    if kind == "cnn":
        return compile_tutorial_cnn() if plan is None else compile_model(plan)
    if plan is None:
        return compile_softmax_regression()
    return compile_softmax_regression(plan.inputs[0].shape, plan.num_classes)


def multi_worker_strategy() -> Any:
    """A ``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3's ``fit`` gives it.

    Keras 3 (3.15 at least) passes two things that ``reduce`` refuses once there are several
    workers: the first ``(x, y)`` batch, a tuple, which it averages to build the model ("Attempt to
    convert a value (PerReplica ...) to a Tensor"; on one worker the tuple slips through
    unreduced), and per-replica scalar logs with ``axis=0`` ("Invalid reduction dimension 0 for
    input with 0 dimensions"). Both mean "across replicas": reduce leaf by leaf, and a scalar
    with ``axis=None``. Every worker reduces the same leaves in the same order, so the collectives match.
    """
    import tensorflow as tf

    class KerasReduceStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op: Any, value: Any, axis: int | None) -> Any:
            parent = super()

            def reduce_leaf(leaf: Any) -> Any:
                first = leaf.values[0] if isinstance(leaf, tf.distribute.DistributedValues) else leaf
                scalar = getattr(first, "shape", None) is not None and first.shape.rank == 0
                return parent.reduce(reduce_op, leaf, None if scalar else axis)

            return tf.nest.map_structure(reduce_leaf, value)

    return KerasReduceStrategy()


def run_worker(config: WorkerConfig) -> dict[str, Any]:
    """Train as one worker of the cluster that ``TF_CONFIG`` describes; return this worker's results.

    Must run before anything else in the process touches TensorFlow: the strategy starts the
    worker's server. Every worker must run it, with the same options. Keras epoch ``e`` is data
    epoch ``e`` when ``steps_per_epoch`` is left to its default; with several replicas per worker
    (GPUs) and a batch count per epoch that is not a multiple of them, one step at each epoch
    boundary takes batches from both epochs, since the dataset holds its epochs back to back.
    """
    from streamload.adapters.tfdata import as_tf_dataset, batches_per_epoch

    model_plan = plan_model(dataset_manifest(config.data), str(config.data), config.reading)
    strategy = multi_worker_strategy()
    with strategy.scope():
        model = build_model(config.model, model_plan)
    contexts: list[Any] = []
    read_log = ReadLog() if config.record_indices else None

    def plan(context: Any) -> tuple[int, int]:
        """(steps per epoch, data epochs the dataset must hold for epochs x steps)."""
        batches = batches_per_epoch(config.data, "train", config.batch_size, input_context=context)
        per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        steps = config.steps_per_epoch or math.ceil(batches / per_pipeline)
        return steps, math.ceil(config.epochs * steps * per_pipeline / batches)

    def dataset_fn(context: Any) -> Any:
        contexts.append(context)
        return as_tf_dataset(config.data, "train", config.batch_size, shuffle=config.shuffle, seed=config.seed,
                             input_context=context, epochs=plan(context)[1], on_read=read_log,
                             **config.reading.keywords(training=True))

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    context = contexts[0]
    steps, data_epochs = plan(context)
    chief = context.input_pipeline_id == 0
    # shuffle=False: the order is the dataset's exact per-epoch shuffle; Keras cannot shuffle a tf.data dataset anyway
    history = model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, shuffle=False,
                        verbose=config.verbose if chief else 0)
    result = {"worker": context.input_pipeline_id, "workers": context.num_input_pipelines,
              "replicas_in_sync": strategy.num_replicas_in_sync, "global_batch": config.batch_size,
              "steps_per_epoch": steps, "data_epochs": data_epochs,
              "loss": [float(value) for value in history.history["loss"]]}
    if config.out_dir is not None:
        _write_results(config.out_dir, result, read_log)
    return result


def _write_results(out_dir: Path, result: dict[str, Any], read_log: ReadLog | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    worker = result["worker"]
    if read_log is not None:
        np.save(out_dir / f"worker-{worker}-indices.npy", read_log.rows())
    (out_dir / f"worker-{worker}.json").write_text(json.dumps(result, indent=2) + "\n")
