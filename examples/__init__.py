"""Examples of pyrodist; run them from the repository root with `python -m examples.NAME`."""
