#!/usr/bin/env python3
"""Issue 2's build benchmark: shard-writing MB/s next to np.save, and peak memory of an 8.1M build.

Examples:
    python3 scripts/benchmark_build.py --json data/bench-build.json
    python3 scripts/benchmark_build.py --mb 64 --skip-augment
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.build_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
