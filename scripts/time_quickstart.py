#!/usr/bin/env python3
"""Time the README's quick start (MNIST build, one epoch of training) and write results/quickstart.json.

Example:
    python3 scripts/time_quickstart.py --json results/quickstart.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.quickstart import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
