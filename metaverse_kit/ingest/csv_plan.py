"""Plan bulk edits from rows in DataHub csv-enricher's layout: validate, read-modify-write, diff.

A row names an entity (``resource``, a URN) and, for a dataset, maybe one of its columns
(``subresource``, a field path), and what to set: ``glossary_terms``, ``tags``, ``owners`` (with
one ``ownership_type`` for them), ``description``, ``domain`` (refused: DataHub's MCE has no
Domains aspect). Lists are written
``[a|b]`` (brackets optional), items as names or URNs. An empty cell changes nothing.

Each row is applied to the latest value of each aspect it touches, as :func:`plan_rows` is
told it (``latest(urn, aspect_full_name)``, the lake's value in the builders' form) or as an
earlier row of the same input left it: tags, owners and terms are added to those already there
(``replace=True`` sets them to exactly the row's), a description replaces the old one. A row
that changes nothing plans no aspect. These are pure functions of the rows and the lookup, so
the ``csv`` source, a notebook or an app's bulk-edit upload (CSV or Excel rows) share them.

Values planned for earlier rows are kept in a :class:`PlannedValues` store, which keeps the
most recently used in memory and spills the others to a temporary SQLite file, so memory stays
flat however many rows come.
"""

from __future__ import annotations

import functools
import pickle
import sqlite3
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from metaverse_kit.errors import MetaverseError, ValidationError
from metaverse_kit.events import aspects as A
from metaverse_kit.events.urns import make_user_urn, parse_urn, snapshot_for_urn
from metaverse_kit.ingest.diff import changed_paths
from metaverse_kit.ingest.report import AspectChange

__all__ = ["COLUMNS", "PlannedValues", "RowPlan", "plan_row", "plan_rows", "split_list"]

#: The columns of DataHub's csv-enricher, in its order.
COLUMNS = (
    "resource",
    "subresource",
    "glossary_terms",
    "tags",
    "owners",
    "ownership_type",
    "description",
    "domain",
)

_P = "com.linkedin.pegasus2avro."
_TAGS = _P + "common.GlobalTags"
_TERMS = _P + "common.GlossaryTerms"
_OWNERSHIP = _P + "common.Ownership"
_EDITABLE_DATASET = _P + "dataset.EditableDatasetProperties"
_EDITABLE_SCHEMA = _P + "schema.EditableSchemaMetadata"

Latest = Callable[[str, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class RowPlan:
    """What one row does: the entity, the aspects to write (only those that change), the diffs.

    ``problems`` lists everything wrong with the row (each naming its column); a row with
    problems plans nothing. ``line`` is the row's number as the caller counts it.
    """

    line: int
    urn: str | None
    aspects: tuple[A.Aspect, ...] = ()
    changes: tuple[AspectChange, ...] = ()
    problems: tuple[str, ...] = ()


def split_list(cell: str | None, delimiter: str = "|") -> list[str]:
    """``"[a|b]"``, ``"a|b"`` or ``"a"`` as ``["a", "b"]``; empty cells give ``[]``.

    Raises :class:`ValueError` for a cell with only one of the brackets (a list cut by an
    unquoted comma).
    """
    text = (cell or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    elif text.startswith("[") or text.endswith("]"):
        raise ValueError(f"{cell!r} opens or closes a [list] but not both")
    return [item.strip() for item in text.split(delimiter) if item.strip()]


class PlannedValues:
    """The values planned so far, by (urn, aspect): the most recent in memory, older ones on disk.

    Past ``max_in_memory`` entries, the least recently used go to a temporary SQLite file.

    Close it (or use it as a context manager) to remove the file.
    """

    def __init__(self, *, max_in_memory: int = 256) -> None:
        self.max_in_memory = max_in_memory
        self._memory: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def get(self, urn: str, aspect: str) -> tuple[bool, Any]:
        """(found, value) for that entity's aspect."""
        key = (urn, aspect)
        if key in self._memory:
            self._memory.move_to_end(key)
            return True, self._memory[key]
        if self._db is not None:
            row = self._db.execute(
                "SELECT value FROM planned WHERE urn = ? AND aspect = ?", key
            ).fetchone()
            if row is not None:
                return True, pickle.loads(row[0])
        return False, None

    def set(self, urn: str, aspect: str, value: Any) -> None:
        """Remember the value planned for that entity's aspect."""
        key = (urn, aspect)
        self._memory[key] = value
        self._memory.move_to_end(key)
        if len(self._memory) <= self.max_in_memory:
            return
        # NOTE: rows about one entity usually come together: the least recently used goes to disk.
        key, value = self._memory.popitem(last=False)
        if self._db is None:
            self._folder = tempfile.TemporaryDirectory(prefix="metaverse-plan-")
            self._db = sqlite3.connect(f"{self._folder.name}/planned.db")
            self._db.execute(
                "CREATE TABLE planned "
                "(urn TEXT, aspect TEXT, value BLOB, PRIMARY KEY (urn, aspect))"
            )
        # NOTE: pickle, not JSON: values hold (branch, record) tuples that must come back as is.
        self._db.execute(
            "INSERT OR REPLACE INTO planned VALUES (?, ?, ?)", (*key, pickle.dumps(value))
        )

    def close(self) -> None:
        """Drop the temporary file, if one was made."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> PlannedValues:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _urns(problems: list[str], column: str, items: list[str], build: Callable[[str], Any]) -> list:
    out = []
    for item in items:
        try:
            out.append(build(item))
        except (MetaverseError, ValueError) as exc:
            problems.append(f"{column}: {' '.join(str(exc).split())}")
    return out


def _add(held: list[dict], new: list[dict], key: str, *, replace: bool) -> list[dict]:
    """``held`` plus the items of ``new`` it lacks (by ``key``); with ``replace``, ``new``.

    An item in both keeps the held version (its attribution, its context).
    """
    if replace:
        by_key = {i[key]: i for i in held}
        return [by_key.get(i[key], i) for i in new]
    names = {i[key] for i in held}
    return held + [i for i in new if i[key] not in names]


def _tags(value: dict | None, tags: list[dict], *, replace: bool) -> dict:
    held = list(value["tags"]) if value else []
    return {**(value or {}), "tags": _add(held, tags, "tag", replace=replace)}


def _terms(value: dict | None, terms: A.Aspect, *, replace: bool) -> dict:
    held = list(value["terms"]) if value else []
    items = _add(held, terms[1]["terms"], "urn", replace=replace)
    if value is not None and items == held:
        return value
    return {**terms[1], "terms": items}


def _owner_key(owner: dict) -> str:
    return f"{owner['owner']}|{owner['type']}|{owner.get('typeUrn') or ''}"


def _owners(value: dict | None, ownership: A.Aspect, *, replace: bool) -> dict:
    held = [{**o, "_key": _owner_key(o)} for o in (value["owners"] if value else [])]
    new = [{**o, "_key": _owner_key(o)} for o in ownership[1]["owners"]]
    items = [
        {k: v for k, v in o.items() if k != "_key"}
        for o in _add(held, new, "_key", replace=replace)
    ]
    if value is not None and items == value["owners"]:
        return value
    return {**(value or {}), **ownership[1], "owners": items}


def _field_info(
    value: dict | None,
    path: str,
    *,
    description: str | None,
    tags: list[dict],
    terms: A.Aspect | None,
    stamp: dict,
    replace: bool,
) -> dict:
    # PERF: a shallow copy; only the one field's info is copied and changed.
    infos = list(value["editableSchemaFieldInfo"]) if value else []
    at = next((n for n, i in enumerate(infos) if i["fieldPath"] == path), None)
    if at is None:
        at = len(infos)
        infos.append(
            {"fieldPath": path, "description": None, "globalTags": None, "glossaryTerms": None}
        )
    old = infos[at]
    info = infos[at] = dict(old)
    if description is not None:
        info["description"] = description
    if tags:
        held = info["globalTags"][1] if info["globalTags"] else None
        info["globalTags"] = (_TAGS, _tags(held, tags, replace=replace))
    if terms is not None:
        held = info["glossaryTerms"][1] if info["glossaryTerms"] else None
        info["glossaryTerms"] = (_TERMS, _terms(held, terms, replace=replace))
    if value is not None and at < len(value["editableSchemaFieldInfo"]) and info == old:
        return value
    return {
        "created": value["created"] if value else dict(stamp),
        "lastModified": dict(stamp),
        "deleted": None,
        "editableSchemaFieldInfo": infos,
    }


@functools.lru_cache(maxsize=4096)
def _entity(urn: str) -> tuple[str, frozenset[str]]:
    """(entity type, aspects its snapshot holds) of a URN; raises InvalidUrnError."""
    # PERF: rows about one entity come in runs; parsing its URN once per run is enough.
    snapshot_for_urn(urn)
    return parse_urn(urn).entity_type, frozenset(A.allowed_aspects(urn))


def plan_row(
    row: Mapping[str, Any],
    latest: Latest,
    *,
    line: int = 0,
    replace: bool = False,
    actor: str = A.DEFAULT_ACTOR,
    now_ms: int | None = None,
    array_delimiter: str = "|",
    diffs: bool = True,
) -> RowPlan:
    """Plan one row against ``latest(urn, aspect_full_name)`` (see the module docstring).

    ``actor`` is a user name or a corpuser URN. ``diffs=False`` leaves :attr:`RowPlan.changes`
    empty (the diffs cost more than the plan). Never raises for a bad row: its problems (and
    an ``actor`` that is no user) come back in :attr:`RowPlan.problems`.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    problems: list[str] = []

    def cell(name: str) -> str:
        value = row.get(name)
        return "" if value is None else str(value).strip()

    urn = cell("resource")
    if not urn:
        return RowPlan(line, None, problems=("resource: empty; it names the entity (a URN)",))
    try:
        entity, allowed = _entity(urn)
    except MetaverseError as exc:
        return RowPlan(line, urn, problems=(f"resource: {' '.join(str(exc).split())}",))
    sub = cell("subresource")
    try:
        # NOTE: the builders below make the URN themselves, but the column-level stamp is
        # written here, and a plain user name there does not fit AuditStamp.actor.
        actor = make_user_urn(actor)
    except MetaverseError as exc:
        return RowPlan(line, urn, problems=(f"actor: {' '.join(str(exc).split())}",))

    def listed(column: str) -> list[str]:
        try:
            return split_list(cell(column), array_delimiter)
        except ValueError as exc:
            problems.append(f"{column}: {exc}")
            return []

    tag_items = _urns(problems, "tags", listed("tags"), A.global_tags)
    tags = [t for aspect in tag_items for t in aspect[1]["tags"]]
    term_names = listed("glossary_terms")
    terms = None
    if term_names:
        try:
            terms = A.glossary_terms(term_names, actor=actor, time_ms=now)
        except ValidationError as exc:
            problems.extend(f"glossary_terms: {p.message}" for p in exc.problems)
    owner_names = listed("owners")
    ownership = None
    if owner_names:
        kind = cell("ownership_type") or A.DEFAULT_OWNERSHIP_TYPE
        try:
            ownership = A.ownership([(o, kind) for o in owner_names], actor=actor, time_ms=now)
        except ValidationError as exc:
            problems.extend(
                f"{'ownership_type' if p.path.endswith('.type') else 'owners'}: {p.message}"
                for p in exc.problems
            )
    elif cell("ownership_type"):
        problems.append("ownership_type: set, but the row has no owners")
    description = cell("description") or None
    if cell("domain"):
        # NOTE: refused, not dropped: the row says what it could not apply.
        problems.append(
            "domain: DataHub's MCE has no Domains aspect (DataHub sets domains with proposals, "
            "which this platform does not carry); leave the column empty"
        )
    if sub and entity != "dataset":
        problems.append(f"subresource: only datasets have columns, not a {entity}")
    if sub and ownership is not None:
        problems.append("owners: a column has no owners; leave owners empty on subresource rows")
    if not sub and entity != "dataset" and description:
        problems.append(f"description: only for datasets here, not a {entity}")
    wanted = {
        _TAGS: bool(tags) and not sub,
        _TERMS: terms is not None and not sub,
        _OWNERSHIP: ownership is not None,
    }
    for name, used in wanted.items():
        if used and name not in allowed:
            problems.append(f"{A.aspect_name(name)}: a {entity} cannot have it")
    if problems:
        return RowPlan(line, urn, problems=tuple(problems))

    stamp = {"time": now, "actor": actor, "impersonator": None, "message": None}
    planned: list[tuple[str, dict | None, dict]] = []
    if sub:
        if description or tags or terms is not None:
            before = latest(urn, _EDITABLE_SCHEMA)
            after = _field_info(
                before,
                sub,
                description=description,
                tags=tags,
                terms=terms,
                stamp=stamp,
                replace=replace,
            )
            planned.append((_EDITABLE_SCHEMA, before, after))
    else:
        if tags:
            before = latest(urn, _TAGS)
            planned.append((_TAGS, before, _tags(before, tags, replace=replace)))
        if terms is not None:
            before = latest(urn, _TERMS)
            planned.append((_TERMS, before, _terms(before, terms, replace=replace)))
        if ownership is not None:
            before = latest(urn, _OWNERSHIP)
            planned.append((_OWNERSHIP, before, _owners(before, ownership, replace=replace)))
        if description is not None:
            before = latest(urn, _EDITABLE_DATASET)
            if before is None or before.get("description") != description:
                after = {
                    **A.editable_dataset_properties(description, actor=actor, time_ms=now)[1],
                    **({"created": before["created"], "name": before["name"]} if before else {}),
                }
                planned.append((_EDITABLE_DATASET, before, after))
    aspects, changes = [], []
    for name, before, after in planned:
        if after is before or after == before:
            continue
        aspects.append((name, after))
        if not diffs:
            continue
        changes.append(
            AspectChange(
                A.aspect_name(name),
                "added" if before is None else "changed",
                changed_paths(name, before, after),
                before,
                after,
            )
        )
    return RowPlan(line, urn, tuple(aspects), tuple(changes))


def plan_rows(
    rows: Iterable[Mapping[str, Any] | tuple[int, Mapping[str, Any]]],
    latest: Latest,
    *,
    replace: bool = False,
    actor: str = A.DEFAULT_ACTOR,
    now_ms: int | None = None,
    array_delimiter: str = "|",
    first_line: int = 2,
    max_in_memory: int = 256,
    diffs: bool = True,
) -> Iterator[RowPlan]:
    """Plan each row in turn, each one seeing what the rows before it planned.

    ``rows`` are mappings with the :data:`COLUMNS` keys (a ``csv.DictReader``, rows read from
    an Excel sheet, dicts), or ``(line, mapping)`` pairs when the caller knows each row's line.
    ``latest`` is looked up only for values no earlier row planned. Mappings are numbered from
    ``first_line`` (2: the line after a CSV header), which is right only for a file without
    blank lines or multi-line cells: a CSV reader should pass the line each record starts on.
    Lazy: rows are read as the plans are consumed, and memory stays flat (see
    :class:`PlannedValues`).
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    with PlannedValues(max_in_memory=max_in_memory) as planned:

        def current(urn: str, aspect: str) -> dict[str, Any] | None:
            found, value = planned.get(urn, aspect)
            return value if found else latest(urn, aspect)

        for i, item in enumerate(rows):
            line, row = item if isinstance(item, tuple) else (first_line + i, item)
            plan = plan_row(
                row,
                current,
                line=line,
                replace=replace,
                actor=actor,
                now_ms=now,
                array_delimiter=array_delimiter,
                diffs=diffs,
            )
            for name, value in plan.aspects:
                assert plan.urn is not None
                planned.set(plan.urn, name, value)
            yield plan
