#!/usr/bin/env python3
"""Build MNIST (or any IDX dataset) into verified HDF5 or .npy shards; ``--verify DIR`` checks one.

Examples:
    python3 scripts/build_shards.py --format npy --out data/mnist
    python3 scripts/build_shards.py --format hdf5 --out data/mnist8m --augment-to 8100000
    python3 scripts/build_shards.py --verify data/mnist
"""

import sys

from streamload.cli import main

if __name__ == "__main__":
    sys.exit(main())
