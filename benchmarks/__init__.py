"""Baselines and measurement helpers for the benchmarks; not imported by `import streamload`."""
