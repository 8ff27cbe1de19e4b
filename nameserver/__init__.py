"""`python -m nameserver`: the name server of a pyrodist deployment, the same as `pyrodist nameserver`."""
