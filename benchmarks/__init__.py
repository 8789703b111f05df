"""Speed benchmarks of the teaching path against the fast path: ``python -m benchmarks``."""
