"""The records that cross a process boundary, each with its one `to_wire` and `from_wire`.

Nothing else in pyrodist builds or reads a wire dict by hand. `to_wire` gives plain lists, dicts,
strings and numbers (what json and serpent carry, as `docs/api.md` documents them); `from_wire` checks
what arrived and raises a builtin `TypeError` or `ValueError` naming the bad field. Values inside
(arguments, results) stay encoded (`payload`: text or a binary frame), encoded and decoded only at the ends
(`values.py`).

The master's description of itself (`Stats`, `Limits`) lives in `wireinfo.py` and is re-exported here.

::

    client ──SubmittedTask──▶ master ──FetchedTask──▶ worker     (stats ──▶ Stats, limits ──▶ Limits)
    client ◀──Finished─────── master ◀──Outcome────── worker     (ReportReply back; WorkerStatus / HeartbeatReply)
    anyone ──lookup / result──▶ TaskRecord
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .protocol import (
    STATE_TEXT,
    STATES,
    WORKER_STATES,
    ErrorRecord,
    TaskState,
    check_error,
    check_fields,
    check_func,
    check_leases,
    check_number,
    check_state,
    check_strings,
    check_task_id,
)
from .records import Plain, as_dict, checked, field_names, known
from .values import MAX_PAYLOAD, Payload, arrived_payload, decode_value, encode_value, is_payload, payload_fits
from .wireinfo import Limits as Limits  # re-exported: every record is reached through wire
from .wireinfo import MasterInfo as MasterInfo
from .wireinfo import Stats as Stats
from .wireinfo import WorkerRow as WorkerRow

Lease = tuple[str, int]
"""A lease a worker holds: its task's id and the token `fetch` gave (`[id, token]` on the wire)."""


@dataclass(slots=True)
class SubmittedTask:
    """A client's call with its arguments already encoded: `[task_id, func, payload, options]` on the wire."""

    task_id: str
    func: str
    payload: Payload
    options: dict[str, Any]

    def to_wire(self) -> list[Any]:
        """The wire form."""
        return [self.task_id, self.func, self.payload, self.options]

    @classmethod
    def from_wire(cls, i: int, item: Any, limit: int = MAX_PAYLOAD) -> SubmittedTask:
        """Entry i of a submit_encoded call, checked (the master checks that its id is the client's)."""
        if not isinstance(item, (list, tuple)) or len(item) != 4:
            raise TypeError(f"tasks[{i}] must be [task_id, func, payload, options]")
        task_id, func, payload, options = item
        check_task_id(task_id)
        if type(payload) is dict:  # a serpent caller's bytes
            payload = arrived_payload(payload)
        if not (type(payload) is str or type(payload) is bytes) or not payload_fits(payload, limit):
            raise ValueError(f"tasks[{i}]: payload must be serpent text or a frame of at most {limit} bytes")
        return cls(task_id, check_func(func), payload, options if options else {})


@dataclass(slots=True)
class TaskSpec:
    """A plain caller's task: `{"func", "args", "kwargs", "options"}`, values not yet encoded."""

    func: str
    args: list[Any] | tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The wire form."""
        return {"func": self.func, "args": list(self.args), "kwargs": self.kwargs, "options": self.options}

    @classmethod
    def from_wire(cls, i: int, spec: Any) -> TaskSpec:
        """Entry i of a submit_many call, checked."""
        if not isinstance(spec, dict):
            raise TypeError(f"tasks[{i}] must be a dict with 'func', 'args', 'kwargs', 'options'")
        if unknown := set(spec) - set(field_names(cls)):
            raise ValueError(f"tasks[{i}] has unknown fields {sorted(map(str, unknown))}")
        return cls.checked(i, **spec)

    @classmethod
    def checked(cls, i: int, func: Any = None, args: Any = None, kwargs: Any = None, options: Any = None) -> TaskSpec:
        """Task i of a plain submit, from its parts, checked."""
        if not isinstance(args or [], (list, tuple)) or not isinstance(kwargs or {}, dict):
            raise TypeError(f"tasks[{i}]: args must be a list and kwargs a dict")
        return cls(check_func(func), args or [], kwargs or {}, options)


@dataclass(slots=True)
class FetchedTask:
    """A task leased to a worker: `{"id", "func", "payload", "token", "options"}` on the wire."""

    id: str
    func: str
    payload: Payload
    token: int
    options: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The wire form."""
        return {"id": self.id, "func": self.func, "payload": self.payload, "token": self.token, "options": self.options}

    @classmethod
    def from_wire(cls, item: Any) -> FetchedTask:
        """A task as fetch returned it."""
        try:
            task = cls(item["id"], item["func"], item["payload"], item["token"], item.get("options") or {})
        except (KeyError, TypeError, AttributeError):
            check_fields(item, "a fetched task", ("id", "func", "payload", "token"))
            raise
        texts = type(task.id) is type(task.func) is str and type(task.payload) in (str, bytes)
        if texts and type(task.token) is int and type(task.options) is dict:
            return task
        raise TypeError(f"a fetched task has fields of the wrong types: {item!r:.200}")


@dataclass(slots=True)
class Outcome:
    """A worker's report on one task: its result (encoded) or its error, with the lease token."""

    task_id: str
    token: int
    ok: bool
    result: Payload | None = None
    error: ErrorRecord | None = None

    def to_wire(self) -> dict[str, Any]:
        """The wire form: `{"id", "token", "state": "done", "payload"}` or `{..., "state": "failed", "error"}`."""
        if self.ok:
            return {"id": self.task_id, "token": self.token, "state": "done", "payload": self.result}
        return {"id": self.task_id, "token": self.token, "state": "failed", "error": self.error}

    @classmethod
    def from_wire(cls, i: int, result: Any, limit: int = MAX_PAYLOAD) -> Outcome:
        """Entry i of a report; a plain caller may give `"value"` instead of `"payload"` (encoded here)."""
        if not isinstance(result, dict):
            raise TypeError(f"results[{i}] must be a dict, not {type(result).__name__}")
        task_id, token = result.get("id"), result.get("token")
        if not isinstance(task_id, str) or isinstance(token, bool) or not isinstance(token, int):
            raise TypeError(f"results[{i}] needs 'id' (a string) and 'token' (an int from fetch)")
        if result.get("state") == TaskState.DONE:
            payload = result.get("payload")
            if type(payload) is dict:  # a serpent caller's bytes
                payload = arrived_payload(payload)
            if payload is None and "value" in result:
                payload = encode_value(result["value"], "the result", limit)
            if not (type(payload) is str or type(payload) is bytes) or not payload_fits(payload, limit):
                raise ValueError(f"results[{i}]: 'payload' must be serpent text or a frame of at most {limit} bytes")
            return cls(task_id, token, True, result=payload)
        if result.get("state") == TaskState.FAILED:
            return cls(
                task_id, token, False, error=check_error(result.get("error"), f"results[{i}]: 'error'", optional=False)
            )
        raise ValueError(f"results[{i}]: 'state' must be 'done' or 'failed', not {result.get('state')!r}")


@dataclass(slots=True)
class ReportReply(Plain):
    """The master's answer to a report: how many results counted, which were ignored, what to stop."""

    accepted: int
    ignored: list[str]
    cancel: list[str]

    def to_wire(self) -> dict[str, Any]:
        """The wire form (written out: one per report)."""
        return {"accepted": self.accepted, "ignored": self.ignored, "cancel": self.cancel}

    @classmethod
    def from_wire(cls, reply: Any) -> ReportReply:
        """A reply as report returned it."""
        try:  # the common case without a call per field: one of these per report
            accepted, ignored, cancel = reply["accepted"], reply["ignored"], reply["cancel"]
            if type(accepted) is int and ignored == [] and cancel == []:
                return cls(accepted, [], [])
        except (KeyError, TypeError):
            pass
        fields = check_fields(reply, "a report reply", ("accepted",))
        ignored, cancel = (
            check_strings(fields.get("ignored", []), "ignored"),
            check_strings(fields.get("cancel", []), "cancel"),
        )
        return checked(cls(fields["accepted"], ignored, cancel), "a report reply")


_STATUS_TYPES: dict[str, type] = {"host": str, "pid": int, "concurrency": int, "running": list}


@dataclass(slots=True)
class WorkerStatus:
    """What a worker tells in its heartbeat; fields it leaves out (None) keep what the master knew."""

    host: str | None = None
    pid: int | None = None
    concurrency: int | None = None
    running: list[Lease] | None = None
    prefetched: list[Lease] | None = None
    state: str = "live"

    def to_wire(self) -> dict[str, Any]:
        """The wire form: only the fields that are set (leases as `[id, token]` pairs)."""
        wire = {key: value for key, value in as_dict(self).items() if value is not None}
        return wire | {key: [list(lease) for lease in wire[key]] for key in ("running", "prefetched") if key in wire}

    @classmethod
    def from_wire(cls, info: Any) -> WorkerStatus:
        """A heartbeat's info; fields of the wrong type are left out, as a plain caller may send anything (but a
        lease list of the wrong form is refused: its leases would silently expire)."""
        info = info if isinstance(info, dict) else {}
        typed: dict[str, Any] = {k: v for k, v in info.items() if type(v) is _STATUS_TYPES.get(k)}  # no bools
        running, prefetched = typed.get("running"), info.get("prefetched", [])  # leases renewed only with both
        both = isinstance(running, list) and isinstance(prefetched, list)
        return cls(
            typed.get("host"), typed.get("pid"), typed.get("concurrency"),
            check_leases(running, "running") if both else None,
            check_leases(prefetched, "prefetched") if both else None,
            info["state"] if info.get("state") in WORKER_STATES else "live",
        )  # fmt: skip


@dataclass(slots=True)
class HeartbeatReply(Plain):
    """The master's answer to a heartbeat: its lease timeout, and tasks to stop."""

    lease_timeout: float
    cancel: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_wire(cls, reply: Any) -> HeartbeatReply:
        """A reply as heartbeat returned it."""
        fields = check_fields(reply, "a heartbeat reply", ("lease_timeout",))
        lease = check_number(fields["lease_timeout"], "lease_timeout", 0, math.inf)
        return cls(float(lease), check_strings(fields.get("cancel", []), "cancel"))


@dataclass(slots=True)
class Finished:
    """A finished task as its client collects it: `{"id", "state", "payload", "error"}`."""

    id: str
    state: TaskState
    payload: Payload | None
    error: ErrorRecord | None

    def to_wire(self) -> dict[str, Any]:
        """The wire form."""
        return {"id": self.id, "state": STATE_TEXT[self.state], "payload": self.payload, "error": self.error}

    @classmethod
    def from_wire(cls, record: Any) -> Finished:
        """A record as collect returned it."""
        try:  # the common case without a call per field: one of these per finished task
            done = cls(record["id"], STATES[record["state"]], record["payload"], check_error(record["error"], "error"))
            if type(done.id) is str and (done.payload is None or is_payload(done.payload)):
                return done
            return checked(done, "a finished record")
        except (KeyError, TypeError):
            fields = check_fields(record, "a finished record", ("id", "state", "payload", "error"))
            check_state(fields["state"])
            raise


@dataclass(slots=True)
class TaskRecord:
    """Everything the master tells of one task (`lookup`, `result`, callbacks); the result still encoded."""

    id: str
    state: TaskState
    func: str
    payload: Payload | None = None
    error: ErrorRecord | None = None
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    worker: str | None = None
    attempts: int = 0
    retries: int = 0
    lost: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    submitted: float = 0.0
    started: float | None = None
    finished: float | None = None
    retry_at: float | None = None

    def finished_record(self) -> Finished:
        """The short form a client settles its future from."""
        return Finished(self.id, self.state, self.payload, self.error)

    def to_wire(self) -> dict[str, Any]:
        """The wire form: the documented public record, `payload` holding the result encoded (text or a frame)."""
        return {**as_dict(self), "state": STATE_TEXT[self.state]}

    def to_plain(self, as_json: bool = False, bounded: bool = False) -> dict[str, Any]:
        """The record for a plain caller: its value decoded under `value` (json callers: text in `payload`).

        bounded: a value with more items than a call may hold is not decoded (an error says so), as on the master."""
        wire = self.to_wire()
        if as_json:  # json cannot carry bytes, tuples or sets: text to decode yourself (a frame is not shown)
            return {**wire, "payload": None if isinstance(self.payload, bytes) else self.payload, "value": None}
        payload = wire.pop("payload")
        try:
            wire["value"] = decode_value(payload, bounded) if payload is not None else None
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            message = f"the stored result cannot be decoded: {exc}"
            wire["value"], wire["error"] = None, {"type": "ValueError", "message": message, "traceback": ""}
        return wire

    @classmethod
    def from_wire(cls, record: Any) -> TaskRecord:
        """A record as lookup returned it."""
        fields = check_fields(record, "a task record", ("id", "state", "func"))
        values = known(cls, fields)
        values["state"] = check_state(fields["state"])
        values["error"] = check_error(fields.get("error"), "error")
        return checked(cls(**values), "a task record")
