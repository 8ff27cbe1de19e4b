"""Safe on a real network: shared key, TLS, safe serializers only, binding warnings, limits."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro4
import Pyro4.message
import pytest

from pyrodist import (
    AuthenticationFailed,
    Client,
    FunctionRefError,
    MasterRejected,
    PyrodistError,
    Settings,
    TaskError,
    remote,
    remote_patches,
)
from pyrodist import ValueEncodingError as EncodingError
from pyrodist.bench import memory_mb
from pyrodist.cliopts import warn_if_exposed
from tests import tasks
from tests.conftest import Cluster, Processes, free_port, port_open, wait_until
from tests.test_cli import assert_one_clear_line, pyrodist

KEY = "correct horse battery staple"


def start_secured(procs: Processes, *security: str, workers: int = 1, master_args: tuple[str, ...] = ()) -> Cluster:
    """A cluster whose every process gets the given security flags."""
    port = free_port()
    procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port), *security)
    wait_until(lambda: port_open(port), what="the name server")
    cluster = Cluster(procs, port)
    procs.start("master", *cluster.ns_args, *security, *master_args)
    for _ in range(workers):
        cluster.start_worker(*security)
    return cluster


# ---- shared key


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    procs = Processes(tmp_path_factory.mktemp("keyed"))
    try:
        cluster = start_secured(procs, "--key", KEY)
        settings = Settings(ns_host="127.0.0.1", ns_port=cluster.ns_port, key=KEY)

        def workers_up() -> bool:
            try:
                with Client(settings=settings) as client:
                    return len(client.stats()["workers"]) == 1
            except PyrodistError:
                return False

        wait_until(workers_up, timeout=30, what="the keyed cluster")
        yield cluster
    finally:
        procs.stop_all()


def test_client_with_the_key_runs_tasks(keyed: Cluster) -> None:
    with Client(ns_host="127.0.0.1", ns_port=keyed.ns_port, key=KEY) as client:
        assert client.gather(client.map(tasks.inc, range(20)), timeout=30) == list(range(1, 21))


@pytest.mark.parametrize("key", [None, "wrong key"])
def test_client_without_the_right_key_is_refused(keyed: Cluster, key: str | None) -> None:
    with pytest.raises(AuthenticationFailed, match="authentication failed: the key does not match"):
        Client(ns_host="127.0.0.1", ns_port=keyed.ns_port, key=key)


@pytest.mark.parametrize("extra", [[], ["--key", "wrong key"]], ids=["no-key", "wrong-key"])
def test_cli_without_the_right_key_prints_one_clear_line(keyed: Cluster, extra: list[str]) -> None:
    result = pyrodist("status", *keyed.ns_args, *extra)
    assert_one_clear_line(result, "authentication failed: the key does not match")


def test_key_file_and_environment_work_like_key(keyed: Cluster, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert pyrodist("status", "--json", *keyed.ns_args, "--key-file", str(key_file)).returncode == 0
    env_result = subprocess.run(
        [sys.executable, "-m", "pyrodist", "status", "--json", *keyed.ns_args], capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYRODIST_KEY": KEY},
    )  # fmt: skip
    assert env_result.returncode == 0, env_result.stderr


def test_worker_with_a_wrong_key_exits_with_one_clear_line(keyed: Cluster) -> None:
    result = pyrodist("worker", "-I", "math", *keyed.ns_args, "--key", "wrong key")
    assert result.returncode == 1
    assert "authentication failed" in result.stderr and "Traceback" not in result.stderr


def test_master_logs_a_refused_peer_and_carries_on(keyed: Cluster) -> None:
    ns = Pyro4.locateNS("127.0.0.1", keyed.ns_port, hmac_key=KEY.encode())
    uri = ns.lookup("pyrodist.master")
    ns._pyroRelease()
    intruder = Pyro4.Proxy(uri)  # no key
    with pytest.raises(Pyro4.errors.CommunicationError, match="hmac"):
        intruder.submit("os:system", ["true"])
    master_proc = next(p for p in keyed.procs.procs if "master" in p.args)  # type: ignore[operator]
    wait_until(lambda: "refused a connection from 127.0.0.1: wrong or missing key" in keyed.procs.log(master_proc),
               what="the log line")  # fmt: skip
    with Client(ns_host="127.0.0.1", ns_port=keyed.ns_port, key=KEY) as client:
        assert client.submit(tasks.inc, 1).result(timeout=30) == 2
        assert client.stats()["submitted"] >= 1


# ---- serializers


@pytest.mark.parametrize("serializer", ["pickle", "marshal"])
def test_master_refuses_unsafe_serializers(cluster: Cluster, serializer: str) -> None:
    ns = Pyro4.locateNS("127.0.0.1", cluster.ns_port)
    uri = ns.lookup("pyrodist.master")
    ns._pyroRelease()
    with Pyro4.Proxy(uri) as master:
        master._pyroSerializer = serializer
        with pytest.raises(Pyro4.errors.CommunicationError, match="serializer that is not accepted"):
            master.ping()


# ---- TLS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA, a certificate for 127.0.0.1 signed by it, and one signed by another CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    folder = tmp_path_factory.mktemp("tls")
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=pyrodist {ca}")  # fmt: skip
    for name, ca in (("node", "ca"), ("rogue", "rogue-ca")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", "/CN=127.0.0.1")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", str(ext))  # fmt: skip
    return {name: folder / name for name in ("ca.pem", "node.pem", "node.key", "rogue.pem", "rogue.key")}


def tls_flags(certs: dict[str, Path], cert: str = "node", ca: str = "ca.pem") -> list[str]:
    return ["--tls-cert", str(certs[f"{cert}.pem"]), "--tls-key", str(certs[f"{cert}.key"]), "--tls-ca", str(certs[ca])]


def test_two_way_tls_cluster(procs: Processes, certificates: dict[str, Path]) -> None:
    flags = tls_flags(certificates)
    cluster = start_secured(procs, *flags)
    wait_until(lambda: pyrodist("status", "--json", *cluster.ns_args, *flags).returncode == 0, timeout=30)
    result = pyrodist("submit", "math:factorial", "20", *cluster.ns_args, *flags)
    assert result.stdout.strip() == "2432902008176640000", result.stderr
    plain = pyrodist("status", *cluster.ns_args)
    assert_one_clear_line(plain, "--tls-ca")
    no_client_cert = pyrodist("status", *cluster.ns_args, "--tls-ca", str(certificates["ca.pem"]))
    assert_one_clear_line(no_client_cert, "TLS handshake with the name server failed")
    rogue = pyrodist("status", *cluster.ns_args, *tls_flags(certificates, "rogue"))
    assert_one_clear_line(rogue, "TLS handshake")


def test_an_idle_connection_does_not_stop_a_tls_master_or_name_server(
    procs: Processes, certificates: dict[str, Path]
) -> None:
    flags = tls_flags(certificates)
    cluster = start_secured(procs, *flags)
    master_log = procs.procs[1]
    found = wait_until(lambda: re.search(r"serving at PYRO:\S+@127\.0\.0\.1:(\d+)", procs.log(master_log)),
                       timeout=30, what="the master's address")  # fmt: skip
    idle = [socket.create_connection(("127.0.0.1", port)) for port in (cluster.ns_port, int(found.group(1)))]
    try:  # connected, and then silent: no TLS handshake, no Pyro4 message
        result = pyrodist("submit", "math:factorial", "20", *cluster.ns_args, *flags, timeout=60)
        assert result.stdout.strip() == "2432902008176640000", result.stderr
    finally:
        for sock in idle:
            sock.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, in MB."""
    rss = memory_mb(pid)[0]
    assert rss is not None, f"no resident memory for pid {pid}"
    return rss


def test_a_huge_first_message_is_refused_after_its_header_not_read_whole(procs: Processes) -> None:
    cluster = start_secured(procs, "--key", "sesame", workers=0)
    master = procs.procs[1]
    found = wait_until(lambda: re.search(r"serving at PYRO:\S+@127\.0\.0\.1:(\d+)", procs.log(master)),
                       timeout=30, what="the master's address")  # fmt: skip
    header = Pyro4.message.Message(Pyro4.message.MSG_CONNECT, b"", 2, 0, 1)
    header.data_size = 200 * 2**20  # what it claims to send, before any key is shown
    before = rss_mb(master.pid)
    sent = 0
    with socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=10) as sock:
        try:
            sock.sendall(header._Message__header_bytes())
            chunk = b"\0" * 2**20
            while sent < 200 * 2**20:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the master hung up
            pass
    assert sent < 50 * 2**20, f"the master read {sent >> 20} MB of a message from a peer that showed no key"
    assert rss_mb(master.pid) - before < 20
    assert master.poll() is None
    with Client(settings=Settings(ns_host="127.0.0.1", ns_port=cluster.ns_port, key="sesame")) as client:
        assert client.stats()["counts"]["pending"] == 0  # and it serves the next peer as before


def test_silent_connections_from_one_host_cannot_take_every_thread(procs: Processes) -> None:
    cluster = start_secured(procs, "--key", "sesame", workers=0, master_args=("--max-connections", "40"))
    master = procs.procs[1]
    found = wait_until(lambda: re.search(r"serving at PYRO:\S+@127\.0\.0\.1:(\d+)", procs.log(master)),
                       timeout=30, what="the master's address")  # fmt: skip
    silent = []
    try:
        for _ in range(80):  # twice the master's threads, from another address, each saying nothing
            sock = socket.socket()
            silent.append(sock)
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", int(found.group(1))))
        settings = Settings(ns_host="127.0.0.1", ns_port=cluster.ns_port, key="sesame", connect_timeout=3)
        with Client(settings=settings) as client:
            assert client.stats()["counts"]["pending"] == 0
    finally:
        for sock in silent:
            sock.close()


def test_a_flood_of_refused_connections_is_a_few_log_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(remote_patches, "REFUSALS_LOGGED", (3, 60.0))
    monkeypatch.setattr(remote_patches, "_refusals", {"window": time.monotonic(), "lines": 0, "unlogged": 0})
    with caplog.at_level(logging.WARNING, logger="pyrodist.remote_patches"):
        for _ in range(10):
            remote_patches.log_refused("192.0.2.7", "too many connections")
        assert len(caplog.records) == 3
        remote_patches._refusals["window"] -= 61  # the next window
        remote_patches.log_refused("192.0.2.7", "too many connections")
    assert len(caplog.records) == 4 and "(7 more were refused without a line)" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    ("message", "refused"),
    [("_ssl.c:980: The handshake operation timed out", False), ("timed out", False),
     ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", True), ("message hmac mismatch", True),
     ("[Errno 111] Connection refused", False)],
)  # fmt: skip
def test_a_handshake_that_timed_out_is_a_network_error_not_a_wrong_key(message: str, refused: bool) -> None:
    if refused:
        with pytest.raises(AuthenticationFailed):
            remote.check_authentication(Pyro4.errors.CommunicationError(message), "the master's")
    else:
        remote.check_authentication(Pyro4.errors.CommunicationError(message), "the master's")  # retried by callers


# ---- binding


def test_listening_beyond_loopback_without_protection_warns(caplog: pytest.LogCaptureFixture) -> None:
    exposed = Settings()
    with caplog.at_level(logging.WARNING):
        warn_if_exposed("master", "192.0.2.10", exposed, insecure=False)  # a documentation address: nothing binds
    assert "without --key or TLS" in caplog.text and "192.0.2.10" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_if_exposed("master", "127.0.0.1", exposed, insecure=False)
        warn_if_exposed("master", "192.0.2.10", Settings(key="k"), insecure=False)
        warn_if_exposed("master", "192.0.2.10", exposed, insecure=True)
    assert caplog.text == ""


def test_servers_bind_to_loopback_by_default() -> None:
    for command in ("nameserver", "master"):
        assert "[default: 127.0.0.1]" in pyrodist(command, "--help").stdout


# ---- limits


def test_queue_full_fails_submit_and_map_waits(procs: Processes) -> None:
    cluster = start_secured(procs, workers=0, master_args=("--max-pending", "10"))
    wait_until(cluster.master_up, timeout=30, what="the master")
    with cluster.client() as client:
        first = client.map(tasks.inc, range(10))
        with pytest.raises(MasterRejected, match="queue full: 10 tasks pending and the limit is 10"):
            client.submit(tasks.inc, 99)
        with (
            Pyro4.Proxy(f"PYRONAME:pyrodist.master@127.0.0.1:{cluster.ns_port}") as master,
            pytest.raises(ValueError, match="queue full"),
        ):
            master.submit_many([{"func": "tests.tasks:inc", "args": [1]}])
        cluster.start_worker()
        more = client.map(tasks.inc, range(10, 40), chunksize=5)  # waits while the queue is full, then goes on
        assert client.gather(first + more, timeout=60) == list(range(1, 41))


def test_payload_limit_is_learned_by_the_client_and_kept_by_the_worker(procs: Processes) -> None:
    cluster = start_secured(procs, workers=0, master_args=("--max-payload", "4096", "--max-value", "8192"))
    wait_until(cluster.master_up, timeout=30, what="the master")
    cluster.start_worker("--max-payload", "4096", "--max-value", "8192")
    with cluster.client() as client:
        with pytest.raises(EncodingError, match="limit is 8192"):
            client.submit(tasks.echo, b"x" * 9000)
        with pytest.raises(TaskError, match="limit is 8192"):
            client.submit(tasks.big_result, 9000).result(timeout=30)
        assert client.submit(tasks.big_result, 100).result(timeout=30) == b"x" * 100
        assert client.submit(tasks.echo, b"y" * 6000).result(timeout=30) == b"y" * 6000  # both ways in chunks


def test_subscriptions_per_client_are_limited(cluster: Cluster) -> None:
    daemon = Pyro4.Daemon(host="127.0.0.1", port=0)

    @Pyro4.expose
    class Sink:
        def task_done(self, record: dict[str, Any]) -> None:
            pass

    uri = daemon.register(Sink())
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    try:
        with Pyro4.Proxy(f"PYRONAME:pyrodist.master@127.0.0.1:{cluster.ns_port}") as master:
            limit = master.limits()["max_subscriptions_per_client"]
            subs = [master.subscribe(Pyro4.Proxy(uri), None, "greedy") for _ in range(limit)]
            with pytest.raises(ValueError, match="the most allowed"):
                master.subscribe(Pyro4.Proxy(uri), None, "greedy")
            for sub in subs:
                master.unsubscribe(sub)
    finally:
        daemon.shutdown()
        thread.join(timeout=10)
        daemon.close()


# ---- the allow-list


@pytest.mark.parametrize("ref", ["tests.tasks:os.system", "tests.tasks:os", "builtins:eval", "tests.tasks:__import__"])
def test_attribute_walks_private_names_and_builtins_are_refused(client: Client, ref: str) -> None:
    with pytest.raises((FunctionRefError, TaskError)) as info:
        client.submit(ref).result(timeout=30)
    assert ref.split(":")[0] in str(info.value)


def test_json_messages_skip_the_class_walk_only_when_no_class_can_be_inside() -> None:
    """remote.py decodes json messages without Pyro4's "__class__" walk unless the text could hold that key."""
    remote.configure()
    serializer = Pyro4.util.get_serializer("json")
    error = serializer.dumps(ValueError("boom"))  # Pyro4 sends exceptions as a dict with a "__class__" key
    assert isinstance(serializer.loads(error), ValueError)
    escaped = error.replace(b'"__class__"', b'"\\u005f_class__"')  # the same key, spelled with an escape
    assert isinstance(serializer.loads(escaped), ValueError)
    plain = {"a": [1, {"b": "c"}], "d": None}
    assert serializer.loads(serializer.dumps(plain)) == plain
    call = serializer.dumpsCall("obj", "method", ["x", {"k": [1]}], {"kw": 2})
    assert serializer.loadsCall(call) == ("obj", "method", ["x", {"k": [1]}], {"kw": 2})
