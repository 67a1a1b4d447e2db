"""Every option of a plugin's pydantic Config in words: type, default, allowed values and description.

``harness cells show`` / ``harness tasks show`` print these, and experiment-file errors quote
:func:`allowed_values` so a value out of range says what the range is.
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


@dataclass(frozen=True)
class OptionDoc:
    """One option of a plugin's Config, ready to print or dump as JSON."""

    name: str
    type: str
    default: Any
    required: bool
    allowed: str
    description: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_options(config_class: type[BaseModel]) -> list[OptionDoc]:
    """Every field of ``config_class`` in declaration order (inherited fields first)."""
    return [_describe_field(name, field) for name, field in config_class.model_fields.items()]


def allowed_values(field: FieldInfo) -> str:
    """What a value must be, in words: ``1 to 1000000``, ``one of: tanh, relu``, ``> 0 and < 1``; '' if anything."""
    choices = _choices(field.annotation)
    if choices:
        return "one of: " + ", ".join("null" if c is None else str(c) for c in choices)
    lower, upper = _bounds(field)
    if lower and upper and lower[0] == ">=" and upper[0] == "<=":
        return f"{lower[1]:,} to {upper[1]:,}" if _is_int(lower[1], upper[1]) else f"{lower[1]} to {upper[1]}"
    parts = [f"{op} {value:,}" if isinstance(value, int) else f"{op} {value}" for op, value in (lower, upper) if op]
    pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
    if pattern:
        parts.append(f"matching {pattern}")
    return " and ".join(parts)


def type_name(annotation: Any) -> str:
    """``int``, ``int | null``, ``str``, ``dict[...]``: the type as a YAML author reads it."""
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def one_line(text: str | None) -> str:
    """The first paragraph of a docstring, joined into one line."""
    if not text:
        return ""
    paragraph = text.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _describe_field(name: str, field: FieldInfo) -> OptionDoc:
    required = field.is_required()
    default = None if required or field.default is PydanticUndefined else field.default
    if field.default_factory is not None:
        default = field.default_factory()  # type: ignore[call-arg]
    if isinstance(default, enum.Enum):
        default = default.value
    return OptionDoc(name=name, type=type_name(field.annotation), default=default, required=required,
                     allowed=allowed_values(field), description=" ".join((field.description or "").split()))


def _choices(annotation: Any) -> list[Any]:
    """The values of a Literal (also inside ``Literal[...] | None``); [] for anything else."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(annotation)
        literals = [a for a in arguments if typing.get_origin(a) is typing.Literal]
        if literals and all(a is type(None) or a in literals for a in arguments):
            values = [v for literal in literals for v in typing.get_args(literal)]
            return values + ([None] if type(None) in arguments else [])
    return []


def _bounds(field: FieldInfo) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """(lower, upper) as (operator, value) pairs; ("", None) where there is no bound."""
    lower: tuple[str, Any] = ("", None)
    upper: tuple[str, Any] = ("", None)
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge):
            lower = (">=", constraint.ge)
        elif isinstance(constraint, annotated_types.Gt):
            lower = (">", constraint.gt)
        elif isinstance(constraint, annotated_types.Le):
            upper = ("<=", constraint.le)
        elif isinstance(constraint, annotated_types.Lt):
            upper = ("<", constraint.lt)
    return lower, upper


def _is_int(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
