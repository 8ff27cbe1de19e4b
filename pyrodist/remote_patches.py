"""Patches to Pyro4, applied once per process, only to the Pyro4 release they were written for.

- Undecodable call arguments get one clear `ValueError` instead of Pyro4's mix of errors (some of which
  drop the connection).
- json messages that cannot hold a serialized class skip Pyro4's class walk (about a tenth of the
  master's own work per task), and a request without a correlation id gets one without building a
  `uuid.UUID` (a few percent of the master's work per request).
- A new connection has HANDSHAKE_TIMEOUT seconds for its TLS handshake and its first Pyro4 message, in
  its own pool thread: Pyro4 did the TLS handshake in the accept loop with no timeout, so one silent TCP
  connection stopped a daemon from accepting anyone else (see `defer_tls_handshakes`). That first
  message, read before the peer has proven the key, may be at most HANDSHAKE_MAX_BYTES long: Pyro4 read
  any size whole before checking the key. One host may hold at most a quarter of the threads with
  connections that have not proven the key yet, and all hosts together half: silent sockets from one
  place no longer take every thread. A connection refused for want of threads is closed at once, not
  answered from the accept loop.
- Once the key is proven, what a call may cost before it is decoded is bounded too (`remote_limits`).
- A long message is read up to a megabyte at a time and joined once (`receive_data`): Pyro4 read it 60,000
  bytes at a time, a system call per 60 KB.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import Pyro4
import Pyro4.core
import Pyro4.errors
import Pyro4.message
import Pyro4.socketutil
import Pyro4.util

from .remote_limits import measure_messages, patch_daemons, peer_host
from .remote_requests import handle_request

log = logging.getLogger(__name__)

PATCHED_VERSION = "4.82"
"""The Pyro4 release whose serializer internals these patches replace."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has for its TLS handshake and its Pyro4 connect message."""
HANDSHAKE_MAX_BYTES = 8 * 1024
"""Longest first message (header excepted) of a peer that has not proven the key yet (a real one: ~200 bytes)."""
_FLAGS = struct.Struct("!8xH")
"""The flags of a Pyro4 4.82 message header (bytes 8 and 9)."""


class Unproven:
    """Connections still in their handshake, per peer host, within a share of the daemon's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_host: collections.Counter[str] = collections.Counter()

    def enter(self, host: str) -> bool:
        """Count one more for host, unless host (or everyone) holds too many threads already."""
        threads = max(4, Pyro4.config.THREADPOOL_SIZE)
        with self._lock:
            if self._by_host[host] >= threads // 4 or self._by_host.total() >= threads // 2:
                return False
            self._by_host[host] += 1
            return True

    def leave(self, host: str) -> None:
        """One of host's handshakes ended."""
        with self._lock:
            self._by_host[host] -= 1
            if self._by_host[host] <= 0:
                del self._by_host[host]


_unproven = Unproven()
REFUSALS_LOGGED = (10, 10.0)
"""At most this many log lines about refused connections per this many seconds: a flood must not flood the log."""
_refusals = {"window": 0.0, "lines": 0, "unlogged": 0}
_refusals_lock = threading.Lock()


def log_refused(host: str, why: str) -> None:
    """Log a refused connection, within REFUSALS_LOGGED (the next line says how many went unlogged)."""
    lines, seconds = REFUSALS_LOGGED
    with _refusals_lock:
        now = time.monotonic()
        if now - _refusals["window"] >= seconds:
            _refusals["window"], _refusals["lines"] = now, 0
        if _refusals["lines"] >= lines:
            _refusals["unlogged"] += 1
            return
        _refusals["lines"] += 1
        unlogged, _refusals["unlogged"] = _refusals["unlogged"], 0
    more = f" ({unlogged} more were refused without a line)" if unlogged else ""
    log.warning("refused a connection from %s: %s%s", host, why, more)


_applied = threading.Lock()
_done = False


def apply_patches() -> None:
    """Apply the patches once; on another Pyro4 release, say so and leave Pyro4 as it is."""
    global _done
    with _applied:
        if _done:
            return
        _done = True
        if Pyro4.__version__ != PATCHED_VERSION:
            log.warning(
                "Pyro4 %s is not %s: its serializers are left unpatched (slower json decoding, and undecodable "
                "call arguments raise Pyro4's own errors)", Pyro4.__version__, PATCHED_VERSION,
            )  # fmt: skip
            return
        _fast_json_decoding()
        Pyro4.core.Daemon.handleRequest = handle_request
        _cheap_request_ids()
        Pyro4.socketutil.receiveData = receive_data
        _harden_call_decoding()
        _bounded_handshakes()
        patch_daemons()


_pyro_receive = Pyro4.socketutil.receiveData
READ_AT_MOST = 1024 * 1024
"""Bytes asked of the socket at a time for a long message (what arrives is kept as it comes, then joined once)."""
READ_WHOLE_BELOW = 64 * 1024
"""Messages up to this long are read as Pyro4 reads them (one system call)."""


def receive_data(sock: Any, size: int) -> bytes:
    """size bytes from sock, as Pyro4's receiveData gives them (and raising its errors), a long one joined once.

    Memory follows the bytes that arrived, never what a header announced; each piece is copied once, where
    growing one buffer copied and zeroed it again at every step.
    """
    if size <= READ_WHOLE_BELOW:
        return _pyro_receive(sock, size)  # type: ignore[no-any-return]
    parts: list[bytes] = []
    got = 0
    try:
        while got < size:
            part = sock.recv(min(size - got, READ_AT_MOST))
            if not part:
                error = Pyro4.errors.ConnectionClosedError("receiving: not enough data")
                error.partialData = b"".join(parts)
                raise error
            parts.append(part)
            got += len(part)
    except TimeoutError:  # socket.timeout
        raise Pyro4.errors.TimeoutError("receiving: timeout") from None
    except OSError as exc:
        raise Pyro4.errors.ConnectionClosedError(f"receiving: connection lost: {exc}") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def defer_tls_handshakes(daemon: Any) -> None:
    """Let daemon's accept loop hand TLS connections to the pool before their handshake (done there, bounded)."""
    sock = getattr(daemon.transportServer, "sock", None)
    if isinstance(sock, ssl.SSLSocket):
        sock.do_handshake_on_connect = False  # type: ignore[attr-defined]  # SSLSocket.accept() passes it on


def _bounded_handshakes() -> None:
    """Give each new connection's TLS handshake and Pyro4 connect message a timeout (once per process)."""
    handshake = Pyro4.core.Daemon._handshake
    if getattr(handshake, "_pyrodist_bounded", False):
        return

    def bounded(self: Any, conn: Any, denied_reason: str | None = None) -> bool:
        sock = conn.sock
        host = peer_host(sock)
        if denied_reason is not None or not _unproven.enter(host):  # no thread for it: hang up, wait for nothing
            log_refused(host, denied_reason or "too many connections from there have not shown the key yet")
            return False
        before = sock.gettimeout()
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            if isinstance(sock, ssl.SSLSocket) and not getattr(sock, "do_handshake_on_connect", True):
                sock.do_handshake()
            accepted = bool(handshake(self, _FirstMessage(conn), denied_reason))
            if accepted:
                measure_messages(self, conn)
            return accepted
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket timeouts are OSErrors
            log.info("connection from %s refused before its first message: %s", peer_host(sock), exc)
            return False
        finally:
            _unproven.leave(host)
            with contextlib.suppress(OSError):
                sock.settimeout(before)

    bounded._pyrodist_bounded = True  # type: ignore[attr-defined]
    Pyro4.core.Daemon._handshake = bounded


class _FirstMessage:
    """A new connection whose reads stop at HANDSHAKE_MAX_BYTES, and whose first message is not compressed.

    Pyro4 inflates a compressed connect message whole, with no bound (a few KB can inflate to gigabytes):
    a real one is never compressed (it is smaller than what compression would save).
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._header_seen = False

    def recv(self, size: int) -> Any:
        """Read size bytes, unless that is more than a first message may be."""
        if size > HANDSHAKE_MAX_BYTES:
            raise Pyro4.errors.MessageTooLargeError(
                f"a first message of {size} bytes; at most {HANDSHAKE_MAX_BYTES} before the key is proven"
            )
        data = self._conn.recv(size)
        if not self._header_seen:
            self._header_seen = True
            if _FLAGS.unpack_from(data)[0] & Pyro4.message.FLAGS_COMPRESSED:
                raise Pyro4.errors.ProtocolError("a compressed first message: connect messages are sent as they are")
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _harden_call_decoding() -> None:
    """Make Pyro4 answer undecodable call arguments with a ValueError (once per process).

    Pyro4 decodes a call's arguments before any of our code runs; a dict with a "__class__" key it does not
    know, or arguments nested past the recursion limit, fail there with SerializeError, SecurityError (which
    also drops the connection), KeyError or RecursionError, and serpent text that Python cannot parse (an
    unclosed bracket, an int of over 4,300 digits, a bad escape) with SyntaxError. A caller should get one
    clear ValueError.
    """
    for serializer in (Pyro4.util.SerpentSerializer, Pyro4.util.JsonSerializer):
        if getattr(serializer.loadsCall, "_pyrodist_hardened", False):
            continue
        decode = serializer.loadsCall

        def loads_call(self: Any, data: Any, decode: Callable[..., Any] = decode) -> Any:
            try:
                return decode(self, data)
            except RecursionError:
                raise ValueError("the call's arguments are nested too deeply to decode") from None
            except (
                Pyro4.errors.SerializeError,
                Pyro4.errors.SecurityError,
                AttributeError,
                KeyError,
                TypeError,
                SyntaxError,
            ) as exc:
                raise ValueError(f"the call's arguments cannot be decoded: {type(exc).__name__}: {exc}") from None

        loads_call._pyrodist_hardened = True  # type: ignore[attr-defined]
        serializer.loadsCall = loads_call


# Pyro4's json serializer walks every decoded message in Python looking for dicts with a "__class__" key
# (its encoding of exceptions and a few classes): about a tenth of the master's own work per task. Such a
# key can only be in a message whose text holds '"__class__"' or an escape that could spell it ("\\u"),
# so other messages skip the walk; the result is the same.
def _needs_classes(text: str) -> bool:
    return '"__class__"' in text or "\\u" in text


def _json_loads(self: Any, data: Any) -> Any:
    text = self._convertToBytes(data).decode("utf-8")
    value = json.loads(text)
    return self.recreate_classes(value) if _needs_classes(text) else value


def _json_loads_call(self: Any, data: Any) -> Any:
    text = self._convertToBytes(data).decode("utf-8")
    call = json.loads(text)
    params, kwargs = call["params"], call["kwargs"]
    if _needs_classes(text):
        params, kwargs = self.recreate_classes(params), self.recreate_classes(kwargs)
    return call["object"], call["method"], params, kwargs


def _fast_json_decoding() -> None:
    """Decode json messages without Pyro4's class walk where no class can be inside (once per process)."""
    if Pyro4.util.JsonSerializer.loads is not _json_loads:
        Pyro4.util.JsonSerializer.loads = _json_loads
        Pyro4.util.JsonSerializer.loadsCall = _json_loads_call  # hardened next, like Pyro4's own


class _RandomId:
    """What Pyro4 uses of a `uuid.uuid4()`: 16 random bytes, as bytes, hex or UUID text, drawn when first read.

    Pyro4 makes one per request for a correlation id that nothing reads: drawn lazily, it costs no system call.
    """

    __slots__ = ("_bytes",)

    @property
    def bytes(self) -> bytes:
        """The 16 random bytes."""
        try:
            return self._bytes
        except AttributeError:
            self._bytes: bytes = os.urandom(16)
            return self._bytes

    @property
    def hex(self) -> str:
        """The bytes as 32 hex digits."""
        return self.bytes.hex()

    def __str__(self) -> str:
        return str(uuid.UUID(bytes=self.bytes))


class _PyroUuid:
    """The `uuid` module as Pyro4's core sees it: uuid4() without building a UUID (per request)."""

    UUID = uuid.UUID
    uuid4 = _RandomId


def _cheap_request_ids() -> None:
    """Give Pyro4's core a uuid4 that costs no system call until read and no UUID object (once per process)."""
    Pyro4.core.uuid = _PyroUuid
