"""What a call may cost a Pyro4 daemon before it is decoded: its length, its count of values, its inflated size.

Pyro4 reads a message whole and decodes it whole before any of our code runs, so a peer holding the key
could make a daemon read a message of any length, or build a million values from a few megabytes (serpent,
through Python's parser: about a gigabyte). Here, applied by `remote_patches`:

- `bound_messages(daemon, most)`: a message longer than `most` bytes is read into nothing as it comes
  (DRAIN_CHUNK at a time) and answered with a ValueError naming both lengths; the connection goes on
  (`measure_messages`, called by the handshake patch for each new connection);
- a call's text longer than MEASURED_ABOVE is measured before it is decoded (`textshape`): more json
  values or serpent tokens than a batch of tasks needs is a ValueError;
- a compressed call is inflated to at most the largest bound of the process's daemons, or
  INFLATED_AT_MOST (Pyro4 inflated any zlib bomb whole).
"""

from __future__ import annotations

import logging
import struct
import zlib
from typing import Any

import Pyro4.message
import Pyro4.socketutil
import Pyro4.util

from . import rawjson
from .protocol import OVER_LIMIT
from .remote_serializer import PACKED_ID
from .textshape import MAX_JSON_VALUES, MAX_SERPENT_TOKENS, MEASURED_ABOVE, json_values, serpent_tokens

log = logging.getLogger(__name__)

DRAIN_CHUNK = 64 * 1024
"""Bytes read at a time from a message that is refused for its length."""
INFLATED_AT_MOST = 64 * 1024 * 1024
"""How far a compressed call may inflate in a process whose daemons set no bound."""
_unpack_sizes = struct.Struct("!12xiHH").unpack_from
"""Data size, serializer id and annotations size: bytes 12 to 19 of a Pyro4 4.82 message header."""
SERPENT_ID: int = Pyro4.util.SerpentSerializer.serializer_id
JSON_ID: int = Pyro4.util.JsonSerializer.serializer_id
"""Pyro4's ids of the two serializers pyrodist accepts."""
_inflated_at_most = 0  # the largest bound of this process's daemons


def bound_messages(daemon: Any, most: int) -> None:
    """Refuse messages longer than most bytes to daemon, before reading them (see the module docstring)."""
    global _inflated_at_most
    daemon._pyrodist_max_message = most
    _inflated_at_most = max(_inflated_at_most, most)


def measure_messages(daemon: Any, conn: Any) -> None:
    """Make conn, a new connection of daemon past its handshake, refuse messages over the daemon's bound."""
    most = getattr(daemon, "_pyrodist_max_message", 0)
    if most and type(conn) is Pyro4.socketutil.SocketConnection:
        conn.__class__ = _MeasuredConnection
        conn._pyrodist_most, conn._pyrodist_hmac_key = most, daemon._pyroHmacKey


class _MeasuredConnection(Pyro4.socketutil.SocketConnection):  # type: ignore[misc]
    """A daemon's connection that reads each message's header first and refuses a message longer than its bound.

    Its reads follow Pyro4's order: a header, then as many bytes as the header said (annotations, data). A
    message too long is read into nothing and answered, and the next message's header is read in its place:
    to Pyro4 the connection simply goes on.
    """

    _pyrodist_most = 0
    _pyrodist_left = 0  # bytes of the current message still to read: 0 when the next read is a header
    _pyrodist_hmac_key: bytes | None = None

    def recv(self, size: int) -> bytes:
        """Read size bytes; a header says how long its message is, and a message too long is refused."""
        data: bytes = Pyro4.socketutil.receiveData(self.sock, size)
        left = self._pyrodist_left
        if left:
            self._pyrodist_left = left - size
            return data
        while size:
            length, _, annotations = _unpack_sizes(data)
            if length + annotations <= self._pyrodist_most:
                self._pyrodist_left = length + annotations
                break
            self._refuse(data, length + annotations)
            data = Pyro4.socketutil.receiveData(self.sock, size)  # the next message's header
        return data

    def _refuse(self, header: bytes, length: int) -> None:
        """Read a message too long into nothing, and answer it with a ValueError if its caller waits."""
        msg = Pyro4.message.Message.from_header(header)  # a header that is not Pyro4's fails here, as in Pyro4
        most = self._pyrodist_most
        log.warning("refused a message of %d bytes from %s: at most %d", length, peer_host(self.sock), most)
        left = length
        while left:
            left -= len(Pyro4.socketutil.receiveData(self.sock, min(left, DRAIN_CHUNK)))
        if msg.type != Pyro4.message.MSG_INVOKE or msg.flags & Pyro4.message.FLAGS_ONEWAY:
            return  # nobody waits for an answer
        error = ValueError(f"a call of {length} bytes {OVER_LIMIT} of {most} bytes per call")
        error._pyroTraceback = [f"ValueError: {error}\n"]  # type: ignore[attr-defined]  # refused there, not here
        serializer = Pyro4.util.get_serializer_by_id(msg.serializer_id)
        data, compressed = serializer.serializeData(error)
        flags = Pyro4.message.FLAGS_EXCEPTION | (Pyro4.message.FLAGS_COMPRESSED if compressed else 0)
        reply = Pyro4.message.Message(
            Pyro4.message.MSG_RESULT, data, msg.serializer_id, flags, msg.seq, hmac_key=self._pyrodist_hmac_key
        )
        self.send(reply.to_bytes())


def peer_host(sock: Any) -> str:
    """The host of a socket's peer (its address without the port)."""
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "a peer that already left"


def _measure(serializer_id: int, data: bytes) -> None:
    """Refuse call data holding more values than any call needs, before it is decoded."""
    json_text = bytes(rawjson.header_of(data)) if serializer_id == PACKED_ID else data  # bytes values: by length
    if serializer_id in (JSON_ID, PACKED_ID) and json_values(json_text) > MAX_JSON_VALUES:
        raise ValueError(f"the call holds more than {MAX_JSON_VALUES} values: send fewer")
    if serializer_id == SERPENT_ID:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the call's arguments cannot be decoded: not UTF-8: {exc}") from None
        if serpent_tokens(text) > MAX_SERPENT_TOKENS:
            raise ValueError(f"the call holds more than {MAX_SERPENT_TOKENS} serpent tokens: send fewer values")


def _inflate(data: bytes) -> bytes:
    """Compressed call data, inflated to at most the process's bound."""
    most = _inflated_at_most or INFLATED_AT_MOST
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, most + 1)
    except zlib.error as exc:
        raise ValueError(f"the call's compressed arguments cannot be inflated: {exc}") from None
    if len(text) > most or inflater.unconsumed_tail:
        raise ValueError(f"the call's compressed arguments inflate to more than {most} bytes")
    return text


def patch_daemons() -> None:
    """Measure and bound call data before decoding it (every serializer; bound_messages does the rest)."""

    def deserialize_call(self: Any, data: Any, compressed: bool = False) -> Any:
        if compressed:
            data = _inflate(bytes(data))
        if len(data) > MEASURED_ABOVE:
            _measure(self.serializer_id, data)
        return self.loadsCall(data)

    Pyro4.util.SerializerBase.deserializeCall = deserialize_call
