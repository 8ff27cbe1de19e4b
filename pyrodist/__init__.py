"""pyrodist: distributed computing for Python functions over Pyro4, without a broker."""

from __future__ import annotations

from .client import Client, TaskOptions
from .cluster import LocalCluster
from .config import Settings
from .errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    FunctionNotAllowed,
    FunctionRefError,
    MasterNotFound,
    MasterRejected,
    NameServerNotFound,
    PyrodistError,
    RemoteTraceback,
    ResultExpired,
    TaskError,
    TaskLost,
    ValueEncodingError,
)
from .executor import ClusterExecutor
from .futures import Future, as_completed
from .progressbar import Spinner, progress
from .protocol import TaskState
from .valuetypes import register_value_class

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "Client",
    "ClusterExecutor",
    "ConfigError",
    "ConnectionFailed",
    "FunctionNotAllowed",
    "FunctionRefError",
    "Future",
    "LocalCluster",
    "MasterNotFound",
    "MasterRejected",
    "NameServerNotFound",
    "PyrodistError",
    "RemoteTraceback",
    "ResultExpired",
    "Settings",
    "Spinner",
    "TaskError",
    "TaskLost",
    "TaskOptions",
    "TaskState",
    "ValueEncodingError",
    "__version__",
    "as_completed",
    "progress",
    "register_value_class",
]
