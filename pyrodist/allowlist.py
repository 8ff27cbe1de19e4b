"""Which functions a worker runs: the public functions of the modules it was given (`-I MODULE`).

A reference names a module and a function (`package.module:name`); it resolves only to a function that an
allowed module defines or re-exports, never to a module only because a task named it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from . import protocol
from .errors import ConfigError, FunctionNotAllowed, FunctionRefError


class AllowList:
    """The modules whose public functions a worker may run."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules: dict[str, types.ModuleType] = {}
        for name in modules:
            try:
                self.modules[name] = importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see, with its cause
                raise ConfigError(f"cannot import module {name!r} given with -I: {type(exc).__name__}: {exc}") from None
        self._cache: dict[str, Callable[..., Any]] = {}

    def describe(self) -> str:
        """The allowed modules, for messages."""
        return ", ".join(sorted(self.modules)) or "none"

    def resolve(self, ref: str) -> Callable[..., Any]:
        """The function ref names, or FunctionNotAllowed saying why not."""
        func = self._cache.get(ref)
        if func is None:
            func = self._cache[ref] = self._resolve(ref)
        return func

    def _resolve(self, ref: str) -> Callable[..., Any]:
        try:
            module_name, name = protocol.split_ref(ref)
        except FunctionRefError as exc:
            raise FunctionNotAllowed(str(exc)) from None
        hint = f"this worker allows modules {self.describe()} (start it with -I MODULE to allow more)"
        if name.startswith("_"):
            raise FunctionNotAllowed(f"function {ref!r} is not allowed: private names are never run; {hint}")
        for allowed_name, module in self._candidates(module_name):
            func = getattr(module, name, None)
            if func is None or not callable(func) or isinstance(func, types.ModuleType):
                continue
            exported = name in getattr(module, "__all__", ())
            defined_here = getattr(func, "__module__", None) in (allowed_name, "_" + allowed_name)
            if (exported or defined_here) and (allowed_name == module_name or _same(module_name, name, func)):
                return func  # type: ignore[no-any-return]
        if module_name in self.modules:
            raise FunctionNotAllowed(
                f"unknown task function {ref!r}: module {module_name} has no public function {name!r}"
            )
        raise FunctionNotAllowed(f"function {ref!r} is not allowed on this worker: {hint}")

    def _candidates(self, module_name: str) -> list[tuple[str, types.ModuleType]]:
        """The allowed module itself, else allowed modules that may re-export from module_name."""
        if module_name in self.modules:
            return [(module_name, self.modules[module_name])]
        if module_name not in sys.modules:
            return []  # never import a module only because a task named it
        return list(self.modules.items())


def _same(module_name: str, name: str, func: object) -> bool:
    """Whether module_name (already imported) defines name as this very object (a re-export)."""
    return getattr(sys.modules.get(module_name), name, None) is func
