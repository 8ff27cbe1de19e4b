"""`python -m benchmarks`: run one or more lab scenarios and print their figures (or `--targets`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable

from benchmarks import lab


def main(argv: list[str] | None = None) -> int:
    """Parse the scenarios asked for, run them one after another, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--idle", type=int, metavar="N", help="master CPU with N idle workers, and task start delays")
    parser.add_argument("--callbacks", action="store_true", help="on_result callbacks/s next to results/s")
    parser.add_argument("--queue", type=int, metavar="N", help="submit N tasks to a master without workers")
    parser.add_argument("--scaling", action="store_true", help="master CPU per task with 10 to 1,000,000 queued")
    parser.add_argument("--targets", action="store_true", help="every scenario next to its target (minutes)")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks in the throughput and callback runs")
    parser.add_argument("--workers", type=int, default=2, help="workers in the callback run")
    parser.add_argument("--store", metavar="PATH", help="a durable store for --queue and --scaling")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.targets:
        measured = lab.run_targets(args.tasks)
        print(
            json.dumps([dataclasses.asdict(t) for t in measured], indent=2)
            if args.json
            else lab.format_targets(measured)
        )
        return 0
    scenarios: list[tuple[bool, Callable[[], lab.Figures]]] = [
        (args.idle is not None, lambda: lab.run_idle(args.idle)),
        (args.callbacks, lambda: lab.run_callbacks(args.tasks, args.workers)),
        (args.queue is not None, lambda: lab.run_queue(args.queue, args.store)),
        (args.scaling, lambda: lab.run_scaling(store=args.store)),
    ]
    chosen = [run for wanted, run in scenarios if wanted]
    if not chosen:
        parser.error("name a scenario: --idle N, --callbacks, --queue N, --scaling or --targets")
    figures = [run() for run in chosen]
    print(
        json.dumps([f.as_dict() for f in figures], indent=2) if args.json else "\n\n".join(f.format() for f in figures)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
