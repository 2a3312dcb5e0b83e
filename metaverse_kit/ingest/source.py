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
import codecs
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
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
    "TEXT_ENCODINGS",
    "Source",
    "SourceContext",
    "SourceUnreachableError",
    "WorkUnit",
    "available_sources",
    "get_source",
    "repeated_columns",
    "text_encoding",
    "text_problem",
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


#: The encodings the readers of CSV files take, as said in their messages.
TEXT_ENCODINGS = "UTF-8 (with or without a byte order mark) or UTF-16 with a byte order mark"

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def text_encoding(head: bytes) -> str:
    """The codec to read a text file with, from its first bytes: ``"utf-16"`` after a UTF-16
    byte order mark (Excel's "Unicode Text", Windows PowerShell 5's ``>``), else
    ``"utf-8-sig"`` (UTF-8, its byte order mark dropped when there is one)."""
    return "utf-16" if head.startswith(_UTF16_BOMS) else "utf-8-sig"


def _line_breaks(text: str, after_cr: bool) -> int:
    """The line ends in ``text`` as a CSV reader counts them (``\\r\\n``, ``\\r`` or ``\\n``);
    ``after_cr``: the text before it ended in ``\\r`` (so a leading ``\\n`` ends no line)."""
    count = text.count("\n") + text.count("\r") - text.count("\r\n")
    return count - 1 if after_cr and text.startswith("\n") else count


def text_problem(chunks: Iterable[bytes], *, complete: bool = True) -> str | None:
    """Where and why a text file (its bytes in order, in chunks) cannot be read as
    :data:`TEXT_ENCODINGS`, or None: the first byte that does not decode, or a NUL in its
    first line (a header of UTF-16 without a byte order mark, or of no text file at all).

    The answer starts with the line (counted as a CSV reader counts them) and the byte offset,
    as ``line 57 (byte offset 4041): ...``, for the caller to put after the file's name, and
    says what was expected. ``complete=False`` for the head of a longer file: a character cut
    at its end is no problem. Memory stays that of one chunk.
    """
    stream = iter(chunks)
    data = b""
    for chunk in stream:
        data += chunk
        if len(data) >= 3:
            break
    if data.startswith(codecs.BOM_UTF8):
        decode, name, offset, data = codecs.utf_8_decode, "UTF-8", 3, data[3:]
    elif data.startswith(_UTF16_BOMS):
        le = data.startswith(codecs.BOM_UTF16_LE)
        decode = codecs.utf_16_le_decode if le else codecs.utf_16_be_decode
        name, offset, data = "UTF-16", 2, data[2:]
    else:
        decode, name, offset = codecs.utf_8_decode, "UTF-8", 0
    line, after_cr, tail = 1, False, ""

    def read(text: str) -> str | None:
        """Count the lines of decoded text; a NUL of the first line is a problem."""
        nonlocal line, after_cr, tail
        if line == 1:
            first = len(text)
            for end in ("\r", "\n"):
                at = text.find(end)
                first = at if 0 <= at < first else first
            nul = text.find("\x00", 0, first)
            if nul >= 0:
                at = offset + len(text[:nul].encode("utf-16-le" if name == "UTF-16" else "utf-8"))
                sample = text[: min(first, 200)]
                return _nul_problem(at, utf16=sample.count("\x00") * 3 >= len(sample))
        line += _line_breaks(text, after_cr)
        after_cr = text.endswith("\r") if text else after_cr
        last = max(text.rfind("\r"), text.rfind("\n"))
        tail = (text[last + 1 :] if last >= 0 else tail + text)[-30:]
        return None

    final = False
    while True:
        try:
            text, used = decode(data, "strict", final and complete)
        except UnicodeDecodeError as exc:
            good = decode(data[: exc.start], "replace", True)[0]
            problem = read(good)
            if problem:
                return problem
            return _decode_problem(line, offset + exc.start, data[exc.start :], name, exc, tail)
        problem = read(text)
        if problem or final:
            return problem
        # NOTE: the bytes of a character cut at the chunk's end go with the next chunk.
        offset += used
        following = next(stream, None)
        final = following is None
        data = data[used:] + (following or b"")


def _nul_problem(offset: int, *, utf16: bool) -> str:
    """Why a NUL in a file's first line stops it being read: no CSV writer writes one."""
    where = f"line 1 (byte offset {offset}): a NUL character in the header"
    if utf16:
        # NOTE: UTF-16 without a byte order mark: every other byte of ASCII text is NUL.
        return (
            f"{where}, as in UTF-16 without a byte order mark, which is not read; expected "
            f'{TEXT_ENCODINGS}: save the file as "CSV UTF-8"'
        )
    return f"{where}, which no CSV file has; expected text in {TEXT_ENCODINGS}"


def _decode_problem(
    line: int, offset: int, rest: bytes, encoding: str, exc: UnicodeDecodeError, tail: str
) -> str:
    """Why the byte at ``offset`` (``rest`` starts with it) stops a file being read."""
    after = f", after {tail!r}" if tail else ""
    where = f"line {line} (byte offset {offset}{after})"
    if encoding == "UTF-16":
        return (
            f"{where}: the bytes are not UTF-16, as the file's byte order mark says "
            f"({exc.reason}); expected {TEXT_ENCODINGS}"
        )
    byte = rest[0]
    # NOTE: Excel's plain "CSV" is in the Windows code page (Windows-1252 in Western Europe).
    try:
        legacy = bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        legacy = ""
    seen = (
        f' ({legacy!r} in Windows-1252, Excel\'s plain "CSV")'
        if legacy.isprintable() and legacy
        else ""
    )
    return (
        f"{where}: byte 0x{byte:02x} is not UTF-8{seen}; expected {TEXT_ENCODINGS}: save "
        'the file as "CSV UTF-8"'
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
