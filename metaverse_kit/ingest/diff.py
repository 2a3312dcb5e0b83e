"""How an aspect's new value differs from the lake's: field paths, as the history names them."""

from __future__ import annotations

from functools import cache
from typing import Any

from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.builtin import mce_definition

__all__ = ["changed_paths"]


@cache
def _avro() -> AvroSchema:
    return AvroSchema(mce_definition())


@cache
def _mapping(full_name: str) -> Any:
    from metaverse_kit.history.arrow_types import arrow_mapping

    return arrow_mapping(_avro(), full_name)


def _arrow_value(full_name: str, value: dict[str, Any] | None) -> Any:
    if value is None:
        return None
    mapping = _mapping(full_name)
    # PERF: no pa.array round trip: changed_fields reads a missing union branch as null and a
    # map given as a dict, which is all that differs from what Arrow would give back.
    return mapping.convert(value) if mapping.convert else value


def changed_paths(
    full_name: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[str, ...]:
    """The field paths that differ between two values of an aspect (builders' form)."""
    from metaverse_kit.history import changed_fields

    return tuple(
        changed_fields(
            _arrow_value(full_name, before),
            _arrow_value(full_name, after),
            _mapping(full_name).type,
        )
    )
