"""The base of every strict config model (experiment schema and plugin configs): unknown keys refused,
frozen, and fields added after runs were recorded left out of the dump while they hold their default."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Fields added after experiments were already recorded: left out of the dump while they
    #: hold their default, so the run keys (hashes of the dumped config) of older files stay the same.
    _omit_when_default: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self._omit_when_default:
            if name in data and getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name)
        return data
