"""The read path: the dataset and its integrity checks, the sampler, read-ahead and kernel hints, batching,
the Keras-free ``BatchLoader``, the batch stream and resume state."""
