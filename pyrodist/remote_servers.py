"""The Pyro4 daemons pyrodist serves from: the name server, and the master's and callbacks' `Server`.

Each serves from a thread of its own (`serve_until`), so that a signal stops it at once; every daemon
bounds its new connections' handshakes (see `remote_patches`), and the name server and the master the
length of every message (`remote_limits`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import Pyro4
import Pyro4.naming

from .config import Settings
from .errors import ConfigError
from .remote import LOOPBACK, configure
from .remote_limits import bound_messages, peer_host
from .remote_names import guard
from .remote_patches import defer_tls_handshakes, log_refused

log = logging.getLogger(__name__)

NAMESERVER_MAX_MESSAGE = 1024 * 1024
"""Longest message the name server reads (its calls name objects and addresses: a few hundred bytes)."""


@dataclass
class NameServer:
    """A running name server: its URI, its daemon and the optional broadcast responder."""

    uri: str
    daemon: Any
    broadcast: Any

    def serve(self, stop: threading.Event) -> None:
        """Serve requests (and broadcast lookups) from their own threads until stop is set."""
        if self.broadcast is not None:
            self.broadcast.runInThread()
        serve_until(self.daemon, stop)

    def close(self) -> None:
        """Close the daemon and the broadcast responder."""
        if self.broadcast is not None:
            self.broadcast.close()
        self.daemon.close()


def serve_until(daemon: Any, stop: threading.Event) -> None:
    """Run daemon's request loop in a thread until stop is set, then shut it down and join it.

    The calling thread only waits: a signal handler setting stop ends the wait at once, where a request
    loop in this thread would notice only at its next poll timeout.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            daemon.requestLoop()
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread below
            failures.append(exc)
        finally:
            stop.set()  # a loop that ended on its own ends the wait too

    loop = threading.Thread(target=run, name="pyro-daemon", daemon=True)
    loop.start()
    try:
        stop.wait()
    finally:
        daemon.shutdown()
        loop.join(timeout=5)
    if failures:
        raise failures[0]


def start_nameserver(
    settings: Settings,
    host: str = LOOPBACK,
    port: int = 9090,
    broadcast: bool = True,
    nathost: str | None = None,
    natport: int | None = None,
) -> NameServer:
    """Start a Pyro4 name server daemon (not yet serving); broadcast is off on loopback."""
    # Pyro4's pool of 40 threads refuses the 41st connection at once ("no free workers"): a few hundred
    # workers starting together each look the master up. The pool grows only when needed.
    configure(settings, threadpool_size=settings.max_connections)
    try:
        uri, daemon, bcserver = Pyro4.naming.startNS(
            host=host, port=port, enableBroadcast=broadcast, hmac=settings.key_bytes, nathost=nathost,
            natport=_natport(nathost, natport),
        )  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"the name server cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    defer_tls_handshakes(daemon)
    bound_messages(daemon, NAMESERVER_MAX_MESSAGE)
    if settings.registration_key:
        guard(daemon, settings.registration_key)
    elif settings.key or settings.tls:
        log.info("registrations are not checked: whoever holds the key may register any name, pyrodist.master too; "
                 "give the name server and the master PYRODIST_REGISTRATION_KEY to stop that")  # fmt: skip
    return NameServer(str(uri), daemon, bcserver)


def _natport(nathost: str | None, natport: int | None) -> int | None:
    """Pyro4 wants both NAT settings or neither; 0 advertises the bound port."""
    if natport and not nathost:
        raise ConfigError("--natport needs --nathost (the address to advertise with it)")
    return (natport or 0) if nathost else None


class _Daemon(Pyro4.Daemon):  # type: ignore[misc]
    """A Pyro4 daemon that logs the peers it refuses (wrong key, failed TLS, not Pyro4 at all)."""

    def _handshake(self, conn: Any, denied_reason: str | None = None) -> bool:
        accepted = bool(super()._handshake(conn, denied_reason))
        if not accepted:
            why = "wrong or missing key, failed TLS, not a pyrodist peer, or no free thread (see --max-connections)"
            log_refused(peer_host(conn.sock), why)
        return accepted


class Server:
    """A Pyro4 daemon serving objects from a background thread."""

    def __init__(
        self,
        settings: Settings,
        host: str = LOOPBACK,
        port: int = 0,
        nathost: str | None = None,
        natport: int | None = None,
        max_message: int = 0,
    ) -> None:
        configure(settings)
        try:
            self.daemon = _Daemon(host=host, port=port, nathost=nathost, natport=_natport(nathost, natport))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        defer_tls_handshakes(self.daemon)
        if max_message:
            bound_messages(self.daemon, max_message)
        self.daemon._pyroHmacKey = settings.key_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, obj: object, object_id: str | None = None) -> str:
        """Register obj and return its URI."""
        return str(self.daemon.register(obj, objectId=object_id))

    def unregister(self, obj: object) -> None:
        """Stop serving obj."""
        self.daemon.unregister(obj)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self.daemon.requestLoop, args=(lambda: not self._stop.is_set(),), name="pyro-daemon", daemon=True
        )
        self._thread.start()

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until stop is set."""
        serve_until(self.daemon, stop)

    def close(self) -> None:
        """Stop serving and close the sockets."""
        self._stop.set()
        self.daemon.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.daemon.close()
