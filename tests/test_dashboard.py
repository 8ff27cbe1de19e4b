"""The dashboard: its HTTP API against a fake master, and its page in a real headless chromium.

The browser tests need Debian's `chromium` (`.ci/run` installs it); without it they skip, saying so.
`PYRODIST_UPDATE_SCREENSHOT=1` also rewrites `docs/dashboard.png`.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyrodist import TaskError
from pyrodist.cli import cli
from pyrodist.dashboard import MAX_FAILURES, Dashboard
from tests import tasks

from .conftest import ADMIN_KEY, ROOT, Processes, free_port, start_cluster, wait_until

DONE_START, DONE_STEP, SUBMITTED = 100, 7, 2000
XSS = '<img src=x onerror="document.title=1">'
TRACEBACK = """Traceback (most recent call last):
  File "/srv/jobs/examples/squares.py", line 14, in square_root
    return math.sqrt(x)
           ^^^^^^^^^^^^
ValueError: math domain error
"""


class FakeMaster:
    """Stats that move on every call, like a master whose workers finish tasks; failures newest first."""

    def __init__(self, workers: int = 1, failures: int = 1, note: str = "", broken: bool = False) -> None:
        self._lock = threading.Lock()
        self.workers = workers
        self.failure_records = [
            {"id": f"m1a2b3.{900 - 37 * i}", "func": "examples.squares:square_root", "state": "failed",
             "worker": f"node{i % 2 + 1}-{4711 + i % 2}", "finished": 1_750_000_000.0 - 60 * i, "attempts": 1,
             "error": {"type": "ValueError", "message": f"math domain error{note}", "traceback": TRACEBACK}}
            for i in range(failures)
        ]  # fmt: skip
        self.broken = broken
        self.stats_calls = 0
        self.done = DONE_START

    def stats(self) -> dict[str, Any]:
        """The master's stats as Master.stats() shapes them; done grows by 4 to 10 a call, in waves."""
        if self.broken:
            raise RuntimeError("the master is closing")
        with self._lock:
            call, self.stats_calls = self.stats_calls, self.stats_calls + 1
            rate = DONE_STEP + round(3 * math.sin(call / 6))
            done = self.done
            self.done += rate
        rows = [
            {"id": f"node{i + 1}-{4711 + i}", "host": f"node{i + 1}", "pid": 4711 + i, "concurrency": 4,
             "running": 4 - i % 2, "done": done // self.workers + 5 * (1 - i), "failed": 2 - i if i < 2 else 0,
             "last_seen": round(0.1 + 0.7 * i, 3), "state": "stopping" if i == 2 else "live"}
            for i in range(self.workers)
        ]  # fmt: skip
        running, failed = sum(w["running"] for w in rows), len(self.failure_records)
        return {
            "master": {"name": "pyrodist.master", "epoch": "a2b3c4", "pid": 4242, "uptime": 3725.5 + call,
                       "durable": False},
            "workers": rows, "lost_workers": [], "clients": 2, "subscriptions": 0,
            "counts": {"pending": SUBMITTED - done - failed - 1 - running, "running": running, "done": done,
                       "failed": failed, "cancelled": 1},
            "submitted": SUBMITTED, "done": done, "failed": failed, "cancelled": 1,
            "throughput_1m": float(rate),
        }  # fmt: skip

    def failures(self, limit: int) -> list[dict[str, Any]]:
        """The latest failed records, newest first."""
        return self.failure_records[:limit]


@pytest.fixture
def fake() -> FakeMaster:
    return FakeMaster(workers=2, failures=5)


@pytest.fixture
def dashboard(fake: FakeMaster) -> Iterator[Dashboard]:
    with Dashboard(fake.stats, fake.failures) as dash:
        yield dash


def get(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request (errors included)."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


# ---- the HTTP API


def test_binds_to_loopback_by_default(dashboard: Dashboard) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", dashboard.url)


def test_page_is_html_with_the_elements_tests_and_readers_use(dashboard: Dashboard) -> None:
    status, headers, body = get(dashboard.url)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    for element in ("master-name", "count-pending", "count-running", "count-done", "count-failed",
                    "count-cancelled", "count-throughput", "chart", "workers", "workers-body", "failures"):  # fmt: skip
        assert f'id="{element}"' in page
    assert "innerHTML" not in page, "data from the API must go in as text only"
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]


def test_stats_are_served_as_json(dashboard: Dashboard, fake: FakeMaster) -> None:
    status, headers, body = get(dashboard.url + "api/stats")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    stats = json.loads(body)
    assert [w["id"] for w in stats["workers"]] == ["node1-4711", "node2-4712"]
    assert stats["done"] == DONE_START
    assert json.loads(get(dashboard.url + "api/stats")[2])["done"] > DONE_START


def test_failures_honour_the_limit(dashboard: Dashboard, fake: FakeMaster) -> None:
    status, _, body = get(dashboard.url + "api/failures?limit=2")
    assert status == 200
    assert json.loads(body) == fake.failure_records[:2]
    assert len(json.loads(get(dashboard.url + "api/failures")[2])) == 5  # the default limit covers all five


def test_failures_limit_is_enforced_even_when_the_provider_returns_more(fake: FakeMaster) -> None:
    with Dashboard(fake.stats, lambda limit: fake.failure_records) as dash:
        assert len(json.loads(get(dash.url + "api/failures?limit=3")[2])) == 3


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=x", f"limit={MAX_FAILURES + 1}", "limit=",
                                   "limit=1&limit=2", "limit=" + "9" * 5000])  # fmt: skip
def test_bad_limit_is_400(dashboard: Dashboard, query: str) -> None:
    status, _, body = get(dashboard.url + "api/failures?" + query)
    assert status == 400
    assert "limit must be" in json.loads(body)["error"]


@pytest.mark.parametrize("path", ["nope", "api", "api/stats/x", "index.html", "favicon.ico"])
def test_unknown_path_is_404(dashboard: Dashboard, path: str) -> None:
    assert get(dashboard.url + path)[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_allowed(dashboard: Dashboard, method: str) -> None:
    status, headers, _ = get(dashboard.url + "api/stats", method=method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


def test_head_sends_headers_only(dashboard: Dashboard) -> None:
    status, headers, body = get(dashboard.url + "api/stats", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0


def test_foreign_host_names_are_refused_on_loopback(dashboard: Dashboard) -> None:
    """A page from another site resolved to 127.0.0.1 (DNS rebinding) cannot read the API."""
    port = dashboard.url.rsplit(":", 1)[1].rstrip("/")
    assert get(dashboard.url + "api/stats", Host="evil.example:" + port)[0] == 403
    for host in ("localhost:" + port, "127.0.0.1:" + port, "LOCALHOST", f"[::1]:{port}"):
        assert get(dashboard.url + "api/stats", Host=host)[0] == 200, host


def basic(user: str, password: str) -> str:
    """An Authorization header's value for HTTP Basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("path", ["", "api/stats", "api/failures", "nope"])
def test_with_a_password_every_request_needs_it(fake: FakeMaster, path: str) -> None:
    """The operator's view of every client's tasks: with the admin key as password, nothing without it."""
    with Dashboard(fake.stats, fake.failures, password="s3cret") as dash:
        wrong = ["", "Basic", basic("admin", "s3cre"), basic("admin", "s3cret!"), "Basic !!!", "Bearer s3cret",
                 "Basic " + base64.b64encode(b"s3cret").decode()]  # fmt: skip
        for header in wrong:
            status, headers, body = get(dash.url + path, **({"Authorization": header} if header else {}))
            assert status == 401, header
            assert headers["WWW-Authenticate"].startswith("Basic realm=")
            assert b"error" in body and b"node1" not in body and b"m1a2b3" not in body
        assert fake.stats_calls == 0
        for user in ("admin", "", "any name"):
            status, _, _ = get(dash.url + path, Authorization=basic(user, "s3cret"))
            assert status == (404 if path == "nope" else 200)
    assert fake.stats_calls == (3 if path == "api/stats" else 0)


def test_a_failing_provider_gives_503_and_the_server_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeMaster(broken=True)
    with Dashboard(fake.stats, fake.failures) as dash:
        status, _, body = get(dash.url + "api/stats")
        assert status == 503
        assert "could not answer" in json.loads(body)["error"]
        assert "RuntimeError: the master is closing" in caplog.text
        assert get(dash.url + "api/failures")[0] == 200


def test_requests_are_not_logged_to_stderr(dashboard: Dashboard, capfd: pytest.CaptureFixture[str]) -> None:
    for path in ("", "api/stats", "nope"):
        get(dashboard.url + path)
    assert capfd.readouterr().err == ""


def test_close_stops_serving(fake: FakeMaster) -> None:
    dash = Dashboard(fake.stats, fake.failures)
    dash.start()
    assert get(dash.url + "api/stats")[0] == 200
    dash.close()
    with pytest.raises(urllib.error.URLError) as info:
        get(dash.url + "api/stats")
    assert isinstance(info.value.reason, ConnectionRefusedError)
    dash.close()  # a second close is harmless


def test_close_without_start_releases_the_port(fake: FakeMaster) -> None:
    dash = Dashboard(fake.stats, fake.failures)
    dash.close()
    host, port = dash.url[len("http://") :].rstrip("/").split(":")
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(host, int(port), timeout=5).connect()


# ---- a real browser

BROWSER_TIMEOUT = 60.0


def run(command: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Code, stdout and stderr of command, run in its own process group that is killed afterwards.

    The code is None when the command did not finish in timeout seconds.
    """
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        return None, out, err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # helpers the browser left behind
        proc.wait(timeout=10)


def find_chromium() -> str | None:
    """Debian's chromium, when installed."""
    return shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium executable (installed by `.ci/run`); the browser tests skip without it."""
    found = find_chromium()
    if not found:
        pytest.skip("browser test: chromium is not installed (apt-get install chromium; .ci/run does)")
    return found


def browse(chromium: str, profile: Path, url: str, *options: str, budget_ms: int = 3000) -> str:
    """Run headless chromium on url with options (e.g. --dump-dom) after budget_ms of virtual time."""
    assert url.startswith("http://127.0.0.1:")
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *options, url,
    ]  # fmt: skip
    code, out, err = run(command, BROWSER_TIMEOUT)
    assert code is not None, f"chromium did not finish in {BROWSER_TIMEOUT} s:\n{err[-2000:]}"
    assert code == 0, f"chromium exited with {code}:\n{err[-2000:]}"
    return out


def counter(dom: str, name: str) -> int:
    match = re.search(rf'id="count-{name}">(\d+)<', dom)
    assert match, f"no number in count-{name}"
    return int(match.group(1))


@pytest.mark.slow
def test_the_page_in_a_real_browser_shows_workers_failures_and_moving_counts(chromium: str, tmp_path: Path) -> None:
    fake = FakeMaster(workers=3, failures=2, note=" " + XSS)
    with Dashboard(fake.stats, fake.failures) as dash:
        first = browse(chromium, tmp_path, dash.url, "--dump-dom")
        calls = fake.stats_calls
        second = browse(chromium, tmp_path, dash.url, "--dump-dom")
    for worker in ("node1-4711", "node2-4712", "node3-4713"):
        assert f'<tr data-worker="{worker}"><td>{worker}</td><td>' in first
    assert '<span id="master-name">pyrodist.master</span>' in first
    assert "up 1 h 2 min" in first
    failures = first[first.index('id="failures"') :]
    assert '<details data-task="m1a2b3.900" open="">' in failures, "the newest traceback is open at first"
    assert '<details data-task="m1a2b3.863">' in failures
    assert "math domain error &lt;img src=x" in failures  # shown as text, never parsed as HTML
    assert "<img" not in first
    assert "return math.sqrt(x)" in failures[failures.index("<pre>") :]
    assert calls >= 2, "the page polls /api/stats every second"
    assert counter(first, "done") > DONE_START, "the counts moved while the page was open"
    assert counter(second, "done") > counter(first, "done")
    assert counter(first, "failed") == 2
    samples = re.search(r'id="chart" data-samples="(\d+)"', first)
    assert samples and int(samples.group(1)) >= 1, "the chart has throughput samples"


@pytest.mark.slow
def test_screenshot(chromium: str, tmp_path: Path) -> None:
    """Renders without error; PYRODIST_UPDATE_SCREENSHOT=1 keeps the picture as docs/dashboard.png."""
    update = os.environ.get("PYRODIST_UPDATE_SCREENSHOT") == "1"
    target = ROOT / "docs" / "dashboard.png" if update else tmp_path / "dashboard.png"
    fake = FakeMaster(workers=3, failures=3)
    with Dashboard(fake.stats, fake.failures) as dash:
        options = (f"--screenshot={target}", "--window-size=1200,800", "--hide-scrollbars")
        browse(chromium, tmp_path / "profile", dash.url, *options, budget_ms=120_000 if update else 3000)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_master_serves_the_dashboard_with_live_figures(procs: Processes) -> None:
    port = free_port()
    cluster = start_cluster(procs, workers=2, master_args=("--dashboard", str(port)))

    def api(path: str) -> Any:
        status, _, body = get(f"http://127.0.0.1:{port}{path}", Authorization=basic("operator", ADMIN_KEY))
        assert status == 200, body
        return json.loads(body)

    assert get(f"http://127.0.0.1:{port}/api/stats")[0] == 401  # the master's admin key is the password

    assert len(api("/api/stats")["workers"]) == 2
    with cluster.client() as client:
        client.gather(client.map(tasks.inc, range(50)), timeout=30)
        wait_until(lambda: api("/api/stats")["done"] >= 50, what="the dashboard's done count to move")
        with pytest.raises(TaskError):
            client.submit(tasks.boom, "shown on the dashboard").result(timeout=30)
    failures = api("/api/failures?limit=5")
    assert failures[0]["error"]["message"] == "shown on the dashboard" and "owner" not in failures[0]
    assert b'id="workers"' in get(f"http://127.0.0.1:{port}/", Authorization=basic("operator", ADMIN_KEY))[2]


@pytest.mark.parametrize("admin_key", ["", "s3cret"])
@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_a_dashboard_beyond_loopback_is_refused_without_insecure(host: str, admin_key: str) -> None:
    """Plain HTTP: every client's tasks to anyone, or the admin key in clear text: the master does not start."""
    args = ["master", "--dashboard", "0", "--dashboard-host", host, "--key", "k"]
    result = CliRunner().invoke(cli, args, env={"PYRODIST_ADMIN_KEY": admin_key})
    assert result.exit_code == 2
    assert f"the dashboard on {host} would show every client's tasks" in result.output
    assert ("password in clear text" if admin_key else "set PYRODIST_ADMIN_KEY") in result.output
    assert "--insecure" in result.output
