"""`MasterService` against hostile input, in-process: builtin errors naming the field, and nothing changed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrodist import ConnectionFailed, MasterRejected, PyrodistError, Settings
from pyrodist.connection import LocalConnection
from pyrodist.master import Master
from pyrodist.protocol import MAX_BATCH, MAX_WAIT, admin_secret, client_id_of
from pyrodist.service import REMOTE_METHODS, MasterService
from pyrodist.values import encode_call
from pyrodist.wire import TaskRecord, TaskSpec
from tests.conftest import FakeClock, wait_until

CLIENT = "secret-of-client-1"
"""The client's secret; its id (the prefix of its task ids) is derived from it."""
OWNER = client_id_of(CLIENT)
DONE, RUNNING, PENDING = f"{OWNER}.1", f"{OWNER}.2", f"{OWNER}.3"
NEW = (f"{OWNER}.10", f"{OWNER}.11")
"""Ids the refused calls below try to submit."""
ECHO = "tests.tasks:echo"
ARGS = encode_call([1], {})
LIMIT = 4096
BIG = "x" * (LIMIT + 1)
NAN = math.nan


class Sink:
    """A subscriber in this process: keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[TaskRecord] = []

    def deliver(self, records: list[TaskRecord]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class Served:
    """A master holding one task of each kind (done, running on w1, pending) and one subscription."""

    master: Master
    service: MasterService
    token: int

    def snapshot(self) -> tuple[Any, ...]:
        """What the master tells of itself, read without changing anything."""
        svc = self.service
        return svc.stats(), svc.lookup([DONE, RUNNING, PENDING, *NEW], CLIENT), svc.limits()


def serve() -> Served:
    """A master with a fake clock and small limits, in a known state."""
    config = Settings(max_payload=LIMIT, max_pending=10, lease_timeout=30)
    master = Master(config, clock=FakeClock())
    svc = MasterService(master, config)
    svc.submit_encoded(CLIENT, [[task_id, ECHO, ARGS, {}] for task_id in (DONE, RUNNING, PENDING)])
    done, running = svc.fetch("w1", 2)
    reply = svc.report("w1", [{"id": done["id"], "token": done["token"], "state": "done", "payload": " 1"}])
    assert reply["accepted"] == 1 and running["id"] == RUNNING
    svc.subscribe(Sink(), [PENDING], CLIENT)
    return Served(master, svc, running["token"])


@pytest.fixture
def served() -> Iterator[Served]:
    running = serve()
    try:
        yield running
    finally:
        running.master.close()


def entry(task_id: str, **fields: Any) -> list[Any]:
    """One submit_encoded entry (good unless fields say otherwise)."""
    item = {"task_id": task_id, "func": ECHO, "payload": ARGS, "options": {}, **fields}
    return [item["task_id"], item["func"], item["payload"], item["options"]]


def result(task_id: str = PENDING, **fields: Any) -> dict[str, Any]:
    """One report entry (for a task w1 does not hold, unless fields say otherwise)."""
    return {"id": task_id, "token": 1, "state": "done", "payload": " 2", **fields}


GOOD = entry(NEW[0])
MANY = [{"func": ECHO}]

REFUSED = [
    ("submit", ("os:system x",), ValueError, "function reference"),
    ("submit", (5,), TypeError, "func"),
    ("submit", (ECHO, "1"), TypeError, "args"),
    ("submit", (ECHO, [], [1]), TypeError, "kwargs"),
    ("submit", (ECHO, [], {1: 2}), ValueError, "keyword argument names"),
    ("submit", (ECHO, [], {}, {"bogus": 1}), ValueError, "'bogus'"),
    ("submit", (ECHO, [], {}, {"priority": "hi"}), TypeError, "'priority'"),
    ("submit", (ECHO, [], {}, {"priority": True}), TypeError, "'priority'"),
    ("submit", (ECHO, [], {}, {"timeout": NAN}), ValueError, "'timeout'"),
    ("submit", (ECHO, [], {}, {"max_attempts": 0}), ValueError, "'max_attempts'"),
    ("submit", (ECHO, [], {}, {"worker": ""}), TypeError, "'worker'"),
    ("submit", (ECHO, [], {}, {"retry_on": ["not a name"]}), ValueError, "'retry_on'"),
    ("submit", (ECHO, [], {}, "fast"), TypeError, "options"),
    ("submit", (ECHO, [BIG]), ValueError, f"the limit is {LIMIT}"),
    ("submit", (ECHO, [object()]), ValueError, "arguments"),
    ("submit_many", ("abc",), TypeError, "tasks"),
    ("submit_many", ({"func": ECHO},), TypeError, "tasks"),
    ("submit_many", (MANY * (MAX_BATCH + 1),), ValueError, "tasks holds"),
    ("submit_many", ([*MANY, 5],), TypeError, "tasks[1]"),
    ("submit_many", ([*MANY, {"func": ECHO, "extra": 1}],), ValueError, "tasks[1]"),
    ("submit_many", ([*MANY, {"func": "no such"}],), ValueError, "function reference"),
    ("submit_many", ([*MANY, {"func": ECHO, "options": {"bogus": 1}}],), ValueError, "'bogus'"),
    ("submit_many", ([*MANY, {"func": ECHO, "args": [BIG]}],), ValueError, f"the limit is {LIMIT}"),
    ("submit_many", (MANY * 10,), ValueError, "queue full"),
    ("submit_encoded", ("", [GOOD]), TypeError, "client_secret"),
    ("submit_encoded", ("c" * 129, [GOOD]), TypeError, "client_secret"),
    ("submit_encoded", (5, [GOOD]), TypeError, "client_secret"),
    ("submit_encoded", (CLIENT, "abc"), TypeError, "tasks"),
    ("submit_encoded", (CLIENT, [GOOD] * (MAX_BATCH + 1)), ValueError, "tasks holds"),
    ("submit_encoded", (CLIENT, [GOOD, entry("c-2.11")]), ValueError, "tasks[1]"),
    ("submit_encoded", (OWNER, [GOOD]), ValueError, "tasks[0]: task id"),  # the id is no proof: the secret is
    ("submit_encoded", (CLIENT, [GOOD, entry(NEW[1], payload=BIG)]), ValueError, "tasks[1]: payload"),
    ("submit_encoded", (CLIENT, [GOOD, entry(NEW[1], payload=5)]), ValueError, "tasks[1]: payload"),
    ("submit_encoded", (CLIENT, [GOOD, entry(NEW[1])[:3]]), TypeError, "tasks[1]"),
    ("submit_encoded", (CLIENT, [GOOD, entry(None)]), ValueError, "task id"),
    ("submit_encoded", (CLIENT, [GOOD, entry(NEW[1], func=5)]), TypeError, "func"),
    ("submit_encoded", (CLIENT, [GOOD, entry(NEW[1], func="bad ref")]), ValueError, "function reference"),
    ("submit_encoded", (CLIENT, [GOOD, entry(NEW[1], options={"bogus": 1})]), ValueError, "'bogus'"),
    ("submit_encoded", (CLIENT, [GOOD, entry(NEW[1], options={"retries": -1})]), ValueError, "'retries'"),
    ("submit_encoded", (CLIENT, [entry(f"{OWNER}.q{i}") for i in range(10)]), ValueError, "queue full"),
    ("fetch", ("",), TypeError, "worker"),
    ("fetch", ("w" * 129,), TypeError, "worker"),
    ("fetch", (None,), TypeError, "worker"),
    ("fetch", ("w2", 0), ValueError, "max_tasks"),
    ("fetch", ("w2", MAX_BATCH + 1), ValueError, "max_tasks"),
    ("fetch", ("w2", True), ValueError, "max_tasks"),
    ("fetch", ("w2", NAN), ValueError, "max_tasks"),
    ("fetch", ("w2", "1"), ValueError, "max_tasks"),
    ("fetch", ("w2", 1, -1), ValueError, "wait"),
    ("fetch", ("w2", 1, MAX_WAIT + 1), ValueError, "wait"),
    ("fetch", ("w2", 1, math.inf), ValueError, "wait"),
    ("fetch", ("w2", 1, NAN), ValueError, "wait"),
    ("report", ("", []), TypeError, "worker"),
    ("report", ("w1", "x"), TypeError, "results"),
    ("report", ("w1", [result()] * (MAX_BATCH + 1)), ValueError, "results holds"),
    ("report", ("w1", [result(RUNNING), 5]), TypeError, "results[1]"),
    ("report", ("w1", [result(RUNNING), result(token=True)]), TypeError, "results[1]"),
    ("report", ("w1", [result(RUNNING), result(id=None)]), TypeError, "results[1]"),
    ("report", ("w1", [result(RUNNING), result(state="lost")]), ValueError, "results[1]"),
    ("report", ("w1", [result(RUNNING), result(payload=BIG)]), ValueError, "results[1]"),
    ("report", ("w1", [result(RUNNING), result(state="failed", error={"type": "X"})]), TypeError, "results[1]"),
    ("report", ("w1", [result(RUNNING), result(payload=None, value=object())]), ValueError, "the result"),
    ("report", ("w1", [result(RUNNING), result(payload=None, value=BIG)]), ValueError, "the result"),
    ("heartbeat", ("", {}), TypeError, "worker"),
    ("heartbeat", (None,), TypeError, "worker"),
    ("release", ("w1", RUNNING), TypeError, "leases"),
    ("release", ("w1", [[RUNNING, 1], None]), TypeError, "leases[1]"),
    ("release", ("w1", [RUNNING]), TypeError, "leases[0] must be [task_id, token]"),
    ("release", ("w1", [[RUNNING, "1"]]), TypeError, "leases[0]"),
    ("release", ("w1", [[RUNNING, True]]), TypeError, "leases[0]"),
    ("release", ("w1", [[RUNNING, 1]] * (MAX_BATCH + 1)), ValueError, "leases holds"),
    ("release", ("", [[RUNNING, 1]]), TypeError, "worker"),
    ("result", (5,), ValueError, "task id"),
    ("result", ("no such",), ValueError, "task id"),
    ("result", ("nope",), ValueError, "unknown task id"),
    ("result", (DONE, -1), ValueError, "timeout"),
    ("result", (DONE, NAN), ValueError, "timeout"),
    ("result", (DONE, True), ValueError, "timeout"),
    ("collect", ("",), TypeError, "client_secret"),
    ("collect", (CLIENT, -1), ValueError, "timeout"),
    ("collect", (CLIENT, MAX_WAIT + 1), ValueError, "timeout"),
    ("collect", (CLIENT, 0, 0), ValueError, "max_items"),
    ("collect", (CLIENT, 0, 1_000_001), ValueError, "max_items"),
    ("collect", (CLIENT, 0, True), ValueError, "max_items"),
    ("collect", (CLIENT, 0, 10, 0), ValueError, "sequence"),
    ("collect", (CLIENT, 0, 10, "1"), ValueError, "sequence"),
    ("disconnect", ("",), TypeError, "client_secret"),
    ("disconnect", (5,), TypeError, "client_secret"),
    ("lookup", (DONE,), TypeError, "task_ids"),
    ("lookup", ([DONE, 5],), TypeError, "task_ids[1]"),
    ("lookup", ([DONE] * (MAX_BATCH + 1),), ValueError, "task_ids holds"),
    ("cancel", (5,), ValueError, "task id"),
    ("cancel", ("",), ValueError, "task id"),
    ("cancel", ("nope",), ValueError, "unknown task id"),
    ("forget", (DONE,), TypeError, "task_ids"),
    ("forget", ([DONE, 5],), TypeError, "task_ids[1]"),
    ("forget", ([DONE] * (MAX_BATCH + 1),), ValueError, "task_ids holds"),
    ("subscribe", (object(),), TypeError, "callback"),
    ("subscribe", (Sink(), PENDING), TypeError, "task_ids"),
    ("subscribe", (Sink(), [PENDING, 5]), ValueError, "task id"),
    ("subscribe", (Sink(), [PENDING, "nope"]), ValueError, "unknown task id"),
    ("subscribe", (Sink(), [PENDING] * 100_001), ValueError, "at most 100000"),
    ("subscribe", (Sink(), None, ""), TypeError, "client_secret"),
    ("subscribe", (Sink(), None, 5), TypeError, "client_secret"),
    ("unsubscribe", (5,), ValueError, "unknown subscription"),
    ("unsubscribe", (None,), ValueError, "unknown subscription"),
    ("unsubscribe", ("sub-999",), ValueError, "unknown subscription"),
    ("blob_put", (PENDING, "a", None, 0, "text", 4), TypeError, "data must be bytes"),
    ("blob_put", (PENDING, "x", None, 0, b"ab", 2), ValueError, "kind"),
    ("blob_put", ("bad id!", "a", None, 0, b"ab", 2), ValueError, "task id"),
    ("blob_put", (PENDING, "a", "nope", 0, b"ab", 2), ValueError, "bad blob id"),
    ("blob_put", (PENDING, "a", f"{PENDING}.a.{'0' * 32}", 0, b"ab", 2), ValueError, "not being uploaded"),
    ("blob_put", (PENDING, "a", None, -1, b"ab", 2), ValueError, "offset"),
    ("blob_put", (PENDING, "a", None, 0, b"ab", 1 << 51), ValueError, "size"),
    ("blob_put", (PENDING, "a", None, 0, b"ab", 3 << 30), ValueError, "--max-value"),
    ("blob_put", (PENDING, "a", None, 0, b"abc", 2), ValueError, "within the blob's 2 bytes"),
    ("blob_put", (PENDING, "a", None, 5, b"ab", 9), ValueError, "offset 0"),
    ("blob_get", ("nope", 0, 10), ValueError, "bad blob id"),
    ("blob_get", (f"{PENDING}.a.{'0' * 32}", 0, 10), ValueError, "is not here"),
    ("blob_get", (f"{PENDING}.a.{'0' * 32}", 0, 0), ValueError, "size"),
    ("blob_get", (f"{PENDING}.a.{'0' * 32}", -1, 10), ValueError, "offset"),
]


def test_every_remote_method_taking_arguments_is_tried_with_bad_ones() -> None:
    assert {method for method, *_ in REFUSED} == set(REMOTE_METHODS) - {"stats", "limits", "ping"}


@pytest.mark.parametrize(("method", "args", "error", "names"), REFUSED)
def test_bad_arguments_are_refused_naming_the_field_and_change_nothing(
    served: Served, method: str, args: tuple[Any, ...], error: type[Exception], names: str
) -> None:
    before = served.snapshot()
    with pytest.raises(error) as caught:
        getattr(served.service, method)(*args)
    assert type(caught.value) is error, "remote callers get builtin exceptions only"
    assert names in str(caught.value)
    assert served.snapshot() == before
    assert [record["id"] for record in served.service.collect(CLIENT)] == [DONE], "the client's outbox is intact"


@pytest.mark.parametrize(
    ("method", "args"),
    [
        pytest.param("submit", ("os:system x",), id="FunctionRefError"),
        pytest.param("submit_encoded", (CLIENT, [entry(NEW[0], func="os.system x")]), id="FunctionRefError-encoded"),
        pytest.param("submit", (ECHO, [{1, 2}, object()]), id="ValueEncodingError"),
        pytest.param("submit_many", ([{"func": ECHO, "args": [BIG]}],), id="ValueEncodingError-limit"),
        pytest.param("report", ("w1", [result(RUNNING, payload=None, value=object())]), id="ValueEncodingError-result"),
    ],
)
def test_pyrodist_errors_leave_the_service_as_plain_value_errors(
    served: Served, method: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(ValueError) as caught:
        getattr(served.service, method)(*args)
    assert type(caught.value) is ValueError
    assert not isinstance(caught.value.__cause__, PyrodistError)


def test_subscriptions_beyond_the_per_client_limit_are_refused(served: Served) -> None:
    svc = served.service
    most = svc.limits()["max_subscriptions_per_client"]
    for _ in range(most):
        svc.subscribe(Sink(), None, CLIENT)
    before = served.snapshot()
    with pytest.raises(ValueError, match=f"client {OWNER} has {most} subscriptions"):
        svc.subscribe(Sink(), None, CLIENT)
    assert served.snapshot() == before


def test_unknown_ids_in_lookup_release_and_forget_are_skipped_not_refused(served: Served) -> None:
    svc = served.service
    assert svc.lookup(["nope", ""]) == [None, None]
    assert svc.release("w1", [["nope", 1], [PENDING, 1]]) == 0
    assert svc.forget(["nope", PENDING], CLIENT) == 0


@pytest.mark.parametrize("caller", [None, "another-clients-secret", OWNER], ids=["plain", "another", "the-id"])
def test_a_clients_tasks_are_unknown_to_everyone_without_its_secret(served: Served, caller: str | None) -> None:
    svc = served.service
    before = served.snapshot()
    assert svc.lookup([DONE, RUNNING, PENDING], caller) == [None, None, None]
    for call in (lambda: svc.result(DONE, 0, caller), lambda: svc.cancel(PENDING, caller),
                 lambda: svc.subscribe(Sink(), [PENDING], caller)):  # fmt: skip
        with pytest.raises(ValueError, match="unknown task id"):
            call()
    assert svc.forget([DONE], caller) == 0
    assert served.snapshot() == before  # read with the secret: nothing changed
    assert [r["state"] for r in svc.lookup([DONE, RUNNING, PENDING], CLIENT)] == ["done", "running", "pending"]


def test_an_all_tasks_subscriber_sees_tasks_of_no_client_unless_it_holds_the_admin_key() -> None:
    config = Settings(admin_key="operator")
    master = Master(config, clock=FakeClock())
    svc = MasterService(master, config)
    everyone, admin = Sink(), Sink()
    svc.subscribe(everyone)
    svc.subscribe(admin, None, admin_secret("operator", "the-cli"))
    plain = svc.submit("tests.tasks:echo", [1])
    svc.submit_encoded(CLIENT, [[DONE, ECHO, ARGS, {}]])
    for task in svc.fetch("w1", 2):
        svc.report("w1", [{"id": task["id"], "token": task["token"], "state": "done", "payload": " 1"}])
    assert svc.lookup([DONE], admin_secret("operator", "x"))[0]["state"] == "done"
    assert svc.lookup([DONE], admin_secret("wrong", "x")) == [None]
    wait_until(lambda: len(admin.records) == 2, what="the admin's records")
    master.close()  # delivers what is queued
    assert [r.id for r in everyone.records] == [plain]
    assert sorted(r.id for r in admin.records) == sorted([plain, DONE])


def test_a_release_needs_the_lease_token(served: Served) -> None:
    svc = served.service
    before = svc.lookup([RUNNING, PENDING], CLIENT), svc.stats()["counts"]
    assert svc.release("w1", [[RUNNING, served.token + 1]]) == 0  # the holder's name is not enough
    assert svc.release("w2", [[RUNNING, served.token]]) == 0  # nor the token without the holder
    assert (svc.lookup([RUNNING, PENDING], CLIENT), svc.stats()["counts"]) == before
    assert svc.release("w1", [[RUNNING, served.token]]) == 1
    assert svc.lookup([RUNNING], CLIENT)[0]["state"] == "pending"


def test_a_heartbeat_renews_a_lease_only_with_its_token(served: Served) -> None:
    """A peer with the key that knows the holder's name and the task's id cannot keep a dead worker's task."""
    svc, clock = served.service, served.master._clock
    assert isinstance(clock, FakeClock)
    with pytest.raises(TypeError, match="running"):  # a bare id, as workers sent before: refused, not ignored
        svc.heartbeat("w1", {"running": [RUNNING], "prefetched": []})
    for forged in ([[RUNNING, served.token + 1]], [[RUNNING, 0]], [[RUNNING, -served.token]]):
        clock.advance(20)
        svc.heartbeat("w1", {"running": forged, "prefetched": []})
        clock.advance(20)
        served.master.reap()
        assert svc.lookup([RUNNING], CLIENT)[0]["state"] == "pending", forged
        (again,) = svc.fetch("w1", 1)
        assert again["id"] == RUNNING  # it kept its place in the queue
        served.token = again["token"]
    clock.advance(20)
    svc.heartbeat("w1", {"running": [[RUNNING, served.token]], "prefetched": []})
    clock.advance(20)
    served.master.reap()
    assert svc.lookup([RUNNING], CLIENT)[0]["state"] == "running"


def test_a_report_for_a_task_the_worker_does_not_hold_is_ignored(served: Served) -> None:
    before = served.service.lookup([RUNNING, PENDING], CLIENT)
    reply = served.service.report("w2", [result(RUNNING, token=served.token), result(PENDING)])
    assert reply == {"accepted": 0, "ignored": [RUNNING, PENDING], "cancel": []}
    assert served.service.lookup([RUNNING, PENDING], CLIENT) == before


@pytest.mark.parametrize("payload", ["not python", "{'__class__': 'float', 'x': 1}"], ids=["syntax", "class-marker"])
def test_result_of_an_undecodable_reported_payload_is_an_error_record(served: Served, payload: str) -> None:
    """A worker (or anyone holding its token) may report any text; `result` must still answer a plain caller."""
    svc = served.service
    assert svc.report("w1", [result(RUNNING, token=served.token, payload=payload)])["accepted"] == 1
    record = svc.result(RUNNING, 0, CLIENT)
    assert record["value"] is None
    assert record["error"]["type"] == "ValueError"


# ---- anything at all --------------------------------------------------------------------------------

NOT_BLOCKING = st.sampled_from([0, 0.0, -1, -0.5, 1e12, 2**70, math.nan, math.inf, True, False])
"""Numbers that are no valid wait: a fuzzed call never blocks."""
WORDS = st.sampled_from([CLIENT, DONE, RUNNING, PENDING, "w1", ECHO, "", "id", "state", "done", "failed", "token"])
KEYS = st.sampled_from(["id", "token", "state", "payload", "value", "error", "func", "args", "kwargs", "options",
                        "type", "message", "host", "pid", "running", "prefetched", "priority"])  # fmt: skip
plain = st.recursive(
    st.none() | NOT_BLOCKING | WORDS | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(REMOTE_METHODS), args=st.lists(plain, max_size=4))
def test_any_plain_arguments_get_an_answer_or_a_builtin_refusal(method: str, args: list[Any]) -> None:
    running = serve()
    try:
        getattr(running.service, method)(*args)
    except (ValueError, TypeError) as exc:
        assert type(exc) in (ValueError, TypeError), f"{method}{tuple(args)!r} raised {type(exc).__name__}"
    finally:
        running.master.close()


# ---- the in-process connection ----------------------------------------------------------------------


def test_local_connection_turns_refusals_into_master_rejected_naming_the_method(served: Served) -> None:
    conn = LocalConnection(served.service)
    calls = [
        (lambda: conn.fetch("", 1, 0), "fetch: worker must be"),
        (lambda: conn.submit(TaskSpec("bad ref", [], {})), "submit_many: bad function reference"),
        (lambda: conn.result("nope"), "result: unknown task id 'nope'"),
        (lambda: conn.release("w1", [(RUNNING, "5")]), r"release: leases\[0\]"),  # type: ignore[list-item]
        (lambda: conn.unsubscribe("sub-999"), "unsubscribe: unknown subscription"),
        (lambda: conn.subscribe(Sink(), ["nope"]), "subscribe: unknown task id"),
    ]
    for call, message in calls:
        with pytest.raises(MasterRejected, match=f"^{message}") as caught:
            call()
        assert type(caught.value.__cause__) in (ValueError, TypeError)


def test_closed_local_connection_raises_connection_failed(served: Served) -> None:
    conn = LocalConnection(served.service)
    assert conn.ping() == "pong"
    conn.close()
    with pytest.raises(ConnectionFailed, match=r"^ping: the connection is closed"):
        conn.ping()
    with pytest.raises(ConnectionFailed, match=r"^lookup: "):
        conn.lookup([DONE])
