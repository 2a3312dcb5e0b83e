"""History: replaying the Capture lake into Arrow, and questions asked of it.

Replaying: :mod:`metaverse_kit.history.replay` (``replay_lake`` and the verbs around it) over the
pure decode layer :mod:`metaverse_kit.history.decode` (Capture bytes -> Arrow, with schema
resolution and damaged files).

The questions (each returns a :class:`pyarrow.Table`, see :mod:`metaverse_kit.history.questions`):
:func:`aspects`, :func:`state_as_of`, :func:`audit_trail`, :func:`changes`;
:func:`latest_aspect` for the last value of one aspect of one entity; and
:func:`schema_changes`, a dataset's column-level history (:mod:`.schema_history`).
:func:`export_parquet` keeps the history as a Parquet dataset that each run appends to
(see :mod:`metaverse_kit.history.export`); the questions take that folder too.
"""

from metaverse_kit.history.export import export_parquet
from metaverse_kit.history.questions import (
    CHANGE_KINDS,
    ITEM_KEYS,
    WINDOW_CHANGE_KINDS,
    HistoryInputError,
    MissingColumnError,
    aspect_record,
    aspects,
    audit_trail,
    changed_fields,
    changes,
    latest_aspect,
    state_as_of,
)
from metaverse_kit.history.schema_history import SCHEMA_CHANGE_KINDS, schema_changes

__all__ = [
    "CHANGE_KINDS",
    "ITEM_KEYS",
    "SCHEMA_CHANGE_KINDS",
    "WINDOW_CHANGE_KINDS",
    "HistoryInputError",
    "MissingColumnError",
    "aspect_record",
    "aspects",
    "audit_trail",
    "changed_fields",
    "changes",
    "export_parquet",
    "latest_aspect",
    "schema_changes",
    "state_as_of",
]
