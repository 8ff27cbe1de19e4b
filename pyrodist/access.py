"""Who may see which task: a client its own (by its secret), anyone a task of no client, the admin all.

A `Client` names itself by a secret only it knows; its id, which others see in its task ids, is derived
from that secret (`protocol.client_id_of`). A caller is who the master serves: a client's id, `ADMIN`
(a secret made with the master's admin key, `protocol.admin_secret`), or None (a plain caller with no
secret, who sees only tasks of no client: plain `submit`s, whose random ids are what grants them).
"""

from __future__ import annotations

from collections.abc import Sequence

from .protocol import client_id_of, holds_admin_key
from .task import Task
from .wire import SubmittedTask

ADMIN = "*admin*"
"""The caller that holds the admin key (no client id looks like this)."""


class Access:
    """The master's rules of who sees what (see the module docstring)."""

    def __init__(self, admin_key: str | None) -> None:
        self._admin_key = admin_key

    def caller(self, client_secret: str | None) -> str | None:
        """Who calls: ADMIN, a client's id, or None."""
        if client_secret is None:
            return None
        return ADMIN if holds_admin_key(client_secret, self._admin_key) else client_id_of(client_secret)

    @staticmethod
    def visible(task: Task | None, caller: str | None) -> Task | None:
        """task, if caller may see it: a client's task only that client (and the admin), others anyone."""
        return task if task is not None and (task.owner is None or caller in (task.owner, ADMIN)) else None

    @staticmethod
    def owner_of(client_secret: str, tasks: Sequence[SubmittedTask]) -> str:
        """The id of the client submitting tasks; ValueError naming an entry whose id is not that client's."""
        owner = client_id_of(client_secret)
        for i, task in enumerate(tasks):
            if not task.task_id.startswith(owner + "."):
                raise ValueError(f"tasks[{i}]: task id {task.task_id!r} is not one of this client's ({owner}.N)")
        return owner
