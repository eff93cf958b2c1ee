#!/usr/bin/env python3
"""Issue 4's memory benchmark: peak RssAnon/RssFile of one pass per loader and dataset size, each in a
fresh process; ``--cap-proof`` trains one epoch under a hard RLIMIT_DATA.

Examples:
    python3 scripts/benchmark_memory.py --json data/bench-memory.json
    python3 scripts/benchmark_memory.py --sizes 60000 1000000 8100000 --loaders tutorial ram npy hdf5
    python3 scripts/benchmark_memory.py --cap-proof --cap-gb 2 --json data/bench-memory-cap.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.memory_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
