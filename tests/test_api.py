"""The public API: exactly the names in `pyrodist.__all__`, each documented."""

from __future__ import annotations

import pyrodist


def test_exported_names() -> None:
    assert sorted(pyrodist.__all__) == sorted(
        [
            "AuthenticationFailed", "Client", "ClusterExecutor",
            "ConfigError", "ConnectionFailed", "FunctionNotAllowed", "FunctionRefError", "Future",
            "LocalCluster", "MasterNotFound", "MasterRejected", "NameServerNotFound", "PyrodistError",
            "RemoteTraceback", "ResultExpired", "Settings",
            "Spinner", "progress",
            "TaskError", "TaskLost", "TaskOptions", "TaskState", "ValueEncodingError", "__version__", "as_completed",
            "register_value_class",
        ]
    )  # fmt: skip
    for name in pyrodist.__all__:
        assert hasattr(pyrodist, name), name


def test_public_names_have_docstrings() -> None:
    for name in pyrodist.__all__:
        if name != "__version__":
            assert getattr(pyrodist, name).__doc__, name


def test_every_error_derives_from_the_root() -> None:
    for name in pyrodist.__all__:
        obj = getattr(pyrodist, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, pyrodist.PyrodistError), name
