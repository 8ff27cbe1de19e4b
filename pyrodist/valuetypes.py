"""The value types frames carry beyond the builtin ones: your registered classes, and NumPy arrays.

- Dataclasses and named tuples registered by name (`register_value_class`, on the client and in a module
  the workers import): written as their name and fields, rebuilt field by field, never unpickled; the
  registry is the allow-list of classes a frame may build.
- NumPy arrays (the `numpy` extra): written as dtype, shape and raw bytes in C order, rebuilt writable;
  object and structured dtypes are refused. NumPy scalars travel as the Python value they hold (`item()`).
  NumPy is imported only when an array is sent or received: without the extra, nothing imports it.

`frames.py` calls these with its writer (`out`, `data`, `value`, `refuse`) and reader (`text`, `count`,
`varint`, `blob`, `value`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any

MAX_DIMENSIONS = 64
"""Most dimensions of a NumPy array in a frame (NumPy's own limit)."""
_DTYPE_CODE = re.compile(r"[<>|=][biufcmMSUV][0-9]{1,6}(\[[A-Za-z0-9]{1,8}\])?")
"""The dtype codes `dtype.str` writes for the dtypes frames carry."""
BY_CLASS: dict[type, tuple[bytes, tuple[str, ...] | None]] = {}
"""Registered classes: the bytes that start one's frame (tag and name) and its fields (None: a namedtuple)."""
BY_NAME: dict[str, tuple[type, bool]] = {}
"""Registered classes by name, and whether each is a dataclass."""


def varint(out: bytearray, n: int) -> None:
    """Append n as an unsigned LEB128 varint."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def register_value_class(cls: type, name: str | None = None) -> type:
    """Allow a dataclass or namedtuple class in frames under a name (default module.qualname); a decorator too."""
    if not isinstance(cls, type) or not (name is None or (name and isinstance(name, str))):
        raise TypeError(f"register_value_class takes a class and a non-empty name, not {cls!r} and {name!r}")
    name = f"{cls.__module__}.{cls.__qualname__}" if name is None else name
    fields: tuple[str, ...] | None = None  # a namedtuple's are its tuple items
    if dataclasses.is_dataclass(cls):
        fields = tuple(f.name for f in dataclasses.fields(cls))
        params = inspect.signature(cls).parameters.values()  # what cls(**fields) will meet: also a custom __init__
        accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        required = {p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        unset, extra = sorted(set(fields) - accepted), sorted(required - set(fields))
        if unset or extra:
            why = f"cannot set its init=False fields {unset}" if unset else f"also requires {extra}"
            raise ValueError(
                f"{name} cannot be registered: frames rebuild it as {cls.__qualname__}(**fields), which {why}"
            )
    elif not (issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)):
        raise TypeError(f"only dataclasses and namedtuple classes can be registered, not {cls.__qualname__}")
    if BY_NAME.get(name, (cls,))[0] is not cls:
        raise ValueError(f"{name!r} is already registered for another class, {BY_NAME[name][0]!r}")
    raw, head = name.encode("utf-8", "surrogatepass"), bytearray(b"C")
    varint(head, len(raw))
    head += raw
    if BY_CLASS.get(cls, (head,))[0] != head:
        known = next(known for known, (other, _) in BY_NAME.items() if other is cls)
        raise ValueError(f"{cls.__qualname__} is already registered under another name, {known!r}")
    BY_NAME[name], BY_CLASS[cls] = (cls, fields is not None), (bytes(head), fields)
    return cls


def encode_registered(w: Any, v: Any, depth: int) -> None:
    """Write a registered class's name, then its fields (a dict for a dataclass, a tuple for a namedtuple)."""
    head, names = BY_CLASS[type(v)]
    w.out += head
    w.value({name: getattr(v, name) for name in names} if names is not None else tuple(v), depth + 1)


def decode_registered(r: Any, depth: int) -> Any:
    """Rebuild a registered class from its name and fields (ValueError for a class not registered here)."""
    name = r.text()
    if name not in BY_NAME:
        raise ValueError(f"the frame holds a {name!r}, a class not registered on this side (register_value_class)")
    cls, is_dataclass = BY_NAME[name]
    fields = r.value(depth + 1)
    if type(fields) is not (dict if is_dataclass else tuple):
        raise ValueError(f"the frame's {name!r} has a {type(fields).__name__} for its fields")
    try:
        return cls(**fields) if type(fields) is dict else cls(*fields)
    except Exception as exc:  # the class's own code runs here; whatever it raises, the frame was bad
        raise ValueError(f"the frame's {name!r} cannot be rebuilt: {exc!r}") from exc


def numpy_encoder(w: Any, value: Any) -> Any:
    """The encoder for a NumPy value (an array, or a scalar as its Python value); refuses anything else."""
    numpy = importlib.import_module("numpy")
    if isinstance(value, numpy.ndarray):
        return _encode_array
    if isinstance(value, numpy.generic):
        return lambda w, v, depth: w.value(v.item(), depth)
    w.refuse(f"numpy.{type(value).__qualname__} is not a NumPy array or scalar")


def _encode_array(w: Any, value: Any, depth: int) -> None:
    dtype = value.dtype
    if dtype.hasobject or dtype.names is not None or dtype.itemsize == 0:
        w.refuse(f"a NumPy array of dtype {dtype} (object, structured or empty dtypes are not carried)")
    numpy = importlib.import_module("numpy")
    w.out += b"A"
    code = dtype.str.encode("ascii")
    varint(w.out, len(code))
    w.out += code
    varint(w.out, value.ndim)
    for size in value.shape:
        varint(w.out, size)
    raw = numpy.ascontiguousarray(value).reshape(-1).view(numpy.uint8)  # C order; not copied if it already was
    w.data(b"", memoryview(raw))  # big data becomes a part of the frame, not copied again


def decode_array(r: Any, depth: int) -> Any:
    """A NumPy array from dtype, shape and bytes (writable, its own copy); ValueError if they do not agree."""
    try:
        numpy = importlib.import_module("numpy")
    except ImportError:
        raise ValueError("the frame holds a NumPy array, and NumPy is not installed here (pip install "
                         "pyrodist[numpy])") from None  # fmt: skip
    code = r.text("ascii")
    if not _DTYPE_CODE.fullmatch(code):  # numpy.dtype parses much more than dtype.str writes, at any cost
        raise ValueError(f"the frame's NumPy dtype {code[:40]!r} is not one frames carry")
    ndim = r.count()
    if ndim > MAX_DIMENSIONS:
        raise ValueError(f"the frame's NumPy array has {ndim} dimensions; at most {MAX_DIMENSIONS}")
    shape = [r.varint() for _ in range(ndim)]
    data = r.blob()
    try:
        dtype = numpy.dtype(code)
    except Exception as exc:  # noqa: BLE001 - whatever NumPy makes of it, the frame was bad
        raise ValueError(f"the frame's NumPy dtype {code!r} is not one frames carry: {exc}") from None
    if dtype.hasobject or dtype.names is not None or dtype.itemsize == 0 or dtype.str != code:
        raise ValueError(f"the frame's NumPy dtype {code!r} is not one frames carry")
    count = 0 if 0 in shape else 1
    for size in shape if count else ():  # step by step: a product of huge dimensions is never computed whole
        count *= size
        if count * dtype.itemsize > len(data):
            break
    if count * dtype.itemsize != len(data):
        raise ValueError(
            f"the frame's NumPy array of shape {shape[:8]} and dtype {code} does not hold {len(data)} bytes"
        )
    return numpy.frombuffer(bytearray(data), dtype).reshape(shape)
