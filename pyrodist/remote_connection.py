"""`PyroConnection`: `MasterAPI` over Pyro4, with its proxy pool, reconnection and callback daemon.

A Pyro4 proxy serialises its calls, so each call in flight takes a proxy of its own from the pool (a
long-poll must not block a heartbeat). When the master cannot be reached, every pooled proxy is dropped
(a restarted master may have a new address) and the call is tried again, with capped backoff, for up to
`reconnect_for` seconds. Every Pyro4 error is translated here: callers see `ConnectionFailed`,
`AuthenticationFailed` and `MasterRejected`, never Pyro4's own classes. `close()` also ends calls in
flight (their sockets are shut), so a client or worker closes without waiting out a long-poll.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import Pyro4
import Pyro4.errors

from . import remote
from .api import MasterAPI, Sink
from .config import Settings
from .connection import WireConnection, may_reconnect
from .errors import ConnectionFailed, MasterRejected, StoreUnavailable
from .remote_requests import invoke
from .remote_servers import Server
from .retry import retrying
from .wire import TaskRecord

log = logging.getLogger(__name__)

MAX_IDLE_PROXIES = 4
"""Idle connections kept to the master (each holds one of the master's threads)."""


def remote_traceback(exc: BaseException) -> str:
    """The remote traceback Pyro4 attached to an exception raised on the other side."""
    return "".join(getattr(exc, "_pyroTraceback", []) or [])


def translated(what: str, exc: BaseException) -> BaseException:
    """What a failed call raises: transport failures and refused calls as PyrodistErrors with a clear message."""
    if isinstance(exc, Pyro4.errors.CommunicationError):
        remote.check_authentication(exc, "the master's")
        return ConnectionFailed(f"{what}: the master could not be reached: {exc}")
    if isinstance(exc, Pyro4.errors.PyroError):  # SerializeError: the call could not be carried
        return MasterRejected(f"{what}: the call could not be carried: {exc}")
    if isinstance(exc, (ValueError, TypeError, KeyError)) and remote_traceback(exc):
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return MasterRejected(f"{what}: {message}")
    if isinstance(exc, OSError) and remote_traceback(exc):  # the master's task store cannot be used now
        return StoreUnavailable(f"{what}: {exc}")
    return exc  # ours, or a local error: as it is


@remote.expose
class CallbackReceiver:
    """What the master calls back: hands each batch of records to the subscriber's sink."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def task_batch(self, records: list[dict[str, Any]]) -> None:
        """Take a batch of finished records (the sink returns at once)."""
        self._sink.deliver([TaskRecord.from_wire(record) for record in records])


class PyroConnection(WireConnection):
    """A connection to the master named in settings, over Pyro4 (see the module docstring)."""

    def __init__(self, settings: Settings, reconnect_for: float = 0.0) -> None:
        remote.configure(settings)
        self.settings = settings
        self.reconnect_for = reconnect_for
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._busy: dict[int, Any] = {}  # by id: a proxy's own hash is slow Python code
        self._closed = threading.Event()  # for waits; _closing for the checks on every call
        self._closing = False
        self._callbacks: Server | None = None

    def __repr__(self) -> str:
        return f"<PyroConnection to {self.settings.master_name!r}>"

    def _invoke(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return self._call_once(method, args)
        except ConnectionFailed as exc:
            if not self.reconnect_for or self._closed.is_set() or not may_reconnect():
                raise
            log.warning("%s; retrying for up to %g s", exc, self.reconnect_for)
        return retrying(lambda: self._call_once(method, args), ConnectionFailed, stop=self._closed,
                        within=self.reconnect_for, start=0.1, cap=2.0)  # fmt: skip

    def _call_once(self, method: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        proxy = self._checkout()
        try:
            result = invoke(proxy, method.__name__, args)
        except BaseException as exc:
            try:
                error = translated(method.__name__, exc)
            except BaseException:  # AuthenticationFailed: this proxy is of no use
                self._drop(proxy)
                raise
            if error is exc:
                self._checkin(proxy)
                raise
            if not isinstance(error, ConnectionFailed):
                self._checkin(proxy)
            else:
                self._drop(proxy)
                if self._closed.is_set():
                    raise ConnectionFailed(f"{method.__name__}: the connection was closed") from None
            raise error from exc
        self._checkin(proxy)
        return result

    def _checkout(self) -> Any:
        with self._lock:
            if self._closing:
                raise ConnectionFailed("the connection is closed")
            if self._idle:
                proxy = self._idle.pop()
                self._busy[id(proxy)] = proxy
                return proxy
        proxy = remote.connect_master(self.settings)
        with self._lock:
            self._busy[id(proxy)] = proxy
        return proxy

    def _checkin(self, proxy: Any) -> None:
        with self._lock:
            del self._busy[id(proxy)]
            if len(self._idle) < MAX_IDLE_PROXIES and not self._closing:
                self._idle.append(proxy)
                return
        proxy._pyroRelease()

    def _drop(self, proxy: Any) -> None:
        """A call failed to reach the master: let go of this proxy and the idle ones (maybe a new address)."""
        with self._lock:
            self.reconnects += 1
            self._busy.pop(id(proxy), None)
            stale, self._idle = [proxy, *self._idle], []
        for old in stale:
            old._pyroRelease()

    @property
    def address(self) -> str:
        """The Pyro4 URI of the master this connection reaches now."""
        proxy = self._checkout()
        try:
            return str(proxy._pyroUri)
        finally:
            self._checkin(proxy)

    def subscribe(self, sink: Sink, task_ids: Sequence[str] | None = None, client_secret: str | None = None) -> str:
        """Have the master call sink back (through a callback daemon this connection starts); never retried."""
        with self._lock:
            server = self._callbacks
        if server is None:
            server = Server(self.settings, remote.interface_for(remote.uri_host(self.address)))
            server.start()
            with self._lock:
                if self._callbacks is None:
                    self._callbacks = server
                else:
                    server.close()
                    server = self._callbacks
        receiver = CallbackReceiver(sink)
        uri = server.register(receiver)
        ids = None if task_ids is None else list(task_ids)
        try:
            return str(self._call_once(MasterAPI.subscribe, (remote.callback_ref(uri), ids, client_secret)))
        except BaseException:
            server.unregister(receiver)
            raise

    def unsubscribe(self, subscription_id: str) -> None:
        """Stop a subscription (never retried)."""
        self._call_once(MasterAPI.unsubscribe, (subscription_id,))

    def close(self) -> None:
        """Release every proxy, end calls in flight (their sockets are shut), stop the callback daemon."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._closed.set()
            idle, self._idle = self._idle, []
            busy = list(self._busy.values())
            callbacks, self._callbacks = self._callbacks, None
        for proxy in busy:  # a long-poll ends at once with a closed connection instead of running out its wait
            _shut(proxy)
        for proxy in idle:
            proxy._pyroRelease()
        if callbacks is not None:
            callbacks.close()


def _shut(proxy: Any) -> None:
    """Shut the socket under a proxy that another thread is using; its call then fails at once."""
    conn = getattr(proxy, "_pyroConnection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:  # already closed by the other side
            log.debug("socket of %s already closed: %s", proxy, exc)
