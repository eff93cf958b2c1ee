#!/usr/bin/env python3
"""Issue 13: a dataset larger than RAM, built, verified and trained on end to end, measured.

Examples:
    python3 scripts/benchmark_beyond_ram.py --json data/beyond-ram.json --plot docs/bigger-than-ram.png
    python3 scripts/benchmark_beyond_ram.py --samples 2000000 --cgroup-cap-mb 1024   # a small set, capped
    python3 scripts/benchmark_beyond_ram.py --data data/beyond-ram/mnist-41857000 --cold
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.beyond_ram import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
