"""What the lake says about the entities a pipeline writes: the state a run compares against.

Read once per run from the replayed history (``ws.replay()``), through the public history
questions (:func:`metaverse_kit.history.state_as_of`, :func:`~metaverse_kit.history.aspects`).
There is no separate state store: which pipeline wrote an event is in the event itself, in its
``systemMetadata`` (``pipelineName``, ``runId``, and the properties below).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit import history
from metaverse_kit.events.builtin import mce_definition
from metaverse_kit.history.arrow_types import from_arrow, parsed

__all__ = ["FINGERPRINT_KEY", "SOURCE_KEY", "LakeState"]

#: ``systemMetadata.properties`` key: the source type that emitted the event.
SOURCE_KEY = "metaverse.source"
#: ``systemMetadata.properties`` key: the source's fingerprint of the entity when emitted.
FINGERPRINT_KEY = "metaverse.fingerprint"


def _property(events: pa.Table, key: str) -> list[str | None]:
    if "systemMetadata" not in events.column_names or not events.num_rows:
        return [None] * events.num_rows
    props = pc.struct_field(events.column("systemMetadata"), "properties")
    return pc.map_lookup(props, key, "first").to_pylist()


def _pipelines(events: pa.Table) -> list[str | None]:
    if "systemMetadata" not in events.column_names or not events.num_rows:
        return [None] * events.num_rows
    return pc.struct_field(events.column("systemMetadata"), "pipelineName").to_pylist()


class LakeState:
    """The latest value of every (entity, aspect) in the lake, and what one pipeline wrote.

    ``events`` is the table of ``ws.replay()``; ``as_of`` defaults to the later of now and the
    last event's time. ``pipeline_name`` and ``source_type`` say whose entities
    :meth:`pipeline_urns`, :meth:`fingerprint` and :meth:`intact` are about.
    """

    def __init__(
        self,
        events: pa.Table,
        *,
        pipeline_name: str,
        source_type: str,
        as_of: datetime | None = None,
    ) -> None:
        # PERF: the replay parsed this definition already (its reader); parsed once per process.
        self._avro = parsed(mce_definition())
        self._cache: dict[tuple[str, str], Any] = {}
        self._scope = (pipeline_name, source_type)
        self._rows: dict[str, dict[str, int]] = {}
        self._removed: set[str] = set()
        self._writers: list[tuple[str | None, str | None]] = []
        self._mine: set[str] = set()
        self._fingerprints: dict[str, str | None] = {}
        self._owned: dict[str, set[str]] = {}
        self._events, self._as_of = events, as_of
        self._state_values: pa.ChunkedArray | None = None
        usable = (
            events.num_rows > 0
            and "proposedSnapshot" in events.column_names
            and events.column("proposedSnapshot").null_count < events.num_rows
        )
        if not usable:
            self._state = None
            return
        if as_of is None:
            last = pc.max(events.column("enqueued_time")).as_py()
            as_of = max(datetime.now(UTC), last) if last is not None else datetime.now(UTC)
        # PERF: explode the events into aspects once; both questions below take that table.
        # Without the nested values, which a rerun that finds nothing changed never reads:
        # the first latest() makes them (_values).
        exploded = history.aspects(events, values=False)
        state = history.state_as_of(exploded, as_of, include_removed=True, values=False)
        self._as_of = as_of
        self._state = state
        pipelines = _pipelines(events)
        sources = _property(events, SOURCE_KEY)
        for i, (urn, kind, event, removed) in enumerate(
            zip(
                state.column("urn").to_pylist(),
                state.column("aspect_type").to_pylist(),
                state.column("event_index").to_pylist(),
                state.column("removed").to_pylist(),
                strict=True,
            )
        ):
            self._rows.setdefault(urn, {})[kind] = i
            self._writers.append((pipelines[event], sources[event]))
            if removed:
                self._removed.add(urn)
        mine = [
            p == pipeline_name and s == source_type for p, s in zip(pipelines, sources, strict=True)
        ]
        if not any(mine):
            return
        fingerprints = _property(events, FINGERPRINT_KEY)
        own = exploded.filter(pc.take(pa.array(mine), exploded.column("event_index")))
        last_event: dict[str, int] = {}
        for urn, kind, event in zip(
            own.column("urn").to_pylist(),
            own.column("aspect_type").to_pylist(),
            own.column("event_index").to_pylist(),
            strict=True,
        ):
            self._owned.setdefault(urn, set()).add(kind)
            last_event[urn] = event
        self._mine = set(last_event)
        self._fingerprints = {urn: fingerprints[e] for urn, e in last_event.items()}

    def latest(self, urn: str, aspect: str) -> dict[str, Any] | None:
        """The latest value of ``aspect`` (a full record name) of ``urn``, as builders return it."""
        key = (urn, aspect)
        if key in self._cache:
            return self._cache[key]
        row = self._rows.get(urn, {}).get(aspect)
        value = None
        if row is not None and self._state is not None:
            record = history.aspect_record(self._values()[row].as_py())
            value = None if record is None else from_arrow(self._avro, record, aspect)
        self._cache[key] = value
        return value

    def _values(self) -> pa.ChunkedArray:
        """The value of each row of the state, made the first time a value is asked for.

        PERF: once for all (a value per lookup, from its event, cost ~5 ms each: a run with
        1% of 2,000 tables altered took twice as long); the rows are the state's, in its order.
        """
        if self._state_values is None:
            exploded = history.aspects(self._events)
            state = history.state_as_of(exploded, self._as_of, include_removed=True)
            self._state_values = state.column("value")
        return self._state_values

    def written_here(self, urn: str, aspect: str) -> bool:
        """Whether this pipeline (and source type) wrote the latest value of that aspect."""
        row = self._rows.get(urn, {}).get(aspect)
        return row is not None and self._writers[row] == self._scope

    def removed(self, urn: str) -> bool:
        """Whether the entity's latest ``Status`` soft-deleted it."""
        return urn in self._removed

    def pipeline_urns(self) -> set[str]:
        """The entities this pipeline emitted and that are not soft-deleted now."""
        return self._mine - self._removed

    def other_pipelines(self, urn: str) -> set[str]:
        """The other pipelines of this source type that wrote one of the latest aspects of
        ``urn`` (a pipeline renamed, or named after a URL written another way)."""
        name, source = self._scope
        writers = (self._writers[row] for row in self._rows.get(urn, {}).values())
        return {p for p, s in writers if s == source and p and p != name}

    def fingerprint(self, urn: str) -> str | None:
        """The fingerprint on this pipeline's last event about ``urn`` (None if it had none)."""
        return self._fingerprints.get(urn)

    def owned_aspects(self, urn: str) -> frozenset[str]:
        """The aspects (full record names) of ``urn`` this pipeline has ever written."""
        return frozenset(self._owned.get(urn, ()))

    def owned_count(self, urn: str) -> int:
        """How many aspects of ``urn`` this pipeline has written."""
        return len(self._owned.get(urn, ()))

    def intact(self, urn: str) -> bool:
        """Whether every aspect this pipeline wrote for ``urn`` still holds its last write.

        False when someone else wrote one of them since (a hand edit, another pipeline), or
        the entity is soft-deleted: then the source's values must be compared again.
        """
        if urn in self._removed or urn not in self._mine:
            return False
        return all(self.written_here(urn, kind) for kind in self._owned.get(urn, ()))
