"""Multi-host tests: real pyrodist processes on hosts made of Linux network namespaces (needs root)."""
