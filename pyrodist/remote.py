"""The Pyro4 adapter: configuring Pyro4, finding the name server and the master, callback sinks.

Pyro4 is named only in the adapter modules: this one (configuration, lookups, callback sinks),
`remote_servers.py` (the daemons: name server, master, callbacks), `remote_connection.py` (the
connection clients and workers use) and `remote_patches.py` (patches to Pyro4 4.82), so the transport
can change in one place.

Wire format: pyrodist's own processes talk `remote_serializer.PACKED` on the Pyro4 wire: json (about
6x faster than serpent for batches of small records) with bytes values carried raw after it, so a
payload that is bytes (a binary frame, `values.py`) never travels as text. Daemons also accept json and
serpent, for plain Pyro4 shells.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import Pyro4
import Pyro4.errors
import Pyro4.naming
import Pyro4.socketutil
import Pyro4.util

from .config import Settings
from .errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    MasterNotFound,
    NameServerNotFound,
    PyrodistError,
)
from .remote_limits import JSON_ID
from .remote_names import register_proven, remove_proven
from .remote_patches import apply_patches
from .remote_serializer import PACKED, register_packed
from .retry import retrying, warn_once
from .wire import TaskRecord

log = logging.getLogger(__name__)

WIRE_SERIALIZER = PACKED
ACCEPTED_SERIALIZERS = frozenset({PACKED, "json", "serpent"})
LOOPBACK = "127.0.0.1"

_configured = threading.Lock()


def configure(settings: Settings | None = None, threadpool_size: int | None = None) -> None:
    """Set the Pyro4 options pyrodist relies on; the only code that touches `Pyro4.config`.

    TLS is a per-process setting in Pyro4 (one certificate, one CA for every connection), so the
    settings of the last call win: one process talks to one cluster.
    """
    with _configured:
        # Pyro4 4.82 calls Event.isSet(), deprecated since Python 3.10; the warning is noise.
        warnings.filterwarnings("ignore", message=r"isSet\(\) is deprecated", category=DeprecationWarning)
        register_packed()
        Pyro4.config.SERIALIZERS_ACCEPTED = set(ACCEPTED_SERIALIZERS)
        Pyro4.config.SOCK_NODELAY = True  # small request/response messages: no Nagle delays
        Pyro4.config.DETAILED_TRACEBACK = False
        Pyro4.config.POLLTIMEOUT = 0.5  # how soon a daemon notices it should stop
        apply_patches()
        if threadpool_size is not None:
            Pyro4.config.THREADPOOL_SIZE = threadpool_size
            Pyro4.config.THREADPOOL_SIZE_MIN = min(16, threadpool_size)
        if settings is not None:
            Pyro4.config.SSL = settings.tls
            Pyro4.config.SSL_SERVERCERT = Pyro4.config.SSL_CLIENTCERT = settings.tls_cert or ""
            Pyro4.config.SSL_SERVERKEY = Pyro4.config.SSL_CLIENTKEY = settings.tls_key or ""
            Pyro4.config.SSL_CACERTS = settings.tls_ca or ""
            # A server that has a CA to check against wants the peer's certificate too (two-way TLS).
            Pyro4.config.SSL_REQUIRECLIENTCERT = bool(settings.tls_ca and settings.tls_cert)


def expose(cls: type, only: tuple[str, ...] | None = None) -> type:
    """Expose a class's public methods (or only those named) to remote callers, one shared instance for all."""
    if only is None:
        cls = Pyro4.expose(cls)
    else:
        for name in only:
            setattr(cls, name, Pyro4.expose(getattr(cls, name)))
    return Pyro4.behavior(instance_mode="single")(cls)  # type: ignore[no-any-return]


def caller_uses_json() -> bool:
    """Whether the remote call being served arrived in json (which cannot carry bytes, tuples or sets)."""
    return getattr(Pyro4.current_context, "serializer_id", None) == JSON_ID


def ns_address(settings: Settings) -> str:
    """Where the name server is looked for, for messages."""
    if settings.ns_host is None:
        return f"localhost:{settings.ns_port or Pyro4.config.NS_PORT} or the local network (broadcast)"
    return f"{settings.ns_host}:{settings.ns_port or Pyro4.config.NS_PORT}"


# ---- name server ------------------------------------------------------------------------------


def locate_nameserver(settings: Settings) -> Any:
    """A proxy to the name server, or NameServerNotFound naming where we looked and why."""
    try:
        ns = Pyro4.locateNS(host=settings.ns_host, port=settings.ns_port, hmac_key=settings.key_bytes)
        ns._pyroTimeout = settings.connect_timeout
        return ns
    except Pyro4.errors.NamingError as exc:
        cause = exc.__cause__ or exc
        check_authentication(cause, "the name server's")
        hung_up = "reset" in str(cause) or "not enough data" in str(cause)  # what a TLS server does to plain text
        hint = "; if the cluster uses TLS, pass --tls-ca" if hung_up and not settings.tls else ""
        raise NameServerNotFound(
            f"no name server found at {ns_address(settings)} ({cause}); start one with 'pyrodist nameserver' "
            f"or pass --ns-host/--ns-port{hint}"
        ) from None


def lookup_master(settings: Settings) -> str:
    """The URI registered for the master, or MasterNotFound."""
    ns = locate_nameserver(settings)
    try:
        with ns:
            return str(ns.lookup(settings.master_name))
    except Pyro4.errors.NamingError:
        raise MasterNotFound(
            f"no master registered as {settings.master_name!r} in the name server at {ns_address(settings)}; "
            "start one with 'pyrodist master'",
            gone=True,
        ) from None
    except Pyro4.errors.CommunicationError as exc:
        check_authentication(exc, "the name server's")
        raise NameServerNotFound(f"the name server at {ns_address(settings)} stopped answering: {exc}") from None


def register(settings: Settings, name: str, uri: str) -> None:
    """Register uri under name in the name server (replacing what was there), with a proof if there is a key."""
    with locate_nameserver(settings) as ns:
        try:
            if settings.registration_key:
                register_proven(ns, settings.registration_key, name, uri, ns_address(settings))
            else:
                ns.register(name, uri, safe=False)
        except Pyro4.errors.NamingError as exc:
            raise ConfigError(
                f"the name server at {ns_address(settings)} refused to register {name!r}: {exc}"
            ) from None


def unregister(settings: Settings, name: str, uri: str) -> None:
    """Remove name from the name server if it still points at uri; failures are logged."""
    try:
        with locate_nameserver(settings) as ns:
            if settings.registration_key:
                remove_proven(ns, settings.registration_key, name, uri, ns_address(settings))
            elif str(ns.lookup(name)) == uri:
                ns.remove(name)
    except (PyrodistError, Pyro4.errors.PyroError) as exc:
        log.warning("could not remove %r from the name server: %s", name, exc)


# ---- proxies --------------------------------------------------------------------------------


def proxy(uri: str, settings: Settings, timeout: float | None = None) -> Any:
    """A json-speaking proxy to uri with the call timeout from settings."""
    p = Pyro4.Proxy(uri)
    p._pyroSerializer = WIRE_SERIALIZER
    p._pyroTimeout = (settings.call_timeout or None) if timeout is None else timeout
    p._pyroHmacKey = settings.key_bytes
    return p


def callback_ref(uri: str) -> Any:
    """A proxy to pass to the master as a callback: without our key (a keyed proxy would send it along)."""
    return Pyro4.Proxy(uri)


def check_authentication(exc: BaseException, whose: str) -> None:
    """Raise AuthenticationFailed when exc says the key or the TLS handshake did not match.

    A handshake that timed out is no such proof (a busy or unreachable peer): it stays a network error,
    which callers retry.
    """
    text = str(exc)
    if "timed out" in text:
        return
    if "hmac" in text:
        raise AuthenticationFailed(
            f"authentication failed: the key does not match {whose} (set --key, --key-file or PYRODIST_KEY "
            "to the cluster's key)"
        ) from None
    if "ssl" in text.lower() or "certificate" in text.lower():
        peer = whose.removesuffix("'s")
        raise AuthenticationFailed(
            f"TLS handshake with {peer} failed: {text} (check --tls-cert, --tls-key, --tls-ca)"
        ) from None


def connect_master(settings: Settings) -> Any:
    """A bound proxy to the master, or a ConnectionFailed saying what is missing."""
    uri = lookup_master(settings)
    p = proxy(uri, settings)
    try:
        p._pyroTimeout = settings.connect_timeout
        p._pyroBind()
    except Pyro4.errors.CommunicationError as exc:
        p._pyroRelease()
        check_authentication(exc, "the master's")
        raise MasterNotFound(
            f"the master registered as {settings.master_name!r} ({uri}) does not answer: {exc}",
            gone=isinstance(exc.__cause__, ConnectionRefusedError),  # no process listens there any more
        ) from None
    p._pyroTimeout = settings.call_timeout or None
    return p


def master_answers(settings: Settings) -> str | None:
    """The URI of a master registered under settings.master_name that answers a ping, else None."""
    try:
        with connect_master(settings) as p:
            p.ping()
            return str(p._pyroUri)
    except (ConnectionFailed, Pyro4.errors.CommunicationError):
        return None


def wait_for_nameserver(settings: Settings, stop: threading.Event, who: str) -> bool:
    """Wait until the name server answers (True) or stop is set (False), retrying with capped backoff."""
    try:
        ns = retrying(lambda: locate_nameserver(settings), ConnectionFailed, stop=stop,
                      on_retry=warn_once(who, "the name server"))  # fmt: skip
    except ConnectionFailed:
        return False
    ns._pyroRelease()
    return True


def interface_for(host: str) -> str:
    """The local address that reaches host (for callback daemons the master must call back)."""
    if host in ("localhost", LOOPBACK) or host.startswith("127."):
        return LOOPBACK
    return str(Pyro4.socketutil.getInterfaceAddress(host))


def uri_host(uri: str) -> str:
    """The host part of a Pyro URI."""
    return str(Pyro4.URI(uri).host)


# ---- callbacks ------------------------------------------------------------------------------


class CallbackSink:
    """A `Sink` calling a subscriber's callback object back through its own proxy.

    pyrodist's own clients expose `task_batch(records)` and get the records in batches over json; any
    other callback gets one `task_done(record)` call per record, with the value decoded, over serpent
    (a plain Pyro4 shell's default).
    """

    def __init__(self, callback: Any, settings: Settings) -> None:
        if not isinstance(callback, Pyro4.Proxy):
            raise TypeError(
                "callback must be an object registered in the caller's Pyro4 daemon (it arrived as "
                f"{type(callback).__name__}); register it with daemon.register(obj) before subscribing"
            )
        self._proxy = Pyro4.Proxy(callback._pyroUri)
        self._proxy._pyroHmacKey = settings.key_bytes  # the cluster's key; an autoproxy carries none
        try:
            self._proxy._pyroTimeout = settings.connect_timeout
            self._proxy._pyroBind()
        except Pyro4.errors.PyroError as exc:  # unreachable, or a PYRONAME the name server does not know
            raise ValueError(
                f"the master cannot call back {callback._pyroUri}: {exc}; callbacks need an address the master "
                "can reach (synchronous results still work)"
            ) from None
        self._proxy._pyroTimeout = settings.call_timeout or 30.0
        self.batched = "task_batch" in self._proxy._pyroMethods
        if self.batched:
            self._proxy._pyroSerializer = WIRE_SERIALIZER
        elif "task_done" not in self._proxy._pyroMethods:
            raise ValueError(f"callback {callback._pyroUri} exposes no method task_done(record)")

    def deliver(self, records: list[TaskRecord]) -> None:
        """Call the subscriber with these records."""
        if self.batched:
            self._proxy.task_batch([record.to_wire() for record in records])
        else:
            for record in records:
                self._proxy.task_done(record.to_plain(bounded=True))

    def close(self) -> None:
        """Release the proxy's connection."""
        self._proxy._pyroRelease()
