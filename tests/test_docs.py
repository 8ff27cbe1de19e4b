"""The documentation stays true to the code.

- `docs/cli.md` is what `docs/gen_cli.py` makes from the current CLI;
- `docs/api.md` mentions every public name and documents every remote method of the master, with the
  method's real parameters.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

import pyrodist
from pyrodist.api import MasterAPI
from pyrodist.cli import cli
from pyrodist.service import REMOTE_METHODS, MasterService

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_generator() -> ModuleType:
    """docs/gen_cli.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def api_text() -> str:
    return (DOCS / "api.md").read_text(encoding="utf-8")


def test_cli_reference_is_up_to_date() -> None:
    expected = load_generator().render()
    actual = (DOCS / "cli.md").read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "docs/cli.md",
                "generated from pyrodist.cli",
            )
        )
        pytest.fail(f"docs/cli.md is out of date: run `python docs/gen_cli.py` from the repository root\n{diff}")


def test_cli_reference_covers_every_command() -> None:
    text = load_generator().render()
    assert "## `pyrodist`\n" in text
    for name, command in cli.commands.items():
        if not command.hidden:
            assert f"## `pyrodist {name}`\n" in text, f"no section for `pyrodist {name}`"
    assert text == load_generator().render(), "the generated reference must be deterministic"


def test_generation_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = load_generator()
    expected = generator.render()
    monkeypatch.setenv("COLUMNS", "40")
    assert generator.render() == expected


def test_api_reference_mentions_every_public_name() -> None:
    text = api_text()
    missing = [name for name in pyrodist.__all__ if name != "__version__" and not re.search(rf"\b{name}\b", text)]
    assert not missing, f"docs/api.md does not mention {', '.join(missing)}"


def documented_signatures(text: str) -> dict[str, list[str]]:
    """The parameter names of each `#### `name(params) -> ...`` heading in docs/api.md."""
    signatures = {}
    for match in re.finditer(r"^#+ `(\w+)\(([^)]*)\)", text, re.MULTILINE):
        params = [p.split("=")[0].strip() for p in match.group(2).split(",") if p.strip()]
        signatures[match.group(1)] = params
    return signatures


def test_api_reference_documents_every_remote_method_with_its_parameters() -> None:
    documented = documented_signatures(api_text())
    missing = [name for name in REMOTE_METHODS if name not in documented]
    assert not missing, f"docs/api.md has no `#### `name(...)`` section for the remote methods {', '.join(missing)}"
    for name in REMOTE_METHODS:
        real = [p for p in inspect.signature(getattr(MasterService, name)).parameters if p != "self"]
        shown = ", ".join(documented[name])
        assert documented[name] == real, f"docs/api.md documents {name}({shown}); the code has {name}{real}"


def test_the_remote_methods_are_the_typed_api() -> None:
    typed = {name for name in vars(MasterAPI) if not name.startswith("_")}
    assert typed == set(REMOTE_METHODS), "MasterAPI and the methods the master exposes differ"
