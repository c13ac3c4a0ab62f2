"""Config values validated by pydantic against the schema's types, each problem as one line.

``validated`` turns a mapping into its block (a dataclass of ``capfuse.config.schema``) or
raises ``ConfigError``; ``problems`` lists what is wrong without raising, so the check of a whole
config (``capfuse.config.check``) can name every bad value at once, each with the file that set
it. pydantic's own messages are translated: the line names the dotted key, the value as given
and the values the field allows, read back from its type (``allowed``), e.g.
``train.lr = 'abc': must be a number > 0``.

One ``TypeAdapter`` per type, built on first use (tens of milliseconds each; validating a block
afterwards takes microseconds).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Annotated, Any, Literal, NamedTuple

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python < 3.12

from capfuse.config.errors import ConfigError
from capfuse.config.types import BadValue, Bool, Float, Int, Says, Str


class Problem(NamedTuple):
    path: tuple  # the bad value's keys (and list indices) within the mapping that was validated
    value: Any
    allowed: str  # "must be ..."


@cache
def adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def problems(tp: Any, value: Any) -> tuple[Any, list[Problem]]:
    """``value`` validated as ``tp``: (the result, []) or (None, one ``Problem`` per bad value)."""
    try:
        return adapter(tp).validate_python(_without_empty_blocks(tp, value)), []
    except ValidationError as exc:
        return None, translate(tp, value, exc)


def _without_empty_blocks(tp: Any, value: Any) -> Any:
    """An empty block (``data:`` with nothing under it, read as null) means its defaults."""
    if not (dataclasses.is_dataclass(tp) and isinstance(value, Mapping)):
        return value
    out = dict(value)
    for f in dataclasses.fields(tp):
        if "block" in f.metadata and f.name in out:
            if out[f.name] is None:
                del out[f.name]
            else:
                out[f.name] = _without_empty_blocks(f.metadata["block"], out[f.name])
    return out


def validated(tp: Any, value: Any, *, source: str = "<config>", prefix: tuple = ()) -> Any:
    """``value`` as ``tp``, or a ``ConfigError`` with a line per bad value."""
    out, found = problems(tp, value)
    if found:
        raise ConfigError("\n".join(line(source, prefix + p.path, p.value, p.allowed) for p in found))
    return out


def exact(cls: type, cfg: Mapping | None, *, prefix: tuple = (), source: str = "<config>") -> Any:
    """``cls`` from ``cfg`` when every key is one of its fields and every value is valid, else a
    ``ConfigError`` naming each unknown key and each bad value (``prefix``: the block's keys)."""
    cfg = dict(cfg or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    lines = [
        f"{source}: unknown key '{dotted(prefix + (key,))}' (valid: {', '.join(valid)})"
        for key in cfg
        if key not in valid
    ]
    out, found = problems(cls, cfg)
    lines += [line(source, prefix + p.path, p.value, p.allowed) for p in found]
    if lines:
        raise ConfigError("\n".join(lines))
    return out


def line(where: str, path: tuple, value: Any, allowed: str) -> str:
    return f"{where}: {dotted(path)} = {value!r}: {allowed}"


def dotted(path: Iterable) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- pydantic's errors as lines ------------------------------------------------------------------


def translate(tp: Any, value: Any, exc: ValidationError) -> list[Problem]:
    found: dict[tuple, Problem] = {}
    for err in exc.errors():
        path, field_type = _walk(tp, err["loc"])
        bad = (err.get("ctx") or {}).get("error")
        if isinstance(bad, BadValue):  # a rule of the block as a whole (__post_init__)
            path = path + (bad.key,)
            found.setdefault(path, Problem(path, bad.value, bad.allowed))
        elif bad is not None:  # another check that raised: its own words
            found.setdefault(path, Problem(path, _lookup(value, path, err["input"]), str(bad)))
        else:
            found.setdefault(path, Problem(path, _lookup(value, path, err["input"]), "must be " + allowed(field_type)))
    return list(found.values())


def _walk(tp: Any, loc: tuple) -> tuple[tuple, Any]:
    """The part of pydantic's ``loc`` that names keys and list indices, and the type found there.

    A union's members appear in ``loc`` as tags; the line then names the union's field and all
    of its alternatives, not the member pydantic tried last."""
    path: tuple = ()
    here = tp
    for part in loc:
        inner = _optional_member(_unwrap(here)[0])
        if dataclasses.is_dataclass(inner) or _is_typeddict(inner):
            hints = type_hints(inner)
            if part not in hints:
                break
            here = hints[part]
        elif typing.get_origin(inner) is tuple and isinstance(part, int):
            here = typing.get_args(inner)[0]
        else:
            break
        path += (part,)
    return path, here


def _lookup(value: Any, path: tuple, fallback: Any) -> Any:
    """The value at ``path`` as it was given (pydantic's ``input`` is a union member's view of it)."""
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return fallback
    return value


# -- what a type allows, in words ----------------------------------------------------------------


def allowed(tp: Any) -> str:
    """``Count`` -> "an integer >= 1"; ``Bool | Literal["auto"]`` -> "true, false or 'auto'"."""
    parts = _alternatives(tp)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _alternatives(tp: Any) -> list[str]:
    base, meta = _unwrap(tp)
    for m in meta:
        if isinstance(m, Says):
            return [m.text]
    origin = typing.get_origin(base)
    if base is None or base is types.NoneType:
        return ["null"]
    if origin is Literal:
        return [_literal(v) for v in typing.get_args(base)]
    if origin in (typing.Union, types.UnionType):
        members = sorted(typing.get_args(base), key=lambda m: m is not types.NoneType)  # null first
        return [alt for m in members for alt in _alternatives(m)]
    if base is bool:
        return ["true", "false"]
    non_empty = any(isinstance(m, MinLen) and m.min_length > 0 for m in meta)
    if origin is tuple:
        return [f"a {'non-empty ' if non_empty else ''}list, each {allowed(typing.get_args(base)[0])}"]
    if base is int:
        return ["an integer" + _bounds(meta)]
    if base is float:
        return ["a number" + _bounds(meta)]
    if base is str:
        return ["a non-empty string" if non_empty else "a string"]
    return ["a mapping"]  # a block, or a component's parameters


def _literal(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _bounds(meta: Iterable) -> str:
    low = high = None
    for m in meta:
        if isinstance(m, (Ge, Gt)):
            low = ("[", m.ge) if isinstance(m, Ge) else ("(", m.gt)
        elif isinstance(m, (Le, Lt)):
            high = ("]", m.le) if isinstance(m, Le) else (")", m.lt)
    if low and high:
        return f" in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {_number(low[1])}"
    if high:
        return f" {'<=' if high[0] == ']' else '<'} {_number(high[1])}"
    return ""


# -- types ---------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> tuple[Any, list]:
    """``Annotated[X, *meta]`` -> (X, meta), nested ``Annotated`` flattened."""
    meta: list = []
    while typing.get_origin(tp) is Annotated:
        meta.extend(tp.__metadata__)
        tp = tp.__origin__
    return tp, meta


def _optional_member(tp: Any) -> Any:
    """``X | None`` -> X (pydantic does not tag that union in ``loc``); any other type as it is."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not types.NoneType]
        if len(members) == 1:
            return _unwrap(members[0])[0]
    return tp


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


@cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


# -- a component's parameters, typed by its signature -------------------------------------------

_STRICT = {bool: Bool, int: Int, float: Float, str: Str}


def _strict(tp: Any) -> Any:
    """A signature's ``float`` as the schema's strict ``Float`` (inside ``float | None`` too)."""
    if tp in _STRICT:
        return _STRICT[tp]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = tuple(_strict(m) for m in typing.get_args(tp))
        return typing.Union[members]  # noqa: UP007 (built from a tuple)
    return tp


@cache
def parameter_types(factory: Callable) -> type | None:
    """The keyword parameters of ``factory`` (a class: its ``__init__``) as a TypedDict, typed
    strictly by their annotations; None when the annotations cannot be read."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except (NameError, TypeError):
        return None
    params = inspect.signature(factory).parameters
    typed = {n: _strict(hints[n]) for n, p in params.items() if n in hints and p.default is not p.empty}
    return TypedDict(f"{getattr(factory, '__name__', 'component')}Parameters", typed, total=False)  # type: ignore[operator]
