"""The benchmark lab: scenarios beyond `pyrodist bench`, run from a clone with `python -m benchmarks`."""
