"""Values too big for one message, kept on the master's disk while a task refers to them (`BlobStore`).

A client with arguments, or a worker with a result, larger than `max_payload` encoded uploads it in chunks
of at most CHUNK bytes (`blob_put`), then sends a small reference in its place (`values.BlobRef`, text
"@blob ID SIZE CRC"). Readers download it in chunks (`blob_get`) and check its size and CRC-32 before
decoding: a value cut short by a crash is never delivered. The master only writes and reads files: its
memory holds one chunk per call in flight, whatever the size of the values.

A blob is named after the task it belongs to and whether it holds the task's arguments or its result
(`TASK_ID.a.HEX` / `TASK_ID.r.HEX`, 128 random bits): the master keeps it while that task refers to it
(`sweep`, from the reaper), and drops it once the task no longer does (finished, released, forgotten,
expired) or when an upload was never claimed. Files are written as `NAME.part` and renamed once whole,
so a master restarted on its `--store` folder drops half-written ones.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreUnavailable
from .protocol import BLOB_CHUNK, error_info
from .values import BlobRef, is_blob_ref
from .wire import Outcome, SubmittedTask

log = logging.getLogger(__name__)

CHUNK = BLOB_CHUNK
"""Most bytes of a blob moved by one call."""
SPILLED_ABOVE = 64 * 1024
"""Bytes a result must have for the master to write it to disk when too many wait in memory for their clients."""
UNCLAIMED = 1800.0
"""Seconds a whole blob no task refers to (or an upload that stopped) is kept before it is dropped; a blob a task
refers to is looked at again that long after it was last found referenced."""
MAX_UPLOADS = 1000
"""Most blobs being uploaded at once (a peer that starts uploads and never ends them holds no more)."""
DISK_KEPT_FREE = 256 * 1024 * 1024
"""Bytes of the blob folder's disk a new blob must leave free (with the uploads under way): the task store
may share that disk."""
KINDS = {"a": "arguments", "r": "result"}
"""What a blob holds, by the letter in its name."""
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\.[ar]\.[0-9a-f]{32}")


@dataclass
class _Blob:
    size: int
    written: int = 0
    crc: int | None = 0
    """CRC-32 of what was written; None for a whole blob found on disk at start (computed when first checked)."""
    touched: float = 0.0
    """When it was last written or created (time.monotonic or the master's clock)."""


def check_name(blob_id: object) -> str:
    """A blob id as a caller gave it; ValueError if it is not one."""
    if not isinstance(blob_id, str) or not _NAME.fullmatch(blob_id):
        raise ValueError(f"bad blob id {blob_id!r}: it is TASK_ID.a.HEX or TASK_ID.r.HEX, as blob_put returned it")
    return blob_id


def task_of(blob_id: str) -> tuple[str, str]:
    """The task id and kind letter ('a' arguments, 'r' result) a blob id names."""
    task_id, kind, _ = blob_id.rsplit(".", 2)
    return task_id, kind


class BlobStore:
    """The master's big values: files in one folder (its own temporary one, or next to `--store`)."""

    def __init__(self, folder: str | Path | None, max_value: int, clock: Callable[[], float]) -> None:
        self._owned = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="pyrodist-blobs-") if folder is None else folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_value = max_value
        self._clock = clock
        self._lock = threading.Lock()
        self._blobs: dict[str, _Blob] = {}
        now = clock()
        for path in self.folder.iterdir():
            if path.suffix == ".part" or not _NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)  # half-written when the master stopped
            else:
                self._blobs[path.name] = _Blob(path.stat().st_size, path.stat().st_size, None, now)

    def __len__(self) -> int:
        return len(self._blobs)

    def put(self, task_id: str, kind: str, blob_id: str | None, offset: int, data: bytes, size: int) -> str:
        """Write one chunk: the first (blob_id None, offset 0) makes the blob and names it; the id."""
        if len(data) > CHUNK:
            raise ValueError(f"a chunk of {len(data)} bytes; at most {CHUNK} per call")
        with self._lock:
            if blob_id is None:
                if not 0 <= size <= self.max_value:
                    raise ValueError(
                        f"a value of {size} bytes encoded; the limit is {self.max_value} (master --max-value)"
                    )
                if kind not in KINDS or offset != 0:
                    raise ValueError(f"a new blob starts at offset 0 and holds 'a' or 'r', not {kind!r} at {offset}")
                self._room_for(size)
                blob = _Blob(size, touched=self._clock())
            else:
                found = self._blobs.get(check_name(blob_id))
                if found is None or found.crc is None or found.written == found.size:
                    raise ValueError(f"blob {blob_id} is not being uploaded (unknown, or whole already)")
                blob = found
            if offset != blob.written or offset + len(data) > blob.size:
                raise ValueError(f"a chunk at {offset} of {len(data)} bytes; expected one at {blob.written}, "
                                 f"within the blob's {blob.size} bytes")  # fmt: skip
            if blob_id is None:
                blob_id = f"{task_id}.{kind}.{secrets.token_hex(16)}"
                self._blobs[blob_id] = blob
            blob.written += len(data)
            blob.crc = zlib.crc32(data, blob.crc or 0)
            blob.touched = self._clock()
            whole = blob.written == blob.size
        part = self.folder / f"{blob_id}.part"
        try:
            with open(part, "r+b" if offset else "wb") as out:
                out.seek(offset)
                out.write(data)
            if whole:
                if not self._owned:  # next to a durable store, whose records will refer to it: on the disk first
                    with open(part, "rb") as written:
                        os.fsync(written.fileno())
                os.replace(part, self.folder / blob_id)
        except OSError as exc:
            with self._lock:
                self._blobs.pop(blob_id, None)
            part.unlink(missing_ok=True)
            raise StoreUnavailable(f"the master cannot write values to {self.folder}: {exc}; send it again") from exc
        return blob_id

    def get(self, blob_id: str, offset: int, size: int) -> bytes:
        """Up to size bytes of a whole blob from offset (fewer at its end)."""
        if not 0 < size <= CHUNK or offset < 0:
            raise ValueError(f"read 1 to {CHUNK} bytes from an offset of 0 or more, not {size} at {offset}")
        with self._lock:
            blob = self._blobs.get(check_name(blob_id))
            if blob is None or blob.written != blob.size:
                raise ValueError(f"blob {blob_id} is not here (dropped, or not whole yet)")
        try:
            with open(self.folder / blob_id, "rb") as source:
                source.seek(offset)
                return source.read(size)
        except FileNotFoundError:  # removed behind the master's back: the value is gone, say so
            raise ValueError(f"blob {blob_id} is not here any more (its file was removed)") from None
        except OSError as exc:
            raise StoreUnavailable(f"the master cannot read value {blob_id} from {self.folder}: {exc}") from exc

    def check(self, ref: BlobRef, task_id: str, kind: str) -> None:
        """Refuse (ValueError) a reference to a blob that is not whole, not this task's, or not what it says."""
        if task_of(check_name(ref.blob_id)) != (task_id, kind):
            raise ValueError(f"blob {ref.blob_id} holds no {KINDS.get(kind, kind)} of task {task_id}")
        with self._lock:
            blob = self._blobs.get(ref.blob_id)
        if blob is None or blob.written != blob.size:
            raise ValueError(f"blob {ref.blob_id} is not whole here: upload it (blob_put) before sending its reference")
        blob.touched = self._clock()  # its task is about to refer to it: no sweep drops it meanwhile
        if blob.crc is None:  # found on disk at start
            blob.crc = _file_crc(self.folder / ref.blob_id)
        if (blob.size, blob.crc) != (ref.size, ref.crc):
            raise ValueError(
                f"blob {ref.blob_id} is {blob.size} bytes with CRC {blob.crc}, not what its reference says"
            )

    def sweep(self, referenced: Callable[[list[str]], set[str]]) -> int:
        """Drop blobs no task refers to (referenced: which of these ids are) and uploads left unfinished, once
        UNCLAIMED seconds passed since they were last written; how many were dropped."""
        now = self._clock()
        with self._lock:
            old = [blob_id for blob_id, blob in self._blobs.items() if now - blob.touched > UNCLAIMED]
        if not old:
            return 0
        held = referenced(old)
        dropped = [blob_id for blob_id in old if blob_id not in held]
        with self._lock:
            for blob_id in dropped:
                self._blobs.pop(blob_id, None)
            for blob_id in held:  # looked at again only UNCLAIMED seconds from now
                if (blob := self._blobs.get(blob_id)) is not None:
                    blob.touched = now
        for blob_id in dropped:
            (self.folder / blob_id).unlink(missing_ok=True)
            (self.folder / f"{blob_id}.part").unlink(missing_ok=True)
        return len(dropped)

    def _room_for(self, size: int) -> None:
        """Refuse a new blob of size bytes when too many uploads are under way or its disk would fill (lock held)."""
        uploading = [blob for blob in self._blobs.values() if blob.written < blob.size]
        if len(uploading) >= MAX_UPLOADS:
            raise ValueError(f"{len(uploading)} values are being uploaded to the master; at most {MAX_UPLOADS} at once")
        owed = sum(blob.size - blob.written for blob in uploading)
        free = shutil.disk_usage(self.folder).free
        if size + owed + DISK_KEPT_FREE > free:
            raise StoreUnavailable(
                f"the master's disk at {self.folder} has {free} bytes free, {owed} promised to uploads under way: "
                f"a value of {size} bytes does not fit (keeping {DISK_KEPT_FREE} free); try again later"
            )

    def keep(self, task_id: str, kind: str, data: bytes) -> BlobRef:
        """Write a whole value (any size) as a new blob of the task; its reference."""
        blob_id = None
        for start in range(0, max(len(data), 1), CHUNK):
            blob_id = self.put(task_id, kind, blob_id, start, data[start : start + CHUNK], len(data))
        assert blob_id is not None
        return BlobRef(blob_id, len(data), zlib.crc32(data))

    def close(self) -> None:
        """Remove the folder if it was this store's own (an in-memory master's values go with it)."""
        if self._owned:
            shutil.rmtree(self.folder, ignore_errors=True)


def _file_crc(path: Path) -> int:
    """The CRC-32 of a file, read CHUNK bytes at a time."""
    crc = 0
    with open(path, "rb") as source:
        while data := source.read(CHUNK):
            crc = zlib.crc32(data, crc)
    return crc


def check_submitted(blobs: BlobStore, tasks: list[SubmittedTask]) -> None:
    """Refuse (ValueError) tasks whose arguments refer to a blob that is not whole, or not theirs."""
    for task in tasks:
        if is_blob_ref(task.payload) and (ref := BlobRef.parse(task.payload)) is not None:
            blobs.check(ref, task.task_id, "a")


def kept_results(blobs: BlobStore, outcomes: Sequence[Outcome], room: int) -> list[Outcome]:
    """Reported outcomes as the master keeps them: big results' blobs checked, and results over SPILLED_ABOVE
    beyond room bytes of memory written to the blob folder (`recorded`)."""
    kept = []
    for outcome in outcomes:
        result = outcome.result
        size = 0 if result is None else len(result)
        if size > SPILLED_ABOVE or is_blob_ref(result):  # else (most results): nothing to do
            outcome = recorded(blobs, outcome, spill=size > room)
        kept.append(outcome)
        room -= size
    return kept


def recorded(blobs: BlobStore, outcome: Outcome, spill: bool) -> Outcome:
    """A worker's outcome as the master records it: a reference to a blob checked (a failure saying why when
    it does not hold), and, with spill, a big result written to disk and referred to instead."""
    try:
        ref = BlobRef.parse(outcome.result) if outcome.ok else None
        if ref is not None:
            blobs.check(ref, outcome.task_id, "r")
        elif spill and outcome.result is not None and len(outcome.result) > SPILLED_ABOVE:
            result = outcome.result
            data = result if isinstance(result, bytes) else result.encode("utf-8", "surrogatepass")
            return Outcome(
                outcome.task_id, outcome.token, True, result=blobs.keep(outcome.task_id, "r", data).payload()
            )
    except ValueError as exc:
        refused = ValueError(f"the result cannot be kept: {exc}")
        return Outcome(outcome.task_id, outcome.token, False, error=error_info(refused, tb=""))
    return outcome
