#!/usr/bin/env python3
"""Issue 19's sequences benchmark: padding saved by ``bucket_by_length``, and peak RssAnon/RssFile while
reading random batches of a set of sequences and of one ten times larger, each in a fresh process.

Examples:
    python3 scripts/benchmark_sequences.py --json results/sequences.json
    python3 scripts/benchmark_sequences.py --data data/my-tokens --batches 2000 --rounds 5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.sequences import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
