"""Typed recipe sections: dataclass fields that carry their own limits.

`setting(...)` declares a field's default, range and choices in one place, like
Ray Train's config objects; a section's rules that compare its fields live in its
`__post_init__` and raise FieldProblem, so any way of building one checks them.
`build_section` turns a YAML mapping into the dataclass and reports the first
problem with its dotted key path.
"""

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Mapping
from typing import Any

from bigbatch.trainer.errors import RecipeError

REQUIRED = dataclasses.MISSING


def setting(default: Any = REQUIRED, *, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, help: str = "", below: float | None = None) -> Any:
    """A recipe field: default (or REQUIRED), inclusive `min`/`max`, exclusive `below`, allowed `choices`."""
    meta = {"min": min, "max": max, "below": below, "choices": choices, "help": help}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class FieldProblem(RecipeError):
    """One invalid value; `key` is the dotted path (relative to the section that raised it until build_section
    prefixes it), the message says what was expected. The loader adds the file or --set that set the key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def suggest(name: str, options: list[str]) -> str:
    """' (did you mean 'x'?)' when `name` is close to one of `options`, else ''."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# YAML 1.1 (PyYAML) reads 1e-4 as a string: it wants 1.0e-4. Accept the common spelling for numbers.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


# nan and inf spelt as YAML reads them as strings (`--set key=nan`); `.nan` and `.inf` arrive as floats.
_NON_FINITE = re.compile(r"^[-+]?(nan|inf|infinity)$", re.IGNORECASE)


def _finite(key: str, value: str | int | float) -> float:
    """`value` as a float; nan, inf and numbers too large for a float are no setting of a recipe."""
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        digits = len(str(abs(value)))
        raise FieldProblem(key, f"expected a finite number, got an integer of {digits} digits") from None
    if not math.isfinite(number):
        raise FieldProblem(key, f"expected a finite number, got {value!r}")
    return number


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    return str(tp)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise FieldProblem(key, f"expected {_type_name(tp)}, got {_describe(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", item_tp, item) for i, item in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise FieldProblem(key, f"expected {_type_name(dict)}, got {_describe(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise FieldProblem(key, f"expected {_type_name(bool)}, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, str) and (_EXPONENT_FLOAT.match(value) or _NON_FINITE.match(value)):
            return _finite(key, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldProblem(key, f"expected {_type_name(float)}, got {_describe(value)}")
        return _finite(key, value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldProblem(key, f"expected {_type_name(int)}, got {_describe(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise FieldProblem(key, f"expected {_type_name(str)}, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported recipe field type {tp!r} at {key}")


def _check_limits(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        hint = suggest(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise FieldProblem(key, f"expected one of {listed}, got {value!r}{hint}")
    lo, hi, below = meta.get("min"), meta.get("max"), meta.get("below")
    if lo is not None and value < lo:
        raise FieldProblem(key, f"expected a value >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise FieldProblem(key, f"expected a value <= {hi}, got {value!r}")
    if below is not None and value >= below:
        raise FieldProblem(key, f"expected a value < {below}, got {value!r}")


def is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def build_section(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, recursing into nested sections."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            key = f"{prefix}{name}"
            raise FieldProblem(key, f"unknown key{suggest(str(name), list(fields))}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if is_section(tp):
            sub = data.get(name, {})
            if not isinstance(sub, Mapping):
                raise FieldProblem(key, f"expected a mapping (section), got {_describe(sub)}")
            values[name] = build_section(tp, sub, f"{key}.")
            continue
        if name not in data:
            if f.default is REQUIRED and f.default_factory is REQUIRED:
                raise FieldProblem(key, f"missing required key (expected {_type_name(tp)})")
            continue
        value = _coerce(key, tp, data[name])
        _check_limits(key, value, f.metadata)
        values[name] = value
    try:
        return cls(**values)
    except FieldProblem as p:  # a rule of the section itself (its __post_init__), keyed within the section
        raise FieldProblem(f"{prefix}{p.key}", p.message) from None


def field_type(cls: type, dotted: str) -> Any:
    """The annotation at `dotted` inside `cls` (free-form dict keys resolve to Any), or raise FieldProblem."""
    tp: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        key = ".".join(parts[: i + 1])
        if tp is dict or typing.get_origin(tp) is dict:
            return Any
        if not is_section(tp):
            raise FieldProblem(key, f"{'.'.join(parts[:i])} is not a section")
        hints = typing.get_type_hints(tp)
        if part not in hints:
            raise FieldProblem(key, f"unknown key{suggest(part, list(hints))}")
        tp = hints[part]
    return tp


def walk_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """Every leaf field of `cls` as (dotted key, field, annotation), for documentation."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if is_section(tp):
            out.extend(walk_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f, tp))
    return out

