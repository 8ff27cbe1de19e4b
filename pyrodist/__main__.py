"""`python -m pyrodist`: the same as the `pyrodist` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
