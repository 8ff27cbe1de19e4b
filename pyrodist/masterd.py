"""Starting a master: its store, its Pyro4 daemon, its name in the name server, its dashboard.

Two entry points, as Pyro5's `start_ns`/`start_ns_loop`: `start_master` returns the running parts (for
embedding and tests), `serve_master` blocks until a stop event is set. Closing stops in order: the
dashboard, the name, the master's own threads (reaper, notifier), the daemon, and last the store.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from . import remote
from .blobs import BlobStore
from .config import Settings
from .dashboard import Dashboard
from .errors import ConfigError
from .master import Master
from .memstore import MemoryStore
from .protocol import max_message
from .remote_servers import Server
from .service import REMOTE_METHODS, MasterService
from .sqlstore import SqliteStore
from .store import TaskStore

log = logging.getLogger(__name__)

remote.expose(MasterService, only=REMOTE_METHODS)


@dataclass
class MasterOptions:
    """Where and how a master runs, beyond the cluster's settings."""

    host: str = remote.LOOPBACK
    port: int = 0
    dashboard: int | None = None
    """Port of the web dashboard (0: a free one); None for no dashboard."""
    dashboard_host: str = remote.LOOPBACK
    store: str | None = None
    """SQLite file that keeps all state across restarts; None keeps it in memory."""
    store_sync: str = "full"
    nathost: str | None = None
    natport: int | None = None


class RunningMaster:
    """A master served by a daemon and registered in the name server."""

    def __init__(self, settings: Settings, master: Master, server: Server, uri: str) -> None:
        self.settings = settings
        self.master = master
        self.server = server
        self.uri = uri
        self.dashboard: Dashboard | None = None
        self._closed = False

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until stop is set, then close."""
        try:
            self.server.serve_forever(stop)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the dashboard, leave the name server, stop the master's threads and the daemon, close the store."""
        if self._closed:
            return
        self._closed = True
        if self.dashboard is not None:
            self.dashboard.close()
        remote.unregister(self.settings, self.settings.master_name, self.uri)
        self.master.close()  # refuses new tasks from here on, wakes every long-poll, joins its threads
        self.server.close()
        self.master.close_store()


def open_store(options: MasterOptions, settings: Settings) -> TaskStore:
    """The store the options ask for."""
    if options.store:
        return SqliteStore(options.store, time.time(), settings.lease_timeout, options.store_sync)
    return MemoryStore()


def start_master(settings: Settings, options: MasterOptions | None = None) -> RunningMaster:
    """Start a master (not yet serving in this thread: see serve_master) and register it; the running parts."""
    options = options or MasterOptions()
    remote.configure(settings, threadpool_size=settings.max_connections)
    existing = remote.master_answers(settings)
    if existing is not None:
        raise ConfigError(
            f"a master is already registered as {settings.master_name!r} and answers ({existing}); "
            "stop it first or start this one with another --name"
        )
    store = open_store(options, settings)
    blobs = BlobStore(f"{options.store}.blobs" if options.store else None, settings.max_value, time.time)
    master = Master(settings, store, blobs=blobs)
    try:
        server = Server(settings, options.host, options.port, options.nathost, options.natport,
                        max_message=max_message(settings.max_payload))  # fmt: skip
    except BaseException:
        master.close_store()
        raise
    service = MasterService(master, settings, lambda cb: remote.CallbackSink(cb, settings), remote.caller_uses_json)
    running = RunningMaster(settings, master, server, server.register(service, settings.master_name))
    try:
        remote.register(settings, settings.master_name, running.uri)
        master.start()
        if options.dashboard is not None:
            running.dashboard = _dashboard(master, options, settings.admin_key)
    except BaseException:
        running.close()
        raise
    where = f"store {options.store}: state survives restarts" if options.store else (
        "in-memory store: state will not survive a restart; use --store PATH"
    )  # fmt: skip
    log.info("master %r serving at %s (%s)", settings.master_name, running.uri, where)
    return running


def _dashboard(master: Master, options: MasterOptions, admin_key: str | None) -> Dashboard:
    host, port = options.dashboard_host, options.dashboard or 0
    try:
        dashboard = Dashboard(lambda: master.stats().to_wire(), master.recent_failures, host, port, admin_key)
    except OSError as exc:
        raise ConfigError(f"the dashboard cannot listen on {host}:{port}: {exc.strerror}") from None
    dashboard.start()
    return dashboard


def serve_master(settings: Settings, options: MasterOptions, stop: threading.Event) -> None:
    """Wait for the name server, start a master, serve until stop is set, then close it."""
    remote.configure(settings, threadpool_size=settings.max_connections)
    if not remote.wait_for_nameserver(settings, stop, "master"):
        return
    start_master(settings, options).serve_forever(stop)
