"""`Settings`: where the name server is, what the master is called, and the timeouts.

Settings come from CLI flags and `PYRODIST_*` environment variables, nowhere else, and are passed
explicitly to whatever needs them (no global mutable configuration).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

DEFAULT_MASTER_NAME = "pyrodist.master"

_ENV_PREFIX = "PYRODIST_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to find and talk to a pyrodist cluster."""

    ns_host: str | None = None
    """Name server host; None means Pyro4's discovery (broadcast, then localhost)."""
    ns_port: int | None = None
    """Name server port; None means Pyro4's default (9090)."""
    master_name: str = DEFAULT_MASTER_NAME
    """The name the master is registered under in the name server."""
    connect_timeout: float = 5.0
    """Seconds one connection attempt may take."""
    call_timeout: float = 60.0
    """Seconds a remote call may take beyond its own wait (0 means none)."""
    heartbeat: float = 2.0
    """Seconds between a worker's heartbeats."""
    lease_timeout: float = 10.0
    """Seconds a lease lives without a heartbeat before its task goes back to pending."""
    max_connections: int = 800
    """Size of the master's Pyro4 thread pool: each worker holds 2 connections, each client up to 3."""

    def __post_init__(self) -> None:
        if self.ns_port is not None and not 0 < self.ns_port < 65536:
            raise ConfigError(f"name server port must be between 1 and 65535, not {self.ns_port}")
        if not self.master_name or any(c.isspace() for c in self.master_name):
            raise ConfigError(f"master name must be a non-empty name without spaces, not {self.master_name!r}")
        for field in ("connect_timeout", "heartbeat", "lease_timeout"):
            value = getattr(self, field)
            if not (0 < value < math.inf):  # also refuses nan, which compares false with everything
                raise ConfigError(f"{field} must be a positive number of seconds, not {value}")
        if not (0 <= self.call_timeout < math.inf):
            raise ConfigError(
                f"call_timeout must be zero (none) or a positive number of seconds, not {self.call_timeout}"
            )
        if self.max_connections < 4:
            raise ConfigError(f"max_connections must be at least 4, not {self.max_connections}")
        if self.lease_timeout <= self.heartbeat:
            raise ConfigError(
                f"lease_timeout ({self.lease_timeout}) must be longer than the heartbeat ({self.heartbeat})"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `PYRODIST_*` variables, with explicit non-None overrides winning."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = _ENV_PREFIX + ("MASTER" if field.name == "master_name" else field.name.upper())
            if key in env and env[key] != "":
                values[field.name] = _parse(key, env[key], field.type)
                try:
                    cls(**{field.name: values[field.name]})  # check this value alone, to name its variable
                except ConfigError as exc:
                    if "must be longer than" not in str(exc):
                        raise ConfigError(f"environment variable {key}={env[key]!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(key: str, text: str, type_name: Any) -> Any:
    kind = str(type_name)
    try:
        if "int" in kind:
            return int(text)
        if "float" in kind:
            return float(text)
    except ValueError:
        raise ConfigError(f"environment variable {key}={text!r} is not a number") from None
    return text
