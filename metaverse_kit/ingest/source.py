"""The source protocol: what a plugin that reads one system implements, and how sources are found.

A source is a subclass of :class:`Source` with a config dataclass (``config_class``, see
:mod:`metaverse_kit.ingest.config`). The runner makes it with its parsed config and a
:class:`SourceContext`, calls :meth:`Source.open` (which connects and raises
:class:`SourceUnreachableError` when it cannot), iterates :meth:`Source.work_units` and closes
it. A work unit is one entity and the aspects the source owns for it; the runner compares them
with the lake, emits what changed and soft-deletes what the source no longer sees.

Sources are found by type name: the built-in ones (``files``, ``sql``, ``schema-registry``,
``csv``), then third-party ones registered under the entry point group
``metaverse_kit.sources``::

    [project.entry-points."metaverse_kit.sources"]
    my-system = "my_package.source:MySource"

and a ``"package.module:Class"`` path works as a type too. A built-in whose packages are not
installed stays listed by :func:`available_sources` with the reason.
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from metaverse_kit.errors import MetaverseError, MissingDependencyError
from metaverse_kit.events.aspects import Aspect
from metaverse_kit.ingest.config import RecipeError

if TYPE_CHECKING:
    from metaverse_kit.ingest.report import IngestReport
    from metaverse_kit.workspace import Workspace

__all__ = [
    "ENTRY_POINT_GROUP",
    "Source",
    "SourceContext",
    "SourceUnreachableError",
    "WorkUnit",
    "available_sources",
    "get_source",
    "repeated_columns",
]

#: The entry point group third-party sources register under.
ENTRY_POINT_GROUP = "metaverse_kit.sources"


class SourceUnreachableError(MetaverseError):
    """A source could not be reached or read at all (a wrong URL, a missing folder, no access)."""


@dataclass(frozen=True)
class WorkUnit:
    """One entity a source saw, with the aspects it owns for it.

    ``aspects`` is a list of aspects (from :mod:`metaverse_kit.events.aspects`) or a function
    returning one. With a ``fingerprint`` (a short text that changes whenever what the source
    reads for the entity changes: a DDL statement's hash, a file's size and time), the runner
    calls that function only when the fingerprint differs from the one this pipeline recorded
    in the lake, so an unchanged entity costs no detailed read. ``where`` names the entity in
    messages (``table main.orders``).
    """

    urn: str
    aspects: Sequence[Aspect] | Callable[[], Sequence[Aspect]]
    fingerprint: str | None = None
    where: str = ""


@dataclass
class SourceContext:
    """What the runner gives a source: the workspace, the report, and the lake's latest values."""

    workspace: Workspace
    report: IngestReport
    pipeline_name: str
    #: ``latest(urn, aspect_full_name)``: the lake's latest value of that aspect (as the
    #: builders return it), or None. Read-modify-write sources (``csv``) start from it.
    latest: Callable[[str, str], dict[str, Any] | None]
    #: When the run started, in epoch milliseconds.
    now_ms: int


class Source(abc.ABC):
    """A reader of one system. Subclasses set ``config_class`` and implement :meth:`work_units`.

    ``edits`` marks a source that carries stewards' own edits (``csv``): it may write the
    aspects stewards own (Editable*, GlobalTags, Ownership), gets no ``Status`` added, and never
    soft-deletes what it does not see. Other sources never overwrite those aspects.
    """

    #: The dataclass of the source's config.
    config_class: ClassVar[type]
    #: One line saying what the source reads (shown by the widget).
    description: ClassVar[str] = ""
    #: Whether the source carries stewards' edits rather than a system's inventory.
    edits: ClassVar[bool] = False

    def __init__(self, config: Any, context: SourceContext) -> None:
        self.config = config
        self.context = context

    def open(self) -> None:  # noqa: B027 (optional hook, nothing to do by default)
        """Connect to the system; raise :class:`SourceUnreachableError` when it cannot."""

    @abc.abstractmethod
    def work_units(self) -> Iterator[WorkUnit]:
        """Yield one :class:`WorkUnit` per entity seen, reporting problems on the context."""

    def identity(self) -> str:
        """What this source reads, for the default pipeline name (a URL, a folder); no secrets."""
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 (optional hook, nothing to do by default)
        """Release connections and files."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Built-in sources: type name -> (module, class, modules it needs, the extra that installs them).
_BUILTIN: dict[str, tuple[str, str, tuple[str, ...], str | None]] = {
    "files": ("metaverse_kit.ingest.sources.files", "FilesSource", (), None),
    "sql": ("metaverse_kit.ingest.sources.sql", "SqlSource", ("sqlalchemy",), "ingest"),
    "schema-registry": (
        "metaverse_kit.ingest.sources.schema_registry",
        "SchemaRegistrySource",
        (),
        None,
    ),
    "csv": ("metaverse_kit.ingest.sources.csv_enricher", "CsvSource", (), None),
}


def repeated_columns(names: Sequence[str], *, read: Container[str] | None = None) -> str:
    """The column names given more than once, with their positions (``'tags' in columns 2
    and 3``; ``; ``-separated), or ``""``. ``read`` limits it to the columns a source reads.

    A file whose header names a column twice is refused by the sources: a reader keeps one
    of the cells (``csv.DictReader`` the last) and loses the other without a word.
    """
    positions: dict[str, list[int]] = {}
    for n, name in enumerate(names, 1):
        positions.setdefault(name, []).append(n)
    return "; ".join(
        f"{c!r} in columns {', '.join(map(str, at[:-1]))} and {at[-1]}"
        for c, at in positions.items()
        if len(at) > 1 and (read is None or c in read)
    )


def _missing(modules: Sequence[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_sources() -> dict[str, str | None]:
    """Every source type: None when it can be used, else why not (a missing package).

    Built-in sources come first; third-party ones registered under ``metaverse_kit.sources``
    follow (one with a built-in's name is listed as shadowed).
    """
    out: dict[str, str | None] = {}
    for name, (_, _, needs, extra) in _BUILTIN.items():
        missing = _missing(needs)
        out[name] = (
            f'missing {", ".join(missing)}: pip install "metaverse-kit[{extra}]"'
            if missing
            else None
        )
    for name, ep in _entry_points().items():
        if name in _BUILTIN:
            out[f"{name} ({ep.value})"] = f"shadowed by the built-in {name!r} source"
        else:
            out[name] = None
    return out


def _load(path: str, what: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    except (ImportError, AttributeError) as exc:
        raise RecipeError([f"source.type: cannot load {what} {path!r}: {exc}"]) from exc


def get_source(type_name: str) -> type[Source]:
    """The source class for a type name (built-in, entry point, or ``"module:Class"``).

    Raises :class:`RecipeError` for an unknown type (listing the known ones) and
    :class:`MissingDependencyError` (with the ``pip install`` line) for a built-in whose
    packages are missing.
    """
    if not isinstance(type_name, str) or not type_name:
        raise RecipeError([f"source.type: expected a source type name, got {type_name!r}"])
    if type_name in _BUILTIN:
        module, cls_name, needs, extra = _BUILTIN[type_name]
        missing = _missing(needs)
        if missing:
            raise MissingDependencyError(f"The {type_name} source", missing, extra=extra)
        cls = getattr(importlib.import_module(module), cls_name)
    else:
        eps = _entry_points()
        if type_name in eps:
            try:
                cls = eps[type_name].load()
            except Exception as exc:  # a broken plugin must say which one it is
                raise RecipeError(
                    [
                        f"source.type: the {type_name!r} source ({eps[type_name].value}) "
                        f"cannot be loaded: {exc}"
                    ]
                ) from exc
        elif ":" in type_name:
            cls = _load(type_name, "the source class")
        else:
            known = ", ".join(available_sources())
            raise RecipeError(
                [
                    f"source.type: unknown source {type_name!r}; known sources: {known} "
                    f"(or 'package.module:Class')"
                ]
            )
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise RecipeError([f"source.type: {type_name!r} is not a metaverse_kit Source subclass"])
    return cls
