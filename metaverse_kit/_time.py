"""Times given by users: ISO 8601 text or datetimes, naive ones taken as UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from metaverse_kit.errors import MetaverseError

__all__ = ["utc_time"]


def utc_time(
    value: Any, what: str, *, error: type[MetaverseError], dates: bool = False
) -> datetime:
    """``value`` as an aware UTC datetime; ``what`` names it in the ``error`` raised otherwise.

    Takes a datetime (naive means UTC, as everywhere in this toolkit) or ISO 8601 text
    (``Z`` allowed); with ``dates=True`` also a date, meaning its midnight UTC. A missing
    time (pandas' ``NaT``) raises ``error`` too.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise error(
                f"{what} must be an ISO 8601 time such as 2026-01-31T12:00:00Z, not {value!r}"
            ) from None
    elif dates and isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        kinds = "a datetime, a date or ISO 8601 text" if dates else "a datetime or ISO 8601 text"
        raise error(f"{what} must be {kinds}, not {type(value).__name__} {value!r}")
    if value != value:
        # NOTE: pandas' NaT is a datetime that equals nothing, itself included; no time at all.
        raise error(f"{what} must be a time, not a missing one ({value!r}); give a real time")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
