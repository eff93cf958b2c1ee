#!/usr/bin/env python3
"""Train a model sized from the dataset's manifest with ``model.fit`` on shards streamed from disk, then
report its metrics on the test split (else the validation split).

MNIST gets the tutorial's CNN; other images a small CNN (images stored as their files, ``--store encoded``,
are decoded to ``--image-size``); tables an MLP; datasets of named inputs a
model with one input per name. Integer class labels train a softmax classifier, float targets a
regression.

Example:
    python3 scripts/build_shards.py --format npy --out data/mnist
    python3 scripts/train.py --data data/mnist --epochs 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from apps.arguments import add_image_arguments, check_trainable  # noqa: E402
from apps.plan import ModelPlan  # noqa: E402
from streamload.cli import report  # noqa: E402
from streamload.errors import StreamloadError  # noqa: E402
from streamload.options import SHUFFLE_MODES  # noqa: E402

POSITIVE = ("epochs", "batch_size", "workers", "steps_per_epoch", "learning_rate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True,
                        help="dataset folder built by build_shards.py, or s3://bucket/prefix (docs/object-storage.md)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "adadelta", "sgd"),
                        help="adam (lr 1e-3, default) or adadelta (lr 1.0, what the tutorial needed)")
    parser.add_argument("--learning-rate", type=float, help="override the optimizer's learning rate")
    parser.add_argument("--shuffle", default="exact", choices=SHUFFLE_MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="PyDataset workers reading batches")
    parser.add_argument("--use-multiprocessing", action="store_true", help="workers are processes, not threads")
    parser.add_argument("--steps-per-epoch", type=int, help="fewer steps, for a quick check")
    parser.add_argument("--model-out", type=Path, default=Path("data/model.keras"))
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="save weights and the data position here every --save-freq batches; the same command "
                             "run again after a crash resumes mid-epoch on the same sample sequence")
    parser.add_argument("--save-freq", type=int, default=500, help="batches between checkpoints (default: 500)")
    add_image_arguments(parser)
    parser.add_argument("--min-accuracy", type=float,
                        help="exit 1 if the accuracy on the evaluated split ends below this")
    parser.add_argument("--json", type=Path, help="write the final metrics here (<split>_<metric>: value)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = check_trainable(args, POSITIVE)
        return run(args, plan)
    except (StreamloadError, OSError) as exc:  # bad options or data, no space for the model: one line, exit 2
        return report("train.py", exc)


def run(args: argparse.Namespace, plan: ModelPlan) -> int:
    print(f"train.py: {plan.kind} for {plan.task}, evaluated on "
          f"{plan.evaluate_on or 'nothing (the dataset has no test or validation split)'}", flush=True)
    from apps.training import TrainConfig, train  # imports Keras: after the checks

    metrics = train(TrainConfig(data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                                optimizer=args.optimizer, learning_rate=args.learning_rate, shuffle=args.shuffle,
                                seed=args.seed, workers=args.workers, use_multiprocessing=args.use_multiprocessing,
                                steps_per_epoch=args.steps_per_epoch, model_out=args.model_out,
                                checkpoint_dir=args.checkpoint_dir, save_freq=args.save_freq), plan)
    shown = ", ".join(f"{name.replace('_', ' ')} {value:.4f}" for name, value in metrics.items())
    print(f"{shown or 'not evaluated'}; model saved to {args.model_out}")
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
    accuracy = metrics.get(f"{plan.evaluate_on}_accuracy")
    if args.min_accuracy is not None and accuracy is not None and accuracy < args.min_accuracy:
        print(f"{plan.evaluate_on} accuracy below --min-accuracy {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
