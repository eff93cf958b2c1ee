#!/usr/bin/env python3
"""Issue 19 §4: an ImageNet-shaped JPEG folder into 224x224 float32 batches, images/s (resize; random-resized
crop + flip), disk per image and peak RssAnon, for streamload (encoded and decoded shards), Keras'
image_dataset_from_directory, tf.data over TFRecords, Grain over ArrayRecord, WebDataset tars and the plain
decode bounds, in one run.

Examples:
    python3 scripts/benchmark_images.py --json results/images.json
    python3 scripts/benchmark_images.py --images 200 --rounds 1 --cases resize
    python3 scripts/benchmark_images.py --images 300 --growth
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.images_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
