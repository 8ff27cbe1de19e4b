"""--nathost/--natport: the master and the name server advertise the address given, not the bound one."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from pyrodist import Client, ConnectionFailed, Settings, remote
from tests import tasks
from tests.conftest import ROOT, Processes, free_port, port_open, start_cluster, wait_until


def test_master_registers_its_nat_address_and_clients_use_it(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0)
    port = free_port()
    args = ["--name", "nat.master", "--host", "127.0.0.1", "--port", str(port), "--nathost", "localhost"]
    master = procs.start("master", *cluster.ns_args, *args)
    settings = dataclasses.replace(cluster.settings, master_name="nat.master")
    uri = wait_until(lambda: _registered(settings), timeout=30, what="the NAT master to register")
    assert uri == f"PYRO:nat.master@localhost:{port}"
    assert "serving at PYRO:nat.master@localhost" in procs.log(master)
    worker = cluster.start_worker("--master", "nat.master")
    with Client(settings=settings) as client:
        assert client.submit(tasks.inc, 1).result(timeout=30) == 2
    assert worker.poll() is None


def test_name_server_advertises_its_nat_address(procs: Processes) -> None:
    port = free_port()
    ns = procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port), "--nathost", "localhost")
    wait_until(lambda: port_open(port), what="the name server")
    wait_until(lambda: "running at" in procs.log(ns), timeout=10)
    assert f"PYRO:Pyro.NameServer@localhost:{port}" in procs.log(ns)


def test_natport_without_nathost_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyrodist", "nameserver", "--port", "0", "--natport", "9999"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--natport needs --nathost" in result.stderr


def _registered(settings: Settings) -> str | None:
    try:
        return remote.lookup_master(settings)
    except ConnectionFailed:  # not registered yet
        return None
