"""The write path: sources of samples, value checks, the dataset folder's layout, staging and generations,
atomic builds and verification."""
