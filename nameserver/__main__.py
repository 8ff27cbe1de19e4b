"""`python -m nameserver [--host H] [--port P] ...`: the same as `pyrodist nameserver`."""

from __future__ import annotations

import sys

from pyrodist.cli import cli


def main(argv: list[str] | None = None) -> None:
    """Run `pyrodist nameserver` with argv (default: this process's arguments)."""
    args = sys.argv[1:] if argv is None else argv
    # Through the group, so pyrodist's errors print as one line; prog_name "python -m" makes the
    # usage line and error hints read "python -m nameserver ...".
    cli(["nameserver", *args], prog_name="python -m")


if __name__ == "__main__":
    main()
