"""What the wire records (`wire.py`) are made of: field names, plain dict forms, field types checked on arrival."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar

R = TypeVar("R")


def field_names(cls: Any) -> tuple[str, ...]:
    """The fields of a record class, in order."""
    return _field_names(cls)


@functools.cache
def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def as_dict(record: Any) -> dict[str, Any]:
    """A record's fields by name (the values shared, not copied)."""
    return {name: getattr(record, name) for name in field_names(record.__class__)}


def known(cls: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The entries that are fields of cls (a newer peer may send more)."""
    return {key: value for key, value in fields.items() if key in field_names(cls)}


class Plain:
    """A record whose wire form is its fields by name."""

    __slots__ = ()

    def to_wire(self) -> dict[str, Any]:
        """The wire form."""
        return as_dict(self)


@functools.cache
def _field_types(cls: Any) -> dict[str, tuple[type, ...]]:
    """Each field's runtime types, read from its annotation (`list[str]` is a list, a TypedDict a dict)."""
    kinds: dict[str, tuple[type, ...]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        union = typing.get_origin(hint) in (types.UnionType, typing.Union)
        options = [typing.get_origin(option) or option for option in (typing.get_args(hint) if union else (hint,))]
        options = [dict if typing.is_typeddict(option) else option for option in options]
        kinds[name] = tuple(options) + ((int,) if float in options else ())
    return kinds


def checked(record: R, what: str) -> R:
    """The record, after checking that each field holds a value of its declared type (a bool is no number)."""
    kind: Any = type(record)
    for name, kinds in _field_types(kind).items():
        value = getattr(record, name)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(kind.__name__ for kind in kinds)
            raise TypeError(f"{what}: {name!r} must be {wanted}, not {type(value).__name__}")
    return record
