"""`Settings`: where the name server is, what the master is called, and the timeouts.

Settings come from CLI flags, `PYRODIST_*` environment variables and a TOML file (`--config`), in that
order of precedence, and are passed explicitly to whatever needs them (no global mutable configuration).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

DEFAULT_MASTER_NAME = "pyrodist.master"

_ENV_PREFIX = "PYRODIST_"
KEY_FILE_ENV = _ENV_PREFIX + "KEY_FILE"
"""The variable naming a file that holds the key, read when PYRODIST_KEY is unset or empty."""


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
    key: str | None = dataclasses.field(default=None, repr=False)
    """Shared secret authenticating every connection (Pyro4 HMAC); None means no authentication."""
    admin_key: str | None = dataclasses.field(default=None, repr=False)
    """Secret of the operator: a master given one lets clients that hold it see every client's tasks."""
    registration_key: str | None = dataclasses.field(default=None, repr=False)
    """Secret of the name server and the master alone: names are registered and removed only with proofs of it."""
    tls_cert: str | None = None
    """This process's TLS certificate (PEM); turns TLS on."""
    tls_key: str | None = None
    """The private key of tls_cert (PEM), when not inside the certificate file."""
    tls_ca: str | None = None
    """CA certificate(s) to verify peers with; turns TLS on, and makes servers require client certificates."""
    max_payload: int = 8 * 1024 * 1024
    """Largest encoded arguments or result of one task sent inside a message, in bytes (bigger ones, up to
    max_value, travel in chunks and are kept on the master's disk)."""
    max_value: int = 2 << 30
    """Largest encoded arguments or result of one task, in bytes."""
    max_held: int = 64 * 1024 * 1024
    """Bytes of finished results waiting for their clients that the master keeps in memory; beyond it, results
    over 64 KiB wait on its disk."""
    result_ttl: float = 3600.0
    """Seconds the master keeps a finished task's record and result."""
    max_pending: int = 10_000_000
    """Most tasks the master queues; beyond it submit fails with 'queue full' (Client.map waits instead)."""

    def __post_init__(self) -> None:
        if self.ns_port is not None and not 0 < self.ns_port < 65536:
            raise ConfigError(f"name server port must be between 1 and 65535, not {self.ns_port}")
        if not self.master_name or any(c.isspace() for c in self.master_name):
            raise ConfigError(f"master name must be a non-empty name without spaces, not {self.master_name!r}")
        for field in ("connect_timeout", "heartbeat", "lease_timeout", "result_ttl"):
            value = getattr(self, field)
            if not (0 < value < math.inf):  # also refuses nan, which compares false with everything
                raise ConfigError(f"{field} must be a positive number of seconds, not {value}")
        if not (0 <= self.call_timeout < math.inf):
            raise ConfigError(
                f"call_timeout must be zero (none) or a positive number of seconds, not {self.call_timeout}"
            )
        if self.max_connections < 4:
            raise ConfigError(f"max_connections must be at least 4, not {self.max_connections}")
        if not 1024 <= self.max_payload <= 1 << 30:
            raise ConfigError(f"max_payload must be from 1024 to {1 << 30} bytes, not {self.max_payload}")
        if not 1024 <= self.max_value <= 1 << 40:
            raise ConfigError(f"max_value must be from 1024 to {1 << 40} bytes, not {self.max_value}")
        if self.max_held < 0:
            raise ConfigError(f"max_held must not be negative, not {self.max_held}")
        if self.max_pending < 1:
            raise ConfigError(f"max_pending must be at least 1, not {self.max_pending}")
        if self.key is not None and not self.key:
            raise ConfigError("the key must not be empty (leave it unset for no authentication)")
        if self.tls_key and not self.tls_cert:
            raise ConfigError("a TLS key (tls_key) needs its certificate (tls_cert)")
        for field in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, field)
            if path is not None and not os.path.exists(path):
                raise ConfigError(f"{field} file {path!r} does not exist")

    @property
    def tls(self) -> bool:
        """Whether connections use TLS."""
        return bool(self.tls_cert or self.tls_ca)

    @property
    def key_bytes(self) -> bytes | None:
        """The key as Pyro4 wants it."""
        return self.key.encode("utf-8") if self.key else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `PYRODIST_*` variables, with explicit non-None overrides winning."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = env_name(field.name)
            if field.name == "key" and KEY_FILE_ENV in env and not env.get(key):
                values["key"] = read_key_file(env[KEY_FILE_ENV])
                continue
            if key in env and env[key] != "":
                values[field.name] = _parse(key, env[key], field.type)
                try:
                    cls(**{field.name: values[field.name]})  # check this value alone, to name its variable
                except ConfigError as exc:
                    raise ConfigError(f"environment variable {key}={env[key]!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_FIELDS = frozenset(field.name for field in dataclasses.fields(Settings))


def env_name(field: str) -> str:
    """The environment variable of a Settings field: PYRODIST_ and the name upper-cased (master_name: PYRODIST_MASTER).

    Raises:
        ValueError: field is not a Settings field.
    """
    if field not in _FIELDS:
        raise ValueError(f"{field!r} is not a Settings field; they are {', '.join(sorted(_FIELDS))}")
    return _ENV_PREFIX + ("MASTER" if field == "master_name" else field.upper())


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


def read_key_file(path: str) -> str:
    """The key stored in a file (surrounding whitespace removed)."""
    try:
        with open(path, encoding="utf-8") as handle:
            key = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path!r}: {exc.strerror or exc}") from None
    if not key:
        raise ConfigError(f"the key file {path!r} is empty")
    return key


def read_config_file(path: str) -> dict[str, Any]:
    """The options in a TOML file: shared ones at the top level, per-command ones in [command] tables."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the configuration file {path!r} is not valid TOML: {exc}") from None
