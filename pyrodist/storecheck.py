"""`pyrodist master --store PATH --check`: what is wrong with a store file, by SQLite's full integrity check
and pyrodist's own marks (a file left in use whose write-ahead log is missing). `SqliteStore` runs the
quick form of the same checks each time it opens a file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .sqlstore import LOCKED_WAIT


def check_file(path: str | Path, accept_loss: bool = False) -> list[str]:
    """What is wrong with a store file by SQLite's full integrity check and pyrodist's marks (none: it is sound).

    accept_loss: a file whose write-ahead log was lost is marked closed, so that a master starts from what the
    file alone holds.
    """
    path = Path(path)
    if not path.is_file():
        return [f"{path} does not exist"]
    if path.stat().st_size == 0:
        return [f"{path} is an empty file (0 bytes)"]
    log_was_there = Path(f"{path}-wal").exists()
    problems: list[str] = []
    db = sqlite3.connect(path, timeout=LOCKED_WAIT)
    try:
        problems += [row[0] for row in db.execute("PRAGMA integrity_check(20)") if row[0] != "ok"]
        has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        in_use = db.execute("SELECT value FROM meta WHERE key = 'open'").fetchone() if has_meta else None
        if in_use == ("1",) and not log_was_there:
            if accept_loss:
                db.execute("UPDATE meta SET value = '0' WHERE key = 'open'")
                db.commit()
            else:
                problems.append(f"it was not closed cleanly and its write-ahead log {path}-wal is missing")
    except sqlite3.OperationalError as exc:
        problems.append("it is in use by a running master" if "locked" in str(exc) else str(exc))
    except sqlite3.DatabaseError as exc:
        problems.append(str(exc))
    finally:
        db.close()
    return problems
