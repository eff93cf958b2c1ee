#!/usr/bin/env python3
"""Issue 20 §4's object store benchmark: streamload reading augmented MNIST from a local SeaweedFS, side by
side with the server's bandwidth and request bounds, cold and warm cache, local disk, and added latency.

Examples:
    python3 scripts/benchmark_object_store.py --json results/object-store.json
    python3 scripts/benchmark_object_store.py --gigabytes 0.05 --ranges 200 --rounds 1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ beside streamload/

from benchmarks.object_store import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
