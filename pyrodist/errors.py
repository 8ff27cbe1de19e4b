"""The exceptions pyrodist raises; every one derives from `PyrodistError`.

::

    PyrodistError
    ├── ConfigError             bad settings or arguments (also a ValueError)
    ├── ValueEncodingError      a value that would not come back as it was (also a ValueError)
    ├── FunctionRefError        a function no worker could import (also a ValueError)
    ├── FunctionNotAllowed      a worker refuses a function outside its allow-list
    ├── AuthenticationFailed    the key (or TLS certificate) does not match the cluster's
    ├── ConnectionFailed        a part of the cluster cannot be reached
    │   ├── NameServerNotFound
    │   └── MasterNotFound
    ├── MasterRejected          the master refused a call (bad input); carries its message
    ├── StoreUnavailable        the master's task store cannot write (disk full, read-only, I/O error):
    │                           nothing of the call was recorded; try again once the store is back
    ├── TaskError               a task failed on its worker; carries the remote type, message, traceback
    │                           (and is an instance of the remote exception's class too when that class is
    │                           known here: `task_error`)
    │   └── TaskLost            the master no longer knows the task (for example it restarted in memory)
    │       └── ResultExpired   the master dropped the result (--result-ttl passed, or client.forget)
    └── RemoteTraceback         a task's traceback on its worker, the `__cause__` of its TaskError

Remote methods raise builtin exceptions only (they must cross the wire to plain Pyro4 shells);
`remote.py` and `client.py` map them onto this tree.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any


class PyrodistError(Exception):
    """Root of every pyrodist error."""


class ConfigError(PyrodistError, ValueError):
    """A setting or argument is invalid."""


class ValueEncodingError(PyrodistError, ValueError):
    """A value cannot be sent without changing its type or meaning (or it is too large)."""


class FunctionRefError(PyrodistError, ValueError):
    """A function cannot be turned into a reference that a worker could import."""


class FunctionNotAllowed(PyrodistError):
    """A worker refuses a function that its allow-list does not cover."""


class AuthenticationFailed(PyrodistError):
    """A peer refused us (or we refused it): the shared key or the TLS certificates do not match."""


class ConnectionFailed(PyrodistError):
    """A part of the cluster (name server, master) cannot be reached."""


class NameServerNotFound(ConnectionFailed):
    """No Pyro4 name server answers where we looked."""


class MasterNotFound(ConnectionFailed):
    """The name server has no master registered under the name, or it does not answer."""

    def __init__(self, message: str, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone
        """Known to be gone, not just out of reach: nothing is registered, or its address refuses connections."""


class MasterRejected(PyrodistError):
    """The master refused a call because of bad input."""


class StoreUnavailable(PyrodistError):
    """The master's task store cannot write or read now; the call changed nothing and may be tried again."""


class TaskError(PyrodistError):
    """A task failed; carries the remote exception's type name, message and traceback."""

    _module = "builtins"  # of the remote exception's class, once rebuilt as that class (`task_error`)

    def __init__(self, task_id: str, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(task_id, type_name, message, remote_traceback)
        self._fill(task_id, type_name, message, remote_traceback)

    def _fill(self, task_id: str, type_name: str, message: str, remote_traceback: str) -> None:
        self.task_id = task_id
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        if remote_traceback:  # shown above this error, as concurrent.futures shows a process pool's
            self.__cause__ = RemoteTraceback(remote_traceback)

    def __str__(self) -> str:
        return f"task {self.task_id} failed: {self.type_name}: {self.message}"


def task_error(task_id: str, record: Mapping[str, Any]) -> TaskError:
    """The error a failed task raises in its caller, from its error record.

    When the remote exception's class can be found without importing anything (a builtin, or a class of a
    module this process has imported already), the error is an instance of that class *and* of `TaskError`, so
    `except ZeroDivisionError:` catches it as it would locally. Nothing is unpickled: the class is found by
    name, and only subclasses of `Exception` are taken (a remote SystemExit never exits the caller).
    """
    type_name, message = str(record.get("type", "")), str(record.get("message", ""))
    traceback = str(record.get("traceback", ""))
    module = str(record.get("module") or "builtins")
    original = _exception_class(type_name, module)
    kind = _rebuilt(original)
    if original is not None and kind is not None:
        try:
            error = kind.__new__(kind, message)  # the original's own __init__ may want other arguments: not run
            error.args = (message,)  # (OSError's __new__ leaves them to an __init__)
            error._fill(task_id, type_name, message, traceback)
            error._module = module
            return error
        except Exception:  # noqa: BLE001 - a class with a __new__ of its own: the plain TaskError below
            with _rebuilt_lock:
                _rebuilt_classes[original] = None  # not tried again
    return TaskError(task_id, type_name, message, traceback)


def _exception_class(name: str, module_name: str) -> type[Exception] | None:
    """The Exception subclass of that name in that module, if the module is imported here already."""
    module = sys.modules.get(module_name)
    found = getattr(module, name, None) if module is not None and name.isidentifier() else None
    if (
        isinstance(found, type)
        and issubclass(found, Exception)
        and not issubclass(found, TaskError | BaseExceptionGroup)  # a group's __new__ wants its exceptions
    ):
        return found
    return None


_rebuilt_classes: dict[type[Exception], type[TaskError] | None] = {}
_rebuilt_lock = threading.Lock()


def _rebuilt(cls: type[Exception] | None) -> type[TaskError] | None:
    """A class that is both cls and TaskError, made once per cls (None when cls cannot be subclassed so)."""
    if cls is None:
        return None
    with _rebuilt_lock:
        if cls not in _rebuilt_classes:
            # TaskError's __str__ comes first: "task ID failed: Type: message", as every TaskError reads.
            namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__reduce__": _rebuild_again}
            try:
                _rebuilt_classes[cls] = type(cls.__name__, (TaskError, cls), namespace)
            except TypeError:  # a class that forbids subclasses, or whose layout cannot be combined
                _rebuilt_classes[cls] = None
        return _rebuilt_classes[cls]


def _rebuild_again(self: TaskError) -> tuple[Any, ...]:
    """Pickle and copy: made again by task_error from the same record (the class is made, not importable)."""
    record = {"type": self.type_name, "message": self.message, "traceback": self.remote_traceback,
              "module": self._module}  # fmt: skip
    return task_error, (self.task_id, record)


class RemoteTraceback(PyrodistError):
    """The traceback of a task's exception on its worker, attached as the `__cause__` of its `TaskError`."""

    def __init__(self, traceback: str) -> None:
        self.traceback = traceback
        super().__init__(traceback)

    def __str__(self) -> str:
        return f'\n"""\n{self.traceback.rstrip()}\n"""'


class TaskLost(TaskError):
    """The master does not know the task any more."""


class ResultExpired(TaskLost):
    """The master no longer keeps the task's result: it expired (--result-ttl) or was forgotten."""
