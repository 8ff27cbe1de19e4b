"""Name server trust: with a registration key, only the master may register, replace or remove its name.

Everyone below holds the cluster key, as every worker does: the impostor is a peer of the cluster.
Real processes: the guarded name server is Pyro4's, changed in `pyrodist nameserver`.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from typing import Any

import Pyro4
import Pyro4.errors
import pytest

from pyrodist import Client, Settings
from pyrodist.protocol import registration_proof
from pyrodist.remote_names import PROOF_TAG
from tests import tasks
from tests.conftest import Cluster, Processes, free_port, port_open, wait_until

KEY = "cluster key every worker holds"
REGISTRATION = {"PYRODIST_REGISTRATION_KEY": "held by the name server and the master only"}
NAME = "pyrodist.master"


def start_guarded(procs: Processes, ns_env: dict[str, str] | None = REGISTRATION) -> Cluster:
    """A keyed name server (guarded when ns_env holds a registration key) and a master with the registration key."""
    port = free_port()
    procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port), "--key", KEY, env=ns_env)
    wait_until(lambda: port_open(port), what="the name server")
    cluster = Cluster(procs, port)
    cluster.settings = Settings(ns_host="127.0.0.1", ns_port=port, key=KEY)
    return cluster


def start_master(cluster: Cluster, env: dict[str, str] | None = REGISTRATION) -> Any:
    return cluster.procs.start("master", *cluster.ns_args, "--key", KEY, "--lease-timeout", "3", env=env)


def name_server(cluster: Cluster) -> Any:
    """A proxy to the name server as a peer holding the cluster key (and not the registration key) makes it."""
    ns = Pyro4.Proxy(f"PYRO:Pyro.NameServer@127.0.0.1:{cluster.ns_port}")
    ns._pyroHmacKey, ns._pyroTimeout = KEY.encode(), 10
    return ns


def registered(cluster: Cluster) -> str | None:
    with name_server(cluster) as ns:
        try:
            return str(ns.lookup(NAME))
        except Pyro4.errors.NamingError:
            return None


@pytest.fixture
def guarded(procs: Processes) -> Iterator[tuple[Cluster, str]]:
    cluster = start_guarded(procs)
    start_master(cluster)
    uri = wait_until(lambda: registered(cluster), timeout=30, what="the master's registration")
    cluster.start_worker("--key", KEY)
    yield cluster, uri


def test_a_guarded_cluster_runs_jobs_and_its_workers_need_no_registration_key(guarded: tuple[Cluster, str]) -> None:
    cluster, _ = guarded
    with Client(settings=cluster.settings) as client:
        assert client.gather(client.map(tasks.inc, range(20)), timeout=60) == list(range(1, 21))


def test_a_peer_with_the_cluster_key_cannot_register_replace_or_remove_the_masters_name(
    guarded: tuple[Cluster, str],
) -> None:
    cluster, uri = guarded
    impostor = f"PYRO:obj_impostor@127.0.0.1:{free_port()}"
    with name_server(cluster) as ns:
        assert not [m for m in ns.lookup(NAME, return_metadata=True)[1] if m.startswith(PROOF_TAG)]  # not kept
        guessed = ns.nonce()
        forged = PROOF_TAG + guessed + ":" + registration_proof("a guess", "register", NAME, impostor, guessed)
        attempts = {
            "register": lambda: ns.register(NAME, impostor),
            "register with a forged proof": lambda: ns.register(NAME, impostor, metadata=[forged]),
            "register with a made-up nonce": lambda: ns.register(NAME, impostor, metadata=[PROOF_TAG + "0:0"]),
            "register another name": lambda: ns.register("pyrodist.other", impostor),
            "remove": lambda: ns.remove(NAME),
            "remove by prefix": lambda: ns.remove(prefix="pyrodist"),
            "strip the metadata": lambda: ns.set_metadata(NAME, []),
            "remove with a forged proof": lambda: ns.remove_proven(NAME, uri, ns.nonce() + ":" + "0" * 64),
            "remove with a non-ASCII proof": lambda: ns.remove_proven(NAME, uri, "é:é"),
        }
        for what, attempt in attempts.items():
            with pytest.raises(Pyro4.errors.NamingError):
                attempt()
            assert str(ns.lookup(NAME)) == uri, what
    with Client(settings=cluster.settings) as client:  # new clients still find the real master
        assert client.submit(tasks.inc, 1).result(timeout=30) == 2


def test_a_proof_seen_on_the_wire_cannot_be_used_again(guarded: tuple[Cluster, str]) -> None:
    cluster, uri = guarded
    key = REGISTRATION["PYRODIST_REGISTRATION_KEY"]
    with name_server(cluster) as ns:
        nonce = ns.nonce()
        seen = PROOF_TAG + nonce + ":" + registration_proof(key, "register", NAME, uri, nonce)
        ns.register(NAME, uri, metadata=[seen])  # the master's own registration, as an eavesdropper saw it
        with pytest.raises(Pyro4.errors.NamingError):
            ns.register(NAME, uri, metadata=[seen])
        moved = f"PYRO:pyrodist.master@127.0.0.1:{free_port()}"
        with pytest.raises(Pyro4.errors.NamingError):
            ns.register(NAME, moved, metadata=[seen])
        assert str(ns.lookup(NAME)) == uri


def test_an_impostor_master_cannot_take_over_a_dead_masters_name_but_the_real_one_can(
    guarded: tuple[Cluster, str],
) -> None:
    cluster, uri = guarded
    master = cluster.procs.procs[1]
    master.send_signal(signal.SIGKILL)  # its entry stays behind, pointing at nothing
    master.wait(timeout=10)
    impostor = start_master(cluster, env={"PYRODIST_REGISTRATION_KEY": ""})
    assert impostor.wait(timeout=30) != 0
    assert "refused to register 'pyrodist.master'" in cluster.procs.log(impostor)
    assert "PYRODIST_REGISTRATION_KEY" in cluster.procs.log(impostor)
    assert registered(cluster) == uri

    start_master(cluster)  # the real one, restarted with the registration key, replaces the dead entry
    wait_until(lambda: registered(cluster) not in (None, uri), timeout=30, what="the new registration")
    with Client(settings=cluster.settings) as client:
        assert client.submit(tasks.inc, 2).result(timeout=30) == 3


def test_a_master_that_stops_removes_its_name_with_a_proof(guarded: tuple[Cluster, str]) -> None:
    cluster, _ = guarded
    master = cluster.procs.procs[1]
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=30) == 0
    assert registered(cluster) is None


def test_a_master_with_a_registration_key_refuses_a_name_server_that_checks_nothing(procs: Processes) -> None:
    cluster = start_guarded(procs, ns_env={"PYRODIST_REGISTRATION_KEY": ""})
    master = start_master(cluster)
    assert master.wait(timeout=30) != 0
    log = procs.log(master)
    assert re.search(r"does not check registrations.*pyrodist nameserver.*PYRODIST_REGISTRATION_KEY", log), log
    assert registered(cluster) is None
