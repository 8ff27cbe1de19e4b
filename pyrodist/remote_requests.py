"""A Pyro4 4.82 daemon's ordinary call, handled in one short function (applied by `remote_patches`).

Pyro4's `Daemon.handleRequest` builds two `Message` objects, a correlation id, a peer address lookup and an
iterator test for every call; at a few calls per task that was a large share of the master's work. Here an
ordinary call (an invocation, maybe compressed, to a registered object, with the daemon's serializer and key)
is read, checked and answered with the same bytes and the same checks as Pyro4's, leaner. Anything else (a
ping, a oneway or batched call, a bad header, a wrong key) is replayed to Pyro4's own `handleRequest`, which
reads the same bytes and answers as it always did.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import ssl
import struct
import uuid
from typing import Any

import Pyro4.core
import Pyro4.errors
import Pyro4.message
import Pyro4.util

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!4sHHHHiHHHH")
_ANNOTATION = struct.Struct("!4sH")
_VERSION: int = Pyro4.constants.PROTOCOL_VERSION
_MAGIC: int = Pyro4.message.Message.checksum_magic
_INVOKE, _RESULT = Pyro4.message.MSG_INVOKE, Pyro4.message.MSG_RESULT
_COMPRESSED, _EXCEPTION = Pyro4.message.FLAGS_COMPRESSED, Pyro4.message.FLAGS_EXCEPTION
_PLAIN_RESULTS = frozenset({dict, list, tuple, str, bytes, int, float, bool, type(None)})
"""Result types that are never a stream (Pyro4 tests every result for being an iterator)."""
_MOST_PARTS = 512
"""Parts given to one sendmsg (below the kernel's IOV_MAX)."""
JOIN_BELOW = 64 * 1024
"""A message's data shorter than this is joined to its header: one buffer, one system call."""
Part = bytes | memoryview
_context = Pyro4.core.current_context
_pyro_handle_request = Pyro4.core.Daemon.handleRequest


def _replay(daemon: Any, conn: Any, data: bytes) -> None:
    """Pyro4's own handleRequest, its first reads served from data (bytes already read from conn).

    The connection itself is handed over, its recv shadowed meanwhile: Pyro4 keys streams and instances
    by the connection object, which must be the one it sees again when the client leaves.
    """
    read = type(conn).recv

    def replaying(size: int) -> Any:
        nonlocal data
        if not data:
            return read(conn, size)
        part, data = data[:size], data[size:]
        return part if len(part) == size else part + read(conn, size - len(part))

    conn.recv = replaying
    try:
        _pyro_handle_request(daemon, conn)
    finally:
        del conn.recv


def _mac(key: bytes, data: bytes, annotations: dict[str, bytes]) -> bytes:
    """Pyro4's message HMAC: over the data, then the other annotations' values in key order."""
    mac = hmac.new(key, data, digestmod=hashlib.sha1)
    for name, value in sorted(annotations.items()):
        if name != "HMAC":
            mac.update(value)
    return mac.digest()


def _annotations(data: bytes) -> dict[str, bytes] | None:
    """The annotation chunks of a message, or None when they are not well formed."""
    found, i = {}, 0
    while i < len(data):
        if i + 6 > len(data):
            return None
        name, length = _ANNOTATION.unpack_from(data, i)
        if not name.isascii():
            return None
        found[name.decode("ascii")] = data[i + 6 : i + 6 + length]
        i += 6 + length
    return found if i == len(data) else None


def message_bytes(
    kind: int, data: bytes, serializer_id: int, flags: int, seq: int, annotations: dict[str, bytes], key: bytes | None
) -> bytes:
    """A whole Pyro4 message, as `Message(...).to_bytes()` makes it (refusing what it refuses)."""
    return b"".join(message_parts(kind, [data], serializer_id, flags, seq, annotations, key))


def message_parts(
    kind: int,
    data: list[Part],
    serializer_id: int,
    flags: int,
    seq: int,
    annotations: dict[str, bytes],
    key: bytes | None,
) -> list[Part]:
    """A Pyro4 message whose data is these parts one after the other: its header and annotations, then the parts."""
    if any(len(name) != 4 for name in annotations):
        raise Pyro4.errors.ProtocolError("annotation key must be of length 4")
    length = sum(len(part) if isinstance(part, bytes) else part.nbytes for part in data)
    if key:
        mac = hmac.new(key, digestmod=hashlib.sha1)
        for part in data:
            mac.update(part)
        for name, value in sorted(annotations.items()):
            if name != "HMAC":
                mac.update(value)
        annotations = {**annotations, "HMAC": mac.digest()}
    chunks = b"".join(_ANNOTATION.pack(name.encode("ascii"), len(value)) + value for name, value in annotations.items())
    size = len(chunks)
    if 0 < Pyro4.config.MAX_MESSAGE_SIZE < length + size:
        raise Pyro4.errors.MessageTooLargeError(
            f"max message size exceeded ({length + size} where max={Pyro4.config.MAX_MESSAGE_SIZE})"
        )
    checksum = (kind + _VERSION + length + size + serializer_id + flags + seq + _MAGIC) & 0xFFFF
    header = _HEADER.pack(b"PYRO", _VERSION, kind, flags, seq, length, serializer_id, size, 0, checksum)
    if len(data) == 1 and isinstance(data[0], bytes) and len(data[0]) < JOIN_BELOW:
        return [header + chunks + data[0]]  # the usual small message: one buffer, one system call
    return [header + chunks, *data]


def _serialized(serializer: Any, value: Any, call: tuple[str, str] | None = None) -> tuple[list[Part], bool]:
    """value (or, with call (object id, method), a call with value as its arguments) serialized: (parts, compressed).

    pyrodist's own serializer gives parts (big bytes values apart, not copied into one message); others one."""
    if not Pyro4.config.COMPRESSION and hasattr(serializer, "dumps_parts"):
        if call is None:
            return serializer.dumps_parts(value), False
        return serializer.dumps_call_parts(call[0], call[1], value, {}), False
    if call is None:
        data, compressed = serializer.serializeData(value, compress=Pyro4.config.COMPRESSION)
    else:
        data, compressed = serializer.serializeCall(call[0], call[1], value, {}, compress=Pyro4.config.COMPRESSION)
    return [data], compressed


def send_parts(conn: Any, parts: list[Part]) -> None:
    """Send a message's parts on conn, as Pyro4's `conn.send` would send them joined (and raising its errors).

    Parts are gathered by the kernel (`sendmsg`) on a plain blocking socket: a big value is not copied into a
    message first. On a TLS socket or one with a timeout, they are joined and sent by Pyro4."""
    sock = conn.sock
    if len(parts) == 1 or sock.gettimeout() is not None or isinstance(sock, ssl.SSLSocket):
        conn.send(parts[0] if len(parts) == 1 else b"".join(parts))
        return
    views = [memoryview(part).cast("B") for part in parts]
    first = 0
    try:
        while first < len(views):
            sent = sock.sendmsg(views[first : first + _MOST_PARTS])
            while sent and sent >= views[first].nbytes:
                sent -= views[first].nbytes
                first += 1
            if sent:
                views[first] = views[first][sent:]
    except TimeoutError:
        raise Pyro4.errors.TimeoutError("sending: timeout") from None
    except OSError as exc:
        raise Pyro4.errors.ConnectionClosedError(f"sending: connection lost: {exc}") from None


def handle_request(daemon: Any, conn: Any) -> None:
    """Pyro4's `Daemon.handleRequest` for an ordinary call; anything else replayed to Pyro4's own."""
    header = conn.recv(_HEADER.size)
    tag, version, kind, flags, seq, size, serializer_id, annotations_size, _, checksum = _HEADER.unpack(header)
    if (
        tag != b"PYRO"
        or version != _VERSION
        or checksum != (kind + version + size + annotations_size + flags + serializer_id + seq + _MAGIC) & 0xFFFF
        or kind != _INVOKE
        or flags & ~_COMPRESSED
        or size < 0
        or 0 < Pyro4.config.MAX_MESSAGE_SIZE < size + annotations_size
        or serializer_id not in daemon._Daemon__serializer_ids
        or Pyro4.config.LOGWIRE
    ):
        _replay(daemon, conn, header)
        return
    chunks = conn.recv(annotations_size) if annotations_size else b""
    data = conn.recv(size) if size else b""
    key = daemon._pyroHmacKey
    annotations = _annotations(chunks) if chunks else {}
    if (
        annotations is None
        or ("HMAC" in annotations) != bool(key)
        or (key and not hmac.compare_digest(annotations["HMAC"], _mac(key, data, annotations)))
    ):
        _replay(daemon, conn, header + chunks + data)
        return
    is_callback = False
    try:
        correlation = annotations.get("CORR")  # as Pyro4: one that is not 16 bytes is answered with a ValueError
        _context.correlation_id = None if correlation is None else uuid.UUID(bytes=correlation)
        serializer = Pyro4.util.get_serializer_by_id(serializer_id)
        object_id, method_name, args, kwargs = serializer.deserializeCall(data, compressed=flags & _COMPRESSED)
        _context.client = conn
        _context.client_sock_addr = _peer(conn)
        _context.seq, _context.annotations, _context.msg_flags = seq, annotations, flags
        _context.serializer_id = serializer_id
        obj = daemon.objectsById.get(object_id)
        if obj is None:
            raise Pyro4.errors.DaemonError("unknown object")
        if inspect.isclass(obj):
            obj = daemon._getInstance(obj, conn)
        if method_name == "__getattr__":
            result = Pyro4.util.get_exposed_property_value(obj, args[0], only_exposed=Pyro4.config.REQUIRE_EXPOSE)
        elif method_name == "__setattr__":
            result = Pyro4.util.set_exposed_property_value(
                obj, args[0], args[1], only_exposed=Pyro4.config.REQUIRE_EXPOSE
            )
        else:
            method = Pyro4.util.getAttribute(obj, method_name)
            is_callback = getattr(method, "_pyroCallback", False)
            result = method(*args, **kwargs)
            if type(result) not in _PLAIN_RESULTS:
                is_stream, result = daemon._streamResponse(result, conn)
                if is_stream:
                    error = Pyro4.errors.ProtocolError("result of call is an iterator")
                    streamed = {"STRM": result.encode()} if result else {}
                    daemon._sendExceptionResponse(
                        conn, seq, serializer_id, error, None, annotations=streamed,
                        flags=Pyro4.message.FLAGS_ITEMSTREAMRESULT,
                    )  # fmt: skip
                    return
        payload, compressed = _serialized(serializer, result)
        reply = dict(_context.response_annotations)
        if correlation is not None:
            reply["CORR"] = correlation
        reply.update(daemon.annotations())
        _context.response_annotations = {}
        send_parts(
            conn, message_parts(_RESULT, payload, serializer_id, _COMPRESSED if compressed else 0, seq, reply, key)
        )
    except Exception as exc:
        log.debug("exception while handling a call: %r", exc)
        answered = isinstance(exc, Pyro4.errors.SerializeError) or not isinstance(exc, Pyro4.errors.CommunicationError)
        if answered and not isinstance(exc, Pyro4.errors.ConnectionClosedError):
            lines = Pyro4.util.formatTraceback(detailed=Pyro4.config.DETAILED_TRACEBACK)
            daemon._sendExceptionResponse(conn, seq, serializer_id, exc, lines)
        if is_callback or isinstance(exc, Pyro4.errors.CommunicationError | Pyro4.errors.SecurityError):
            raise


def _peer(conn: Any) -> Any:
    """The peer address of conn, looked up once per connection (Pyro4 asked the socket on every call)."""
    try:
        return conn._pyrodist_peer
    except AttributeError:
        try:
            peer = conn.sock.getpeername()
        except OSError:
            peer = None
        conn._pyrodist_peer = peer
        return peer


def invoke(proxy: Any, method_name: str, args: tuple[Any, ...]) -> Any:
    """`proxy.method_name(*args)`, sent and read as Pyro4's `_pyroInvoke` does, without its per-call objects.

    An ordinary call of a known method on a connected proxy; anything else (no connection yet, oneway, async,
    attributes, retries, raw replies, wire logging) goes through Pyro4's own `__getattr__`.
    """
    if (
        proxy._pyroConnection is None
        or method_name not in proxy._pyroMethods
        or method_name in proxy._pyroOneway
        or proxy._pyroMaxRetries
        or proxy._pyroRawWireResponse
        or proxy._Proxy__async
        or Pyro4.config.LOGWIRE
        or (args and isinstance(args[0], Pyro4.core.SerializedBlob))
    ):
        return getattr(proxy, method_name)(*args)
    with proxy._Proxy__pyroConnLock:
        conn = proxy._pyroConnection
        if conn is None:  # released by another thread meanwhile
            return getattr(proxy, method_name)(*args)
        _context.response_annotations = {}
        serializer = Pyro4.util.get_serializer(proxy._pyroSerializer or Pyro4.config.SERIALIZER)
        annotations = proxy._Proxy__annotations()
        data, compressed = _serialized(serializer, args, (conn.objectId, method_name))
        proxy._pyroSeq = seq = (proxy._pyroSeq + 1) & 0xFFFF
        key = proxy._pyroHmacKey
        flags = _COMPRESSED if compressed else 0
        message = message_parts(_INVOKE, data, serializer.serializer_id, flags, seq, annotations, key)
        try:
            send_parts(conn, message)
            reply = Pyro4.message.Message.recv(conn, [_RESULT], hmac_key=key)
            if reply.seq != seq:
                raise Pyro4.errors.ProtocolError(f"invoke: reply sequence out of sync, got {reply.seq} expected {seq}")
            if reply.serializer_id != serializer.serializer_id:
                raise Pyro4.errors.SerializeError(f"invalid serializer in response: {reply.serializer_id}")
            if reply.annotations:
                _context.response_annotations = reply.annotations
                proxy._pyroResponseAnnotations(reply.annotations, reply.type)
            result = serializer.deserializeData(reply.data, compressed=reply.flags & _COMPRESSED)
            if reply.flags & Pyro4.message.FLAGS_ITEMSTREAMRESULT:
                stream = bytes(reply.annotations.get("STRM", b"")).decode()
                if not stream:
                    raise Pyro4.errors.ProtocolError(
                        "result of call is an iterator, but the server is not configured to allow streaming"
                    )
                return Pyro4.core._StreamResultIterator(stream, proxy)
            if reply.flags & _EXCEPTION:
                raise result
            return result
        except (Pyro4.errors.CommunicationError, KeyboardInterrupt):
            proxy._pyroRelease()  # as Pyro4: a connection in an unknown state must not read the next reply
            raise
