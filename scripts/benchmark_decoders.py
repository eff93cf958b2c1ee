#!/usr/bin/env python3
"""Issue 19's decoder choice: JPEG bytes in RAM to 224x224 float32 batches, images/s, for Pillow, simplejpeg and
PyTurboJPEG in 1 and 2 threads and 2 processes, with and without reduced-size decoding, beside tf.data's
decode_jpeg + resize and streamload's decode_batch, in one run.

Examples:
    python3 scripts/benchmark_decoders.py --json results/decoders.json
    python3 scripts/benchmark_decoders.py --count 100 --rounds 1 --decoders simplejpeg tf.data
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/, apps/ beside streamload/

from benchmarks.decoders import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
