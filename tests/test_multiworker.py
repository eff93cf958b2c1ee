import hashlib
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, subprocess_env
from image_fixtures import ImageFolder, smooth_pixels
from shards import build, sample_ids

from apps.multiworker import ReadLog, free_ports, launch_local_workers, tf_config
from streamload.format.manifest import read_manifest
from streamload.options import LoaderOptions
from streamload.read.sampler import IndexSampler
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources.images import ImageOptions, image_folder_sources

TRAIN_SCRIPT = [sys.executable, str(REPO_ROOT / "scripts" / "train_multiworker.py")]
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_free_ports_are_distinct_and_tf_config_names_the_task() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(0 < port < 65536 for port in ports)
    config = json.loads(tf_config([f"127.0.0.1:{port}" for port in ports], 2))
    assert config == {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                      "task": {"type": "worker", "index": 2}}


REPORT_ENV = textwrap.dedent("""
    import json, os, sys
    config = json.loads(os.environ["TF_CONFIG"])
    path = os.path.join(sys.argv[1], f"env-{config['task']['index']}.json")
    with open(path, "w") as out:
        json.dump({"tf_config": config, "cuda": os.environ["CUDA_VISIBLE_DEVICES"]}, out)
""")


def test_launcher_gives_each_worker_its_task_and_no_gpu(tmp_path) -> None:
    codes = launch_local_workers([sys.executable, "-c", REPORT_ENV, str(tmp_path)], 3, timeout=60,
                                 env=subprocess_env())
    assert codes == [0, 0, 0]
    reports = [json.loads((tmp_path / f"env-{index}.json").read_text()) for index in range(3)]
    assert [report["tf_config"]["task"] for report in reports] == [{"type": "worker", "index": i} for i in range(3)]
    clusters = {tuple(report["tf_config"]["cluster"]["worker"]) for report in reports}
    assert len(clusters) == 1 and len(set(next(iter(clusters)))) == 3  # one cluster, three distinct addresses
    assert all(address.startswith("127.0.0.1:") for address in next(iter(clusters)))
    assert {report["cuda"] for report in reports} == {""}


FAIL_ONE = textwrap.dedent("""
    import json, os, sys, time
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
        sys.exit(3)
    time.sleep(30)  # stands for a worker waiting for its failed peer (forever, in a real collective)
""")


def test_launcher_stops_the_others_when_one_worker_fails() -> None:
    codes = launch_local_workers([sys.executable, "-c", FAIL_ONE], 2, env=subprocess_env())
    assert codes[1] == 3 and codes[0] < 0  # the waiting worker was terminated by a signal, not waited for


def test_read_log_sorts_rows_by_epoch_then_index() -> None:
    log = ReadLog()
    log(1, 0, np.array([5, 2]))
    log(0, 3, np.array([9, 1]))
    assert log.rows().tolist() == [[0, 1], [0, 9], [1, 2], [1, 5]]
    assert ReadLog().rows().shape == (0, 2)


def test_record_indices_needs_an_output_folder(tmp_path) -> None:
    result = subprocess.run([*TRAIN_SCRIPT, "--data", str(tmp_path), "--record-indices"], capture_output=True,
                            text=True, env=subprocess_env())
    assert result.returncode == 2 and "--out-dir" in result.stderr


MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from apps.multiworker import ReadLog, build_model
    from streamload.adapters.tfdata import as_tf_dataset, batches_per_epoch

    directory, out = sys.argv[1], sys.argv[2]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_model("tiny")
    log, contexts = ReadLog(), []

    def dataset_fn(context):
        contexts.append(context)
        return as_tf_dataset(directory, batch_size=64, seed=1, input_context=context, epochs=2, on_read=log)

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    batches = batches_per_epoch(directory, batch_size=64, input_context=contexts[0])
    history = model.fit(dataset, epochs=2, steps_per_epoch=batches // 2, shuffle=False, verbose=0)
    np.save(out, log.rows())
    print(json.dumps({"loss": history.history["loss"], "replicas": strategy.num_replicas_in_sync,
                      "context_batch": contexts[0].get_per_replica_batch_size(64), "batches": batches}))
""")


@pytest.mark.slow
def test_mirrored_strategy_fit_on_two_replicas_reads_each_epoch_once(tmp_path) -> None:
    directory, _ = build(tmp_path, 1003, "npy", 300)
    rows = tmp_path / "rows.npy"
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(directory), str(rows)], capture_output=True,
                            text=True, timeout=240, env=subprocess_env(**CPU_ONLY))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["context_batch"] == 32 and report["batches"] == 32  # 31 x 32 + 11
    assert len(report["loss"]) == 2 and np.isfinite(report["loss"]).all()
    read = np.load(rows)
    # reads, not training steps: Keras builds the model from an iterator it discards, whose parallel reads may
    # have read part of an epoch once more, so reads can only be compared as sets (counts: test below)
    for epoch in range(2):
        assert set(read[read[:, 0] == epoch, 1].tolist()) == set(range(1003))
    assert set(read[:, 0].tolist()) == {0, 1}


def train_two_workers(data: str, out: Path, n: int) -> None:
    """train_multiworker.py with two local workers on ``data``: they train in step, and in every epoch each
    reads exactly its own share of the samples, the shares disjoint and together every sample (but one)."""
    global_batch, epochs = 64, 2
    result = subprocess.run([*TRAIN_SCRIPT, "--data", data, "--workers", "2", "--epochs", str(epochs),
                             "--batch-size", str(global_batch), "--model", "tiny", "--seed", "11",
                             "--out-dir", str(out), "--record-indices", "--timeout", "200"],
                            capture_output=True, text=True, timeout=240, env=subprocess_env(**CPU_ONLY))
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((out / f"worker-{k}.json").read_text()) for k in range(2)]
    assert [(r["worker"], r["workers"], r["replicas_in_sync"]) for r in reports] == [(0, 2, 2), (1, 2, 2)]
    assert reports[0]["steps_per_epoch"] == 16  # 501 samples per worker in batches of 32
    assert reports[0]["loss"] == reports[1]["loss"] and np.isfinite(reports[0]["loss"]).all()  # synchronous
    for epoch in range(epochs):
        shares = []
        for k in range(2):
            read = np.load(out / f"worker-{k}-indices.npy")
            share = set(read[read[:, 0] == epoch, 1].tolist())  # reads: a set (see the test above)
            expected = IndexSampler(n, LoaderOptions(batch_size=32, seed=11, num_pipelines=2, pipeline_index=k))
            assert share == set(expected.epoch_indices(epoch).tolist())  # exactly its own share, nothing else
            shares.append(share)
        assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == n - 1  # disjoint; 1 left over


@pytest.mark.slow
def test_two_workers_train_together_and_each_reads_only_its_share(tmp_path) -> None:
    directory, _ = build(tmp_path, 1003, "npy", 300)
    train_two_workers(str(directory), tmp_path / "out", 1003)


@pytest.mark.slow
def test_two_workers_train_from_one_bucket_and_each_reads_only_its_share(aws_env, tmp_path) -> None:
    """The same from s3://, both workers fetching into one shard cache (aws_env's STREAMLOAD_CACHE_DIR)."""
    pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
    from s3server import fresh_url

    from streamload.places.bucket import BucketPlace

    directory, _ = build(tmp_path, 1003, "npy", 300)
    url = fresh_url(aws_env)
    BucketPlace(url).publish(directory)
    train_two_workers(url, tmp_path / "out", 1003)
    shards = read_manifest(directory).split("train").shards
    cached = {hashlib.sha256(path.read_bytes()).hexdigest() for path in (tmp_path / "cache").rglob("*.npy")}
    assert cached == {file.sha256 for shard in shards for file in shard.files.values()}  # fetched, every one


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be positive, got 0"),
    (["--epochs", "-1"], "--epochs must be positive, got -1"),
], ids=["workers", "epochs"])
def test_bad_options_are_one_line_before_any_worker_starts(tmp_path, args: list[str], message: str) -> None:
    directory, _ = build(tmp_path, 20, "npy", 10)
    result = subprocess.run([*TRAIN_SCRIPT, "--data", str(directory), *args], capture_output=True, text=True,
                            env=subprocess_env(**CPU_ONLY), timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"train_multiworker.py: error: {message}\n"


def test_missing_dataset_is_one_line_before_any_worker_starts(tmp_path) -> None:
    result = subprocess.run([*TRAIN_SCRIPT, "--data", str(tmp_path / "nowhere")], capture_output=True, text=True,
                            env=subprocess_env(**CPU_ONLY), timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"train_multiworker.py: error: {tmp_path / 'nowhere' / 'manifest.json'}: ")
    assert len(result.stderr.splitlines()) == 1


def _jpeg_store(tmp_path: Path, count: int) -> Path:
    """``count`` JPEGs of two classes in a store built with --store encoded (decoded on read)."""
    folder = ImageFolder(tmp_path / "photos", ["a", "b"])
    for number in range(count):
        folder.add(f"{'ab'[number % 2]}/{number:03}.jpg", smooth_pixels(20 + number % 7, 24, 3, number), quality=90)
    out = tmp_path / "encoded"
    build_dataset(image_folder_sources(folder.root, ImageOptions(store="encoded", progress=False, jobs=1)), out,
                  BuildOptions(progress=False, shard_size=10))
    return out


def test_image_options_are_checked_before_any_worker_starts(tmp_path) -> None:
    mnist, _ = build(tmp_path, 20, "npy", 10)
    for data, extra, message in [(mnist, ["--image-size", "8", "8"], "--image-size and the other image options"),
                                 (_jpeg_store(tmp_path, 4), [], "pass --image-size HEIGHT WIDTH")]:
        result = subprocess.run([*TRAIN_SCRIPT, "--data", str(data), *extra], capture_output=True, text=True,
                                env=subprocess_env(**CPU_ONLY), timeout=120)
        assert result.returncode == 2 and result.stdout == "" and len(result.stderr.splitlines()) == 1
        assert message in result.stderr


def test_the_tiny_model_needs_one_input_and_class_labels() -> None:
    from apps.multiworker import check_model
    from apps.plan import InputPlan, ModelPlan
    from streamload.errors import InvalidOptionError

    one = (InputPlan("x", (4,), False),)
    check_model("tiny", ModelPlan(one, 3, (), None, False))
    check_model("cnn", ModelPlan(one, None, (), None, False))  # train.py's regression model
    for plan in (ModelPlan(one, None, (), None, False), ModelPlan((*one, InputPlan("z", (2,), False)), 3, (), None,
                                                                   False)):
        with pytest.raises(InvalidOptionError, match="--model tiny needs one input and class labels"):
            check_model("tiny", plan)


@pytest.mark.slow
def test_two_workers_train_on_images_decoded_on_read_each_reading_its_share(tmp_path) -> None:
    data, out = _jpeg_store(tmp_path, 40), tmp_path / "out"
    result = subprocess.run([*TRAIN_SCRIPT, "--data", str(data), "--workers", "2", "--epochs", "1", "--batch-size",
                             "8", "--model", "tiny", "--image-size", "12", "16", "--horizontal-flip", "--seed", "3",
                             "--out-dir", str(out), "--record-indices", "--timeout", "200"],
                            capture_output=True, text=True, timeout=240, env=subprocess_env(**CPU_ONLY))
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((out / f"worker-{k}.json").read_text()) for k in range(2)]
    assert reports[0]["loss"] == reports[1]["loss"] and np.isfinite(reports[0]["loss"]).all()
    shares = [set(np.load(out / f"worker-{k}-indices.npy")[:, 1].tolist()) for k in range(2)]
    for k in range(2):
        expected = IndexSampler(40, LoaderOptions(batch_size=4, seed=3, num_pipelines=2, pipeline_index=k))
        assert shares[k] == set(expected.epoch_indices(0).tolist())
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 40


@pytest.mark.parametrize("pipelines", [1, 2, 3])
def test_each_pipeline_delivers_each_sample_of_its_share_once_per_epoch(tmp_path, pipelines: int) -> None:
    """What the pipelines deliver (the ids inside the batches), counted: a sample served twice in an epoch,
    by one pipeline or by two, fails here, where a comparison of sets would pass."""
    pytest.importorskip("tensorflow")
    from streamload.adapters.tfdata import as_tf_dataset

    n, epochs = 1003, 2
    directory, _ = build(tmp_path, n, "npy", 300)
    delivered = [Counter() for _ in range(epochs)]
    for k in range(pipelines):
        options = {"batch_size": 32, "seed": 11, "num_pipelines": pipelines, "pipeline_index": k}
        sampler = IndexSampler(n, LoaderOptions(**options))
        dataset = as_tf_dataset(directory, "train", epochs=epochs, normalize=False, channel_axis=False,
                                one_hot=False, **options)
        batches = [sample_ids(x) for x, _ in dataset.as_numpy_iterator()]
        assert len(batches) == epochs * sampler.num_batches
        per = sampler.num_batches
        for epoch in range(epochs):
            ids = Counter(np.concatenate(batches[epoch * per:(epoch + 1) * per]).tolist())
            assert ids == Counter(sampler.epoch_indices(epoch).tolist())
            delivered[epoch] += ids
    for counts in delivered:  # the pipelines together: every sample once, but the n % K left over
        assert len(counts) == n - n % pipelines and set(counts.values()) == {1}
