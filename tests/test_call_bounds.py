"""What one call from a peer holding the key may cost before it is decoded: its length, its values, its inflation.

The rules in-process (text measures, batches cut by bytes, bounded decoding on the master); the refusals
on a real master and name server, whose memory is read from /proc around each refused call.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import Pyro4
import Pyro4.errors
import Pyro4.message
import Pyro4.socketutil
import pytest
import serpent

from pyrodist import Client, ConnectionFailed, MasterRejected, Settings
from pyrodist.bench import memory_mb
from pyrodist.connection import LocalConnection
from pyrodist.protocol import MAX_BATCH, OVER_LIMIT, error_info, in_messages, max_message, wire_estimate
from pyrodist.remote_patches import receive_data
from pyrodist.reporter import Reporter
from pyrodist.service import MasterService
from pyrodist.textshape import MAX_JSON_VALUES, MAX_SERPENT_TOKENS, json_values, serpent_tokens
from pyrodist.values import decode_value, encode_value
from pyrodist.wire import Outcome, ReportReply, SubmittedTask
from pyrodist.workstate import WorkerState
from tests import tasks
from tests.conftest import Cluster, InProcess, Processes, wait_until
from tests.test_security import rss_mb, start_secured

KEY = "sesame"
PAYLOAD = 2**20
"""The master's --max-payload in the real-process tests: calls of more than max_message(PAYLOAD) are refused."""

# ---- measuring a text without decoding it


def test_json_values_count_separators_and_openings_outside_strings() -> None:
    assert json_values(b'[1, 2, {"a": [3]}]') == 5
    many_in_strings = ('["' + "[1, {2}, " * MAX_JSON_VALUES + '", 3]').encode()
    assert json_values(many_in_strings) == 2  # the strings' commas and brackets are no values
    many = ("[" + "{}, " * MAX_JSON_VALUES + "{}]").encode()
    assert json_values(many) > MAX_JSON_VALUES


def test_serpent_tokens_stop_counting_past_most_and_see_through_comments() -> None:
    assert serpent_tokens("[1, 'a', (2,)]") == 12  # ... and NEWLINE, ENDMARKER
    assert serpent_tokens("[" + "1, " * 10_000 + "]", most=100) == 101
    hidden = "[1, # '\n" + "2, " * 1000 + "'x']"  # a pattern would take the comment's quote for a string
    assert serpent_tokens(hidden) > 2000
    with pytest.raises(ValueError, match="not serpent text"):
        serpent_tokens("[1, 2")


def test_an_f_string_is_refused_for_the_values_it_hides_from_the_tokenizer() -> None:
    hidden = "[f'{[" + "0, " * 100_000 + "]}']"  # one token to the tokenizer; 100,000 values to the parser
    with pytest.raises(ValueError, match="an f-string"):
        serpent_tokens(hidden)
    with pytest.raises(ValueError, match="an f-string"):
        decode_value(hidden, bounded=True)
    assert serpent_tokens("[b'f', rb'{1}', 'f', \"f'\"]") == 11  # an f inside a string, or no f prefix: fine


def test_the_master_decodes_big_values_for_plain_callers_only_when_they_hold_few_items() -> None:
    many = encode_value(list(range(MAX_SERPENT_TOKENS)))  # JSON-marked text: measured as json, decoded
    assert decode_value(many, bounded=True) == list(range(MAX_SERPENT_TOKENS))
    tuples = serpent.dumps([(i,) for i in range(MAX_SERPENT_TOKENS // 4)])[26:].decode()  # older serpent text
    with pytest.raises(ValueError, match="serpent tokens, too many to decode here"):
        decode_value(tuples, bounded=True)
    assert len(decode_value(tuples)) == MAX_SERPENT_TOKENS // 4  # a client decodes its own results in full
    frame = encode_value([(i,) for i in range(MAX_SERPENT_TOKENS)])  # a frame: its items counted as read
    with pytest.raises(ValueError, match="too many to decode here"):
        decode_value(frame, bounded=True)
    assert len(decode_value(frame)) == MAX_SERPENT_TOKENS
    crowded = " [" + "{}, " * MAX_JSON_VALUES + "{}]"  # JSON-marked, with more values than a call may hold
    with pytest.raises(ValueError, match="too many to decode here"):
        decode_value(crowded, bounded=True)


# ---- batches cut by bytes


def test_in_messages_cuts_by_size_and_count_in_order() -> None:
    sizes = [400, 400, 300, 5000, 10, 10]
    groups = list(in_messages(sizes, lambda size: size, 1000))
    assert groups == [[400, 400], [300], [5000], [10, 10]]  # an item over the budget goes alone
    many = list(in_messages(range(2 * MAX_BATCH + 1), lambda _: 0, 1))
    assert [len(g) for g in many] == [MAX_BATCH, MAX_BATCH, 1]
    assert [x for g in many for x in g] == list(range(2 * MAX_BATCH + 1))


def test_a_wire_estimate_is_at_least_what_the_text_takes_unescaped() -> None:
    for text in ["abc", "é" * 10, "\U0001f600" * 3, '"\\' * 4]:
        assert wire_estimate(text) >= len(text.encode("utf-8"))
    assert wire_estimate(None) == 0


class Recording:
    """A connection's report, recording each call's results; fails (ConnectionFailed) at call number fail_at."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def report(self, worker: str, results: list[Outcome]) -> ReportReply:
        if len(self.calls) + 1 == self.fail_at:
            self.fail_at = None
            raise ConnectionFailed("report: the master could not be reached")
        self.calls.append([o.task_id for o in results])
        return ReportReply(len(results), [], [])


def outcomes(count: int, size: int) -> list[Outcome]:
    return [Outcome(f"c.{i}", i + 1, True, result="x" * size) for i in range(count)]


def reporter(conn: Recording, budget: int) -> Reporter:
    state = WorkerState(1, None, None, 1.0, 10.0)
    return Reporter("w1", state, conn, lambda: None, budget)  # type: ignore[arg-type]


def test_a_report_is_cut_into_calls_the_master_reads() -> None:
    conn = Recording()
    pending = outcomes(10, 400)
    reporter(conn, budget=1000)._send(pending)
    assert [len(call) for call in conn.calls] == [2] * 5
    assert [t for call in conn.calls for t in call] == [f"c.{i}" for i in range(10)]
    assert pending == []


def test_results_of_calls_not_made_stay_pending_when_the_master_goes_away() -> None:
    conn = Recording(fail_at=3)
    pending = outcomes(10, 400)
    with pytest.raises(ConnectionFailed):
        reporter(conn, budget=1000)._send(pending)
    assert [o.task_id for o in pending] == [f"c.{i}" for i in range(4, 10)]  # two calls went through
    reporter(conn, budget=1000)._send(pending)
    assert sum(len(call) for call in conn.calls) == 10 and pending == []


def test_a_report_the_master_finds_too_long_is_sent_again_in_halves() -> None:
    """A worker with a larger --max-payload than its master cuts too big a report: the master says so."""

    class Smaller(Recording):
        def report(self, worker: str, results: list[Outcome]) -> ReportReply:
            if len(results) > 2:
                raise MasterRejected(f"report: a call of 9999999 bytes {OVER_LIMIT} of 5242880 bytes per call")
            return super().report(worker, results)

    conn = Smaller()
    pending = outcomes(7, 100)
    reporter(conn, budget=10**9)._send(pending)
    assert sorted(t for call in conn.calls for t in call) == sorted(f"c.{i}" for i in range(7))
    assert all(len(call) <= 2 for call in conn.calls) and pending == []


def test_an_error_record_counts_toward_a_reports_size() -> None:
    conn = Recording()
    error = error_info(ValueError("m" * 900), "t" * 900)
    failed = [Outcome(f"c.{i}", 1, False, error=error) for i in range(3)]
    reporter(conn, budget=1000)._send(failed)
    assert len(conn.calls) == 3


# ---- a real master and name server


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Processes, str]]:
    procs = Processes(tmp_path_factory.mktemp("bounded"))
    try:
        cluster = start_secured(procs, "--key", KEY, master_args=("--max-payload", str(PAYLOAD)))
        found = wait_until(lambda: re.search(r"serving at (PYRO:\S+)", procs.log(procs.procs[1])),
                           timeout=30, what="the master's address")  # fmt: skip
        yield cluster, procs, found.group(1)
    finally:
        procs.stop_all()


def keyed_proxy(uri: str, serializer: str = "json") -> Any:
    """A plain Pyro4 proxy holding the key, as a Python shell with the key would make it."""
    proxy = Pyro4.Proxy(uri)
    proxy._pyroSerializer, proxy._pyroHmacKey, proxy._pyroTimeout = serializer, KEY.encode(), 60
    return proxy


def master_memory(procs: Processes, reset_peak: bool = False) -> tuple[float, float]:
    """The master's resident memory now and at its peak (since reset_peak, if given), in MB."""
    pid = procs.procs[1].pid
    if reset_peak:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from what is resident now
    rss, peak = memory_mb(pid)
    assert rss is not None and peak is not None
    return rss, peak


@pytest.mark.parametrize("serializer", ["json", "serpent"])
def test_a_call_longer_than_the_master_reads_is_answered_and_the_connection_goes_on(
    bounded: tuple[Cluster, Processes, str], serializer: str
) -> None:
    _, procs, uri = bounded
    limit = max_message(PAYLOAD)
    before = rss_mb(procs.procs[1].pid)
    with keyed_proxy(uri, serializer) as master:
        with pytest.raises(ValueError, match=rf"a call of \d+ bytes is over this server's limit of {limit} bytes"):
            master.lookup(["x" * 60] * (2 * limit // 60))  # ids of the right shape: only the length is wrong
        assert master.ping() == "pong"  # the same connection, in step
    assert rss_mb(procs.procs[1].pid) - before < 2 * limit / 2**20 + 10  # read into nothing, not kept


def test_a_client_cuts_its_submits_and_a_worker_its_reports_to_what_the_master_reads(
    bounded: tuple[Cluster, Processes, str],
) -> None:
    cluster, _, _ = bounded
    count = 3 * max_message(PAYLOAD) // (PAYLOAD - 100)  # three calls' worth of near-limit arguments and results
    with Client(settings=Settings(ns_host="127.0.0.1", ns_port=cluster.ns_port, key=KEY)) as client:
        values = ["é" * ((PAYLOAD - 100) // 2) for _ in range(count)]  # 2 bytes a character
        assert client.gather(client.map(tasks.echo, values), timeout=120) == values


def test_a_clients_options_count_toward_its_calls_length(bounded: tuple[Cluster, Processes, str]) -> None:
    """32 exception names of 1,000 characters are 32 KB a task: 200 tasks would be a call of 6.4 MB."""
    cluster, _, _ = bounded
    with Client(settings=Settings(ns_host="127.0.0.1", ns_port=cluster.ns_port, key=KEY)) as client:
        retry_on = ["E" + "x" * 999] * 32
        futures = client.options(retry_on=retry_on).map(tasks.inc, range(200))  # a task each: retry_on is per task
        assert client.gather(futures, timeout=120) == list(range(1, 201))


def test_a_map_chunk_over_the_batch_limit_is_sent_in_several_calls(inproc: InProcess) -> None:
    client = inproc.client()
    futures = client.options().tasks(tasks.inc, [(i,) for i in range(MAX_BATCH + 500)])  # one submit of them all
    assert len(futures) == MAX_BATCH + 500
    assert client.stats()["counts"]["pending"] == MAX_BATCH + 500


class Timed(LocalConnection):
    """A connection that notes when each submit_encoded call is made."""

    def __init__(self, service: MasterService, sent: list[float]) -> None:
        super().__init__(service)
        self.sent = sent

    def submit_encoded(self, client_secret: str, tasks: Sequence[SubmittedTask]) -> int:
        self.sent.append(time.monotonic())
        return super().submit_encoded(client_secret, tasks)


def test_a_full_queue_is_waited_for_from_the_first_refusal() -> None:
    """The first refusal counts as the backoff's first try: the next call comes after a wait, not at once."""
    cluster, sent = InProcess(max_pending=2), []
    try:
        client = Client(settings=cluster.settings, connect=lambda _settings: Timed(cluster.service, sent))
        with client:
            first = client.map(tasks.inc, [1, 2])  # the queue is full now
            waiting = threading.Thread(target=client.map, args=(tasks.inc, [3]), daemon=True)
            waiting.start()
            wait_until(lambda: len(sent) >= 3, what="the refused submit and its first retry")
            assert sent[2] - sent[1] >= 0.04  # was 0: the backoff began with a second call at once
            assert first[0].cancel()  # room for the waiting one
            waiting.join(timeout=10)
            assert not waiting.is_alive()
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("serializer", "ids", "message"),
    [
        ("serpent", 2 * MAX_SERPENT_TOKENS, f"more than {MAX_SERPENT_TOKENS} serpent tokens"),
        ("json", MAX_JSON_VALUES + 100_000, f"more than {MAX_JSON_VALUES} values"),
    ],
)
def test_a_call_with_more_values_than_any_call_needs_is_refused_before_it_is_decoded(
    bounded: tuple[Cluster, Processes, str], serializer: str, ids: int, message: str
) -> None:
    _, procs, uri = bounded
    rss, _ = master_memory(procs, reset_peak=True)
    with keyed_proxy(uri, serializer) as master:
        with pytest.raises(ValueError, match=message):
            master.lookup(["x"] * ids)  # 4 bytes a value, well under the length limit
        assert master.ping() == "pong"
    _, peak = master_memory(procs)
    # Decoded, the serpent call took the master 500 MB; json's two million values 70 MB.
    assert peak - rss < 40, f"the refused call raised the master's peak memory by {peak - rss:.0f} MB"


def test_a_compressed_call_is_inflated_no_further_than_the_bound(
    bounded: tuple[Cluster, Processes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, procs, uri = bounded
    monkeypatch.setattr(Pyro4.config, "COMPRESSION", True)
    rss, _ = master_memory(procs, reset_peak=True)
    with keyed_proxy(uri) as master:
        with pytest.raises(ValueError, match="inflate to more than"):
            master.lookup(["x" * 50 * 2**20])  # 50 MB of one letter: 50 KB compressed
        monkeypatch.setattr(Pyro4.config, "COMPRESSION", False)
        assert master.ping() == "pong"
    _, peak = master_memory(procs)
    assert peak - rss < 40, f"the refused call raised the master's peak memory by {peak - rss:.0f} MB"


def test_the_name_server_reads_no_long_messages(bounded: tuple[Cluster, Processes, str]) -> None:
    cluster, _, _ = bounded
    with keyed_proxy(f"PYRO:Pyro.NameServer@127.0.0.1:{cluster.ns_port}", "serpent") as ns:
        with pytest.raises(ValueError, match="over this server's limit of 1048576 bytes"):
            ns.lookup("x" * 2 * 2**20)
        assert "pyrodist.master" in ns.list()


def test_a_compressed_first_message_is_refused_before_it_is_inflated(bounded: tuple[Cluster, Processes, str]) -> None:
    """Pyro4 inflated a connect message whole, before any bound: 32 MB from 32 KB on the wire."""
    _, procs, uri = bounded
    port = int(uri.rsplit(":", 1)[1])
    bomb = zlib.compress(json.dumps({"handshake": "x" * 32 * 2**20, "object": "pyrodist.master"}).encode(), 9)
    flags = Pyro4.message.FLAGS_COMPRESSED
    connect = Pyro4.message.Message(Pyro4.message.MSG_CONNECT, bomb, 2, flags, 1, hmac_key=KEY.encode())
    rss, _ = master_memory(procs, reset_peak=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connect.to_bytes())
        reply = Pyro4.message.Message.recv(Pyro4.socketutil.SocketConnection(sock), hmac_key=KEY.encode())
    assert reply.type == Pyro4.message.MSG_CONNECTFAIL
    assert b"compressed first message" in reply.data
    _, peak = master_memory(procs)
    assert peak - rss < 20, f"the refused handshake raised the master's peak memory by {peak - rss:.0f} MB"


def test_a_long_message_reserves_memory_only_as_its_bytes_arrive() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver:
        sender.sendall(b"x" * 10)
        sender.shutdown(socket.SHUT_WR)  # a peer that announced 32 MiB, sent 10 bytes and stopped
        tracemalloc.start()
        try:
            with pytest.raises(Pyro4.errors.ConnectionClosedError) as caught:
                receive_data(receiver, 32 * 1024 * 1024)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert caught.value.partialData == b"x" * 10  # type: ignore[attr-defined]
    assert peak < 4 * 1024 * 1024, peak  # not the 32 MiB it announced


def test_a_long_message_is_read_whole_across_many_receives() -> None:
    data = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 7)
    sender, receiver = socket.socketpair()
    with sender, receiver:
        writer = threading.Thread(target=sender.sendall, args=(data,))
        writer.start()
        assert receive_data(receiver, len(data)) == data
        writer.join(timeout=30)
