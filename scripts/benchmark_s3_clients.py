#!/usr/bin/env python3
"""Issue 20's S3 client benchmark: obstore, s3fs and boto3 against a local SeaweedFS, side by side in one run
(whole-object GET and PUT of shard-sized objects, many concurrent small range GETs, peak RssAnon, fork safety).

Examples:
    python3 scripts/benchmark_s3_clients.py --json results/s3-clients.json
    python3 scripts/benchmark_s3_clients.py --objects 2 --object-mib 8 --ranges 200 --rounds 1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ beside streamload/

from benchmarks.s3_clients import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
