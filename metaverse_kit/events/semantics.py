"""What an event's strings must be beyond their Avro type: text, and URNs of the right entity.

Two rules, checked on every event before it is sent:

* **Text is text.** No string (nor map key) holds a NUL character or a lone surrogate: a lone
  surrogate cannot be written as UTF-8 at all, and a NUL breaks DataHub's stores and most tools
  downstream of the lake.
* **URNs are URNs of their entity type.** DataHub's schemas say which fields hold URNs, and of
  what: ``"Urn": "DatasetUrn"`` (a typed URN class), ``"Urn": "Urn"`` (any URN), and
  ``"Relationship": {"entityTypes": [...]}`` (``"/*"`` for each item of an array). So a
  DatasetSnapshot's ``urn`` must be a dataset URN, an owner a ``corpuser`` or ``corpGroup``, a tag
  association a tag, a group membership a ``corpGroup``. The rules come from the schema's own
  annotations, so they hold for DataHub's full MCE schema as for the built-in one, and a schema
  without annotations gets only the text rule.

:func:`urn_rule` reads a field's rule; :func:`string_problem` and :meth:`UrnRule.problem` say
what is wrong with one value; :func:`problems` walks a whole (explicit) record and reports every
problem with its field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from metaverse_kit.errors import FieldProblem
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.urns import SNAPSHOT_NAMES, InvalidUrnError, parse_dataset_urn, parse_urn

__all__ = ["UrnRule", "problems", "string_problem", "urn_rule"]

#: DataHub's typed URN classes (``"Urn": "<Class>"``) and the entity type each one names.
URN_CLASSES = {
    "CorpuserUrn": "corpuser",
    "CorpGroupUrn": "corpGroup",
    "DatasetUrn": "dataset",
    "TagUrn": "tag",
    "GlossaryTermUrn": "glossaryTerm",
    "GlossaryNodeUrn": "glossaryNode",
    "DataPlatformUrn": "dataPlatform",
    "ChartUrn": "chart",
    "DashboardUrn": "dashboard",
    "DataFlowUrn": "dataFlow",
    "DataJobUrn": "dataJob",
    "DataProcessUrn": "dataProcess",
    "MLModelUrn": "mlModel",
    "MLModelGroupUrn": "mlModelGroup",
    "MLFeatureUrn": "mlFeature",
    "MLFeatureTableUrn": "mlFeatureTable",
    "MLPrimaryKeyUrn": "mlPrimaryKey",
    "NotebookUrn": "notebook",
    "DataHubPolicyUrn": "dataHubPolicy",
}


@dataclass(frozen=True)
class UrnRule:
    """A field holds URNs: of these entity types (``None``: any entity type)."""

    entity_types: frozenset[str] | None = None

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not a URN this field takes, or None when it is one."""
        return _urn_problem(self, value)


@lru_cache(maxsize=1 << 16)
def _urn_problem(rule: UrnRule, value: str) -> str | None:
    # PERF: cached; a batch repeats the same actors, owners and tags many times.
    try:
        entity_type = parse_urn(value).entity_type
        if rule.entity_types is not None and entity_type not in rule.entity_types:
            wanted = " or ".join(f"'urn:li:{t}:...'" for t in sorted(rule.entity_types))
            return f"expected a {wanted} URN, got a {entity_type!r} URN: {value!r}"
        if entity_type == "dataset":
            parse_dataset_urn(value)
    except InvalidUrnError as exc:
        return str(exc)
    return None


def urn_rule(field: Mapping[str, Any], record: str | None = None) -> UrnRule | None:
    """The URN rule a field of ``record`` (its full name) has, or None for a plain field.

    The rule is what the field's DataHub annotations say; the ``urn`` of a snapshot record
    (``<Entity>Snapshot``) holds URNs of that entity even where its annotation is generic.
    """
    rule = _annotated_rule(field)
    generic = rule is None or rule.entity_types is None
    if generic and record and record.endswith("Snapshot") and field.get("name") == "urn":
        return UrnRule(frozenset({_snapshot_entity(record)}))
    return rule


def _snapshot_entity(record: str) -> str:
    for entity_type, snapshot in SNAPSHOT_NAMES.items():
        if snapshot == record:
            return entity_type
    short = record.rpartition(".")[2][: -len("Snapshot")]
    return short[0].lower() + short[1:]


def _annotated_rule(field: Mapping[str, Any]) -> UrnRule | None:
    typed = field.get("Urn")
    relationship = field.get("Relationship")
    types: set[str] = set()
    if isinstance(relationship, Mapping):
        inner = relationship.get("/*", relationship)
        if isinstance(inner, Mapping) and isinstance(inner.get("entityTypes"), list):
            types |= {str(t) for t in inner["entityTypes"]}
    if isinstance(typed, str) and typed != "Urn":
        entity_type = URN_CLASSES.get(typed)
        if entity_type is None and typed.endswith("Urn"):
            # NOTE: a class we do not know: its name is the entity type in DataHub's spelling.
            entity_type = typed[0].lower() + typed[1:-3]
        if entity_type:
            types = {entity_type}
    if typed is None and not types:
        return None
    return UrnRule(frozenset(types) if types else None)


def string_problem(value: str) -> str | None:
    """Why ``value`` is not plain text (a NUL, a lone surrogate), or None when it is."""
    if "\x00" in value:
        return f"contains a NUL character (\\x00) at position {value.index(chr(0))}"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"contains a lone surrogate ({value[exc.start]!r}) at position {exc.start}: "
                "not valid Unicode text"
            )
    return None


def problems(record: Any, schema: AvroSchema) -> list[FieldProblem]:
    """Every text and URN problem in ``record`` (explicit: union records as tuples), with paths.

    Values that do not fit their Avro type are skipped: the Avro check reports those.
    """
    found: list[FieldProblem] = []
    _Walker(schema, found).value(record, schema.root, "", None)
    return found


#: The union branches a plain value can be in; a plain dict in a record union is ambiguous
#: (the Avro check says so) and is not guessed at here.
_BRANCH_KINDS: dict[type, tuple[str, ...]] = {
    str: ("string",),
    list: ("array",),
    dict: ("map",),
}


class _Walker:
    def __init__(self, avro: AvroSchema, found: list[FieldProblem]) -> None:
        self.avro = avro
        self.found = found

    def value(self, v: Any, t: Any, path: str, rule: UrnRule | None) -> None:
        avro = self.avro
        t = avro.resolve(t)
        if isinstance(t, list):
            self.union(v, t, path, rule)
            return
        kind = avro.kind(t)
        if kind == "string" and isinstance(v, str):
            why = string_problem(v) or (rule.problem(v) if rule is not None else None)
            if why:
                self.found.append(FieldProblem(path, why))
        elif kind == "record":
            if isinstance(v, tuple) and len(v) == 2 and v[0] == t["name"]:
                v = v[1]
            if not isinstance(v, Mapping):
                return
            for f in t["fields"]:
                if f["name"] in v:
                    fpath = f"{path}.{f['name']}" if path else f["name"]
                    self.value(v[f["name"]], f["type"], fpath, urn_rule(f, t["name"]))
        elif kind == "array" and isinstance(v, list):
            for i, item in enumerate(v):
                self.value(item, t["items"], f"{path}[{i}]", rule)
        elif kind == "map" and isinstance(v, Mapping):
            for key, item in v.items():
                if isinstance(key, str) and (why := string_problem(key)):
                    self.found.append(FieldProblem(path, f"the key {key!r} {why}"))
                self.value(item, t["values"], f"{path}[{key!r}]", None)

    def union(self, v: Any, branches: list, path: str, rule: UrnRule | None) -> None:
        avro = self.avro
        if v is None:
            return
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
            for b in branches:
                if avro.branch_name(avro.resolve(b)) == v[0]:
                    self.value(v[1], b, path, rule)
                    return
            return
        wanted = _BRANCH_KINDS.get(type(v), ())
        for b in branches:
            if avro.kind(b) in wanted:
                self.value(v, b, path, rule)
                return
