"""pyrodist's own Pyro4 serializer: json with raw bytes (`rawjson`), so payloads that are bytes stay bytes.

pyrodist's clients and workers speak it to the master; plain Pyro4 callers keep json and serpent.
Pyro4 knows serializers by name and by a number in each message's header: this one registers as
`PACKED` with id PACKED_ID in every process that configures Pyro4 (`register`). Messages without
bytes are json text after one byte, decoded as fast as Pyro4's own json (without its class walk
where no class can be inside); exceptions travel as Pyro4's json serializer sends them.
"""

from __future__ import annotations

from typing import Any

import Pyro4.errors
import Pyro4.util

from . import rawjson

PACKED = "pyrodist"
"""The serializer's name, for proxies (`_pyroSerializer`) and daemons (`SERIALIZERS_ACCEPTED`)."""
PACKED_ID = 80
"""Its id in Pyro4's message header (Pyro4 4.82 uses 1 to 7)."""


def _may_hold_classes(data: bytes | bytearray) -> bool:
    """Whether a message's json may hold a serialized class (Pyro4's '__class__' dicts, or an escape spelling one)."""
    start, end = rawjson.header_span(data)
    return data.find(b'"__class__"', start, end) >= 0 or data.find(b"\\u", start, end) >= 0


class PackedSerializer(Pyro4.util.JsonSerializer):  # type: ignore[misc]
    """Pyro4's json serializer, with bytes values carried raw after the json (see `rawjson`)."""

    serializer_id = PACKED_ID

    def dumpsCall(self, obj: str, method: str, vargs: Any, kwargs: Any) -> bytes:  # noqa: N802 - Pyro4's name
        """A call as one packed message."""
        return rawjson.pack({"object": obj, "method": method, "params": vargs, "kwargs": kwargs}, self.default)

    def dumps(self, data: Any) -> bytes:
        """A value as one packed message."""
        return rawjson.pack(data, self.default)

    def dumps_parts(self, data: Any) -> list[bytes | memoryview]:
        """A value as a packed message in parts to send one after the other (big bytes values not copied)."""
        return rawjson.pack_parts(data, self.default)

    def dumps_call_parts(self, obj: str, method: str, vargs: Any, kwargs: Any) -> list[bytes | memoryview]:
        """A call as a packed message in parts."""
        return rawjson.pack_parts({"object": obj, "method": method, "params": vargs, "kwargs": kwargs}, self.default)

    def loadsCall(self, data: Any) -> tuple[str, str, Any, Any]:  # noqa: N802 - Pyro4's name
        """A call from a packed message; ValueError naming what is wrong when it is not one."""
        call = self.loads(data)
        try:
            return call["object"], call["method"], call["params"], call["kwargs"]
        except (KeyError, TypeError):
            raise ValueError("the call's arguments cannot be decoded: not a packed call") from None

    def _convertToBytes(self, data: Any) -> Any:  # noqa: N802 - Pyro4's name
        """rawjson reads any buffer: a long message read into a bytearray is not copied again."""
        return data

    def loads(self, data: Any) -> Any:
        """A value from a packed message (Pyro4's serialized classes, such as exceptions, rebuilt)."""
        value = rawjson.unpack(data)
        if _may_hold_classes(data):
            try:
                value = self.recreate_classes(value)
            except RecursionError:
                raise ValueError("the call's arguments are nested too deeply to decode") from None
            except (Pyro4.errors.SerializeError, Pyro4.errors.SecurityError, AttributeError, KeyError) as exc:
                raise ValueError(f"the call's arguments cannot be decoded: {type(exc).__name__}: {exc}") from None
        return value


def register_packed() -> None:
    """Make the serializer known to Pyro4 in this process, by name and by id (idempotent)."""
    if PACKED not in Pyro4.util._serializers:
        serializer = PackedSerializer()
        Pyro4.util._serializers[PACKED] = serializer
        Pyro4.util._serializers_by_id[PACKED_ID] = serializer
