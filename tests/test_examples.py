"""The examples and `python -m nameserver` run as a user runs them, from the repository root."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import ROOT, free_port, port_open, wait_until


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_squares_example_on_a_local_cluster() -> None:
    result = run("-m", "examples.squares", "--count", "30")
    assert result.returncode == 0, result.stderr
    assert f"sum: {sum(i * i for i in range(30))}" in result.stdout


def test_callbacks_example_streams_every_result() -> None:
    result = run("-m", "examples.callbacks")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done") >= 5, result.stdout


def test_python_m_nameserver_serves_and_exits_0_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nameserver", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT)
    try:
        wait_until(lambda: port_open(port), what="python -m nameserver to listen")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
