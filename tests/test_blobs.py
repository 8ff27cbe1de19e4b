"""Values too big for one message: the master's blob store, the chunked transfers, and big values end to end.

`BlobStore`'s rules run on a temporary folder with a clock in the test's hands. Big arguments and results
then travel through an in-process master whose max_payload is 64 KiB, so that a few hundred KiB already
go as blobs (chunks stay 4 MiB: the chunk boundaries need values around 4 MiB), its clock moved by the
test to sweep. A worker killed in the middle of an upload, and the master's memory under many big
results, need real processes.
"""

from __future__ import annotations

import os
import random
import signal
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrodist import TaskError, benchtasks, transfer
from pyrodist.bench import memory_mb
from pyrodist.blobs import CHUNK, UNCLAIMED, BlobStore
from pyrodist.errors import MasterRejected
from pyrodist.values import BigValue, BlobRef, Payload, encode_big, encode_big_call
from tests import tasks
from tests.conftest import FakeClock, InProcess, Processes, start_cluster, wait_until

SMALL = 64 * 1024
"""max_payload of the in-process masters: encoded values over it travel as blobs."""
NO_LIMIT = 1 << 40


def pattern(size: int, seed: int = 7) -> bytes:
    """size bytes that never repeat (pseudo-random, the same for the same seed)."""
    return random.Random(seed).randbytes(size)


_WIDE = {i: chr((0x30, 0xC0, 0x4E00, 0x1F300)[i % 4] + i // 4) for i in range(256)}
"""Characters of 1, 2, 3 and 4 bytes in UTF-8, one per byte value."""


def text_of(size: int, seed: int = 11) -> str:
    """A str whose UTF-8 is exactly size bytes: characters of every width, in an order that never repeats."""
    raw = pattern(size // 2 + 4, seed).decode("latin-1").translate(_WIDE).encode()[:size]
    text = raw.decode("utf-8", "ignore")  # drops the character the cut split
    return text + "." * (size - len(text.encode()))


def encoded_size(encoded: Payload | BigValue) -> int:
    """Bytes of an encoded value."""
    if isinstance(encoded, BigValue):
        return encoded.size
    return len(encoded.encode("utf-8", "surrogatepass") if isinstance(encoded, str) else encoded)


def as_arguments(value: Any) -> int:
    """Bytes of value encoded as the only argument of a call."""
    return encoded_size(encode_big_call((value,), {}, NO_LIMIT, 0))


def as_result(value: Any) -> int:
    """Bytes of value encoded as a result."""
    return encoded_size(encode_big(value, "result", NO_LIMIT, 0))


def sized(make: Callable[[int], Any], measure: Callable[[Any], int], target: int) -> Any:
    """make(n) for the n whose encoding (measure) is exactly target bytes."""
    n = target
    for _ in range(8):
        value = make(n)
        got = measure(value)
        if got == target:
            return value
        n -= got - target
    raise AssertionError(f"no value of {make.__name__} encodes to exactly {target} bytes")


class Direct:
    """What `transfer` calls on the master, straight to a BlobStore, recording the chunk sizes."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.puts: list[int] = []
        self.gets: list[int] = []

    def blob_put(self, task_id: str, kind: str, blob_id: str | None, offset: int, data: bytes, size: int) -> str:
        self.puts.append(len(data))
        return self.store.put(task_id, kind, blob_id, offset, data, size)

    def blob_get(self, blob_id: str, offset: int, size: int) -> bytes:
        data = self.store.get(blob_id, offset, size)
        self.gets.append(len(data))
        return data


def put_whole(store: BlobStore, task_id: str, kind: str, data: bytes) -> BlobRef:
    """Upload data as one blob of task_id; its reference."""
    ref = BlobRef.parse(transfer.upload(Direct(store), task_id, kind, BigValue([data], len(data))))  # type: ignore[arg-type]
    assert ref is not None
    return ref


def flip_a_byte(path: Path) -> None:
    """Change one byte in the middle of a file."""
    with open(path, "r+b") as file:
        file.seek(path.stat().st_size // 2)
        byte = file.read(1)[0]
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte ^ 0x01]))


def names(folder: Path) -> set[str]:
    """The file names in a folder."""
    return {path.name for path in folder.iterdir()}


# ---- the store --------------------------------------------------------------------------------


def test_a_value_written_in_chunks_of_several_sizes_reads_back_exactly(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, NO_LIMIT, FakeClock())
    data = pattern(2 * CHUNK + 1234)
    blob_id, offset = None, 0
    for piece in (data[:1234], data[1234 : 1234 + CHUNK], data[1234 + CHUNK :]):  # short, full, full
        blob_id = store.put("c1.7", "a", blob_id, offset, piece, len(data))
        offset += len(piece)
    assert blob_id is not None and blob_id.startswith("c1.7.a.")
    assert names(tmp_path) == {blob_id} and (tmp_path / blob_id).read_bytes() == data
    step = 999_999  # reads that end nowhere near where the writes did
    assert b"".join(store.get(blob_id, start, step) for start in range(0, len(data), step)) == data
    assert store.get(blob_id, len(data) - 5, CHUNK) == data[-5:]  # fewer at its end
    assert store.get(blob_id, len(data), 10) == b""
    store.check(BlobRef(blob_id, len(data), zlib.crc32(data)), "c1.7", "a")


BOUNDARIES = {"empty": 0, "CHUNK-1": CHUNK - 1, "CHUNK": CHUNK, "CHUNK+1": CHUNK + 1, "3*CHUNK+5": 3 * CHUNK + 5}


@pytest.mark.parametrize("size", BOUNDARIES.values(), ids=BOUNDARIES.keys())
def test_a_value_of_a_chunk_boundary_size_moves_in_whole_chunks_and_comes_back_exact(tmp_path: Path, size: int) -> None:
    store = BlobStore(tmp_path / "blobs", NO_LIMIT, FakeClock())
    conn = Direct(store)
    data = pattern(size)
    parts = [data[:7], memoryview(data)[7:]]  # the value's parts do not end where chunks do
    ref = BlobRef.parse(transfer.upload(conn, "c1.1", "r", BigValue(parts, size)))  # type: ignore[arg-type]
    assert ref is not None and (ref.size, ref.crc) == (size, zlib.crc32(data))
    whole_chunks = [CHUNK] * (size // CHUNK) + ([size % CHUNK] if size % CHUNK else [])
    assert conn.puts == (whole_chunks or [0])  # an empty value: one empty chunk makes the blob
    store.check(ref, "c1.1", "r")
    assert (store.folder / ref.blob_id).stat().st_size == size
    out = tmp_path / "out"
    transfer.download_to_file(conn, ref, out)  # type: ignore[arg-type]
    assert out.read_bytes() == data
    assert all(n <= CHUNK for n in conn.gets)


def test_chunks_out_of_order_or_past_the_end_are_refused_and_change_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, NO_LIMIT, FakeClock())
    data = pattern(100)
    with pytest.raises(ValueError, match="offset 0"):
        store.put("t1", "a", None, 5, data[5:10], 100)  # a first chunk that is not the first
    with pytest.raises(ValueError, match="within the blob's 50 bytes"):
        store.put("t1", "a", None, 0, data, 50)  # longer than the blob
    with pytest.raises(ValueError, match="at most"):
        store.put("t1", "a", None, 0, bytes(CHUNK + 1), CHUNK + 1)  # longer than a chunk
    with pytest.raises(ValueError, match="'x'"):
        store.put("t1", "x", None, 0, data, 100)
    assert len(store) == 0 and names(tmp_path) == set()  # nothing half-made

    blob_id = store.put("t1", "a", None, 0, data[:40], 100)
    with pytest.raises(ValueError, match="expected one at 40"):
        store.put("t1", "a", blob_id, 60, data[60:80], 100)  # skips ahead
    with pytest.raises(ValueError, match="expected one at 40"):
        store.put("t1", "a", blob_id, 20, data[20:60], 100)  # goes back
    with pytest.raises(ValueError, match="within the blob's 100 bytes"):
        store.put("t1", "a", blob_id, 40, data[40:] + b"!", 100)  # runs past the end
    with pytest.raises(ValueError, match="not here"):
        store.get(blob_id, 0, 10)
    assert names(tmp_path) == {f"{blob_id}.part"} and (tmp_path / f"{blob_id}.part").read_bytes() == data[:40]

    assert store.put("t1", "a", blob_id, 40, data[40:], 100) == blob_id  # the right chunk still fits
    assert names(tmp_path) == {blob_id} and (tmp_path / blob_id).read_bytes() == data
    with pytest.raises(ValueError, match="not being uploaded"):
        store.put("t1", "a", blob_id, 100, b"", 100)  # whole already
    assert (tmp_path / blob_id).read_bytes() == data and len(store) == 1


def test_a_value_over_max_value_is_refused_naming_the_limit_and_its_option(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, 4096, FakeClock())
    with pytest.raises(ValueError, match=r"4097 bytes.*the limit is 4096 \(master --max-value\)"):
        store.put("t1", "r", None, 0, b"x", 4097)
    assert len(store) == 0 and names(tmp_path) == set()
    assert put_whole(store, "t1", "r", bytes(4096)).size == 4096  # at the limit


def test_check_refuses_a_reference_that_is_not_to_this_tasks_whole_blob_as_it_was_written(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, NO_LIMIT, FakeClock())
    data = pattern(1000)
    ref = put_whole(store, "t1", "r", data)
    store.check(ref, "t1", "r")
    with pytest.raises(ValueError, match="holds no result of task t2"):
        store.check(ref, "t2", "r")
    with pytest.raises(ValueError, match="holds no arguments of task t1"):
        store.check(ref, "t1", "a")
    with pytest.raises(ValueError, match="not what its reference says"):
        store.check(ref._replace(size=999), "t1", "r")
    with pytest.raises(ValueError, match="not what its reference says"):
        store.check(ref._replace(crc=ref.crc ^ 1), "t1", "r")
    partial = store.put("t1", "r", None, 0, data[:10], 1000)
    with pytest.raises(ValueError, match="not whole"):
        store.check(BlobRef(partial, 1000, ref.crc), "t1", "r")
    with pytest.raises(ValueError, match="not whole"):
        store.check(BlobRef(f"t1.r.{'0' * 32}", 1000, ref.crc), "t1", "r")  # never uploaded


def test_get_refuses_an_unknown_or_unfinished_blob_and_reads_of_more_than_a_chunk(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, NO_LIMIT, FakeClock())
    with pytest.raises(ValueError, match="not here"):
        store.get(f"t1.a.{'0' * 32}", 0, 10)
    partial = store.put("t1", "a", None, 0, b"abc", 10)
    with pytest.raises(ValueError, match="not here"):
        store.get(partial, 0, 3)
    with pytest.raises(ValueError, match="bad blob id"):
        store.get("../../etc/passwd", 0, 10)
    ref = put_whole(store, "t1", "a", b"whole")
    for start, size in ((0, 0), (0, CHUNK + 1), (-1, 5)):
        with pytest.raises(ValueError, match="read 1 to"):
            store.get(ref.blob_id, start, size)
    assert store.get(ref.blob_id, 0, CHUNK) == b"whole"


def test_a_new_store_on_the_same_folder_keeps_whole_blobs_checks_them_from_disk_and_drops_half_written_ones(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    folder = tmp_path / "blobs"
    first = BlobStore(folder, NO_LIMIT, clock)
    data = pattern(CHUNK + 10)
    kept = put_whole(first, "t1", "r", data)
    damaged = put_whole(first, "t2", "a", pattern(500, seed=3))
    partial = first.put("t3", "r", None, 0, b"abc", 10)
    assert names(folder) == {kept.blob_id, damaged.blob_id, f"{partial}.part"}
    flip_a_byte(folder / damaged.blob_id)  # changed while no master ran

    second = BlobStore(folder, NO_LIMIT, clock)  # the master restarted
    assert names(folder) == {kept.blob_id, damaged.blob_id} and len(second) == 2
    second.check(kept, "t1", "r")
    with pytest.raises(ValueError, match="not what its reference says"):  # its CRC, read from the file
        second.check(damaged, "t2", "a")
    out = tmp_path / "out"
    transfer.download_to_file(Direct(second), kept, out)  # type: ignore[arg-type]
    assert out.read_bytes() == data
    with pytest.raises(ValueError, match="not here"):
        second.get(partial, 0, 3)
    with pytest.raises(ValueError, match="not being uploaded"):
        second.put("t3", "r", partial, 3, b"defghij", 10)
    assert second.sweep(lambda ids: set(ids)) == 0  # found now: not unclaimed for long yet


def test_sweep_keeps_referenced_blobs_and_drops_the_others_only_once_unclaimed_passed(tmp_path: Path) -> None:
    clock = FakeClock()
    store = BlobStore(tmp_path, NO_LIMIT, clock)
    needed = put_whole(store, "t1", "r", b"needed").blob_id
    loose = put_whole(store, "t2", "a", b"loose").blob_id
    stopped = store.put("t3", "a", None, 0, b"sto", 7)  # an upload that stopped
    still = {needed}

    def referenced(ids: list[str]) -> set[str]:
        return still & set(ids)

    clock.advance(UNCLAIMED)
    assert store.sweep(referenced) == 0  # not yet
    fresh = put_whole(store, "t4", "a", b"fresh").blob_id  # uploaded, its task not submitted yet
    clock.advance(1)
    assert store.sweep(referenced) == 2
    assert names(tmp_path) == {needed, fresh}
    for gone in (loose, stopped):
        with pytest.raises(ValueError, match="not here"):
            store.get(gone, 0, 1)
    with pytest.raises(ValueError, match="not being uploaded"):
        store.put("t3", "a", stopped, 3, b"ped", 7)

    clock.advance(100 * UNCLAIMED)
    assert store.sweep(referenced) == 1  # fresh, never claimed
    assert names(tmp_path) == {needed} and store.get(needed, 0, 100) == b"needed"  # kept as long as it is needed
    still.clear()
    assert store.sweep(referenced) == 0  # found referenced by the last sweep: looked at again UNCLAIMED later
    clock.advance(UNCLAIMED + 1)
    assert store.sweep(referenced) == 1
    assert names(tmp_path) == set() and len(store) == 0


def test_a_sweep_asks_which_blobs_are_referenced_once_not_once_per_blob(tmp_path: Path) -> None:
    clock = FakeClock()
    store = BlobStore(tmp_path, NO_LIMIT, clock)
    ids = [put_whole(store, f"t{i}", "r", b"v").blob_id for i in range(50)]
    asked: list[list[str]] = []

    def referenced(old: list[str]) -> set[str]:  # the master's takes its lock and looks up every task
        asked.append(sorted(old))
        return set(old[:25])

    clock.advance(UNCLAIMED + 1)
    assert store.sweep(referenced) == 25
    assert asked == [sorted(ids)], f"{len(asked)} questions about {len(ids)} blobs"


def test_close_removes_the_stores_own_folder_and_leaves_one_it_was_given(tmp_path: Path) -> None:
    own = BlobStore(None, NO_LIMIT, FakeClock())
    put_whole(own, "t1", "a", b"temporary")
    assert own.folder.is_dir() and len(names(own.folder)) == 1
    own.close()
    assert not own.folder.exists()

    given = BlobStore(tmp_path / "state.db.blobs", NO_LIMIT, FakeClock())
    ref = put_whole(given, "t1", "a", b"kept")
    given.close()
    assert (tmp_path / "state.db.blobs" / ref.blob_id).read_bytes() == b"kept"


# ---- big values through an in-process master ---------------------------------------------------


def blob_sizes(cluster: InProcess, task_id: str) -> dict[str, int]:
    """The sizes of a task's whole blobs on the master, by kind ('a' arguments, 'r' result)."""
    found = {}
    for path in cluster.master.blobs.folder.glob(f"{task_id}.[ar].*"):
        if path.suffix != ".part":
            found[path.name.rsplit(".", 2)[1]] = path.stat().st_size
    return found


@pytest.fixture(scope="module")
def small_pair() -> Iterator[InProcess]:
    """An in-process master taking at most 64 KiB inside a message, and one worker; shared by a module."""
    cluster = InProcess(max_payload=SMALL)
    try:
        cluster.start_worker()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def small() -> Iterator[InProcess]:
    """An in-process master taking at most 64 KiB inside a message, without workers yet."""
    cluster = InProcess(max_payload=SMALL)
    try:
        yield cluster
    finally:
        cluster.close()


SIZES = {"max_payload": SMALL, "max_payload+1": SMALL + 1, "CHUNK-1": CHUNK - 1, "CHUNK": CHUNK, "CHUNK+1": CHUNK + 1}


@pytest.mark.parametrize("kind", ["a", "r"], ids=["arguments", "result"])
@pytest.mark.parametrize("make", [pattern, text_of], ids=["bytes", "str"])
@pytest.mark.parametrize("target", SIZES.values(), ids=SIZES.keys())
def test_a_big_argument_or_result_comes_back_exact_at_the_sizes_around_the_limits(
    small_pair: InProcess, kind: str, make: Callable[[int], Any], target: int
) -> None:
    value = sized(make, as_arguments if kind == "a" else as_result, target)  # encoded: exactly target bytes
    client = small_pair.client()
    future = client.submit(tasks.echo, value)
    result = future.result(timeout=60)
    assert type(result) is type(value) and len(result) == len(value)
    assert result == value
    made = blob_sizes(small_pair, future.task_id)
    if target > SMALL:
        assert made[kind] == target  # it went as a blob of exactly its encoded size
    else:
        assert kind not in made  # it went inside the message


def test_a_tasks_blobs_are_kept_while_it_needs_them_and_dropped_once_its_result_was_collected(small: InProcess) -> None:
    client = small.client()
    value = pattern(300_000)
    future = client.submit(tasks.echo, value)
    assert set(blob_sizes(small, future.task_id)) == {"a"}
    small.reap(advance=UNCLAIMED + 1)  # pending longer than UNCLAIMED: its arguments are still needed
    assert set(blob_sizes(small, future.task_id)) == {"a"}

    small.start_worker()
    assert future.result(timeout=30) == value
    assert set(blob_sizes(small, future.task_id)) == {"a", "r"}
    small.reap(advance=UNCLAIMED + 1)  # the arguments, last found needed that long ago, are no longer needed
    assert "a" not in blob_sizes(small, future.task_id)

    def swept() -> bool:  # once the client's next collect said it has the result
        small.reap(advance=UNCLAIMED + 1)
        return not blob_sizes(small, future.task_id)

    wait_until(swept, what="the collected result's blob to be dropped")
    assert len(small.master.blobs) == 0 and names(small.master.blobs.folder) == set()


def test_a_kept_result_keeps_its_blob_until_it_is_forgotten(small: InProcess) -> None:
    small.start_worker()
    client = small.client()
    value = text_of(200_000)
    future = client.options(keep=True).submit(tasks.echo, value)
    assert future.result(timeout=30) == value
    small.reap(advance=UNCLAIMED + 1)
    assert set(blob_sizes(small, future.task_id)) == {"r"}
    assert client.forget([future]) == 1
    small.reap(advance=UNCLAIMED + 1)  # last found needed by the reap before
    assert blob_sizes(small, future.task_id) == {} and len(small.master.blobs) == 0


DAMAGE: dict[str, Callable[[Path], None]] = {
    "removed": Path.unlink,
    "cut short": lambda path: os.truncate(path, path.stat().st_size - 1),
    "altered": flip_a_byte,
}
DAMAGES = [
    pytest.param(DAMAGE["removed"], id="removed"),
    pytest.param(DAMAGE["cut short"], id="cut short"),
    pytest.param(DAMAGE["altered"], id="altered"),
]


def damage_when_whole(cluster: InProcess, kind: str, damage: Callable[[Path], None], monkeypatch: Any) -> None:
    """Damage each blob of this kind on the master's disk the moment its upload is whole (before it is used)."""
    blobs = cluster.master.blobs
    put = blobs.put

    def put_then_damage(task_id: str, of: str, blob_id: str | None, offset: int, data: bytes, size: int) -> str:
        made = put(task_id, of, blob_id, offset, data, size)
        if of == kind and offset + len(data) == size:
            damage(blobs.folder / made)
        return made

    monkeypatch.setattr(blobs, "put", put_then_damage)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_result_whose_blob_was_damaged_on_the_master_fails_its_future_instead_of_arriving(
    small: InProcess, damage: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    damage_when_whole(small, "r", damage, monkeypatch)  # after the worker's upload, before its report
    small.start_worker()
    client = small.client()
    future = client.submit(tasks.echo, pattern(300_000))
    with pytest.raises(TaskError, match=f"the result of task {future.task_id} could not be read"):
        future.result(timeout=10)
    assert client.submit(tasks.echo, "small").result(timeout=10) == "small"  # the client goes on


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_task_whose_argument_blob_was_damaged_on_the_master_fails_instead_of_running(
    small: InProcess, damage: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    damage_when_whole(small, "a", damage, monkeypatch)  # after the client's upload, before the worker's download
    small.start_worker()
    client = small.client()
    future = client.submit(tasks.echo, pattern(300_000))
    with pytest.raises(TaskError, match=f"the arguments of task {future.task_id} could not be read"):
        future.result(timeout=10)
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["state"] == "failed"


@pytest.mark.parametrize("damage", DAMAGES)
def test_downloading_a_damaged_blob_is_an_error_never_a_value(small: InProcess, damage: Callable[[Path], None]) -> None:
    small.start_worker()
    client = small.client()
    value = pattern(300_000)
    future = client.options(keep=True).submit(tasks.echo, value)
    assert future.result(timeout=30) == value
    [record] = small.master.lookup([future.task_id], small.admin("test"))
    assert record is not None
    ref = BlobRef.parse(record.payload)
    assert ref is not None
    [path] = [p for p in small.master.blobs.folder.glob(f"{future.task_id}.r.*") if p.suffix != ".part"]
    damage(path)
    with pytest.raises((ValueError, MasterRejected), match=ref.blob_id):  # damaged here, or refused there: gone
        transfer.download(small.connect(), ref)


# ---- real processes -----------------------------------------------------------------------------


def test_a_worker_killed_while_uploading_a_big_result_loses_nothing_and_the_task_runs_again(
    procs: Processes, tmp_path: Path
) -> None:
    store = tmp_path / "state.db"
    cluster = start_cluster(procs, workers=0, master_args=("--store", str(store), "--lease-timeout", "5"))
    folder = Path(f"{store}.blobs")
    size = 200_000_000
    with cluster.client() as client:
        first = cluster.start_worker()
        future = client.submit(tasks.big_result, size)
        part = wait_until(
            lambda: next(folder.glob(f"{future.task_id}.r.*.part"), None),
            timeout=60,
            interval=0.005,
            what="the worker to begin uploading the result",
            details=lambda: procs.log(first),
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert part.stat().st_size < size  # killed in the middle of it
        cluster.start_worker()
        result = future.result(timeout=120)
        assert len(result) == size and result == b"x" * size
        record = client.lookup([future.task_id])[0]
        assert record is not None and record["state"] == "done"
        # It ran again, on the second worker. (Whether the first loss counts as an attempt depends on a heartbeat
        # having seen the task running before the kill: under load the upload may begin before one.)
        assert record["attempts"] >= 1 and not str(record["worker"]).endswith(f"-{first.pid}")
        ref = BlobRef.parse(record["payload"])  # a master with --store keeps the result after it was collected
    assert ref is not None and (folder / ref.blob_id).stat().st_size == ref.size == as_result(b"x" * size)
    # Under load the first upload may have ended just before the kill: that blob is whole, but no task refers
    # to it, and the sweep drops it (tested above).


def test_the_masters_memory_stays_bounded_while_many_big_results_pass_through(
    procs: Processes, record_property: Callable[[str, object], None]
) -> None:
    cluster = start_cluster(procs, workers=0)
    master = procs.procs[1]
    for _ in range(2):
        cluster.start_worker("-I", "pyrodist.benchtasks")
    wait_until(lambda: len(cluster.live_workers()) >= 2, timeout=30, what="two workers")
    count, size = 150, 1 << 20
    with cluster.client() as client:
        results = client.gather(client.map(benchtasks.random_bytes, [size] * count), timeout=180)
        now, peak = memory_mb(master.pid)
    assert len(results) == count and all(len(r) == size for r in results)
    assert len(set(results)) == count  # each its own
    assert now is not None and peak is not None
    record_property("figures", f"master RSS after {count} results of 1 MiB: {now:.0f} MB now, {peak:.0f} MB at peak")
    assert peak < 300, f"the master's peak RSS was {peak:.0f} MB for {count} MiB of results"


def test_on_result_gets_a_big_result_downloaded_not_its_reference(small: InProcess) -> None:
    small.start_worker()
    client = small.client()
    called: list[dict[str, Any]] = []
    client.on_result(called.append)
    value = pattern(300_000)
    assert client.submit(tasks.echo, value).result(timeout=30) == value
    wait_until(lambda: called, what="the callback")
    assert called[0]["value"] == value and called[0]["error"] is None
