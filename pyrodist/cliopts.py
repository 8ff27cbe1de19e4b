"""The building blocks of the `pyrodist` command: shared options, settings, logging, signals, configuration files.

`cli.py` puts the commands together from these; this is the only other module that configures logging.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from .config import DEFAULT_MASTER_NAME, KEY_FILE_ENV, Settings, env_name, read_key_file
from .errors import ConfigError, PyrodistError, TaskError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


class Group(click.Group):
    """A click group that shows pyrodist's own errors as one clear line, exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PyrodistError as exc:
            raise click.ClickException(str(exc)) from None


def ns_options(func: F, *, ns_host_help: str = "Name server host (default: localhost, then a broadcast lookup).") -> F:
    """--ns-host, --ns-port, --master, each also read from its PYRODIST_* variable; ns_host_help may say more."""
    func = click.option("--master", "master_name", envvar=env_name("master_name"), default=DEFAULT_MASTER_NAME,
                        show_default=True, help="Name the master is registered under.")(func)  # fmt: skip
    func = click.option("--ns-port", envvar=env_name("ns_port"), type=click.IntRange(1, 65535),
                        help="Name server port (default: Pyro4's 9090).")(func)  # fmt: skip
    return click.option("--ns-host", envvar=env_name("ns_host"), help=ns_host_help)(func)


def logging_options(func: F) -> F:
    """--loglevel, --logfile and --log-format for the long-running commands, which then log accordingly."""

    @functools.wraps(func)
    def configured(*args: Any, loglevel: str, logfile: str | None, log_format: str, **kwargs: Any) -> Any:
        setup_logging(loglevel, logfile, log_format)
        return func(*args, **kwargs)

    options = [
        click.option("--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
                     envvar="PYRODIST_LOGLEVEL", show_default=True, help="How much to log."),
        click.option("--logfile", type=click.Path(dir_okay=False), envvar="PYRODIST_LOGFILE",
                     help="Append the log to this file instead of stderr."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="PYRODIST_LOG_FORMAT",
                     show_default=True, help="json: one object per line, for log collectors."),
    ]  # fmt: skip
    for option in reversed(options):
        configured = option(configured)
    return configured  # type: ignore[return-value]


class JsonFormatter(logging.Formatter):
    """One JSON object per log record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(), "pid": record.process,
        }  # fmt: skip
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, logfile: str | None = None, log_format: str = "text") -> None:
    """Log to stderr (or a file), as text with the actor in each line or as JSON."""
    handler: logging.Handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def describe_failure(exc: TaskError) -> str:
    """A failed task for the terminal: what failed, then the remote traceback."""
    if not exc.remote_traceback:
        return str(exc)
    return f"{exc}\n\nRemote traceback:\n{exc.remote_traceback.rstrip()}"


@contextmanager
def stop_on_signals(on_stop: Callable[[], None], on_second: Callable[[], None] | None = None) -> Iterator[None]:
    """Call on_stop on the first SIGINT/SIGTERM (and on_second on the next), then restore the handlers.

    The handler only queues the signal; a thread of its own calls on_stop. A handler runs inside whatever
    the main thread was doing, so one that set an Event the main thread was entering a wait on would wait
    for a lock its own thread holds, forever.
    """
    received: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() is safe in a signal handler

    def handle(signum: int, _frame: Any) -> None:
        received.put(signum)

    def react() -> None:
        count = 0
        while signum := received.get():  # 0: the context is over
            count += 1
            log.info("received %s", signal.Signals(signum).name)
            (on_stop if count == 1 or on_second is None else on_second)()

    reacting = threading.Thread(target=react, name="signals", daemon=True)
    reacting.start()
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        received.put(0)
        reacting.join()


def security_options(func: F) -> F:
    """--key, --key-file and the TLS files, each also read from its PYRODIST_* variable."""
    options = [
        click.option("--key", envvar=env_name("key"), help="Shared secret authenticating every connection."),
        click.option("--key-file", envvar=KEY_FILE_ENV, type=click.Path(dir_okay=False),
                     help="File holding the shared key (keeps it out of the process list)."),
        click.option("--tls-cert", envvar=env_name("tls_cert"), type=click.Path(dir_okay=False),
                     help="This process's TLS certificate (PEM); turns TLS on."),
        click.option("--tls-key", envvar=env_name("tls_key"), type=click.Path(dir_okay=False),
                     help="Private key of --tls-cert, if not in the same file."),
        click.option("--tls-ca", envvar=env_name("tls_ca"), type=click.Path(dir_okay=False),
                     help="CA certificate to verify peers; servers then require client certificates."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def settings_from(
    ns_host: str | None = None,
    ns_port: int | None = None,
    master_name: str = DEFAULT_MASTER_NAME,
    key: str | None = None,
    key_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    **extra: Any,
) -> Settings:
    """Settings from the common options (flags win over PYRODIST_* variables)."""
    if key and key_file:
        raise ConfigError("give either --key or --key-file, not both")
    if key_file:
        key = read_key_file(key_file)
    return Settings.from_env(
        ns_host=ns_host, ns_port=ns_port, master_name=master_name, key=key, tls_cert=tls_cert, tls_key=tls_key,
        tls_ca=tls_ca, **extra,
    )  # fmt: skip


def is_loopback(host: str) -> bool:
    """Whether an address to bind to is reachable from this machine only."""
    return host in ("localhost", "::1") or host.startswith("127.")


def warn_if_exposed(what: str, host: str, settings: Settings, insecure: bool) -> None:
    """Warn when a server listens beyond this machine with neither a key nor TLS."""
    if insecure or settings.key or settings.tls or is_loopback(host):
        return
    log.warning(
        "the %s listens on %s without --key or TLS: anyone who can reach it can make your workers run "
        "the functions they allow. Set --key (or PYRODIST_KEY), add TLS, or pass --insecure on a trusted network.",
        what, host,
    )  # fmt: skip


SHARED_KEYS = frozenset({
    "ns_host", "ns_port", "master", "key", "key_file", "tls_cert", "tls_key", "tls_ca",
    "loglevel", "logfile", "log_format", "max_payload", "max_value",
})  # fmt: skip
"""Options that mean the same for every command, so they may stand at the top of a configuration file."""


def option_key(param: click.Parameter) -> str | None:
    """How an option is written in a configuration file: its long name, without dashes ("ns_host")."""
    names = [opt for opt in param.opts if opt.startswith("--")]
    return names[0][2:].replace("-", "_") if isinstance(param, click.Option) and names else None


def config_defaults(group: click.Group, data: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """click default_map from a configuration file; unknown commands and options are errors, not ignored."""
    keys = {
        name: {key: param.name for param in command.params if (key := option_key(param)) and key != "help"}
        for name, command in group.commands.items()
    }
    defaults: dict[str, dict[str, Any]] = {name: {} for name in keys}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in keys:
                raise ConfigError(f"{path}: unknown table [{key}]; commands are {', '.join(sorted(keys))}")
            for option, setting in value.items():
                if option not in keys[key]:
                    raise ConfigError(f"{path}: [{key}] has no option {option!r}; see 'pyrodist {key} --help'")
                defaults[key][keys[key][option]] = setting
        elif key not in SHARED_KEYS:
            where = sorted(name for name, known in keys.items() if key in known)
            hint = (
                f"put it in a [{'] or ['.join(where)}] table" if where else "options are written like ns_host, key_file"
            )
            raise ConfigError(f"{path}: {key!r} is not a shared option ({hint})")
        else:
            for name, known in keys.items():
                if key in known:
                    defaults[name].setdefault(known[key], value)
    return defaults


def nat_options(func: F) -> F:
    """--nathost/--natport: the address other machines use to reach this process (behind NAT or in a container)."""
    func = click.option("--natport", type=click.IntRange(0, 65535), envvar="PYRODIST_NATPORT",
                        help="Port advertised with --nathost (0 or unset: the bound port).")(func)  # fmt: skip
    return click.option("--nathost", metavar="HOST", envvar="PYRODIST_NATHOST",
                        help="Address to advertise instead of the bound one (NAT, port forwarding).")(func)  # fmt: skip


insecure_option = click.option(
    "--insecure",
    is_flag=True,
    help="Listen beyond this machine without a key or TLS (or a dashboard without an admin key): warn only.",
)


def parse_arg(text: str) -> Any:
    """A shell argument as a Python literal, or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def typed_value(param: click.Option, ctx: click.Context, raw: Any) -> Any:
    """A raw option value as its type (None when unset)."""
    if raw is None or type(raw).__name__ == "Sentinel":  # click's marker for "no value"
        return None
    try:
        return param.type_cast_value(ctx, raw)
    except click.BadParameter:
        return raw  # shown as given; the command itself will say what is wrong


def value_source(param: click.Option, source: click.core.ParameterSource | None, ctx: click.Context) -> str:
    """Where a value came from, in words."""
    kind = click.core.ParameterSource
    if source is kind.COMMANDLINE:
        return "flag"
    if source is kind.ENVIRONMENT:
        return f"environment {param.envvar}"
    if source is kind.DEFAULT_MAP:
        return f"config file {ctx.find_root().meta.get('config_file', '')}"
    return "default"
