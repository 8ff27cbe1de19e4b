"""The master's dashboard: one HTML page polling `/api/stats` and `/api/failures`, standard library only."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_FAILURES = 100
"""The most failure records one `/api/failures` call returns."""
DEFAULT_FAILURES = 10
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
FailureSource = Callable[[int], list[dict[str, Any]]]
"""Given a limit, the latest failed task records, newest first: id, func, worker, finished, error."""

STYLE = """
body{font:14px system-ui,sans-serif;margin:0;background:#f5f6f8;color:#222} .muted{color:#888}
header{background:#243447;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline}
header h1{font-size:18px;margin:0} #status{margin-left:auto;font-size:12px;opacity:.8}
main{padding:12px 20px} h2{font-size:15px;margin:18px 0 8px} #counters{display:flex;gap:10px;flex-wrap:wrap}
.counter,table,canvas,details{background:#fff;box-shadow:0 1px 2px #0002} #count-failed{color:#b3261e}
.counter{border-radius:6px;padding:8px 14px;min-width:110px} .counter b{display:block;font-size:22px}
.counter span{font-size:12px;color:#666} table{border-collapse:collapse;width:100%}
th,td{padding:5px 10px;text-align:left;border-bottom:1px solid #eee} td.n{text-align:right}
canvas{width:100%;height:160px} details{margin:4px 0;padding:6px 10px} summary{cursor:pointer}
pre{overflow:auto;font-size:12px;background:#fafafa;padding:8px}
"""

SCRIPT = """
const $ = (id) => document.getElementById(id);
const samples = [];  // finished tasks per second between two polls, the newest last
let previous = null, failureKey = null;
function el(tag, attrs, ...children) {  // text is always inserted as text, never parsed as HTML
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}
function duration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function render(st) {
  const m = st.master || {}, counts = st.counts || {};
  $("master-name").textContent = m.name ?? "?";
  $("master-info").textContent = "up " + duration(m.uptime || 0) + " · pid " + (m.pid ?? "?");
  for (const k of ["pending", "running"]) $("count-" + k).textContent = counts[k] ?? 0;
  for (const k of ["done", "failed", "cancelled"]) $("count-" + k).textContent = st[k] ?? counts[k] ?? 0;
  $("count-throughput").textContent = Number(st.throughput_1m || 0).toFixed(2);
  const rows = (st.workers || []).map((w) => el("tr", {"data-worker": w.id},
    el("td", {}, w.id), el("td", {}, w.host), el("td", {class: "n"}, w.pid), el("td", {}, w.state),
    el("td", {class: "n"}, w.running + " / " + w.concurrency), el("td", {class: "n"}, w.done),
    el("td", {class: "n"}, w.failed), el("td", {class: "n"}, duration(w.last_seen) + " ago")));
  if (!rows.length) rows.push(el("tr", {}, el("td", {colspan: 8, class: "muted"}, "no workers connected")));
  $("workers-body").replaceChildren(...rows);
  const lost = (st.lost_workers || []).length;
  $("workers-summary").textContent = (st.workers || []).length + " live" + (lost ? ", " + lost + " lost" : "");
  const now = performance.now() / 1000, finished = (st.done || 0) + (st.failed || 0);
  if (previous && now > previous.t) samples.push(Math.max(0, (finished - previous.n) / (now - previous.t)));
  previous = {t: now, n: finished};
  if (samples.length > 120) samples.splice(0, samples.length - 120);
  draw();
}
function draw() {
  const c = $("chart"), w = c.clientWidth || 600, h = c.clientHeight || 160, ctx = c.getContext("2d");
  c.width = w; c.height = h; c.dataset.samples = samples.length;
  const top = Math.max(1, ...samples) * 1.1, step = (w - 50) / 119;
  ctx.font = "11px sans-serif"; ctx.fillStyle = "#888"; ctx.strokeStyle = "#eee";
  for (const f of [0, 0.5, 1]) {
    const y = h - 15 - f * (h - 25);
    ctx.beginPath(); ctx.moveTo(45, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((top * f).toFixed(top < 10 ? 1 : 0), 4, y + 4);
  }
  ctx.fillText("tasks finished per second, last " + samples.length + " s", 50, h - 2);
  if (samples.length < 2) return;
  ctx.beginPath(); ctx.strokeStyle = "#2f6fb3"; ctx.lineWidth = 2;
  samples.forEach((v, i) => {
    const x = w - (samples.length - 1 - i) * step, y = h - 15 - (v / top) * (h - 25);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}
function renderFailures(list) {
  const key = JSON.stringify(list.map((f) => f.id));
  if (key === failureKey) return;  // unchanged: keep what the reader opened
  const open = new Set([...$("failures").querySelectorAll("details[open]")].map((d) => d.dataset.task));
  if (failureKey === null && list.length) open.add(list[0].id);  // first load: show the newest traceback
  failureKey = key;
  const items = list.map((f) => {
    const e = f.error || {}, when = f.finished ? new Date(f.finished * 1000).toLocaleTimeString() : "";
    const d = el("details", {"data-task": f.id},
      el("summary", {}, when + " " + f.id + " " + f.func + " on " + (f.worker ?? "?") + ": ",
         el("b", {}, (e.type || "Error") + ": " + (e.message || ""))),
      el("pre", {}, e.traceback || "(no traceback)"));
    d.open = open.has(f.id);
    return d;
  });
  if (!items.length) items.push(el("p", {class: "muted"}, "no failures"));
  $("failures").replaceChildren(...items);
}
async function getJSON(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
async function refresh() {
  try {
    render(await getJSON("api/stats"));
    renderFailures(await getJSON("api/failures?limit=10"));
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("status").textContent = "cannot reach the master: " + err.message;
  }
  setTimeout(refresh, 1000);
}
refresh();
"""

BODY = """<header><h1>pyrodist master <span id="master-name">…</span></h1>
<span id="master-info"></span><span id="status">loading…</span></header>
<main><div id="counters">
<div class="counter"><b id="count-pending">-</b><span>pending</span></div>
<div class="counter"><b id="count-running">-</b><span>running</span></div>
<div class="counter"><b id="count-done">-</b><span>done</span></div>
<div class="counter"><b id="count-failed">-</b><span>failed</span></div>
<div class="counter"><b id="count-cancelled">-</b><span>cancelled</span></div>
<div class="counter"><b id="count-throughput">-</b><span>tasks/s (last minute)</span></div></div>
<h2>Throughput</h2><canvas id="chart" data-samples="0"></canvas>
<h2>Workers <span id="workers-summary" class="muted"></span></h2>
<table id="workers"><thead><tr><th>id</th><th>host</th><th>pid</th><th>state</th><th>running</th>
<th>done</th><th>failed</th><th>last seen</th></tr></thead><tbody id="workers-body"></tbody></table>
<h2>Latest failures</h2><div id="failures"></div></main>"""

PAGE = (
    f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>pyrodist dashboard</title>\n'
    f"<style>{STYLE}</style></head><body>\n{BODY}\n<script>{SCRIPT}</script></body></html>\n"
).encode()


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CSP = (
    f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only the page's own script and style run; it talks only to this server and cannot be framed."""
HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", CSP))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, stats: Callable[[], dict[str, Any]], failures: FailureSource) -> None:
        self.address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.stats, self.failures = stats, failures
        self.loopback = host in LOOPBACK_NAMES
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard: request from %s failed", client_address, exc_info=True)  # a browser went away


class _Handler(BaseHTTPRequestHandler):
    server_version = "pyrodist-dashboard"

    def do_GET(self) -> None:
        """Serve the page or the API."""
        url = urlsplit(self.path)
        server = cast(_Server, self.server)
        if not self._host_allowed(server):
            self._send(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header; open the dashboard by its address"})
        elif url.path == "/":
            self._send(HTTPStatus.OK, PAGE, "text/html; charset=utf-8")
        elif url.path == "/api/stats":
            self._answer(server.stats)
        elif url.path == "/api/failures":
            values = parse_qs(url.query, keep_blank_values=True).get("limit", [str(DEFAULT_FAILURES)])
            limit = int(values[0]) if len(values) == 1 and values[0].isdecimal() and len(values[0]) < 6 else 0
            if not 1 <= limit <= MAX_FAILURES:
                self._send(HTTPStatus.BAD_REQUEST, {"error": f"limit must be one integer from 1 to {MAX_FAILURES}"})
            else:
                self._answer(lambda: server.failures(limit)[:limit])
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

    def do_HEAD(self) -> None:
        """Answer like GET, without the body."""
        self.do_GET()

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET and HEAD are allowed"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed  # noqa: N815

    def _host_allowed(self, server: _Server) -> bool:
        """On loopback, only loopback Host names: a web page cannot read the API through DNS rebinding."""
        host = self.headers.get("Host")
        if not server.loopback or host is None:
            return True
        name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        return name.lower() in LOOPBACK_NAMES

    def _answer(self, produce: Callable[[], Any]) -> None:
        try:
            value = produce()
        except Exception:  # the master is closing or broken: say so, keep serving
            log.exception("dashboard: cannot read the master's state for %s", self.path)
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the master could not answer; see its log"})
            return
        self._send(HTTPStatus.OK, value)

    def _send(self, status: HTTPStatus, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
        self.send_response(status)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(data))), *HEADERS):
            self.send_header(name, value)
        if status is HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        log.debug("dashboard: %s %s", self.address_string(), format % args)


class Dashboard:
    """The dashboard's HTTP server; bound on creation, served from a daemon thread after start()."""

    def __init__(
        self, stats: Callable[[], dict[str, Any]], failures: FailureSource, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._server = _Server(host, port, stats, failures)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.25,), name="dashboard", daemon=True)
        self._closed = False

    @property
    def url(self) -> str:
        """The page's address, e.g. http://127.0.0.1:8080/."""
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> None:
        """Serve requests from a daemon thread."""
        self._thread.start()
        log.info("dashboard at %s", self.url)

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Dashboard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
