"""The `pyrodist` command: name server, master, worker, submit, status, bench, config.

With `cliopts.py`, the only place that configures logging.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import threading
import time
from typing import Any

import click

from . import __version__, remote
from .bench import format_result, run_bench
from .client import Client
from .cliopts import (
    Group,
    config_defaults,
    describe_failure,
    insecure_option,
    is_loopback,
    logging_options,
    nat_options,
    ns_options,
    option_key,
    parse_arg,
    security_options,
    settings_from,
    stop_on_signals,
    typed_value,
    value_source,
    warn_if_exposed,
)
from .config import DEFAULT_MASTER_NAME, env_name, read_config_file
from .errors import ConfigError, TaskError
from .masterd import MasterOptions, serve_master
from .progressbar import Spinner
from .remote_connection import PyroConnection
from .remote_servers import start_nameserver
from .sqlstore import SYNC_MODES
from .statustext import format_status, format_task
from .storecheck import check_file
from .texttable import format_table
from .wire import TaskSpec
from .worker import DEFAULT_GRACE, Worker

log = logging.getLogger(__name__)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="PYRODIST_CONFIG",
              help="TOML file of options: shared ones at the top, per command in [tables]; flags and "
              "PYRODIST_* variables win over it.")  # fmt: skip
@click.version_option(__version__, prog_name="pyrodist")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """pyrodist: run Python functions on a cluster of workers found through a Pyro4 name server.

    Start order: nameserver, master, workers; then submit from the shell or from Python.
    """
    if config_file:
        ctx.default_map = config_defaults(cli, read_config_file(config_file), config_file)
        ctx.meta["config_file"] = config_file


@cli.command()
@click.option("--host", default=remote.LOOPBACK, show_default=True, envvar=env_name("ns_host"), help="Address to bind.")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(0, 65535), envvar=env_name("ns_port"),
              help="Port to bind (0 picks a free one).")  # fmt: skip
@click.option("--broadcast/--no-broadcast", default=True, help="Answer broadcast lookups (never on loopback).")
@nat_options
@insecure_option
@security_options
@logging_options
def nameserver(host: str, port: int, broadcast: bool, nathost: str | None, natport: int | None, insecure: bool,
               **security: Any) -> None:  # fmt: skip
    """Run a Pyro4 name server."""
    settings = settings_from(None, None, DEFAULT_MASTER_NAME, **security)
    warn_if_exposed("name server", host, settings, insecure)
    stop = threading.Event()
    with stop_on_signals(stop.set):  # before binding: a SIGTERM right after start must still end cleanly
        ns = start_nameserver(settings, host, port, broadcast, nathost, natport)
        log.info("name server running at %s%s", ns.uri, " (answering broadcasts)" if ns.broadcast else "")
        try:
            ns.serve(stop)
        finally:
            ns.close()


@cli.command()
@click.option("--name", "name", default=None, help="Name to register under (default: --master, pyrodist.master).")
@click.option("--host", default=remote.LOOPBACK, show_default=True, envvar="PYRODIST_MASTER_HOST",
              help="Address to bind the master's daemon to.")  # fmt: skip
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one).")
@click.option("--lease-timeout", type=click.FloatRange(min=0.1), envvar=env_name("lease_timeout"),
              help="Seconds a lease lives without heartbeats.")  # fmt: skip
@click.option("--max-connections", type=click.IntRange(min=4), envvar=env_name("max_connections"),
              help="Size of the Pyro4 thread pool.")  # fmt: skip
@click.option("--max-payload", type=click.IntRange(min=1024), envvar=env_name("max_payload"),
              help="Largest encoded arguments or result sent in one message, in bytes (default 8 MiB); "
                   "bigger ones travel in chunks.")  # fmt: skip
@click.option("--max-value", type=click.IntRange(min=1024), envvar=env_name("max_value"),
              help="Largest encoded arguments or result of a task, in bytes (default 2 GiB).")  # fmt: skip
@click.option("--max-held", type=click.IntRange(min=0), envvar=env_name("max_held"),
              help="Bytes of results waiting for clients kept in memory; more wait on disk (64 MiB).")  # fmt: skip
@click.option("--dashboard", type=click.IntRange(0, 65535), envvar="PYRODIST_DASHBOARD",
              help="Serve a live web dashboard on this port (0: a free one).")  # fmt: skip
@click.option("--dashboard-host", default=remote.LOOPBACK, show_default=True, envvar="PYRODIST_DASHBOARD_HOST",
              help="Address the dashboard binds to.")  # fmt: skip
@click.option("--result-ttl", type=click.FloatRange(min=0.001), envvar=env_name("result_ttl"),
              help="Seconds finished tasks and their results are kept (default 3600).")  # fmt: skip
@click.option("--max-pending", type=click.IntRange(min=1), envvar=env_name("max_pending"),
              help="Most queued tasks; then submit fails with 'queue full' (Client.map waits).")  # fmt: skip
@click.option("--store", "store", metavar="PATH", is_flag=False, flag_value="", envvar="PYRODIST_STORE",
              help="Keep all state in this SQLite file (WAL), to survive restarts (default: in memory).")  # fmt: skip
@click.option("--store-sync", type=click.Choice(SYNC_MODES), default="full", show_default=True,
              envvar="PYRODIST_STORE_SYNC",
              help="full: each commit survives a power loss; normal: survives the master's crash, faster.")  # fmt: skip
@click.option("--check", is_flag=True, help="Check the --store file thoroughly and exit (0: sound, 1: damaged).")
@click.option("--accept-loss", is_flag=True,
              help="With --check: let a master start from a store whose write-ahead log was lost.")  # fmt: skip
@nat_options
@insecure_option
@ns_options
@security_options
@logging_options
def master(name: str | None, host: str, port: int, insecure: bool, master_name: str, dashboard: int | None,
           dashboard_host: str, store: str | None, store_sync: str, check: bool, accept_loss: bool,
           nathost: str | None, natport: int | None, **options: Any) -> None:  # fmt: skip
    """Run the master and register it in the name server."""
    if check or accept_loss:
        check_store(store, accept_loss)
        return
    settings = settings_from(master_name=name or master_name, **options)
    warn_if_exposed("master", host, settings, insecure)
    if dashboard is not None and not is_loopback(dashboard_host):
        how = (
            "with the admin key as its password in clear text" if settings.admin_key else
            "to anyone who reaches it: set PYRODIST_ADMIN_KEY (the dashboard then asks for it as its password)"
        )  # fmt: skip
        exposed = (
            f"the dashboard on {dashboard_host} would show every client's tasks and tracebacks over plain HTTP, {how}"
        )
        if not insecure:
            raise click.UsageError(f"{exposed}; keep it on 127.0.0.1 (an SSH tunnel), or pass --insecure")
        log.warning("%s", exposed)
    where = MasterOptions(host, port, dashboard, dashboard_host, store or None, store_sync, nathost, natport)
    stop = threading.Event()
    with stop_on_signals(stop.set):
        serve_master(settings, where, stop)
    log.info("master stopped")


def check_store(store: str | None, accept_loss: bool) -> None:
    """`master --check`: report what is wrong with the store file; exit 1 when anything is."""
    if not store:
        raise click.UsageError("--check needs --store PATH")
    problems = check_file(store, accept_loss)
    if problems:
        click.echo(f"store {store} is damaged:\n" + "\n".join(f"  {problem}" for problem in problems), err=True)
        sys.exit(1)
    click.echo(
        f"store {store}: sound" + (" (marked closed: a master starts from what it holds)" if accept_loss else "")
    )


@cli.command()
@click.option("-I", "--import", "imports", multiple=True, required=True, metavar="MODULE",
              help="Module whose functions this worker may run (repeat for more).")  # fmt: skip
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Tasks run at once (default: CPUs).")
@click.option("--prefetch", type=click.IntRange(min=1), help="Tasks fetched per call (1 = fair dispatch).")
@click.option("--id", "worker_id", help="Worker id (default: HOST-PID).")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--max-tasks", type=click.IntRange(min=1), help="Exit after this many tasks.")
@click.option("--heartbeat", type=click.FloatRange(min=0.05), envvar=env_name("heartbeat"),
              help="Seconds between heartbeats.")  # fmt: skip
@click.option("--max-payload", type=click.IntRange(min=1024), envvar=env_name("max_payload"),
              help="Largest encoded result sent in one message, in bytes (default 8 MiB).")  # fmt: skip
@click.option("--max-value", type=click.IntRange(min=1024), envvar=env_name("max_value"),
              help="Largest encoded result of a task, in bytes (default 2 GiB).")  # fmt: skip
@click.option("--grace", type=click.FloatRange(min=0), default=DEFAULT_GRACE, show_default=True,
              envvar="PYRODIST_GRACE",
              help="On SIGTERM, seconds running tasks may finish before they are killed and given back.")  # fmt: skip
@ns_options
@security_options
@logging_options
def worker(imports: tuple[str, ...], concurrency: int | None, prefetch: int | None, worker_id: str | None,
           burst: bool, max_tasks: int | None, grace: float, **options: Any) -> None:  # fmt: skip
    """Fetch tasks from the master and run them."""
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current directory can be given with -I
    engine = Worker(settings_from(**options), imports, concurrency, prefetch, worker_id, burst, max_tasks, grace)
    with stop_on_signals(engine.stop, engine.abort):
        code = engine.run()
    sys.exit(code)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("func")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--no-wait", is_flag=True, help="Print the task id and return at once.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Seconds to wait for the result.")
@ns_options
@security_options
def submit(func: str, args: tuple[str, ...], no_wait: bool, timeout: float | None, **options: Any) -> None:
    """Run FUNC ('package.module:name') with ARGS (Python literals, else strings); print the result."""
    values = [parse_arg(a) for a in args]
    settings = settings_from(**options)
    if no_wait:  # a task of no client: its id alone reads it later, from anywhere (`pyrodist status ID`)
        conn = PyroConnection(settings)
        try:
            click.echo(conn.submit(TaskSpec(func, values, {})))
        finally:
            conn.close()
        return
    with Client(settings=settings) as client:
        future = client.submit(func, *values)
        try:
            with Spinner(f"waiting for task {future.task_id}"):
                value = future.result(timeout)
        except TaskError as exc:  # first: a task's own TimeoutError is a TaskError too
            click.echo(describe_failure(exc), err=True)
            sys.exit(1)
        except TimeoutError:
            raise click.ClickException(f"task {future.task_id} not finished after {timeout} s; it goes on") from None
    click.echo(value if isinstance(value, str) else repr(value))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("func")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@ns_options
@security_options
def broadcast(func: str, args: tuple[str, ...], **options: Any) -> None:
    """Run FUNC with ARGS once on every live worker; print each worker's result."""
    values = [parse_arg(a) for a in args]
    with Client(settings=settings_from(**options)) as client:
        try:
            results = client.broadcast(func, *values)
        except TaskError as exc:
            click.echo(describe_failure(exc), err=True)
            sys.exit(1)
    rows = [(worker, value if isinstance(value, str) else repr(value)) for worker, value in sorted(results.items())]
    for line in format_table(rows, "{:<}  {}", strip=False):
        click.echo(line)


@cli.command()
@click.argument("task_ids", nargs=-1, metavar="[TASK_ID]...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", type=click.FloatRange(min=0.2), is_flag=False, flag_value=2.0, default=None,
              metavar="[SECONDS]", help="Refresh every SECONDS (default 2) until Ctrl-C.")  # fmt: skip
@ns_options
@security_options
def status(task_ids: tuple[str, ...], as_json: bool, watch: float | None, **options: Any) -> None:
    """Show the workers, queue and throughput; given TASK_IDs, why each task is where it is."""
    with Client(settings=settings_from(**options)) as client:
        if task_ids:
            records = client.lookup(task_ids)
            if as_json:
                click.echo(json.dumps(dict(zip(task_ids, records, strict=True)), indent=2, sort_keys=True))
            else:
                click.echo("\n\n".join(format_task(i, r) for i, r in zip(task_ids, records, strict=True)))
            if None in records:
                sys.exit(1)
            return
        if watch is None:
            click.echo(status_text(client, as_json))
            return
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the watch wherever it comes, not only in a sleep
            while True:
                text = status_text(client, as_json)
                click.clear()
                click.echo(f"{text}\n\n(every {watch:g} s; Ctrl-C to stop)")
                time.sleep(watch)


def status_text(client: Client, as_json: bool) -> str:
    """The cluster's status, as text or JSON."""
    stats = client.stats()
    return json.dumps(stats, indent=2, sort_keys=True) if as_json else format_status(stats)


@cli.command()
@click.option("--tasks", "n_tasks", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="No-op tasks in the throughput run.")  # fmt: skip
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Workers (one slot each).")
@click.option("--payload", default=0, show_default=True, type=click.IntRange(min=0), help="Bytes of argument per task.")
@click.option("--store", type=click.Path(dir_okay=False),
              help="Durable store for the local master (with --compare, also measure an in-memory one).")  # fmt: skip
@click.option("--compare", is_flag=True, help="Also run multiprocessing.Pool and a raw Pyro4 loop, and print ratios.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@functools.partial(ns_options, ns_host_help="Use the running cluster there instead of a local one.")
@security_options
def bench(n_tasks: int, workers: int, payload: int, store: str | None, compare: bool, as_json: bool,
          ns_host: str | None, ns_port: int | None, master_name: str, **security: Any) -> None:  # fmt: skip
    """Measure throughput, latency and master cost on a local cluster (or a running one with --ns-host).

    More scenarios (idle workers, callbacks, deep queues, scaling, targets) are in the lab: `python -m benchmarks`
    from a clone of the repository.
    """
    settings = settings_from(ns_host, ns_port, master_name, **security) if ns_host else None
    result = run_bench(n_tasks, workers, payload, store, compare, settings)
    click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True) if as_json else format_result(result))


@cli.command("config", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("command_name", metavar="[COMMAND]", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def show_config(ctx: click.Context, as_json: bool, command_name: str | None, args: tuple[str, ...]) -> None:
    """Print the effective options of COMMAND (given its ARGS), or of every command, and where each comes from."""
    group = ctx.parent
    assert group is not None
    names = [command_name] if command_name else sorted(n for n in cli.commands if n != "config")
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for name in names:
        command = cli.commands.get(name)
        if command is None:
            raise ConfigError(f"unknown command {name!r}; commands are {', '.join(sorted(cli.commands))}")
        sub = click.Context(command, info_name=name, parent=group)
        opts, _, _ = command.make_parser(sub).parse_args(list(args) if command_name else [])
        report[name] = {}
        for param in command.get_params(sub):
            key = option_key(param)
            if not isinstance(param, click.Option) or key in (None, "help"):
                continue
            raw, source = param.consume_value(sub, opts)
            value = typed_value(param, sub, raw)
            if key == "key" and value is not None:
                value = "*** (hidden)"
            report[name][str(key)] = {"value": value, "source": value_source(param, source, ctx)}
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
        return
    for name, options in report.items():
        click.echo(f"pyrodist {name}")
        rows = [(option, repr(entry["value"]), entry["source"]) for option, entry in options.items()]
        for line in format_table(rows, "  {:<}  {:<24}  {}", strip=False):
            click.echo(line)


def main() -> None:
    """Entry point of the `pyrodist` console script."""
    cli(prog_name="pyrodist")
