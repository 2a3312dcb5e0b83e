"""What an ingestion run did: counts, capped lists of warnings and failures, per-entity changes.

A run over a big source can warn about thousands of things; :class:`CappedList` keeps the first
few (``cap``) and counts all of them, so a report's memory does not grow with the source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["AspectChange", "CappedList", "EntityChange", "IngestReport", "Problem"]

#: How many warnings and failures a report keeps (all are counted).
DEFAULT_CAP = 20


@dataclass(frozen=True)
class Problem:
    """A warning or a failure: where (an entity, a file, a CSV row) and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class CappedList:
    """The first ``cap`` items added, and how many were added in all (``total``)."""

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        self.cap = cap
        self.total = 0
        self._items: list[Problem] = []

    def add(self, where: str, message: str) -> None:
        """Count one more; keep it if fewer than ``cap`` are kept."""
        self.total += 1
        if len(self._items) < self.cap:
            self._items.append(Problem(where, message))

    def __iter__(self) -> Iterator[Problem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return self.total > 0

    @property
    def dropped(self) -> int:
        """How many were counted but not kept."""
        return self.total - len(self._items)

    def __repr__(self) -> str:
        return f"<CappedList {self.total} ({len(self._items)} kept)>"


@dataclass(frozen=True)
class AspectChange:
    """One aspect a run emits (or would emit): its name, whether it is new, and what changed."""

    aspect: str  #: DataHub's aspect name, ``schemaMetadata``
    kind: str  #: ``added`` (no value in the lake yet) or ``changed``
    changed_fields: tuple[str, ...]  #: paths as :func:`metaverse_kit.history.changed_fields`
    before: dict[str, Any] | None = field(default=None, repr=False)
    after: dict[str, Any] | None = field(default=None, repr=False)


#: The kinds of :class:`EntityChange`.
ENTITY_KINDS = ("added", "changed", "unchanged", "removed", "failed")


@dataclass(frozen=True)
class EntityChange:
    """What a run does to one entity: ``kind`` is one of :data:`ENTITY_KINDS`."""

    urn: str
    kind: str
    aspects: tuple[AspectChange, ...] = ()
    where: str = ""

    def lines(self) -> list[str]:
        """The change as text: a line for the entity, one per aspect with its changed fields."""
        sign = {"added": "+", "changed": "~", "removed": "-", "failed": "!"}.get(self.kind, "=")
        out = [f"{sign} {self.urn}" + (f"  ({self.where})" if self.where else "")]
        for a in self.aspects:
            fields = ", ".join(a.changed_fields[:8])
            more = len(a.changed_fields) - 8
            if more > 0:
                fields += f", ... {more} more"
            out.append(f"    {a.kind:<7} {a.aspect}" + (f": {fields}" if fields else ""))
        return out


@dataclass
class IngestReport:
    """What one ingestion run did (or, with ``dry_run``, would do).

    ``events`` holds the MCEs emitted (or that would be), unless the run was asked not to keep
    them; ``changes`` the first :attr:`changes_cap` entity changes (all are counted).
    ``warnings`` and ``failures`` are :class:`CappedList` s. :attr:`exit_status` is what
    ``metaverse ingest`` returns: 0, or 1 when anything failed.
    """

    source: str
    pipeline_name: str
    run_id: str
    dry_run: bool
    started: datetime
    finished: datetime | None = None
    entities_seen: int = 0
    entities_added: int = 0
    entities_changed: int = 0
    entities_unchanged: int = 0
    entities_removed: int = 0
    #: Unchanged entities the run emitted an event for all the same, so that the lake records
    #: the pipeline's view of them: their new fingerprint, or that the pipeline owns them.
    entities_restated: int = 0
    aspects_emitted: int = 0
    aspects_unchanged: int = 0
    aspects_kept_for_stewards: int = 0
    events_emitted: int = 0
    warnings: CappedList = field(default_factory=CappedList)
    failures: CappedList = field(default_factory=CappedList)
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    changes: list[EntityChange] = field(default_factory=list, repr=False)
    changes_cap: int = 1000

    def record(self, change: EntityChange) -> None:
        """Count an entity's change, and keep it while fewer than ``changes_cap`` are kept."""
        kind = change.kind
        if kind == "added":
            self.entities_added += 1
        elif kind == "changed":
            self.entities_changed += 1
        elif kind == "unchanged":
            self.entities_unchanged += 1
        elif kind == "removed":
            self.entities_removed += 1
        if kind != "unchanged" and len(self.changes) < self.changes_cap:
            self.changes.append(change)

    @property
    def exit_status(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.failures.total else 0

    @property
    def seconds(self) -> float | None:
        """How long the run took (None while it runs)."""
        return None if self.finished is None else (self.finished - self.started).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """The counts and problems as plain data (no events), for JSON."""
        return {
            "source": self.source,
            "pipeline_name": self.pipeline_name,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "entities": {
                "seen": self.entities_seen,
                "added": self.entities_added,
                "changed": self.entities_changed,
                "unchanged": self.entities_unchanged,
                "removed": self.entities_removed,
                "restated": self.entities_restated,
            },
            "aspects": {
                "emitted": self.aspects_emitted,
                "unchanged": self.aspects_unchanged,
                "kept_for_stewards": self.aspects_kept_for_stewards,
            },
            "events_emitted": self.events_emitted,
            "warnings": {"total": self.warnings.total, "kept": [str(p) for p in self.warnings]},
            "failures": {"total": self.failures.total, "kept": [str(p) for p in self.failures]},
        }

    def summary(self) -> str:
        """The report as a few lines of text (what ``metaverse ingest`` prints at the end)."""
        verb = "would emit" if self.dry_run else "emitted"
        took = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
        lines = [
            f"Pipeline {self.pipeline_name!r} (source {self.source}), run {self.run_id}"
            + (" [dry run]" if self.dry_run else "")
            + took,
            f"  entities: {self.entities_seen} seen, {self.entities_added} added, "
            f"{self.entities_changed} changed, {self.entities_unchanged} unchanged, "
            f"{self.entities_removed} removed",
            f"  aspects: {self.aspects_emitted} {verb}, {self.aspects_unchanged} unchanged, "
            f"{self.aspects_kept_for_stewards} kept for stewards",
            f"  events: {self.events_emitted} {verb}" + self._restated_note(),
        ]
        for title, items in (("warnings", self.warnings), ("failures", self.failures)):
            lines.append(f"  {title}: {items.total}")
            lines.extend(f"    - {p}" for p in items)
            if items.dropped:
                lines.append(f"    ... and {items.dropped} more")
        return "\n".join(lines)

    def _restated_note(self) -> str:
        if not self.entities_restated:
            return ""
        return (
            f" ({self.entities_restated} of them for unchanged entities, so that the lake "
            "records this pipeline's fingerprint or ownership of them)"
        )

    def __str__(self) -> str:
        return self.summary()

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2)
