#!/usr/bin/env python3
"""Train with MultiWorkerMirroredStrategy on shards: N local workers on loopback, or one worker of a cluster.

Examples:
    # two local worker processes on 127.0.0.1 (CPU only), global batch 128:
    python3 scripts/train_multiworker.py --data data/mnist --workers 2 --epochs 1 --batch-size 128
    # on each of several machines, with TF_CONFIG set for that machine and the shards on shared storage:
    python3 scripts/train_multiworker.py --data /mnt/shared/mnist --worker --epochs 1 --batch-size 128
    # photos kept as their JPEG files (build_shards.py --store encoded), decoded on read as train.py does:
    python3 scripts/train_multiworker.py --data data/photos --workers 2 --image-size 64 64 --horizontal-flip
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from apps.arguments import add_image_arguments, check_arguments, image_reading  # noqa: E402
from apps.multiworker import MODELS, WorkerConfig, check_model, launch_local_workers, run_worker  # noqa: E402
from apps.plan import plan_model  # noqa: E402
from streamload.cli import report  # noqa: E402
from streamload.errors import StreamloadError  # noqa: E402
from streamload.options import SHUFFLE_MODES  # noqa: E402

POSITIVE = ("workers", "epochs", "batch_size", "steps_per_epoch", "timeout")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True,
                        help="dataset folder built by build_shards.py, or s3://bucket/prefix (docs/object-storage.md)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes to start (launcher mode)")
    parser.add_argument("--worker", action="store_true",
                        help="run as one worker of the cluster in $TF_CONFIG instead of launching local workers")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split between all replicas")
    parser.add_argument("--steps-per-epoch", type=int, help="default: one epoch of each worker's share")
    parser.add_argument("--model", default="cnn", choices=MODELS,
                        help="train.py's model for the dataset (the tutorial's CNN on MNIST), or one dense layer")
    parser.add_argument("--shuffle", default="exact", choices=SHUFFLE_MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, help="each worker writes worker-K.json (its metrics) here")
    parser.add_argument("--record-indices", action="store_true",
                        help="each worker also writes worker-K-indices.npy: (epoch, sample index) of every read")
    parser.add_argument("--timeout", type=float, help="launcher: stop every worker after this many seconds")
    add_image_arguments(parser)
    args = parser.parse_args(argv)
    if args.record_indices and args.out_dir is None:
        parser.error("--record-indices needs --out-dir")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_model(args.model, plan_model(check_arguments(args, POSITIVE), str(args.data), image_reading(args)))
        return launch(args, argv) if not args.worker else work(args)
    except (StreamloadError, OSError) as exc:  # bad options or data, unwritable --out-dir: one line, exit 2
        return report("train_multiworker.py", exc)


def launch(args: argparse.Namespace, argv: list[str] | None) -> int:
    command = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv), "--worker"]
    codes = launch_local_workers(command, args.workers, timeout=args.timeout)
    print(f"workers exited with {codes}", file=sys.stderr if any(codes) else sys.stdout)
    return 0 if all(code == 0 for code in codes) else 1


def work(args: argparse.Namespace) -> int:
    result = run_worker(WorkerConfig(data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                                     steps_per_epoch=args.steps_per_epoch, model=args.model, shuffle=args.shuffle,
                                     seed=args.seed, out_dir=args.out_dir, record_indices=args.record_indices,
                                     reading=image_reading(args)))
    if result["worker"] == 0:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
