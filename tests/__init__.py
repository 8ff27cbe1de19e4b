"""pyrodist's test suite (a package so workers can import `tests.tasks`)."""
