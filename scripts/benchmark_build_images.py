#!/usr/bin/env python3
"""Issue 12's image-folder build benchmark: images/s and peak memory of build_shards.py on synthetic PNGs,
with --jobs 1 and --jobs 2.

Examples:
    python3 scripts/benchmark_build_images.py --json data/bench-build-images.json
    python3 scripts/benchmark_build_images.py --count 5000 --size 64 --jobs 1 2 4
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.build_images import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
