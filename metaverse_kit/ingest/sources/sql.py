"""The ``sql`` source: tables and views of any database SQLAlchemy reaches.

Per table or view: DatasetProperties (the table comment), SchemaMetadata (columns with their
native and DataHub types, nullability, comments, the primary key) and, for views,
ViewProperties (the definition) and, where the database records it (PostgreSQL, SQL Server:
``information_schema.view_table_usage``), UpstreamLineage to the tables a view reads.

SQLite is read through its own catalogue: ``sqlite_master`` holds every table's and view's DDL,
which is a table's fingerprint, so a rerun reads only the tables whose DDL changed. A view's DDL
stays the same when a table it reads changes, so its fingerprint adds the columns SQLite reports
for it now; a view SQLite cannot read (a table it reads was dropped) is a failure of the run.
Other databases are reflected in bulk (``Inspector.get_multi_columns`` and friends: a few
queries per schema) and fingerprinted from what was read.

SQLite databases are opened read-only; a path that does not exist, or a file that is not a
SQLite database, makes the source unreachable, and no file is ever created. A database in WAL
mode in a folder this user cannot write is read with SQLite's ``immutable=1`` (with an
:class:`~metaverse_kit.errors.ImmutableReadWarning`), the one way SQLite can read it there.

``include`` and ``exclude`` are globs (``fnmatch``: ``*``, ``?``, ``[abc]``) matched against
``schema.table``, a name that holds a ``.`` or a ``"`` written as SQL quotes it: table ``b.c``
of schema ``a`` is ``a."b.c"`` and table ``c`` of schema ``a.b`` is ``"a.b".c``, so a pattern
meant for one never matches the other. SQLite's tables are matched as ``table`` and as
``main.table``. A pattern that matches nothing is a warning of the run (a typo would otherwise
read everything, or nothing, without a word).

Two tables can map to one dataset URN (``,`` is written ``%2C`` in a URN and ``%`` is not
encoded, and ``.`` joins schema and table names): such a URN is a failure of the run naming both
tables and the ``exclude`` pattern of each, and neither is emitted, so neither silently
overwrites the other.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from metaverse_kit.errors import (
    FieldProblem,
    ImmutableReadWarning,
    MetaverseError,
    ValidationError,
    warn,
)
from metaverse_kit.events import aspects as A
from metaverse_kit.events.urns import make_dataset_urn
from metaverse_kit.ingest.config import RecipeError
from metaverse_kit.ingest.source import Source, SourceUnreachableError, WorkUnit

__all__ = ["SqlConfig", "SqlSource", "datahub_type"]

#: Part of every fingerprint: a change to how aspects are built re-reads every table.
_VERSION = "sql/1"
_PLATFORMS = {"postgresql": "postgres", "sqlite": "sqlite", "mssql": "mssql", "oracle": "oracle"}
_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast", "sys", "INFORMATION_SCHEMA"}
_LINEAGE_DIALECTS = {"postgresql", "mssql"}


@dataclass
class SqlConfig:
    """Config of the ``sql`` source."""

    url: str = field(
        metadata={
            "help": "SQLAlchemy URL: sqlite:///path/shop.db, postgresql+psycopg://user@host/db"
        }
    )
    platform: str | None = field(
        default=None, metadata={"help": "DataHub platform (default: from the database kind)"}
    )
    database: str | None = field(
        default=None,
        metadata={"help": "first part of dataset names (default: the database, or file name)"},
    )
    schemas: list[str] = field(
        default_factory=list, metadata={"help": "schemas to read (default: all but system ones)"}
    )
    include: list[str] = field(
        default_factory=list,
        metadata={
            "help": 'only schema.table names matching these globs (a name with "." or \'"\' '
            'quoted: a."b.c"; SQLite: table or main.table)'
        },
    )
    exclude: list[str] = field(
        default_factory=list,
        metadata={"help": "skip schema.table names matching these globs (quoted as for include)"},
    )
    include_tables: bool = field(default=True, metadata={"help": "read tables"})
    include_views: bool = field(default=True, metadata={"help": "read views"})
    env: str = field(default="PROD", metadata={"help": "DataHub environment of the datasets"})


def datahub_type(sql_type: Any) -> tuple[str, list[str] | None]:
    """DataHub's field type (and nested item types) for a SQLAlchemy column type."""
    import sqlalchemy.types as t

    checks: list[tuple[type, str]] = [
        (t.Boolean, "BooleanType"),
        (t.Enum, "EnumType"),
        (t.Integer, "NumberType"),
        (t.Numeric, "NumberType"),
        (t.DateTime, "TimeType"),
        (t.Date, "DateType"),
        (t.Time, "TimeType"),
        (t.Interval, "TimeType"),
        (t.String, "StringType"),
        (t.LargeBinary, "BytesType"),
        (t._Binary, "BytesType"),
        (t.JSON, "RecordType"),
        (t.NullType, "NullType"),
    ]
    if isinstance(sql_type, t.ARRAY):
        item, _ = datahub_type(sql_type.item_type)
        return "ArrayType", [item.removesuffix("Type").lower()]
    for kind, name in checks:
        if isinstance(sql_type, kind):
            return name, None
    return "NullType", None


def _native(sql_type: Any, dialect: Any) -> str:
    try:
        return str(sql_type.compile(dialect=dialect))
    except Exception:  # a type the dialect cannot render (a reflected unknown): its class name
        return type(sql_type).__name__.upper()


def _hash(*parts: Any) -> str:
    text = json.dumps([_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _label(kind: str, schema: str | None, name: str) -> str:
    """``table "a"."b.c"``: a table as SQL quotes it, which no other table's name can give."""
    parts = [p for p in (schema, name) if p is not None]
    return kind + " " + ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _reason(exc: BaseException) -> str:
    """An exception as one line: SQLAlchemy's first (its SQL and its web link follow), and
    what a missing table's bare name means."""
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.NoSuchTableError):
        return f"{exc} does not exist (dropped while this run read the database?)"
    lines = str(exc).splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _pattern_part(name: str) -> str:
    """A schema or table name as include and exclude see it: quoted as SQL quotes it when it
    holds a ``.`` or a ``"`` (so ``a."b.c"`` and ``"a.b".c`` differ), else as it is."""
    if "." in name or '"' in name:
        return '"' + name.replace('"', '""') + '"'
    return name


def _probe_sqlite(uri: str) -> None:
    """Open ``uri`` and read the catalogue: the first read is what fails, not the connect."""
    import sqlite3

    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


def _sqlite_unreadable(path: Any, exc: Any) -> SourceUnreachableError:
    """The error for a SQLite file that cannot be read, as a missing one is reported."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
        return SourceUnreachableError(
            f"{path} is not a SQLite database (SQLite says: {exc}); "
            "source.config.url must name a SQLite database file"
        )
    return SourceUnreachableError(f"cannot read the SQLite database {path}: {exc}")


@dataclass
class _Table:
    schema: str | None
    name: str
    kind: str  # "table", "view" or "materialized view"
    columns: list[dict[str, Any]] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    comment: str | None = None
    definition: str | None = None
    ddl: str = ""
    upstreams: list[tuple[str | None, str]] = field(default_factory=list)


class SqlSource(Source):
    """Reads tables and views through SQLAlchemy (see the module docstring)."""

    config_class = SqlConfig
    description = "Tables and views of a database (SQLite, PostgreSQL, any SQLAlchemy URL)"

    def open(self) -> None:
        """Connect, and check the database can be read.

        Raises :class:`SourceUnreachableError` when the database cannot be reached or read (for
        SQLite: no file, or not a SQLite database).
        """
        import sqlalchemy as sa

        try:
            url = sa.engine.make_url(self.config.url)
        except sa.exc.ArgumentError as exc:
            raise SourceUnreachableError(
                f"source.config.url is not a SQLAlchemy URL: {exc}"
            ) from exc
        self.url = url
        shown = url.render_as_string(hide_password=True)
        try:
            if url.get_backend_name() == "sqlite":
                self.engine = self._sqlite_engine(url)
            else:
                self.engine = sa.create_engine(url)
            with self.engine.connect():
                pass
        except SourceUnreachableError:
            raise
        except (sa.exc.SQLAlchemyError, ImportError) as exc:
            reason = " ".join(str(exc).split())[:300]
            raise SourceUnreachableError(f"cannot connect to {shown}: {reason}") from exc
        self.dialect = self.engine.dialect
        if self.dialect.name == "sqlite" and set(self.config.schemas) - {"main"}:
            # NOTE: SQLite's tables are read from its catalogue, schema "main": other names
            # were ignored, and the run read every table as if none had been given.
            raise RecipeError(
                [
                    f"source.config.schemas: SQLite has one schema, 'main'; got "
                    f"{self.config.schemas!r}. Leave it out, and choose tables with include "
                    "or exclude"
                ],
                what="source config",
            )
        self._check_config()
        self.platform = self.config.platform or _PLATFORMS.get(self.dialect.name, self.dialect.name)
        self.database = self.config.database or self._default_database()

    def _check_config(self) -> None:
        """Raise :class:`RecipeError` for settings that would read nothing, or be replaced
        without a word."""
        problems = []
        if not self.config.include_tables and not self.config.include_views:
            problems.append(
                "source.config.include_tables and include_views are both false: the source "
                "would read nothing (and a later run would remove what it emitted); set one "
                "to true"
            )
        defaults = {
            "database": "the database's name (a SQLite file's name)",
            "platform": "from the database kind",
        }
        for key, default in defaults.items():
            if getattr(self.config, key) == "":
                # NOTE: "" was replaced by the default, as if the key were not given.
                problems.append(
                    f"source.config.{key}: empty; leave the key out for the default ({default})"
                )
        if self.config.schemas and self.dialect.name != "sqlite":
            problems.extend(self._missing_schemas())
        if problems:
            raise RecipeError(problems, what="source config")

    def _missing_schemas(self) -> list[str]:
        """A problem per schema of ``source.config.schemas`` the database does not have.

        NOTE: a mistyped schema (or "Public" for public: names are case-sensitive) was read as
        an empty one: the run read nothing, exit 0, and a later one removed what it emitted.
        """
        import difflib

        import sqlalchemy as sa

        try:
            known = sa.inspect(self.engine).get_schema_names()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceUnreachableError(f"cannot list the schemas: {_reason(exc)}") from exc
        problems = []
        for i, schema in enumerate(self.config.schemas):
            if schema in known:
                continue
            close = [k for k in known if k.lower() == schema.lower()]
            close = close or difflib.get_close_matches(schema, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"source.config.schemas[{i}]: the database has no schema {schema!r}{hint} "
                f"(it has {', '.join(sorted(known))})"
            )
        return problems

    def _sqlite_engine(self, url: Any) -> Any:
        import sqlite3
        from pathlib import Path

        import sqlalchemy as sa

        path = url.database
        if not path or path == ":memory:":
            raise SourceUnreachableError(
                "source.config.url names no SQLite file; an in-memory database has no tables"
            )
        file = Path(path).resolve()
        if not file.is_file():
            raise SourceUnreachableError(f"no SQLite database at {file}")
        # NOTE: read-only, so a typo never leaves an empty database behind and nothing is locked.
        uri = file.as_uri() + "?mode=ro"
        try:
            _probe_sqlite(uri)
        except sqlite3.Error as exc:
            # NOTE: a WAL reader needs the -shm file, which it cannot create in a folder it may
            # not write: SQLite's documented way to read there is immutable=1, which takes no
            # locks and ignores the WAL (https://www.sqlite.org/wal.html#readonly). Only this
            # error: when the -shm exists (a writer is at work) the plain read works and is safe.
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY_DIRECTORY":
                raise _sqlite_unreadable(file, exc) from exc
            uri += "&immutable=1"
            try:
                _probe_sqlite(uri)
            except sqlite3.Error as again:
                raise _sqlite_unreadable(file, again) from again
            warn(
                ImmutableReadWarning(
                    f"{file} is in WAL mode and this user cannot write its folder "
                    f"{file.parent}, where SQLite keeps the -shm file a shared read needs; it "
                    "is read as immutable (no locks), so the snapshot may miss changes written "
                    "meanwhile, or fail on a half-written page. For a consistent read, run when "
                    "nothing writes to it, or as a user who can write the folder."
                )
            )
        return sa.create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
        )

    def _default_database(self) -> str:
        from pathlib import Path

        if self.url.get_backend_name() == "sqlite":
            return Path(self.url.database or "sqlite").stem
        return self.url.database or self.dialect.name

    def identity(self) -> str:
        import sqlalchemy as sa

        try:
            return sa.engine.make_url(self.config.url).render_as_string(hide_password=True)
        except sa.exc.ArgumentError:
            return "sql"

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.dispose()

    # -- what to read ---------------------------------------------------------------------------

    def _names(self, schema: str | None, name: str) -> list[str]:
        """What include and exclude patterns are matched against (see the module docstring)."""
        if self.dialect.name == "sqlite":
            return [_pattern_part(name), "main." + _pattern_part(name)]
        if schema is None:
            return [_pattern_part(name)]
        return [f"{_pattern_part(schema)}.{_pattern_part(name)}"]

    def _matches(self, key: str, names: list[str]) -> bool:
        """Whether a pattern of ``source.config.<key>`` matches one of ``names``; each pattern
        that does is remembered, for :meth:`_warn_unmatched`."""
        hit = False
        for pattern in getattr(self.config, key):
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                self._matched.add((key, pattern))
                hit = True
        return hit

    def _wanted(self, schema: str | None, name: str, kind: str) -> bool:
        # NOTE: patterns are tried before the kind, so a pattern naming a view is "used" even
        # with include_views off, and not reported as matching nothing.
        names = self._names(schema, name)
        included = self._matches("include", names) or not self.config.include
        excluded = self._matches("exclude", names)
        if kind == "table" and not self.config.include_tables:
            return False
        if kind != "table" and not self.config.include_views:
            return False
        return included and not excluded

    def _warn_unmatched(self) -> None:
        """A warning per include or exclude pattern that matched no table or view."""
        for key in ("include", "exclude"):
            for pattern in getattr(self.config, key):
                if (key, pattern) in self._matched:
                    continue
                sqlite = " or main.table" if self.dialect.name == "sqlite" else ""
                self.context.report.warnings.add(
                    f"source.config.{key}",
                    f"the pattern {pattern!r} matched no table or view; patterns match "
                    f'schema.table{sqlite}, with a name that holds "." or \'"\' in double '
                    f'quotes (a."b.c" is table b.c of schema a)',
                )

    def _urn(self, schema: str | None, name: str) -> str:
        parts = [self.database]
        if schema and self.dialect.name != "sqlite":
            parts.append(schema)
        return make_dataset_urn(self.platform, ".".join([*parts, name]), self.config.env)

    def work_units(self) -> Iterator[WorkUnit]:
        import sqlalchemy as sa

        inspector = sa.inspect(self.engine)
        self._matched: set[tuple[str, str]] = set()
        if self.dialect.name == "sqlite":
            yield from self._sqlite_units(inspector)
            return
        schemas = self.config.schemas or [
            s for s in inspector.get_schema_names() if s not in _SYSTEM_SCHEMAS
        ]
        found: list[tuple[WorkUnit, str, str]] = []
        # NOTE: every schema is reflected before the first unit is yielded: two tables in
        # different schemas may share a URN, and neither may be emitted then.
        for schema in schemas:
            try:
                tables = self._reflect_schema(inspector, schema)
            except sa.exc.SQLAlchemyError as exc:
                # NOTE: reflected in bulk, a schema is read whole or not at all: no table of
                # it is emitted from half a read (a connection lost in the middle).
                self.context.report.failures.add(
                    f"schema {_pattern_part(schema)}",
                    f"its tables and views were not read: {_reason(exc)}",
                )
                continue
            for table in tables:
                name = self._names(schema, table.name)[0]
                unit = WorkUnit(
                    self._urn(schema, table.name),
                    functools.partial(self._aspects, table),
                    _hash(self._key(table)),
                    f"{table.kind} {name}",
                )
                found.append((unit, _label(table.kind, schema, table.name), name))
        # NOTE: before the first unit: the runner may stop early, and this is known now.
        self._warn_unmatched()
        yield from self._one_per_urn(found)

    def _one_per_urn(self, found: list[tuple[WorkUnit, str, str]]) -> Iterator[WorkUnit]:
        """The units of ``found`` (each with its table's quoted name and its name as patterns
        see it), but for URNs that two or more tables map to: each of those is one failure
        naming them and the pattern that leaves each out, and none is yielded."""
        labels: dict[str, list[str]] = {}
        patterns: dict[str, list[str]] = {}
        for unit, label, name in found:
            labels.setdefault(unit.urn, []).append(label)
            patterns.setdefault(unit.urn, []).append(repr(glob.escape(name)))
        for urn, names in labels.items():
            if len(names) > 1:
                self.context.report.failures.add(
                    urn,
                    f"{len(names)} tables or views map to this one dataset URN: "
                    f"{', '.join(names)} (a URN writes ',', '(' and ')' as %2C, %28 and %29 but "
                    "leaves '%' alone, and joins schema and table with '.'); none of them is "
                    "emitted, so none overwrites another. Rename one, or leave all but one out "
                    f"with source.config.exclude (their patterns, in order: "
                    f"{', '.join(patterns[urn])}) or source.config.schemas.",
                )
        for unit, _, _ in found:
            if len(labels[unit.urn]) == 1:
                yield unit

    def _key(self, table: _Table) -> Any:
        columns = [
            (c["name"], _native(c["type"], self.dialect), c.get("nullable"), c.get("comment"))
            for c in table.columns
        ]
        return [
            table.kind,
            columns,
            table.primary_key,
            table.comment,
            table.definition,
            table.upstreams,
        ]

    # -- SQLite: the catalogue's DDL is the fingerprint (and a view's columns) ----------------

    def _sqlite_units(self, inspector: Any) -> Iterator[WorkUnit]:

        found: list[tuple[WorkUnit, str, str]] = []
        with self.engine.connect() as conn:
            # NOTE: SQLite adds one to it on every change of the schema (_sqlite_aspects).
            self._listed_version = conn.exec_driver_sql("PRAGMA schema_version").scalar()
            rows = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master "
                "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            for kind, name, ddl in rows:
                if not self._wanted(None, name, kind):
                    continue
                fingerprint = self._sqlite_fingerprint(conn, kind, name, ddl)
                unit = WorkUnit(
                    self._urn(None, name),
                    functools.partial(
                        self._sqlite_aspects, inspector, kind, name, ddl or "", fingerprint
                    ),
                    fingerprint,
                    f"{kind} {_pattern_part(name)}",
                )
                found.append((unit, _label(kind, None, name), _pattern_part(name)))
        self._warn_unmatched()
        yield from self._one_per_urn(found)

    @staticmethod
    def _sqlite_fingerprint(conn: Any, kind: str, name: str, ddl: str | None) -> str | None:
        """A table's DDL (which holds its columns: ALTER TABLE rewrites it); a view's DDL and
        the columns SQLite reports for it now (its DDL stays when a table it reads changes).
        None for a view SQLite cannot read: the unit is read, and fails with SQLite's reason."""
        import sqlalchemy as sa

        if kind != "view":
            return _hash(kind, ddl)
        try:
            columns = conn.exec_driver_sql("SELECT * FROM pragma_table_xinfo(?)", (name,))
            return _hash(kind, ddl, [list(c) for c in columns.fetchall()])
        except sa.exc.DBAPIError:
            return None

    def _sqlite_aspects(
        self, inspector: Any, kind: str, name: str, ddl: str, fingerprint: str | None
    ) -> list[A.Aspect]:
        """The aspects of a table or view, read after the catalogue was listed; raises
        :class:`MetaverseError` when it was dropped or changed in between.

        NOTE: the fingerprint is the catalogue's at listing time and the columns are read
        later (each statement is its own read: a transaction over the run would hold a lock
        that keeps writers out). A table altered in between was emitted with the new columns
        and the old DDL under the old fingerprint, and if it was altered back before the next
        run, that run found the fingerprint equal and skipped it: the lake kept columns the
        table did not have. Reading the catalogue again after the columns catches it; the
        table fails alone, and the next run reads it. PERF: SQLite's schema version, unchanged
        since before the listing, says so for all tables at once; the table's own row (a scan
        of the catalogue: 0.2 s over 2,100 tables) is read only when it moved.
        """
        import sqlalchemy as sa

        try:
            table: _Table | None = self._reflect_sqlite(inspector, kind, name, ddl)
        except sa.exc.NoSuchTableError:
            table = None
        with self.engine.connect() as conn:
            version = conn.exec_driver_sql("PRAGMA schema_version").scalar()
        if table is not None and version == self._listed_version:
            return self._aspects(table)
        if fingerprint is not None or table is None:
            with self.engine.connect() as conn:
                row = conn.exec_driver_sql(
                    "SELECT type, sql FROM sqlite_master WHERE name = ?", (name,)
                ).fetchone()
                now = None if row is None else self._sqlite_fingerprint(conn, row[0], name, row[1])
            if row is None:
                raise MetaverseError(
                    "dropped while this run read the database: nothing of it is emitted, and "
                    "the next run removes it"
                )
            if table is None or now != fingerprint:
                raise MetaverseError(
                    "changed while this run read it: nothing of it is emitted, and the next "
                    "run reads it again"
                )
        assert table is not None
        return self._aspects(table)

    def _reflect_sqlite(self, inspector: Any, kind: str, name: str, ddl: str) -> _Table:
        table = _Table(None, name, kind, ddl=ddl)
        table.columns = inspector.get_columns(name)
        if kind == "table":
            table.primary_key = list(
                inspector.get_pk_constraint(name).get("constrained_columns") or []
            )
        else:
            table.definition = inspector.get_view_definition(name) or ddl
        return table

    # -- other databases: bulk reflection ------------------------------------------------------

    def _reflect_schema(self, inspector: Any, schema: str) -> list[_Table]:
        import sqlalchemy as sa
        from sqlalchemy.engine.reflection import ObjectKind

        views = set(inspector.get_view_names(schema=schema))
        try:
            materialized = set(inspector.get_materialized_view_names(schema=schema))
        except NotImplementedError:
            materialized = set()
        columns = inspector.get_multi_columns(schema=schema, kind=ObjectKind.ANY)
        keys = inspector.get_multi_pk_constraint(schema=schema, kind=ObjectKind.TABLE)
        try:
            comments = inspector.get_multi_table_comment(schema=schema, kind=ObjectKind.ANY)
        except NotImplementedError:
            comments = {}
        upstreams = self._view_upstreams(schema)
        tables = []
        for (_, name), cols in sorted(columns.items(), key=lambda kv: kv[0][1]):
            kind = (
                "materialized view"
                if name in materialized
                else "view"
                if name in views
                else "table"
            )
            if not self._wanted(schema, name, kind):
                continue
            table = _Table(schema, name, kind, columns=cols)
            table.primary_key = list(
                (keys.get((schema, name)) or {}).get("constrained_columns") or []
            )
            table.comment = (comments.get((schema, name)) or {}).get("text")
            if kind != "table":
                try:
                    table.definition = inspector.get_view_definition(name, schema=schema)
                except sa.exc.SQLAlchemyError as exc:
                    # NOTE: one view whose definition cannot be read (dropped since the names
                    # were listed) failed its whole schema, as "schema s2: s2.w".
                    self.context.report.failures.add(
                        f"{kind} {self._names(schema, name)[0]}",
                        f"its definition cannot be read: {_reason(exc)}; nothing of it is emitted",
                    )
                    continue
                table.upstreams = upstreams.get(name, [])
            tables.append(table)
        return tables

    def _view_upstreams(self, schema: str) -> dict[str, list[tuple[str | None, str]]]:
        if self.dialect.name not in _LINEAGE_DIALECTS:
            return {}
        import sqlalchemy as sa

        query = sa.text(
            "SELECT view_name, table_schema, table_name FROM information_schema.view_table_usage "
            "WHERE view_schema = :schema ORDER BY view_name, table_schema, table_name"
        )
        out: dict[str, list[tuple[str | None, str]]] = {}
        with self.engine.connect() as conn:
            for view, table_schema, table in conn.execute(query, {"schema": schema}):
                out.setdefault(view, []).append((table_schema, table))
        return out

    # -- aspects -------------------------------------------------------------------------------

    def _aspects(self, table: _Table) -> list[A.Aspect]:
        schema_part = f"{table.schema}." if table.schema and self.dialect.name != "sqlite" else ""
        qualified = f"{self.database}.{schema_part}{table.name}"
        fields = []
        for n, c in enumerate(table.columns, 1):
            kind, nested = datahub_type(c["type"])
            try:
                fields.append(
                    A.schema_field(
                        c["name"],
                        kind,
                        native_type=_native(c["type"], self.dialect),
                        nullable=bool(c.get("nullable", True)),
                        description=c.get("comment") or None,
                        is_part_of_key=c["name"] in table.primary_key,
                        nested=nested,
                    )
                )
            except MetaverseError as exc:
                # NOTE: the builder's message names the field path, not which column: an
                # empty name (SQLite takes "") failed as "The SchemaField record has 1 problem".
                problems = getattr(exc, "problems", None) or [FieldProblem("", str(exc))]
                raise ValidationError(problems, what=f"column {n} ({c['name']!r})") from exc
        custom = {} if table.kind == "table" else {"is_view": "True"}
        out = [
            A.dataset_properties(
                name=table.name,
                qualified_name=qualified,
                description=table.comment or None,
                custom_properties=custom,
            ),
            A.schema_metadata(
                qualified,
                fields,
                platform=self.platform,
                primary_keys=table.primary_key or None,
                raw_schema=table.ddl,
                schema_kind="MySqlDDL",
            ),
        ]
        if table.kind != "table":
            out.append(
                A.view_properties(
                    table.definition or "", materialized=table.kind == "materialized view"
                )
            )
            if table.upstreams:
                out.append(
                    A.upstream_lineage([(self._urn(s, t), "VIEW") for s, t in table.upstreams])
                )
        return out
