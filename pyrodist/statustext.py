"""Human-readable text for `pyrodist status`: the cluster at a glance, and one task's story."""

from __future__ import annotations

import datetime
from typing import Any

from .texttable import format_table


def format_status(stats: dict[str, Any]) -> str:
    """The stats as aligned text."""
    header = ("WORKER", "HOST", "PID", "RUNNING", "DONE", "FAILED", "LAST SEEN")
    rows = [header] + [
        (
            w["id"],
            w["host"],
            str(w["pid"]),
            str(w["running"]),
            str(w["done"]),
            str(w["failed"]),
            f"{w['last_seen']:.1f}s ago",
        )
        for w in stats["workers"]
    ]
    lines = format_table(rows, "  ".join(["{:<}"] * len(header)))
    if not stats["workers"]:
        lines.append("(no live workers)")
    counts = "  ".join(f"{state} {n}" for state, n in stats["counts"].items())
    lines += [
        "",
        f"tasks: {counts}",
        f"totals: submitted {stats['submitted']}  done {stats['done']}  failed {stats['failed']}",
        f"throughput: {stats.get('throughput_1m', 0):.1f} tasks/s over the last minute",
    ]
    store_error = stats.get("master", {}).get("store_error")
    if store_error:
        lines.append(f"STORE FAILING: {store_error} (new tasks and results are refused until it works again)")
    if stats.get("lost_workers"):
        lines.append("lost workers: " + ", ".join(w["id"] for w in stats["lost_workers"]))
    return "\n".join(lines)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_task(task_id: str, record: dict[str, Any] | None) -> str:
    """One task's record: state, worker, attempts, each attempt's error, timestamps."""
    if record is None:
        return (
            f"task {task_id}: unknown to this master (never submitted to it, or lost when a master without "
            "--store restarted)"
        )
    lines = [f"task {task_id}: {record['state']}"]
    if record["state"] == "expired":
        return "\n".join([*lines, f"  {record['error']['message']}"])
    options = " ".join(f"{k}={v}" for k, v in sorted(record.get("options", {}).items())) or "-"
    retry_at = record.get("retry_at")
    rows = [
        ("function", record["func"]),
        ("worker", record.get("worker") or "-"),
        ("attempts", f"{record['attempts']} (retries {record.get('retries', 0)}, "
                     f"lost with a worker {record.get('lost', 0)})"),
        ("options", options),
        ("submitted", _when(record.get("submitted"))),
        ("started", _when(record.get("started"))),
        ("finished", _when(record.get("finished"))),
    ]  # fmt: skip
    if retry_at is not None:
        rows.append(("next retry", _when(retry_at)))
    lines += [f"  {name:<10} {value}" for name, value in rows]
    errors = record.get("errors") or []
    for error in errors:
        lines.append(
            f"  attempt {error.get('attempt', '?')} on {error.get('worker') or '-'} at {_when(error.get('at'))}: "
            f"{error.get('type')}: {error.get('message')}"
        )
    last = record.get("error")
    if last and last.get("traceback"):
        lines += [
            "  traceback of the last error:",
            *("    " + line for line in last["traceback"].rstrip().splitlines()),
        ]
    elif last and not errors:
        lines.append(f"  error      {last.get('type')}: {last.get('message')}")
    return "\n".join(lines)
