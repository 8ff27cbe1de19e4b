"""The `pyrodist` command as a person uses it: real processes, clear one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyrodist.cli import cli
from pyrodist.cliopts import parse_arg
from tests import tasks
from tests.conftest import ROOT, Cluster, Processes, free_port, start_cluster, wait_until


def pyrodist(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the pyrodist command to completion (env adds to its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "pyrodist", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=dict(os.environ, PYRODIST_NS_HOST="", PYRODIST_NS_PORT="", **(env or {})),
    )  # fmt: skip


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3, result.stderr  # click may add a usage line and a hint
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_help_lists_every_command() -> None:
    result = pyrodist("--help")
    assert result.returncode == 0
    for command in ("nameserver", "master", "worker", "submit", "status"):
        assert command in result.stdout


def test_submit_prints_the_result_and_takes_negative_numbers(cluster: Cluster) -> None:
    assert pyrodist("submit", "math:factorial", "20", *cluster.ns_args).stdout.strip() == "2432902008176640000"
    assert pyrodist("submit", "math:fabs", "-1", *cluster.ns_args).stdout.strip() == "1.0"
    assert pyrodist("submit", "operator.add", "'a'", "'b'", *cluster.ns_args).stdout.strip() == "ab"
    assert pyrodist("submit", "tests.tasks:echo", "[1, (2, b'x')]", *cluster.ns_args).stdout.strip() == "[1, (2, b'x')]"


def test_submit_no_wait_prints_the_task_id(cluster: Cluster) -> None:
    result = pyrodist("submit", "--no-wait", "math:sqrt", "4", *cluster.ns_args)
    assert result.returncode == 0 and result.stdout.strip().count(".") >= 1


def test_submit_of_a_failing_task_shows_the_remote_error(cluster: Cluster) -> None:
    result = pyrodist("submit", "math:sqrt", "-1", *cluster.ns_args)
    assert result.returncode == 1
    assert "ValueError: math domain error" in result.stderr


def test_submit_of_a_task_raising_its_own_timeout_error_shows_it_as_the_tasks_failure(cluster: Cluster) -> None:
    result = pyrodist("submit", "tests.tasks:wait_for_file", "'/nonexistent/gate'", "None", "0.05", *cluster.ns_args)
    assert result.returncode == 1  # before: "not finished after 30 s; it goes on" (a TimeoutError is one now)
    assert "TimeoutError: /nonexistent/gate did not appear" in result.stderr


def test_status_json_lists_live_workers_and_counts(cluster: Cluster) -> None:
    result = pyrodist("status", "--json", *cluster.ns_args)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert len(stats["workers"]) == 2
    assert set(stats["counts"]) == {"pending", "running", "retrying", "done", "failed", "cancelled", "expired"}
    assert {"id", "host", "pid", "running", "last_seen"} <= set(stats["workers"][0])


def test_status_table(cluster: Cluster) -> None:
    result = pyrodist("status", *cluster.ns_args)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["WORKER", "HOST", "PID", "RUNNING"]
    assert sum(1 for line in lines[1:3] if line.strip()) == 2
    assert "tasks: pending" in result.stdout
    assert "tasks/s over the last minute" in result.stdout


def test_environment_variables_configure_the_commands(cluster: Cluster) -> None:
    env = dict(os.environ, PYRODIST_NS_HOST="127.0.0.1", PYRODIST_NS_PORT=str(cluster.ns_port))
    result = subprocess.run([sys.executable, "-m", "pyrodist", "status", "--json"], capture_output=True, text=True,
                            env=env, timeout=60)  # fmt: skip
    assert result.returncode == 0 and len(json.loads(result.stdout)["workers"]) == 2


def test_no_name_server_is_one_clear_line() -> None:
    port = str(free_port())
    assert_one_clear_line(pyrodist("status", "--ns-host", "127.0.0.1", "--ns-port", port), "no name server found")


def test_master_not_found_is_one_clear_line(procs: Processes) -> None:
    port = free_port()
    procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port))
    args = ["--ns-host", "127.0.0.1", "--ns-port", str(port), "--master", "nobody"]
    wait_until(lambda: "no master registered" in pyrodist("submit", "math:sqrt", "4", *args).stderr, timeout=30)
    assert_one_clear_line(pyrodist("submit", "math:sqrt", "4", *args), "no master registered as 'nobody'")


def test_port_in_use_is_one_clear_line(cluster: Cluster) -> None:
    result = pyrodist("nameserver", "--host", "127.0.0.1", "--port", str(cluster.ns_port))
    assert_one_clear_line(result, "cannot listen on 127.0.0.1", "in use")


def test_master_started_before_the_name_server_waits_for_it(procs: Processes) -> None:
    port = free_port()
    cluster = Cluster(procs, port)
    master = procs.start("master", *cluster.ns_args)
    wait_until(lambda: "master waiting for the name server" in procs.log(master), what="the master to say it waits")
    procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port))
    wait_until(cluster.master_up, timeout=30, what="the master to register")


def test_second_master_with_the_same_name_is_refused(cluster: Cluster) -> None:
    result = pyrodist("master", *cluster.ns_args, timeout=60)
    assert_one_clear_line(result, "already registered", "pyrodist.master")


def test_worker_with_a_module_that_does_not_import_is_refused(cluster: Cluster) -> None:
    assert_one_clear_line(pyrodist("worker", "-I", "no_such_module_xyz", *cluster.ns_args), "no_such_module_xyz")


def test_unknown_option_and_missing_import_are_usage_errors() -> None:
    assert_one_clear_line(pyrodist("status", "--colour"), "No such option")
    assert_one_clear_line(pyrodist("worker"), "-I")


def test_nameserver_and_master_exit_0_on_sigterm(procs: Processes) -> None:
    port = free_port()
    ns = procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port))
    cluster = Cluster(procs, port)
    master = procs.start("master", *cluster.ns_args)
    wait_until(cluster.master_up, timeout=30, what="the master")
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=15) == 0
    ns.send_signal(signal.SIGTERM)
    assert ns.wait(timeout=15) == 0


SIGNAL_WHILE_ENTERING_A_WAIT = """
import os, signal, threading
from pyrodist.cliopts import stop_on_signals
stop = threading.Event()
with stop_on_signals(stop.set):
    with stop._cond:  # what the main thread holds while it enters or leaves stop.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # a handler runs between two of these bytecodes
            pass
    assert stop.wait(10)
print("stopped")
"""


def test_a_signal_arriving_while_the_main_thread_enters_a_wait_still_stops_it() -> None:
    # Seen in CI: a worker whose SIGTERM came as its main thread entered stop.wait() never exited, because
    # the handler's stop.set() waited for the lock its own thread held.
    done = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_ENTERING_A_WAIT], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [("20", 20), ("-1", -1), ("1.5", 1.5), ("'x'", "x"), ("hello", "hello"), ("[1, 2]", [1, 2]), ("None", None),
     ("b'x'", b"x"), ("{1: 2}", {1: 2}), ("os.system('x')", "os.system('x')")],
)  # fmt: skip
def test_shell_arguments_are_literals_or_strings(text: str, value: object) -> None:
    assert parse_arg(text) == value


def test_submit_parses_negative_numbers_as_arguments() -> None:
    command = cli.commands["submit"]
    # The group's help option names: click caches a command's help option, so a bare context would change the help.
    args = ["math:fabs", "-1", "-2.5", "--timeout", "3", "--no-wait"]
    ctx = command.make_context("submit", args, help_option_names=["-h", "--help"])
    assert ctx.params["args"] == ("-1", "-2.5")
    assert ctx.params["timeout"] == 3 and ctx.params["no_wait"] is True
    assert CliRunner().invoke(cli, ["submit", "--help"]).exit_code == 0


def test_bench_command_prints_well_formed_json() -> None:
    result = pyrodist("bench", "--tasks", "100", "--workers", "1", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["tasks"] == 100 and figures["throughput"] > 0
    assert 0 < figures["latency_median_ms"] <= figures["latency_p99_ms"]


def test_bench_takes_the_shared_name_server_options() -> None:
    args = ["config", "--json", "bench", "--ns-host", "ns.example", "--master", "team.master"]
    result = CliRunner().invoke(cli, args, env={"PYRODIST_NS_PORT": "9191"})
    assert result.exit_code == 0, result.output
    options = json.loads(result.output)["bench"]
    assert options["ns_host"] == {"value": "ns.example", "source": "flag"}
    assert options["ns_port"] == {"value": 9191, "source": "environment PYRODIST_NS_PORT"}
    assert options["master"] == {"value": "team.master", "source": "flag"}


def test_worker_logs_json_to_a_file_with_task_start_and_finish(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, workers=0)  # the only worker is the one under test
    logfile = tmp_path / "worker.log"
    with cluster.client() as client:
        futures = client.map(tasks.inc, range(20))
        worker = cluster.start_worker(
            "--burst", "--loglevel", "debug", "--log-format", "json", "--logfile", str(logfile)
        )
        client.gather(futures, timeout=30)
    assert worker.wait(timeout=60) == 0
    entries = [json.loads(line) for line in logfile.read_text().splitlines()]
    assert {"time", "level", "logger", "message", "pid"} <= set(entries[0])
    messages = " ".join(e["message"] for e in entries)
    assert "connected to" in messages and "stopped after" in messages
    assert any(" starting" in e["message"] for e in entries), "task start is logged at debug"
    assert any(" done in " in e["message"] for e in entries), "task finish is logged at debug"


def test_status_watch_refreshes_until_interrupted(cluster: Cluster) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrodist", "status", "--watch", "0.2", *cluster.ns_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: sum("WORKER" in line for line in lines) >= 2, timeout=20, what="two refreshes")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
