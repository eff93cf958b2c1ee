"""Shards of ``.npy`` files: one file per array per shard (ragged arrays: a data file and an offsets file)."""
