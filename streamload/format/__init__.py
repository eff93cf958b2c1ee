"""What a dataset on disk is: the manifest, array specs, records in memory, label facts, safe shard files, and
one folder per storage format with its reader and writer side by side (``npy/``, ``hdf5/``; ``ragged/`` holds
the data + offsets files of variable-length records, which both formats store). ``dispatch`` picks a format's
reader or writer by name."""
