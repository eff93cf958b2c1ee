"""Variable-length records on disk: the rows of a ragged array concatenated, plus an ``n + 1`` int64 offsets
index; read by runs of ``preadv``, written with bounded memory. The npy and HDF5 folders place these files."""
