"""HDF5 shards: one file per shard with a dataset per array (ragged arrays: a data and a ``KEY.offsets`` dataset)."""
