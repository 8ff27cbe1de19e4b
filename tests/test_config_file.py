"""Options from a TOML file (--config): flags beat PYRODIST_* variables, which beat the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Cluster
from tests.test_cli import assert_one_clear_line


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYRODIST_")}
    return subprocess.run([sys.executable, "-m", "pyrodist", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**base, **(env or {})})  # fmt: skip


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(
        'ns_host = "127.0.0.1"\nns_port = 9999\nkey = "from-the-file"\n\n'
        '[worker]\nimport = ["math", "operator"]\nconcurrency = 3\nprefetch = 7\n\n[master]\nlease_timeout = 12.5\n'
    )
    return path


def test_precedence_is_flag_then_environment_then_file(config_file: Path) -> None:
    result = run("--config", str(config_file), "config", "--json", "worker", "-c", "5",
                 env={"PYRODIST_NS_PORT": "9191"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    worker = json.loads(result.stdout)["worker"]
    assert worker["concurrency"] == {"value": 5, "source": "flag"}
    assert worker["ns_port"] == {"value": 9191, "source": "environment PYRODIST_NS_PORT"}
    assert worker["prefetch"] == {"value": 7, "source": f"config file {config_file}"}
    assert worker["import"]["value"] == ["math", "operator"]
    assert worker["ns_host"]["source"] == f"config file {config_file}"
    assert worker["burst"] == {"value": False, "source": "default"}
    assert worker["key"]["value"] == "*** (hidden)" and "from-the-file" not in result.stdout


def test_config_without_a_command_lists_every_command(config_file: Path) -> None:
    result = run("--config", str(config_file), "config")
    assert result.returncode == 0, result.stderr
    for command in ("pyrodist master", "pyrodist worker", "pyrodist status", "pyrodist submit"):
        assert command in result.stdout
    assert "12.5" in result.stdout  # master's lease_timeout from its table


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("colour = 1\n", "'colour' is not a shared option"),
        ("port = 9091\n", "put it in a [master] or [nameserver] table"),
        ("[worker]\ncolour = 1\n", "[worker] has no option 'colour'"),
        ("[nonsense]\nx = 1\n", "unknown table [nonsense]"),
        ("ns_host = \n", "is not valid TOML"),
    ],
)
def test_bad_configuration_files_are_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert_one_clear_line(run("--config", str(path), "status"), needle)


def test_missing_configuration_file_is_one_clear_line(tmp_path: Path) -> None:
    assert_one_clear_line(run("--config", str(tmp_path / "none.toml"), "status"), "cannot read the configuration file")


def test_commands_take_their_options_from_the_file(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(f'ns_host = "127.0.0.1"\nns_port = {cluster.ns_port}\n')
    result = run("status", "--json", env={"PYRODIST_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["workers"]) == 2


def test_environment_beats_the_file_for_every_setting(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text("[master]\nlease_timeout = 5.0\n")
    result = run("--config", str(path), "config", "--json", "master", env={"PYRODIST_LEASE_TIMEOUT": "30"})
    assert json.loads(result.stdout)["master"]["lease_timeout"] == {
        "value": 30.0,
        "source": "environment PYRODIST_LEASE_TIMEOUT",
    }
