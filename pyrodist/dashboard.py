"""The master's dashboard: one HTML page polling `/api/stats` and `/api/failures`, standard library only.

It is the operator's view: every client's tasks and errors. With a password (the master's admin key),
every request must carry it as HTTP Basic authentication (any user name).

The page is package data in `dashboard_static/` (index.html, style.css, app.js), served as one document.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_FAILURES = 100
"""The most failure records one `/api/failures` call returns."""
DEFAULT_FAILURES = 10
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
FailureSource = Callable[[int], list[dict[str, Any]]]
"""Given a limit, the latest failed task records, newest first: id, func, worker, finished, error."""

STATIC = resources.files("pyrodist") / "dashboard_static"
"""The page's files: index.html links style.css and app.js, which are served inlined into it."""


def _static(name: str) -> str:
    """The text of one of the page's files."""
    return (STATIC / name).read_text(encoding="utf-8")


def _inline(page: str, link: str, tag: str, text: str) -> str:
    """page with its one link to a file replaced by a tag holding text (the CSP admits inline code by hash only)."""
    if page.count(link) != 1:
        raise ValueError(f"pyrodist/dashboard_static/index.html must hold {link} exactly once")
    return page.replace(link, f"<{tag}>{text}</{tag}>")


STYLE = "\n" + _static("style.css")
"""The text of the page's <style> element: style.css on a line of its own."""
SCRIPT = "\n" + _static("app.js")
"""The text of the page's <script> element: app.js on a line of its own."""
PAGE = _inline(
    _inline(_static("index.html"), '<link rel="stylesheet" href="style.css">', "style", STYLE),
    '<script src="app.js"></script>',
    "script",
    SCRIPT,
).encode()
"""The one document served at /: one request, and nothing else on the server but the API."""


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

    def __init__(
        self, host: str, port: int, stats: Callable[[], dict[str, Any]], failures: FailureSource, password: str | None
    ) -> None:
        self.address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.stats, self.failures = stats, failures
        self.password = password.encode() if password else None
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
        elif not self._authorized(server):
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "the dashboard needs the master's admin key as password"})
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

    def _authorized(self, server: _Server) -> bool:
        """No password set, or the request's Basic credentials carry it."""
        if server.password is None:
            return True
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except binascii.Error:
            return False
        given = decoded.partition(b":")[2]
        return scheme.lower() == "basic" and hmac.compare_digest(given, server.password)

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
        if status is HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="pyrodist dashboard", charset="UTF-8"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        log.debug("dashboard: %s %s", self.address_string(), format % args)


class Dashboard:
    """The dashboard's HTTP server; bound on creation, served from a daemon thread after start()."""

    def __init__(
        self,
        stats: Callable[[], dict[str, Any]],
        failures: FailureSource,
        host: str = "127.0.0.1",
        port: int = 0,
        password: str | None = None,
    ) -> None:
        self._server = _Server(host, port, stats, failures, password)
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
