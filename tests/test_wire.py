"""The wire contract (pyrodist.wire): every record round-trips, has its documented shape, refuses what is malformed."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrodist.protocol import MAX_ERROR_TEXT, TASK_OPTIONS, TaskState
from pyrodist.values import encode_value
from pyrodist.wire import (
    FetchedTask,
    Finished,
    HeartbeatReply,
    Limits,
    MasterInfo,
    Outcome,
    ReportReply,
    Stats,
    SubmittedTask,
    TaskRecord,
    TaskSpec,
    WorkerRow,
    WorkerStatus,
)

Reader = Callable[[Any], Any]
CLIENT = "c-1"

# ---- strategies ----------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)
texts = st.text(max_size=40)
tokens = st.integers(min_value=0, max_value=2**64)
states = st.sampled_from(list(TaskState))
numbers = st.floats(min_value=0, max_value=1e9, allow_nan=False)
options = st.dictionaries(st.sampled_from(sorted(TASK_OPTIONS)), st.integers(-1000, 1000), max_size=4)
errors = st.fixed_dictionaries({"type": texts, "message": texts, "traceback": texts, "bases": texts})
"""Errors as `check_error` leaves them (all four fields), so they come back equal."""
id_lists = st.lists(ids, max_size=5)

fetched = st.builds(FetchedTask, ids, texts, texts, tokens, options)
outcomes = st.one_of(
    st.builds(Outcome, ids, tokens, st.just(True), result=texts),
    st.builds(Outcome, ids, tokens, st.just(False), error=errors),
)
finished = st.builds(Finished, ids, states, st.none() | texts, st.none() | errors)
records = st.builds(
    TaskRecord, ids, states, texts, st.none() | texts, st.none() | errors,
    st.lists(st.fixed_dictionaries({"attempt": st.integers(0, 9), "worker": texts}), max_size=2),
    st.none() | texts, st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), options, numbers,
    st.none() | numbers, st.none() | numbers, st.none() | numbers,
)  # fmt: skip
lease_lists = st.lists(st.tuples(ids, st.integers(1, 2**52)), max_size=3)
statuses = st.one_of(  # running and prefetched travel together: one without the other renews nothing
    st.builds(WorkerStatus, st.none() | texts, st.none() | st.integers(0, 2**31), st.none() | st.integers(0, 512),
              st.none(), st.none(), st.sampled_from(["live", "stopping", "stopped"])),
    st.builds(WorkerStatus, texts, st.integers(0, 2**31), st.integers(0, 512), lease_lists, lease_lists),
)  # fmt: skip
rows = st.builds(WorkerRow, ids, texts, st.integers(0, 2**31), st.integers(0, 512), st.integers(0, 99),
                 st.integers(0, 99), st.integers(0, 10**6), st.integers(0, 10**6), numbers)  # fmt: skip
stats = st.builds(
    Stats, st.builds(MasterInfo, texts, texts, st.integers(0, 2**31), numbers, st.booleans()),
    st.lists(rows, max_size=3), st.lists(rows, max_size=2),
    st.fixed_dictionaries({state.value: st.integers(0, 10**6) for state in TaskState}),
    *[st.integers(0, 10**6)] * 6, numbers,
)  # fmt: skip
submitted = st.builds(SubmittedTask, ids.map(lambda suffix: f"{CLIENT}.{suffix}"), texts, texts, options)
specs = st.builds(TaskSpec, texts, st.lists(st.integers() | texts, max_size=3),
                  st.dictionaries(texts, st.integers(), max_size=3), st.none() | options)  # fmt: skip

KINDS: dict[str, tuple[st.SearchStrategy[Any], Reader]] = {
    "FetchedTask": (fetched, FetchedTask.from_wire),
    "Outcome": (outcomes, lambda wire: Outcome.from_wire(0, wire)),
    "Finished": (finished, Finished.from_wire),
    "TaskRecord": (records, TaskRecord.from_wire),
    "WorkerStatus": (statuses, WorkerStatus.from_wire),
    "HeartbeatReply": (st.builds(HeartbeatReply, numbers, id_lists), HeartbeatReply.from_wire),
    "ReportReply": (st.builds(ReportReply, st.integers(0, 10**4), id_lists, id_lists), ReportReply.from_wire),
    "WorkerRow": (rows, WorkerRow.from_wire),
    "Stats": (stats, Stats.from_wire),
    "Limits": (st.builds(Limits, *[st.integers(1, 2**31)] * 4, texts, st.booleans()), Limits.from_wire),
    "SubmittedTask": (submitted, lambda wire: SubmittedTask.from_wire(0, wire)),
    "TaskSpec": (specs, lambda wire: TaskSpec.from_wire(0, wire)),
}


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# ---- round trips and shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=60, derandomize=True, deadline=None)
@given(data=st.data())
def test_record_comes_back_equal_from_its_wire_form_after_json(kind: str, data: st.DataObject) -> None:
    strategy, read = KINDS[kind]
    record = data.draw(strategy)
    wire = record.to_wire()
    assert through_json(wire) == wire
    assert read(through_json(wire)) == record


ERROR = {"type": "ValueError", "message": "bad", "traceback": "Traceback ...", "bases": "Exception"}
LOOKUP_KEYS = {"id", "state", "func", "payload", "error", "errors", "worker", "attempts", "retries", "lost",
               "options", "submitted", "started", "finished", "retry_at"}  # fmt: skip
"""docs/api.md, `lookup`."""
STATS_KEYS = {"master", "workers", "lost_workers", "counts", "submitted", "done", "failed", "cancelled", "clients",
              "subscriptions", "throughput_1m"}  # fmt: skip


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (FetchedTask("c.1", "m:f", "[[], {}]", 7, {}),
         {"id": "c.1", "func": "m:f", "payload": "[[], {}]", "token": 7, "options": {}}),
        (Outcome("c.1", 7, True, result=" 3"), {"id": "c.1", "token": 7, "state": "done", "payload": " 3"}),
        (Outcome("c.1", 7, False, error=ERROR), {"id": "c.1", "token": 7, "state": "failed", "error": ERROR}),
        (Finished("c.1", TaskState.DONE, " 3", None), {"id": "c.1", "state": "done", "payload": " 3", "error": None}),
        (ReportReply(2, ["a"], ["b"]), {"accepted": 2, "ignored": ["a"], "cancel": ["b"]}),
        (HeartbeatReply(30.0, ["b"]), {"lease_timeout": 30.0, "cancel": ["b"]}),
        (WorkerStatus(), {"state": "live"}),
        (WorkerStatus("h", 1, 2, [("a", 7)], [("b", 8)], "stopping"),
         {"host": "h", "pid": 1, "concurrency": 2, "running": [["a", 7]], "prefetched": [["b", 8]],
          "state": "stopping"}),
        (Limits(1024, 10_000, 5, 16, "e1", True, 1 << 30),
         {"max_payload": 1024, "max_batch": 10_000, "max_pending": 5, "max_subscriptions_per_client": 16,
          "epoch": "e1", "durable": True, "max_value": 1 << 30}),
        (SubmittedTask("c.1", "m:f", " 1", {}), ["c.1", "m:f", " 1", {}]),
        (TaskSpec("m:f", (1, 2), {"k": 3}), {"func": "m:f", "args": [1, 2], "kwargs": {"k": 3}, "options": None}),
    ],
    ids=lambda v: None if isinstance(v, (dict, list)) else type(v).__name__,
)  # fmt: skip
def test_wire_form_is_exactly_the_documented_shape(record: Any, expected: Any) -> None:
    assert record.to_wire() == expected


def test_task_record_has_exactly_the_documented_lookup_keys() -> None:
    wire = TaskRecord("c.1", TaskState.RUNNING, "m:f").to_wire()
    assert set(wire) == LOOKUP_KEYS
    assert wire["state"] == "running" and type(wire["state"]) is str


def test_stats_have_the_documented_keys_and_counts_by_state() -> None:
    counts = {state.value: 0 for state in TaskState}
    wire = Stats(MasterInfo("m", "e", 1, 0.0, False), [], [], counts).to_wire()
    assert set(wire) == STATS_KEYS
    assert set(wire["master"]) == {"name", "epoch", "pid", "uptime", "durable", "store_error"}


def test_stats_worker_rows_have_exactly_the_documented_keys() -> None:
    """docs/api.md `stats`: id, host, pid, concurrency, running, prefetched, done, failed, last_seen, state."""
    documented = {"id", "host", "pid", "concurrency", "running", "prefetched", "done", "failed", "last_seen", "state"}
    assert set(WorkerRow("w").to_wire()) == documented


# ---- refusals ---------------------------------------------------------------------------------------


def outcome(wire: Any) -> Outcome:
    return Outcome.from_wire(3, wire, limit=1024)


def submitted_task(wire: Any) -> SubmittedTask:
    return SubmittedTask.from_wire(3, wire, limit=1024)


M = {"name": "m", "epoch": "e", "pid": 1, "uptime": 0.0, "durable": False}
"""A well-formed master in stats."""
GOOD_FETCHED = {"id": "c.1", "func": "m:f", "payload": "x", "token": 1}
GOOD_FINISHED = {"id": "c.1", "state": "done", "payload": "x", "error": None}
DONE = {"id": "c.1", "token": 1, "state": "done", "payload": " 1"}
FAILED = {"id": "c.1", "token": 1, "state": "failed", "error": ERROR}


@pytest.mark.parametrize(
    ("read", "wire", "error", "names"),
    [
        (FetchedTask.from_wire, None, TypeError, "fetched task"),
        (FetchedTask.from_wire, ["c.1", "m:f", "x", 1], TypeError, "fetched task"),
        (FetchedTask.from_wire, {"id": "c.1", "func": "m:f", "payload": "x"}, ValueError, "token"),
        (FetchedTask.from_wire, {**GOOD_FETCHED, "token": True}, TypeError, "token"),
        (FetchedTask.from_wire, {**GOOD_FETCHED, "token": "1"}, TypeError, "token"),
        (FetchedTask.from_wire, {**GOOD_FETCHED, "id": 5}, TypeError, "id"),
        (FetchedTask.from_wire, {**GOOD_FETCHED, "options": [1]}, TypeError, "options"),
        (outcome, "done", TypeError, "results[3]"),
        (outcome, {**DONE, "token": True}, TypeError, "token"),
        (outcome, {**DONE, "token": 1.0}, TypeError, "token"),
        (outcome, {**DONE, "id": None}, TypeError, "id"),
        (outcome, {**DONE, "state": "running"}, ValueError, "state"),
        (outcome, {**DONE, "state": ["done"]}, ValueError, "state"),
        (outcome, {"id": "c.1", "token": 1, "state": "done"}, ValueError, "payload"),
        (outcome, {**DONE, "payload": 5}, ValueError, "payload"),
        (outcome, {**DONE, "payload": "x" * 1025}, ValueError, "payload"),
        (outcome, {**DONE, "payload": "é" * 600}, ValueError, "payload"),  # 1200 bytes: the limit counts UTF-8
        (outcome, {**FAILED, "error": None}, TypeError, "'error'"),
        (outcome, {**FAILED, "error": "boom"}, TypeError, "'error'"),
        (outcome, {**FAILED, "error": {"type": "X"}}, TypeError, "'error'"),
        (outcome, {**FAILED, "error": {"message": "m"}}, TypeError, "'error'"),
        (outcome, {**FAILED, "error": {"type": 1, "message": "m"}}, TypeError, "'error'"),
        (Finished.from_wire, [1, 2], TypeError, "finished record"),
        (Finished.from_wire, {"id": "c.1", "state": "done", "payload": "x"}, ValueError, "error"),
        (Finished.from_wire, {**GOOD_FINISHED, "state": "finito"}, ValueError, "state"),
        (Finished.from_wire, {**GOOD_FINISHED, "state": ["done"]}, ValueError, "state"),
        (Finished.from_wire, {**GOOD_FINISHED, "error": {"type": "X"}}, TypeError, "error"),
        (TaskRecord.from_wire, "c.1", TypeError, "task record"),
        (TaskRecord.from_wire, {"id": "c.1", "state": "done"}, ValueError, "func"),
        (TaskRecord.from_wire, {"id": "c.1", "state": 3, "func": "m:f"}, ValueError, "state"),
        (TaskRecord.from_wire, {"id": "c.1", "state": "done", "func": "m:f", "error": 3}, TypeError, "error"),
        (ReportReply.from_wire, {"ignored": []}, ValueError, "accepted"),
        (ReportReply.from_wire, {"accepted": 1, "ignored": "c.1"}, TypeError, "ignored"),
        (ReportReply.from_wire, {"accepted": 1, "cancel": [1]}, TypeError, "cancel"),
        (HeartbeatReply.from_wire, {}, ValueError, "lease_timeout"),
        (HeartbeatReply.from_wire, {"lease_timeout": True}, ValueError, "lease_timeout"),
        (HeartbeatReply.from_wire, {"lease_timeout": float("nan")}, ValueError, "lease_timeout"),
        (HeartbeatReply.from_wire, {"lease_timeout": -1}, ValueError, "lease_timeout"),
        (HeartbeatReply.from_wire, {"lease_timeout": 1, "cancel": "c.1"}, TypeError, "cancel"),
        (WorkerRow.from_wire, {"host": "h"}, ValueError, "id"),
        (Stats.from_wire, {"master": {}, "workers": [], "counts": {}}, ValueError, "lost_workers"),
        (Stats.from_wire, {"master": M, "workers": [3], "lost_workers": [], "counts": {}}, TypeError, "worker row"),
        (Limits.from_wire, {"max_payload": 1, "max_batch": 1, "max_pending": 1, "epoch": "e"}, ValueError,
         "max_subscriptions_per_client"),
        (submitted_task, {"task_id": "c-1.1"}, TypeError, "tasks[3]"),
        (submitted_task, ["c-1.1", "m:f", "x"], TypeError, "tasks[3]"),
        (submitted_task, ["c-1.a b", "m:f", "x", {}], ValueError, "task id"),
        (submitted_task, [5, "m:f", "x", {}], ValueError, "task id"),
        (submitted_task, ["c-1.1", "m:f", "x" * 1025, {}], ValueError, "payload"),
        (submitted_task, ["c-1.1", "m:f", 5, {}], ValueError, "payload"),
        (submitted_task, ["c-1.1", "m:f", {"data": "!", "encoding": "base64"}, {}], ValueError, "payload"),
        (submitted_task, ["c-1.1", None, "x", {}], TypeError, "func"),
        (lambda wire: TaskSpec.from_wire(3, wire), ["m:f"], TypeError, "tasks[3]"),
        (lambda wire: TaskSpec.from_wire(3, wire), {"func": "m:f", "argz": []}, ValueError, "argz"),
        (lambda wire: TaskSpec.from_wire(3, wire), {"func": "m:f", "args": "ab"}, TypeError, "args"),
        (lambda wire: TaskSpec.from_wire(3, wire), {"func": "m:f", "kwargs": [1]}, TypeError, "kwargs"),
        (lambda wire: TaskSpec.from_wire(3, wire), {"args": []}, TypeError, "func"),
    ],
)  # fmt: skip
def test_from_wire_refuses_malformed_input_naming_the_field(
    read: Reader, wire: Any, error: type[Exception], names: str
) -> None:
    with pytest.raises(error) as caught:
        read(wire)
    assert type(caught.value) is error
    assert names in str(caught.value)


@pytest.mark.parametrize(
    ("read", "wire", "names"),
    [
        pytest.param(Finished.from_wire, {**GOOD_FINISHED, "id": 5}, "id", id="Finished.id"),
        pytest.param(Finished.from_wire, {**GOOD_FINISHED, "payload": 7}, "payload", id="Finished.payload"),
        pytest.param(TaskRecord.from_wire, {"id": 5, "state": "done", "func": "m:f"}, "id", id="TaskRecord.id"),
        pytest.param(ReportReply.from_wire, {"accepted": "many"}, "accepted", id="ReportReply.accepted-text"),
        pytest.param(ReportReply.from_wire, {"accepted": None}, "accepted", id="ReportReply.accepted-None"),
        pytest.param(Stats.from_wire, {"master": M, "workers": [], "lost_workers": 5, "counts": {}}, "lost_workers",
                     id="Stats.lost_workers"),
        pytest.param(Limits.from_wire, {"max_payload": "big", "max_batch": 1, "max_pending": 1,
                     "max_subscriptions_per_client": 1, "epoch": "e", "durable": False}, "max_payload",
                     id="Limits.max_payload"),
    ],
)  # fmt: skip
def test_from_wire_refuses_a_field_of_the_wrong_type_naming_it(read: Reader, wire: Any, names: str) -> None:
    """The module's promise: `from_wire` checks what arrived, naming the bad field (a peer may be another version)."""
    with pytest.raises((TypeError, ValueError), match=names):
        read(wire)


def outcome_error(error: Any) -> Any:
    return outcome({**FAILED, "error": error}).error


def finished_error(error: Any) -> Any:
    return Finished.from_wire({**GOOD_FINISHED, "error": error}).error


def record_error(error: Any) -> Any:
    return TaskRecord.from_wire({"id": "c.1", "state": "failed", "func": "m:f", "error": error}).error


@pytest.mark.parametrize("read", [outcome_error, finished_error, record_error])
def test_error_texts_are_cut_and_missing_fields_filled(read: Reader) -> None:
    long = "x" * (MAX_ERROR_TEXT + 100)
    got = read({"type": "E", "message": long, "traceback": long})
    assert got == {"type": "E", "message": long[:MAX_ERROR_TEXT], "traceback": long[:MAX_ERROR_TEXT], "bases": ""}


def test_report_value_is_encoded_when_no_payload_is_given() -> None:
    got = Outcome.from_wire(0, {"id": "c.1", "token": 1, "state": "done", "value": (1, b"x")})
    assert got == Outcome("c.1", 1, True, result=encode_value((1, b"x")))


def test_submitted_task_without_options_gets_an_empty_dict() -> None:
    assert SubmittedTask.from_wire(0, ("c-1.1", "m:f", "x", None)).options == {}


def test_fetched_task_without_options_gets_an_empty_dict() -> None:
    assert FetchedTask.from_wire(GOOD_FETCHED).options == {}


# ---- heartbeat info: a plain caller may send anything ----------------------------------------------


@pytest.mark.parametrize("info", [None, [], ["host", "h"], "live", 5, {}, {"state": "sleeping"}, {"state": ["x"]}])
def test_worker_status_from_garbage_is_an_empty_live_status(info: Any) -> None:
    assert WorkerStatus.from_wire(info) == WorkerStatus()


@pytest.mark.parametrize(
    "info",
    [
        {"host": 5, "pid": "1", "concurrency": 2.0, "running": "c.1", "prefetched": []},
        {"host": None, "pid": True, "concurrency": False, "running": ("c.1",), "prefetched": []},
        {"host": b"h", "pid": 1.5, "concurrency": [4], "running": ["c.1"], "prefetched": "c.2"},
        {"running": ["c.1"], "prefetched": None},
        {"prefetched": ["c.1"]},
    ],
)
def test_worker_status_leaves_fields_of_the_wrong_type_out(info: dict[str, Any]) -> None:
    assert WorkerStatus.from_wire(info) == WorkerStatus()


def test_worker_status_takes_id_and_token_pairs() -> None:
    info = {"host": "h", "pid": 9, "running": [["c.1", 5], ("c.6", 6)], "prefetched": [["c.9", 9]], "x": 1}
    got = WorkerStatus.from_wire(info)
    assert got == WorkerStatus("h", 9, None, [("c.1", 5), ("c.6", 6)], [("c.9", 9)], "live")


@pytest.mark.parametrize("entry", ["c.2", ["c.3"], ["c.4", True], [4, 4], ["c.7", 7, 7], ["c.8", 8.0], None])
def test_a_lease_of_another_form_is_refused_naming_it(entry: Any) -> None:
    """An older worker's bare ids would renew nothing and its leases would silently expire: say so instead."""
    with pytest.raises(TypeError, match=r"prefetched\[1\] must be \[task_id, token\]"):
        WorkerStatus.from_wire({"running": [], "prefetched": [["c.1", 1], entry]})


# ---- the plain caller's record ---------------------------------------------------------------------


def done_record(payload: str | None) -> TaskRecord:
    return TaskRecord("c.1", TaskState.DONE, "m:f", payload, worker="w", attempts=1, finished=5.0)


def test_plain_record_holds_the_decoded_value_instead_of_the_payload() -> None:
    plain = done_record(encode_value({"k": (1, 2.5, b"x", frozenset({3}))})).to_plain()
    assert set(plain) == LOOKUP_KEYS - {"payload"} | {"value"}
    assert plain["value"] == {"k": (1, 2.5, b"x", frozenset({3}))}
    assert plain["state"] == "done" and plain["error"] is None


def test_plain_record_of_an_unfinished_task_has_value_none() -> None:
    plain = TaskRecord("c.1", TaskState.PENDING, "m:f").to_plain()
    assert plain["value"] is None and plain["error"] is None


def test_json_caller_keeps_a_text_payload_and_gets_value_none() -> None:
    payload = encode_value([1, "x"])
    plain = done_record(payload).to_plain(as_json=True)
    assert set(plain) == LOOKUP_KEYS | {"value"}
    assert plain["payload"] == payload and plain["value"] is None
    assert through_json(plain) == plain


def test_json_caller_is_not_shown_a_frame_which_json_cannot_carry() -> None:
    plain = done_record(encode_value((1, b"x"))).to_plain(as_json=True)
    assert plain["payload"] is None and plain["value"] is None
    assert through_json(plain) == plain


def test_a_serpent_caller_s_bytes_arrive_as_a_frame_payload() -> None:
    frame = encode_value(b"\x00\x01")
    assert isinstance(frame, bytes)
    serpent_form = {"data": base64.b64encode(frame).decode(), "encoding": "base64"}  # Pyro4's serpent sends bytes so
    assert SubmittedTask.from_wire(0, ["c-1.1", "m:f", serpent_form, {}]).payload == frame


@pytest.mark.parametrize(
    "payload",
    [
        "", " ", "not python", "[1,", "\x00", "{'__pyrodist__': 'set', 'items': [[1]]}",
        "{'__class__': 'float', 'value': 'zz'}",
        pytest.param("{'__class__': 'float', 'x': 1}", id="float-marker-without-value"),
        pytest.param("{'__class__': 'complex', 'a': 1, 'b': 2}", id="complex-marker-without-parts"),
    ],
)  # fmt: skip
def test_undecodable_payload_gives_value_none_and_an_error_record(payload: str) -> None:
    plain = done_record(payload).to_plain()
    assert plain["value"] is None
    assert plain["error"]["type"] == "ValueError"
    assert plain["error"]["message"].startswith("the stored result cannot be decoded")
