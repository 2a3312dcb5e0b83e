"""Run a recipe: read a source, compare what it reports with the lake, emit only what changed.

For each work unit the runner

1. skips it when the source's fingerprint equals the one this pipeline recorded and nothing
   it wrote was overwritten since (no detailed read, nothing emitted);
2. otherwise drops the aspects stewards own (Editable*) and merges GlobalTags, Ownership and
   GlossaryTerms with the lake's value: items the source adds carry a ``MetadataAttribution``
   naming the pipeline, items anyone else added are kept;
3. compares each aspect with the lake's latest value and emits one MCE per entity with the
   aspects that differ (``systemMetadata`` says which pipeline, run and fingerprint); an
   entity with none that differ gets an event all the same when the lake lacks its new
   fingerprint (its ``Status``) or does not know it as this pipeline's (its aspects), so the
   next run can skip it, and remove it when it goes (``report.entities_restated``).

Entities this pipeline emitted before and the source no longer reports get ``Status(removed=
True)``, unless the run had failures (a source that could not read a folder must not delete
everything in it) or they are more than the recipe's ``fail_safe_threshold`` percent of the
pipeline's entities (a source read as empty). Each event is checked alone, then emitted in
chunks through :meth:`Workspace.emit`; runs into one workspace folder take turns.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaverse_kit._files import locked
from metaverse_kit.errors import EmitError, MetaverseError, ValidationError
from metaverse_kit.events import aspects as A
from metaverse_kit.events.urns import encode_urn_part
from metaverse_kit.ingest.config import RecipeError, parse_config
from metaverse_kit.ingest.diff import changed_paths
from metaverse_kit.ingest.lake_state import FINGERPRINT_KEY, SOURCE_KEY, LakeState
from metaverse_kit.ingest.report import AspectChange, EntityChange, IngestReport
from metaverse_kit.ingest.source import (
    Source,
    SourceContext,
    SourceUnreachableError,
    WorkUnit,
    get_source,
)

if TYPE_CHECKING:
    from metaverse_kit.workspace import Workspace

__all__ = ["Recipe", "ingest", "load_recipe", "pipeline_source_urn"]

_P = "com.linkedin.pegasus2avro."
_ATTRIBUTION = _P + "common.MetadataAttribution"
#: Aspects stewards and sources share, merged item by item: (list field, item's name field).
_SHARED = {
    _P + "common.GlobalTags": ("tags", "tag"),
    _P + "common.Ownership": ("owners", "owner"),
    _P + "common.GlossaryTerms": ("terms", "urn"),
}
#: Aspects with an empty value, written when the source stops reporting one it wrote: a view
#: that no longer reads a table kept its lineage to it. Shared ones go through the merge, which
#: takes the pipeline's items out and keeps everyone else's.
_EMPTY: dict[str, Callable[[], A.Aspect]] = {
    _P + "dataset.UpstreamLineage": lambda: A.upstream_lineage([]),
    _P + "common.GlobalTags": lambda: A.global_tags([]),
    _P + "common.Ownership": lambda: A.ownership([]),
    _P + "common.GlossaryTerms": lambda: A.glossary_terms([]),
}
_RECIPE_KEYS = ("source", "pipeline_name", "remove_unseen", "fail_safe_threshold")


def _steward_only(full_name: str) -> bool:
    """Editable* aspects: what stewards write by hand, never a source."""
    return "Editable" in full_name.rpartition(".")[2]


# -- recipes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: which source with which config, and the pipeline it runs as."""

    source_type: str
    config: Mapping[str, Any]
    pipeline_name: str | None = None
    remove_unseen: bool = True
    fail_safe_threshold: float = 75.0


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(
    value: Any, path: str, problems: list[str], inside: frozenset[int] = frozenset()
) -> Any:
    """``${VAR}`` in recipe text, from the environment (as DataHub's recipes do).

    ``inside`` holds the mappings and lists around ``value``: a YAML alias can put a list
    inside itself (``include: &a [*a]``), which would recurse until Python gave up.
    """
    if isinstance(value, (Mapping, list)):
        if id(value) in inside:
            problems.append(f"{path or 'recipe'}: a YAML alias puts this value inside itself")
            return None
        inside = inside | {id(value)}
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                problems.append(f"{path}: the environment variable {m.group(1)} is not set")
                return m.group(0)
            return os.environ[m.group(1)]

        return _ENV.sub(sub, value)
    if isinstance(value, Mapping):
        return {
            k: _expand(v, f"{path}.{k}" if path else str(k), problems, inside)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", problems, inside) for i, v in enumerate(value)]
    return value


def _unique_keys_loader(yaml: Any) -> Any:
    """PyYAML's safe loader, refusing a mapping that gives a key twice.

    NOTE: YAML forbids it, but PyYAML keeps the last value without a word: ``type: sql`` then
    ``type: csv`` ran the csv source.
    """

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {key!r} is given twice (lines {seen[key]} and {line}); keep one",
                    )
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return Loader


def _recipe_text(data: bytes) -> str:
    """A recipe file's text: UTF-8 (with or without a byte order mark), or UTF-16 with one
    (what Windows PowerShell 5's ``>`` writes). Raises :class:`UnicodeDecodeError`."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def load_recipe(recipe: Recipe | Mapping[str, Any] | str | Path) -> Recipe:
    """A :class:`Recipe` from a mapping, or from a YAML (or JSON) file's path.

    The shape is DataHub's: ``source: {type, config}`` and ``pipeline_name``; ``${VAR}`` is
    replaced from the environment; ``remove_unseen: false`` keeps entities the source no
    longer sees; ``fail_safe_threshold`` (percent, DataHub's name and default, 75) is the
    largest share of a pipeline's entities one run may remove. Raises :class:`RecipeError`
    listing every problem with its key.
    """
    if isinstance(recipe, Recipe):
        return recipe
    where = "recipe"
    if isinstance(recipe, (str, Path)):
        path = Path(recipe)
        where = str(path)
        try:
            text = _recipe_text(path.read_bytes())
        except OSError as exc:
            raise RecipeError([f"{path}: cannot read the recipe: {exc.strerror}"]) from exc
        except UnicodeDecodeError as exc:
            raise RecipeError(
                [
                    f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                    "save the recipe as UTF-8"
                ]
            ) from exc
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml is in the ingest extra
            raise RecipeError(
                ['reading YAML recipes needs pyyaml: pip install "metaverse-kit[ingest]"']
            ) from exc
        try:
            recipe = yaml.load(text, Loader=_unique_keys_loader(yaml))
        except yaml.YAMLError as exc:
            raise RecipeError([f"{path}: not valid YAML: {exc}"]) from exc
    if not isinstance(recipe, Mapping):
        raise RecipeError([f"{where}: expected a mapping with source and pipeline_name"])
    problems: list[str] = []
    data = _expand(dict(recipe), "", problems)
    for key in data:
        if key not in _RECIPE_KEYS:
            hint = (
                " (events go to the workspace: use --workspace or mk.ingest(ws, ...))"
                if key == "sink"
                else ""
            )
            problems.append(f"{key}: unknown key{hint}; a recipe has {', '.join(_RECIPE_KEYS)}")
    source = data.get("source")
    source_type: Any = None
    config: Any = {}
    if not isinstance(source, Mapping):
        problems.append("source: required, a mapping with type and config")
    else:
        for key in source:
            if key not in ("type", "config"):
                problems.append(f"source.{key}: unknown key; a source has type and config")
        source_type = source.get("type")
        if not isinstance(source_type, str) or not source_type:
            problems.append(f"source.type: required, the source's name; got {source_type!r}")
        config = source.get("config") or {}
        if not isinstance(config, Mapping):
            problems.append(f"source.config: expected a mapping, got {config!r}")
    name = data.get("pipeline_name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append(f"pipeline_name: expected a non-empty name, got {name!r}")
    remove = data.get("remove_unseen", True)
    if not isinstance(remove, bool):
        problems.append(f"remove_unseen: expected true or false, got {remove!r}")
    threshold = data.get("fail_safe_threshold", 75.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        threshold = None
    if threshold is None or not 0 <= threshold <= 100:
        problems.append(
            "fail_safe_threshold: expected a percentage from 0 to 100 (the largest share of the "
            f"pipeline's entities one run may remove), got {data.get('fail_safe_threshold')!r}"
        )
    if problems:
        raise RecipeError(problems, what="recipe" if where == "recipe" else f"recipe {where}")
    assert isinstance(source_type, str) and threshold is not None
    return Recipe(source_type, dict(config), name, remove, float(threshold))


# -- comparing and merging ----------------------------------------------------------------------


def pipeline_source_urn(pipeline_name: str) -> str:
    """The URN that attributes items a pipeline adds (DataHub's ingestion source entity)."""
    return f"urn:li:dataHubIngestionSource:{encode_urn_part(pipeline_name)}"


def _attributed_to(item: Mapping[str, Any], source_urn: str) -> bool:
    attribution = item.get("attribution")
    if isinstance(attribution, tuple):
        attribution = attribution[1]
    return isinstance(attribution, Mapping) and attribution.get("source") == source_urn


def merge_shared(
    full_name: str,
    lake: dict[str, Any] | None,
    reported: dict[str, Any],
    *,
    source_urn: str,
    now_ms: int,
) -> dict[str, Any]:
    """A shared aspect (GlobalTags, Ownership, GlossaryTerms) as a source may write it.

    Items in ``lake`` that the source did not add (a steward's tag) are kept first, in their
    order; then the source's items, each attributed to ``source_urn`` (an item it reported
    before keeps its attribution time). An item a steward already has is not repeated. When
    the items come out as the lake has them, the lake's value is returned unchanged.
    """
    list_key, name_key = _SHARED[full_name]
    held = list(lake[list_key]) if lake else []
    kept = [i for i in held if not _attributed_to(i, source_urn)]
    before = {i[name_key]: i for i in held if _attributed_to(i, source_urn)}
    names = {i[name_key] for i in kept}
    added = []
    for item in reported[list_key]:
        if item[name_key] in names:
            continue
        previous = before.get(item[name_key])
        attribution = (
            previous["attribution"]
            if previous is not None
            else (
                _ATTRIBUTION,
                {
                    "time": now_ms,
                    "actor": A.DEFAULT_ACTOR,
                    "source": source_urn,
                    "sourceDetail": {},
                },
            )
        )
        added.append({**item, "attribution": attribution})
        names.add(item[name_key])
    items = kept + added
    if lake is not None and items == held:
        return lake
    return {**reported, list_key: items}


# -- the run ------------------------------------------------------------------------------------


def _run_id(source_type: str, now: datetime) -> str:
    return f"{source_type}-{now:%Y_%m_%d-%H_%M_%S}-{secrets.token_hex(3)}"


class _Emitter:
    """Collects MCEs and sends them in chunks (or only counts them in a dry run)."""

    def __init__(
        self, ws: Workspace, report: IngestReport, *, dry_run: bool, keep: bool, chunk: int
    ) -> None:
        self.ws, self.report, self.dry_run, self.keep, self.chunk = ws, report, dry_run, keep, chunk
        self.pending: list[dict[str, Any]] = []

    def check(self, event: dict[str, Any]) -> None:
        """Raise :class:`ValidationError` when ``ws.emit`` would refuse ``event``.

        NOTE: each event is checked alone before it joins a chunk: ``ws.emit`` refuses a whole
        chunk for one bad event (or one larger than Event Hubs takes), which dropped up to
        ``chunk_size`` good ones and named only its place in the chunk; and a dry run, which
        sends nothing, must refuse what a real run would. It costs a second encoding of each
        event.
        """
        self.ws.check(event)

    def add(self, event: dict[str, Any]) -> None:
        self.pending.append(event)
        if len(self.pending) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        events, self.pending = self.pending, []
        if not self.dry_run:
            self.ws.emit(events)
        self.report.events_emitted += len(events)
        if self.keep:
            self.report.events.extend(events)


def ingest(
    ws: Workspace,
    recipe: Recipe | Mapping[str, Any] | str | Path,
    *,
    dry_run: bool = False,
    progress: bool | None = None,
    keep_events: bool = True,
    on_change: Callable[[EntityChange], None] | None = None,
    clock: Callable[[], datetime] | None = None,
    chunk_size: int = 500,
) -> IngestReport:
    """Run ``recipe`` against ``ws``: read the source, emit what changed, remove what is gone.

    ``recipe`` is a :class:`Recipe`, a mapping (``{"source": {"type": "sql", "config":
    {"url": ...}}, "pipeline_name": "shop"}``) or the path of a YAML recipe. With
    ``dry_run=True`` nothing is emitted; the report still holds the events and the
    per-entity changes a real run would emit. ``keep_events=False`` keeps memory flat on big
    runs (the events are emitted, not kept). ``on_change`` is called with each
    :class:`EntityChange` as the run goes (the CLI prints them, the widget shows progress);
    ``progress`` shows a tqdm bar (default: when stderr is a terminal).

    Raises :class:`RecipeError` for a bad recipe or config (every problem, with its key),
    :class:`SourceUnreachableError` when the source cannot be read at all, and
    :class:`MissingDependencyError` when its packages are missing. Problems with single
    entities do not raise: they are counted in ``report.failures``.
    """
    plan = load_recipe(recipe)
    source_cls = get_source(plan.source_type)
    config = parse_config(source_cls.config_class, plan.config)
    now = (clock or (lambda: datetime.now(UTC)))()
    now_ms = int(now.timestamp() * 1000)
    report = IngestReport(
        source=plan.source_type,
        pipeline_name=plan.pipeline_name or "",
        run_id=_run_id(plan.source_type, now),
        dry_run=dry_run,
        started=now,
    )
    context = SourceContext(
        workspace=ws, report=report, pipeline_name="", latest=lambda u, a: None, now_ms=now_ms
    )
    source = source_cls(config, context)
    with source, _one_run_at_a_time(ws, dry_run=dry_run):
        pipeline = plan.pipeline_name or f"{plan.source_type}:{source.identity()}"
        report.pipeline_name = context.pipeline_name = pipeline
        source.open()
        lake = LakeState(
            ws.replay(progress=False), pipeline_name=pipeline, source_type=plan.source_type
        )
        context.latest = lake.latest
        run = _Run(
            ws,
            source,
            lake,
            report,
            now_ms=now_ms,
            on_change=on_change,
            emitter=_Emitter(ws, report, dry_run=dry_run, keep=keep_events, chunk=chunk_size),
        )
        run.run(progress=sys.stderr.isatty() if progress is None else progress)
        if plan.remove_unseen and not source.edits:
            run.remove_unseen(fail_safe_threshold=plan.fail_safe_threshold)
        run.finish()
    report.finished = datetime.now(UTC)
    return report


@contextlib.contextmanager
def _one_run_at_a_time(ws: Workspace, *, dry_run: bool) -> Iterator[None]:
    """Hold the workspace's ingestion lock (``<workspace>/ingest.lock``) for a run's whole
    read-compare-emit; a second run waits for it.

    NOTE: a run reads the lake once, then emits what differs from it: two runs at once each
    merged their tags with a lake that lacked the other's, and the later one's GlobalTags
    dropped the earlier one's (both said "1 emitted"); two runs of one recipe emitted every
    entity twice. A dry run writes nothing and takes no lock. Workspaces without a folder
    (Azure) have no lock here: runs against one from two machines are the user's to keep
    apart. Edits that do not go through ``ingest`` (the composer, ``ws.emit``) are not
    excluded either.
    """
    if dry_run or ws.path is None:
        yield
        return
    with locked(ws.path / "ingest.lock"):
        yield


class _Run:
    """One run's state: what was seen, and the work units turned into events."""

    def __init__(
        self,
        ws: Workspace,
        source: Source,
        lake: LakeState,
        report: IngestReport,
        *,
        now_ms: int,
        on_change: Callable[[EntityChange], None] | None,
        emitter: _Emitter,
    ) -> None:
        self.source, self.lake, self.report = source, lake, report
        self.now_ms, self.on_change, self.emitter = now_ms, on_change, emitter
        self.seen: set[str] = set()
        self.emitted: set[str] = set()
        self.source_urn = pipeline_source_urn(report.pipeline_name)
        self.stopped = False
        #: Other pipelines of this source type whose entities this run saw unchanged: counts.
        self.elsewhere: dict[str, int] = {}

    def _record(self, change: EntityChange) -> None:
        if not self.emitter.keep and change.aspects:
            # NOTE: without kept events, kept changes keep their paths only: memory stays flat.
            light = tuple(AspectChange(a.aspect, a.kind, a.changed_fields) for a in change.aspects)
            change = EntityChange(change.urn, change.kind, light, change.where)
        self.report.record(change)
        if self.on_change is not None:
            self.on_change(change)

    def run(self, *, progress: bool) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(
            desc=f"ingest {self.report.source}",
            unit=" entities",
            disable=not progress,
            file=sys.stderr,
        )
        try:
            units = self.source.work_units()
            for unit in units:
                if unit.urn not in self.seen:
                    self.seen.add(unit.urn)
                    self.report.entities_seen += 1
                self._unit(unit)
                bar.update(1)
                if self.stopped:
                    break
        except SourceUnreachableError:
            raise
        except Exception as exc:  # a connection lost mid-run: report it, keep what was done
            reason = " ".join(str(exc).split())[:300]
            self.report.failures.add(
                self.report.source, f"the source stopped: {type(exc).__name__}: {reason}"
            )
        finally:
            bar.close()

    def _aspects(self, unit: WorkUnit) -> list[A.Aspect] | None:
        try:
            found = unit.aspects() if callable(unit.aspects) else unit.aspects
            return list(found)
        except SourceUnreachableError:
            raise
        except Exception as exc:  # one entity that cannot be read must not stop the others
            message = str(exc).splitlines()[0] if str(exc) else ""
            if isinstance(exc, MetaverseError):
                # NOTE: ours are written to be read whole: a ValidationError's first line is
                # "The record has 1 problem:", and the problem (with its field) follows it.
                message = " ".join(str(exc).split())
            elif not isinstance(exc, (OSError, ValueError)):
                message = f"{type(exc).__name__}: {message}"
            self.report.failures.add(unit.where or unit.urn, message[:300])
            self._record(EntityChange(unit.urn, "failed", where=unit.where))
            return None

    def _unit(self, unit: WorkUnit) -> None:
        lake, report = self.lake, self.report
        fingerprint = unit.fingerprint
        if (
            fingerprint is not None
            and lake.fingerprint(unit.urn) == fingerprint
            and lake.intact(unit.urn)
        ):
            report.aspects_unchanged += lake.owned_count(unit.urn)
            self._record(EntityChange(unit.urn, "unchanged", where=unit.where))
            return
        found = self._aspects(unit)
        if found is None:
            return
        edits = self.source.edits
        if not edits and not any(a[0] == A.STATUS_TYPE for a in found):
            found.append(A.status(False))
        if not edits:
            found.extend(self._no_longer_reported(unit, found))
        to_emit: list[A.Aspect] = []
        changes: list[AspectChange] = []
        reported: list[A.Aspect] = []
        for name, value in found:
            if not edits and _steward_only(name):
                report.aspects_kept_for_stewards += 1
                report.warnings.add(
                    unit.where or unit.urn,
                    f"{A.aspect_name(name)} is the stewards' own: a source never writes it",
                )
                continue
            before = lake.latest(unit.urn, name)
            if not edits and name in _SHARED:
                value = merge_shared(
                    name, before, value, source_urn=self.source_urn, now_ms=self.now_ms
                )
                list_key = _SHARED[name][0]
                if any(not _attributed_to(i, self.source_urn) for i in value[list_key]):
                    report.aspects_kept_for_stewards += 1
            reported.append((name, value))
            if before == value:
                report.aspects_unchanged += 1
                continue
            to_emit.append((name, value))
            changes.append(
                AspectChange(
                    A.aspect_name(name),
                    "added" if before is None else "changed",
                    changed_paths(name, before, value),
                    before,
                    value,
                )
            )
        if not to_emit:
            owned = unit.urn in lake.pipeline_urns()
            others = set() if owned else lake.other_pipelines(unit.urn)
            for other in others:
                self.elsewhere[other] = self.elsewhere.get(other, 0) + 1
            restate = self._restatement(unit, reported, owned=owned, others=bool(others))
            if restate:
                self.emitted.add(unit.urn)
                if not self._emit(unit.urn, restate, unit.fingerprint, unit.where):
                    return
                report.aspects_unchanged -= len(restate)
                report.entities_restated += 1
            self._record(EntityChange(unit.urn, "unchanged", where=unit.where))
            return
        first = all(c.kind == "added" for c in changes) and unit.urn not in self.emitted
        kind = "added" if first or lake.removed(unit.urn) else "changed"
        self.emitted.add(unit.urn)
        if self._emit(unit.urn, to_emit, unit.fingerprint, unit.where):
            self._record(EntityChange(unit.urn, kind, tuple(changes), unit.where))

    def _no_longer_reported(self, unit: WorkUnit, found: list[A.Aspect]) -> list[A.Aspect]:
        """The empty value of each aspect this pipeline wrote for the entity and the source
        no longer reports, so that it is taken back; a warning for one that has no empty value.

        NOTE: a view that stopped reading a table kept its UpstreamLineage to it, and a view
        replaced by a table kept its ViewProperties: the source reported neither, the runner
        compared only what was reported, and the lake said what was no longer true. An MCE
        cannot remove an aspect: lineage and the shared aspects are emptied (the merge keeps
        the stewards' items); another (ViewProperties) stays, and the run says so. An aspect
        someone else wrote since is theirs and left alone.
        """
        reported = {name for name, _ in found}
        out: list[A.Aspect] = []
        for name in sorted(self.lake.owned_aspects(unit.urn) - reported):
            if name in _SHARED:
                out.append(_EMPTY[name]())
            elif not self.lake.written_here(unit.urn, name):
                continue
            elif name in _EMPTY:
                out.append(_EMPTY[name]())
            else:
                self.report.warnings.add(
                    unit.where or unit.urn,
                    f"the source no longer reports {A.aspect_name(name)}, which this pipeline "
                    "wrote: it stays in the lake as last written (a metadata change event "
                    "cannot remove an aspect)",
                )
        return out

    def _restatement(
        self, unit: WorkUnit, reported: list[A.Aspect], *, owned: bool, others: bool
    ) -> list[A.Aspect]:
        """What to emit for an entity whose aspects all equal the lake's (``reported``): none,
        unless the lake would not know this run saw it.

        NOTE: the pipeline's state is its events (ADR 11): a run that emits nothing for an
        entity records neither its fingerprint nor that the pipeline saw it. Two things went
        wrong. (1) A fingerprint that changed while the aspects did not (``row_counts``
        switched on a folder of CSV files, which have no row counts; a source's new
        ``_VERSION``) stayed unrecorded: every later run read the entity in detail again. Its
        ``Status`` (the one aspect every non-edit source reports) now carries the new one.
        (2) An entity the lake held exactly as the source reports it, written by no pipeline
        of this source (metadata imported from DataHub, written by hand), was never the
        pipeline's: when its table was dropped, no run removed it, and none said so. The
        pipeline now claims it, writing the values it reports (equal to the lake's), so a
        later hand edit of them is noticed too. Another pipeline of this source (a renamed
        one) is not claimed from: the run warns, naming it (:meth:`finish`).
        """
        if self.source.edits or unit.urn in self.emitted or others:
            return []
        if not owned:
            return list(reported)
        stale = unit.fingerprint is not None and self.lake.fingerprint(unit.urn) != unit.fingerprint
        return [a for a in reported if a[0] == A.STATUS_TYPE] if stale else []

    def _emit(self, urn: str, aspects: list[A.Aspect], fingerprint: str | None, where: str) -> bool:
        props = {SOURCE_KEY: self.report.source}
        if fingerprint is not None:
            props[FINGERPRINT_KEY] = fingerprint
        meta = A.system_metadata(
            run_id=self.report.run_id,
            pipeline_name=self.report.pipeline_name,
            last_observed_ms=self.now_ms,
            properties=props,
        )
        try:
            events = [A.mce(urn, aspects, system_metadata=meta)]
            for event in events:
                self.emitter.check(event)
        except (ValidationError, MetaverseError) as exc:
            self.report.failures.add(where or urn, " ".join(str(exc).split()))
            self._record(EntityChange(urn, "failed", where=where))
            return False
        for event in events:
            try:
                self.emitter.add(event)
            except EmitError as exc:
                self._emit_failed(exc)
                return False
        self.report.aspects_emitted += len(aspects)
        return True

    def _emit_failed(self, exc: EmitError) -> None:
        self.report.failures.add(
            "emit",
            f"{exc}".splitlines()[0]
            + " (the run stopped; ws.outbox.retry() sends the events kept)",
        )
        self.stopped = True

    def remove_unseen(self, *, fail_safe_threshold: float) -> None:
        """Soft-delete what this pipeline emitted before and did not see now, unless that is
        more than ``fail_safe_threshold`` percent of it."""
        owned = self.lake.pipeline_urns()
        gone = sorted(owned - self.seen)
        if not gone:
            return
        if self.report.failures.total or self.stopped:
            self.report.warnings.add(
                "removal",
                f"{len(gone)} entities were not seen but are not removed: the run had failures",
            )
            return
        share = 100 * len(gone) / len(owned)
        if share > fail_safe_threshold:
            # NOTE: a source that reads as empty without failing (a database file emptied or
            # replaced, a mistyped include, a URL naming another database) would otherwise
            # soft-delete everything the pipeline ever emitted, exit 0. DataHub's stateful
            # ingestion guards the same way (its fail_safe_threshold, 75% by default).
            self.report.failures.add(
                "removal",
                f"{len(gone)} of the {len(owned)} entities this pipeline emitted ({share:.0f}%) "
                f"were not seen, more than fail_safe_threshold ({fail_safe_threshold:g}%): none "
                "is removed. Check the source (an emptied database, a mistyped include or "
                "URL?); if they are really gone, run again with fail_safe_threshold: 100 in "
                "the recipe",
            )
            return
        for urn in gone:
            if self._emit(urn, [A.status(True)], None, ""):
                change = AspectChange("status", "changed", ("removed",), None, None)
                self._record(EntityChange(urn, "removed", (change,)))

    def finish(self) -> None:
        # NOTE: a pipeline owns (and later removes) only entities it emitted. A run that finds
        # another pipeline's entities as it would write them emits nothing, so it never owns
        # them: after a rename, or a URL written another way (the default name is the URL as
        # written), dropped tables were never removed, and the runs said nothing.
        for other, count in sorted(self.elsewhere.items()):
            self.report.warnings.add(
                "pipeline",
                f"{count} entities this run found unchanged were emitted by pipeline {other!r} "
                f"of the same source: pipeline {self.report.pipeline_name!r} does not own them "
                f"and will not remove them when they go. To carry on that pipeline, set "
                f"pipeline_name: {other!r} in the recipe",
            )
        try:
            self.emitter.flush()
        except EmitError as exc:
            self._emit_failed(exc)
