"""The lean call path (`remote_requests`) answers every kind of Pyro4 call as Pyro4 itself does.

A real daemon on 127.0.0.1 in this process; proxies call it the ordinary way (the lean path) and every
other way Pyro4 offers (ping, oneway, batch, attributes, streams), with and without a key, compressed or not.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import Pyro4
import Pyro4.errors
import Pyro4.message
import pytest

from pyrodist.remote import configure
from pyrodist.remote_requests import handle_request, invoke, message_bytes, message_parts
from pyrodist.remote_serializer import PACKED
from tests.conftest import wait_until


@Pyro4.expose
class Echo:
    """What the proxies call."""

    def __init__(self) -> None:
        self.heard: list[Any] = []
        self.heard_event = threading.Event()
        self._size = 3

    def echo(self, value: Any) -> Any:
        return value

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def count(self, n: int) -> Iterator[int]:
        yield from range(n)

    @Pyro4.oneway
    def note(self, value: Any) -> None:
        self.heard.append(value)
        self.heard_event.set()

    @property
    def size(self) -> int:
        return self._size

    def _private(self) -> str:
        return "never"


@pytest.fixture(params=[None, b"the cluster key"], ids=["no key", "key"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, Echo, bytes | None, Any]]:
    """A daemon serving an Echo on a free loopback port, with or without a key: (uri, the object, the key, it)."""
    configure()
    key = request.param
    daemon = Pyro4.Daemon(host="127.0.0.1", port=0)
    daemon._pyroHmacKey = key
    echo = Echo()
    uri = str(daemon.register(echo, "echo"))
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    try:
        yield uri, echo, key, daemon
    finally:
        daemon.shutdown()
        thread.join(timeout=10)
        daemon.close()


def proxy_for(uri: str, key: bytes | None, serializer: str = PACKED) -> Any:
    proxy = Pyro4.Proxy(uri)
    proxy._pyroHmacKey = key
    proxy._pyroSerializer = serializer
    proxy._pyroBind()
    return proxy


def test_the_daemon_is_patched() -> None:
    configure()
    assert Pyro4.core.Daemon.handleRequest is handle_request


@pytest.mark.parametrize("serializer", [PACKED, "json", "serpent"])
def test_ordinary_calls_through_the_lean_path_and_pyro4s_own_agree(served: Any, serializer: str) -> None:
    uri, _, key, _ = served
    with proxy_for(uri, key, serializer) as proxy:
        values = [None, 1, "text", [1, 2], {"a": [1.5, None]}]
        for value in values:
            assert invoke(proxy, "echo", (value,)) == value
            assert proxy.echo(value) == value  # Pyro4's own proxy code, against the lean daemon


def test_a_remote_error_keeps_its_type_message_and_remote_traceback(served: Any) -> None:
    uri, _, key, _ = served
    with proxy_for(uri, key) as proxy:
        with pytest.raises(ValueError, match="no good") as raised:
            invoke(proxy, "fail", ("no good",))
        assert "ValueError: no good" in "".join(raised.value._pyroTraceback)


def test_private_and_unknown_methods_are_refused(served: Any) -> None:
    uri, _, key, _ = served
    with proxy_for(uri, key) as proxy:
        with pytest.raises(AttributeError):
            invoke(proxy, "_private", ())
        proxy._pyroMethods.add("nothing_like_it")  # the client thinks it exists: the daemon says no
        with pytest.raises(AttributeError, match="nothing_like_it"):
            invoke(proxy, "nothing_like_it", ())
        assert invoke(proxy, "echo", ("still fine",)) == "still fine"


def test_a_compressed_call_and_its_compressed_answer(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, _, key, _ = served
    monkeypatch.setattr(Pyro4.config, "COMPRESSION", True)
    with proxy_for(uri, key) as proxy:
        text = "compress me " * 10_000
        assert invoke(proxy, "echo", (text,)) == text


def test_pings_oneway_batches_attributes_and_streams_still_work(served: Any) -> None:
    uri, echo, key, _ = served
    with proxy_for(uri, key) as proxy:
        ping = Pyro4.message.Message(Pyro4.message.MSG_PING, b"ping", 42, 0, 0, hmac_key=key)
        proxy._pyroConnection.send(ping.to_bytes())  # (Pyro4's Message.ping reads the answer without the key)
        pong = Pyro4.message.Message.recv(proxy._pyroConnection, [Pyro4.message.MSG_PING], hmac_key=key)
        assert pong.data == b"pong"
        invoke(proxy, "note", ("heard",))  # oneway: goes through Pyro4's own proxy code
        assert echo.heard_event.wait(10) and echo.heard == ["heard"]
        assert proxy.size == 3
        batch = Pyro4.batch(proxy)
        batch.echo(1)
        batch.echo("two")
        assert list(batch()) == [1, "two"]
        assert list(proxy.count(4)) == [0, 1, 2, 3]
        assert invoke(proxy, "echo", ("after all that",)) == "after all that"


def test_a_call_with_another_key_is_refused(served: Any) -> None:
    uri, _, _, _ = served
    proxy = Pyro4.Proxy(uri)
    proxy._pyroHmacKey = b"another key"  # the daemon has a key of its own, or none
    proxy._pyroSerializer = PACKED
    with proxy, pytest.raises(Pyro4.errors.CommunicationError):
        proxy.echo(1)


def test_a_message_whose_checksum_is_wrong_is_refused_and_the_daemon_goes_on(served: Any) -> None:
    uri, _, key, _ = served
    host, port = uri.split("@")[1].rsplit(":", 1)
    with proxy_for(uri, key) as proxy:
        sock = socket.create_connection((host, int(port)), timeout=10)
        with contextlib.closing(sock):
            # a connect message is answered first; then a header whose checksum is off
            header = Pyro4.message.Message(Pyro4.message.MSG_INVOKE, b"{}", 2, 0, 1, hmac_key=key).to_bytes()
            broken = header[:22] + bytes([header[22] ^ 0xFF]) + header[23:]
            sock.sendall(broken)
            with contextlib.suppress(OSError):
                sock.recv(1024)
        assert invoke(proxy, "echo", ("alive",)) == "alive"


def test_a_stream_opened_by_a_replayed_call_is_let_go_when_its_client_leaves(served: Any) -> None:
    """Pyro4 finds a client's streams by its connection object: a replayed call must hand over that very one."""
    uri, _, key, daemon = served
    proxy = proxy_for(uri, key)
    serializer = Pyro4.util.get_serializer(PACKED)
    data, _ = serializer.serializeCall("echo", "count", (3,), {})
    flags = Pyro4.message.FLAGS_EXCEPTION  # not an ordinary call: replayed to Pyro4's own handleRequest
    message = Pyro4.message.Message(Pyro4.message.MSG_INVOKE, data, serializer.serializer_id, flags, 1, hmac_key=key)
    proxy._pyroConnection.send(message.to_bytes())
    reply = Pyro4.message.Message.recv(proxy._pyroConnection, [Pyro4.message.MSG_RESULT], hmac_key=key)
    assert reply.flags & Pyro4.message.FLAGS_ITEMSTREAMRESULT and len(daemon.streaming_responses) == 1
    proxy._pyroRelease()
    # Pyro4 keeps a stream ITER_STREAM_LINGER seconds for a client that left, its owner cleared: then it expires.
    wait_until(lambda: all(info[0] is None for info in daemon.streaming_responses.values()), timeout=10,
               what="the stream let go of its client")  # fmt: skip


def test_a_message_is_refused_as_pyro4_refuses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert message_bytes(Pyro4.message.MSG_RESULT, b"{}", 80, 0, 7, {"CORR": b"x" * 16}, b"k") == (
        Pyro4.message.Message(Pyro4.message.MSG_RESULT, b"{}", 80, 0, 7, {"CORR": b"x" * 16}, b"k").to_bytes()
    )
    with pytest.raises(Pyro4.errors.ProtocolError, match="length 4"):
        message_bytes(Pyro4.message.MSG_RESULT, b"{}", 80, 0, 7, {"LONGER": b""}, None)
    monkeypatch.setattr(Pyro4.config, "MAX_MESSAGE_SIZE", 100)
    with pytest.raises(Pyro4.errors.MessageTooLargeError):
        message_bytes(Pyro4.message.MSG_RESULT, b"x" * 101, 80, 0, 7, {}, None)


def test_a_call_too_long_to_send_keeps_the_proxy(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, _, key, _ = served
    with proxy_for(uri, key) as proxy:
        monkeypatch.setattr(Pyro4.config, "MAX_MESSAGE_SIZE", 1000)
        with pytest.raises(Pyro4.errors.MessageTooLargeError):
            invoke(proxy, "echo", ("x" * 2000,))
        assert proxy._pyroConnection is not None  # refused before sending, as Pyro4 does: the connection is fine
        assert invoke(proxy, "echo", ("short",)) == "short"


def test_big_and_many_bytes_values_travel_in_parts_both_ways(served: Any) -> None:
    uri, _, key, _ = served
    with proxy_for(uri, key) as proxy:
        big = bytes(range(256)) * 12_000  # about 3 MB: its own part, not copied into the message
        assert invoke(proxy, "echo", (big,)) == big
        many = [bytes([i % 256]) * (i % 50) for i in range(2000)]  # more parts than one sendmsg takes
        assert invoke(proxy, "echo", (many,)) == many


def test_a_message_in_parts_is_the_message_pyro4_would_write() -> None:
    parts = [b"J[", memoryview(b"abc"), b"]"]
    joined = b"".join(bytes(p) for p in parts)
    for key in (None, b"k"):
        expected = Pyro4.message.Message(Pyro4.message.MSG_RESULT, joined, 80, 0, 9, {"CORR": b"c" * 16}, key)
        assert b"".join(message_parts(Pyro4.message.MSG_RESULT, parts, 80, 0, 9, {"CORR": b"c" * 16}, key)) == (
            expected.to_bytes()
        )
