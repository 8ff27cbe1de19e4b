"""Moving values too big for one message to and from the master, in chunks (`blobs.py` keeps them there).

A client uploads big arguments before it submits, a worker a big result before it reports; each then
sends the reference (`values.BlobRef`) in the value's place. Readers download a blob whole (a client,
into memory) or into a file (a worker, for its child to map), checking its size and CRC-32: a value cut
short is an error, never a result. A blob holds a payload as it would travel in a message: a frame, or
JSON text in UTF-8.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from .api import MasterAPI
from .frames import VERSION
from .protocol import BLOB_CHUNK
from .values import BigValue, BlobRef, Payload


def _chunks(parts: Iterable[bytes | memoryview]) -> Iterator[bytes]:
    """The parts' bytes in chunks of BLOB_CHUNK (the last one shorter; one empty chunk for nothing)."""
    buffer = bytearray()
    sent = False
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            room = BLOB_CHUNK - len(buffer)
            buffer += view[:room]
            view = view[room:]
            if len(buffer) == BLOB_CHUNK:
                yield bytes(buffer)
                buffer.clear()
                sent = True
    if buffer or not sent:
        yield bytes(buffer)


def upload(conn: MasterAPI, task_id: str, kind: str, big: BigValue) -> str:
    """Upload a big value as the blob of task_id's arguments ('a') or result ('r'); its reference payload."""
    return _upload(conn, task_id, kind, _chunks(big.parts), big.size)


def upload_file(conn: MasterAPI, task_id: str, kind: str, path: Path) -> str:
    """Upload a file's bytes (a payload a child wrote) as a blob; its reference payload."""
    with open(path, "rb") as source:
        return _upload(conn, task_id, kind, iter(lambda: source.read(BLOB_CHUNK), b""), path.stat().st_size)


def _upload(conn: MasterAPI, task_id: str, kind: str, chunks: Iterator[bytes], size: int) -> str:
    blob_id, offset, crc = None, 0, 0
    for chunk in chunks:
        blob_id = conn.blob_put(task_id, kind, blob_id, offset, chunk, size)
        offset += len(chunk)
        crc = zlib.crc32(chunk, crc)
    if blob_id is None:  # a file that was empty: one empty chunk makes the blob
        blob_id = conn.blob_put(task_id, kind, None, 0, b"", 0)
    if offset != size:
        raise ValueError(f"uploaded {offset} bytes of a value of {size}: it changed while it was sent")
    return BlobRef(blob_id, size, crc).payload()


def download(conn: MasterAPI, ref: BlobRef) -> Payload:
    """A blob's payload, read whole and checked (ValueError when it is not what its reference says)."""
    buffer = bytearray(ref.size)
    _download(conn, ref, memoryview(buffer))
    return as_payload(buffer)


def download_to_file(conn: MasterAPI, ref: BlobRef, path: Path) -> None:
    """Write a blob into a new file, checked (ValueError when it is not what its reference says)."""
    with open(path, "wb") as out:
        _download(conn, ref, out)


def _download(conn: MasterAPI, ref: BlobRef, into: memoryview | BinaryIO) -> None:
    offset, crc = 0, 0
    while offset < ref.size:
        chunk = conn.blob_get(ref.blob_id, offset, min(BLOB_CHUNK, ref.size - offset))
        if not chunk:
            break
        if isinstance(into, memoryview):
            into[offset : offset + len(chunk)] = chunk
        else:
            into.write(chunk)
        offset += len(chunk)
        crc = zlib.crc32(chunk, crc)
    if (offset, crc) != (ref.size, ref.crc):
        raise ValueError(f"blob {ref.blob_id} read as {offset} bytes with CRC {crc}, not {ref.size} with {ref.crc}")


def as_payload(data: bytearray) -> Payload:
    """A blob's bytes as the payload they hold: a frame stays binary (not copied again), text becomes str."""
    if data[:1] == bytes([VERSION]):  # text payloads never start with it
        return cast(bytes, data)  # decode_value reads a bytearray as it reads bytes: a gigabyte is not copied again
    return data.decode("utf-8", "surrogatepass")
