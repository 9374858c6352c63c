"""Benchmarks (measured figures, not timed tests). See README.md."""
