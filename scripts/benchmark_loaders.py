#!/usr/bin/env python3
"""Issues 3, 5 and 6: samples/s of streamload's loaders next to the in-RAM bound, the tutorial's
generator and a tuned tf.data TFRecord pipeline; model.fit epoch time; cold-cache reads (--cold).

Examples:
    python3 scripts/benchmark_loaders.py --json data/bench-loaders.json
    python3 scripts/benchmark_loaders.py --cold --skip-warm --skip-fit --cold-batches 2000
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.loaders_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
