"""Settings: defaults, PYRODIST_* environment variables, explicit overrides and validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import pytest

from pyrodist.cli import cli
from pyrodist.config import DEFAULT_MASTER_NAME, KEY_FILE_ENV, Settings, env_name
from pyrodist.errors import ConfigError

# ---- defaults ----------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings()
    assert settings.ns_host is None
    assert settings.ns_port is None
    assert settings.master_name == DEFAULT_MASTER_NAME == "pyrodist.master"
    assert settings.connect_timeout == 5.0
    assert settings.call_timeout == 60.0
    assert settings.heartbeat == 2.0
    assert settings.lease_timeout == 10.0
    assert settings.max_connections == 800


def test_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ns_port = 1  # type: ignore[misc]


def test_unrelated_environment_variables_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/bin", "PYRO_NS_PORT": "1", "PYRODIST_UNKNOWN": "x"}) == Settings()


# ---- the environment ---------------------------------------------------------------------------


def test_name_server_and_master_come_from_the_environment() -> None:
    env = {"PYRODIST_NS_HOST": "ns.example", "PYRODIST_NS_PORT": "9091", "PYRODIST_MASTER": "team.master"}
    settings = Settings.from_env(env)
    assert settings.ns_host == "ns.example"
    assert settings.ns_port == 9091
    assert type(settings.ns_port) is int
    assert settings.master_name == "team.master"


def test_numbers_come_from_the_environment_with_their_types() -> None:
    env = {
        "PYRODIST_CONNECT_TIMEOUT": "3",
        "PYRODIST_CALL_TIMEOUT": "0",
        "PYRODIST_HEARTBEAT": "1.5",
        "PYRODIST_LEASE_TIMEOUT": "4.5",
        "PYRODIST_MAX_CONNECTIONS": "32",
    }
    settings = Settings.from_env(env)
    assert settings.connect_timeout == 3.0
    assert type(settings.connect_timeout) is float
    assert settings.call_timeout == 0.0
    assert settings.heartbeat == 1.5
    assert settings.lease_timeout == 4.5
    assert settings.max_connections == 32
    assert type(settings.max_connections) is int


def test_empty_environment_variable_counts_as_unset() -> None:
    assert Settings.from_env({"PYRODIST_NS_HOST": "", "PYRODIST_NS_PORT": ""}) == Settings()


def test_explicit_overrides_win_over_the_environment() -> None:
    env = {"PYRODIST_NS_HOST": "from-env", "PYRODIST_NS_PORT": "9091", "PYRODIST_MASTER": "env.master"}
    settings = Settings.from_env(env, ns_host="from-flag", ns_port=9999)
    assert settings.ns_host == "from-flag"
    assert settings.ns_port == 9999
    assert settings.master_name == "env.master"


def test_none_override_leaves_the_environment_value() -> None:
    settings = Settings.from_env({"PYRODIST_NS_HOST": "from-env"}, ns_host=None, master_name=None)
    assert settings.ns_host == "from-env"
    assert settings.master_name == DEFAULT_MASTER_NAME


def test_overrides_apply_without_environment() -> None:
    assert Settings.from_env({}, heartbeat=1.0, lease_timeout=3.0) == Settings(heartbeat=1.0, lease_timeout=3.0)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("PYRODIST_NS_PORT", "abc"),
        ("PYRODIST_NS_PORT", "9090.0"),
        ("PYRODIST_HEARTBEAT", "fast"),
        ("PYRODIST_LEASE_TIMEOUT", "10s"),
        ("PYRODIST_MAX_CONNECTIONS", "1.5"),
        ("PYRODIST_CONNECT_TIMEOUT", "five"),
    ],
)
def test_bad_number_in_the_environment_names_the_variable(key: str, text: str) -> None:
    with pytest.raises(ConfigError, match=key) as caught:
        Settings.from_env({key: text})
    assert repr(text) in str(caught.value)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Settings.from_env({"PYRODIST_NS_PORT": "abc"})


@pytest.mark.parametrize("text", ["0", "70000", "-1"])
def test_port_out_of_range_in_the_environment_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        Settings.from_env({"PYRODIST_NS_PORT": text})


def test_port_out_of_range_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PYRODIST_NS_PORT"):
        Settings.from_env({"PYRODIST_NS_PORT": "70000"})


# ---- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [1, 9090, 65535])
def test_valid_port_is_accepted(port: int) -> None:
    assert Settings(ns_port=port).ns_port == port


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ConfigError, match="port must be between 1 and 65535"):
        Settings(ns_port=port)


@pytest.mark.parametrize("name", ["", "my master", "tab\tname", " "])
def test_master_name_must_be_non_empty_without_spaces(name: str) -> None:
    with pytest.raises(ConfigError, match="master name"):
        Settings(master_name=name)


@pytest.mark.parametrize("field", ["connect_timeout", "heartbeat", "lease_timeout"])
@pytest.mark.parametrize("value", [0, -1.0])
def test_timeouts_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"{field} must be a positive number"):
        Settings(**{field: value})


def test_heartbeat_and_lease_timeout_are_set_independently() -> None:
    # A master's lease timeout and a worker's heartbeat live in different processes: the master tells the
    # worker its lease timeout, and the worker heartbeats faster when needed (see test_worker_follows_...).
    settings = Settings(heartbeat=5.0, lease_timeout=3.0)
    assert (settings.heartbeat, settings.lease_timeout) == (5.0, 3.0)
    assert Settings.from_env({"PYRODIST_HEARTBEAT": "20"}).heartbeat == 20.0


def test_worker_follows_the_masters_lease_timeout() -> None:
    from pyrodist.reporter import Reporter
    from pyrodist.wire import HeartbeatReply
    from pyrodist.worker import Worker

    worker = Worker(Settings(heartbeat=5.0), ["math"], concurrency=1)
    reporter = Reporter(worker.id, worker.state, None, worker.abort, 1024)  # type: ignore[arg-type]
    reporter._adopt(HeartbeatReply(3.0))
    assert worker.state.heartbeat == pytest.approx(1.0)
    assert worker.state.fetch_wait == pytest.approx(1.0)  # an idle worker's long-polls keep it alive too
    reporter._adopt(HeartbeatReply(60.0))  # never slower than asked
    assert worker.state.heartbeat == pytest.approx(1.0)
    with pytest.raises(TypeError):
        HeartbeatReply.from_wire("garbage")


@pytest.mark.parametrize("overrides", [{"heartbeat": float("nan")}, {"lease_timeout": float("nan")}], ids=repr)
def test_nan_timeout_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Settings(**overrides)


# ---- variable names: one rule for the environment reader and the command line ------------------


def test_a_fields_variable_is_its_name_upper_cased_except_the_masters() -> None:
    assert env_name("ns_host") == "PYRODIST_NS_HOST"
    assert env_name("lease_timeout") == "PYRODIST_LEASE_TIMEOUT"
    assert env_name("master_name") == "PYRODIST_MASTER"
    with pytest.raises(ValueError, match="'ns_hots' is not a Settings field"):
        env_name("ns_hots")


def test_from_env_reads_each_field_from_its_env_name() -> None:
    values = {"ns_host": "ns.example", "ns_port": 9091, "master_name": "team.master", "heartbeat": 1.5,
              "max_pending": 7, "key": "secret"}  # fmt: skip
    assert Settings.from_env({env_name(k): str(v) for k, v in values.items()}) == Settings(**values)


def test_every_command_line_option_for_a_field_reads_the_fields_variable() -> None:
    fields = {field.name for field in dataclasses.fields(Settings)}
    checked = []
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.name in fields:
                assert param.envvar == env_name(param.name), f"pyrodist {name} {param.opts[0]}"
                checked.append((name, param.name))
            if isinstance(param, click.Option) and param.name == "key_file":
                assert param.envvar == KEY_FILE_ENV, f"pyrodist {name} --key-file"
    assert ("bench", "master_name") in checked and ("worker", "heartbeat") in checked
