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

Two tables can map to one dataset URN (``,`` is written ``%2C`` in a URN and ``%`` is not
encoded, and ``.`` joins schema and table names): such a URN is a failure of the run naming both
tables, and neither is emitted, so neither silently overwrites the other.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from metaverse_kit.errors import ImmutableReadWarning, warn
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
        default_factory=list, metadata={"help": "only schema.table names matching these globs"}
    )
    exclude: list[str] = field(
        default_factory=list, metadata={"help": "skip schema.table names matching these globs"}
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
        self.platform = self.config.platform or _PLATFORMS.get(self.dialect.name, self.dialect.name)
        self.database = self.config.database or self._default_database()

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

    def _wanted(self, schema: str | None, name: str, kind: str) -> bool:
        if kind == "table" and not self.config.include_tables:
            return False
        if kind != "table" and not self.config.include_views:
            return False
        full = f"{schema}.{name}" if schema else name
        if self.config.include and not any(fnmatch.fnmatch(full, p) for p in self.config.include):
            return False
        return not any(fnmatch.fnmatch(full, p) for p in self.config.exclude)

    def _urn(self, schema: str | None, name: str) -> str:
        parts = [self.database]
        if schema and self.dialect.name != "sqlite":
            parts.append(schema)
        return make_dataset_urn(self.platform, ".".join([*parts, name]), self.config.env)

    def work_units(self) -> Iterator[WorkUnit]:
        import sqlalchemy as sa

        inspector = sa.inspect(self.engine)
        if self.dialect.name == "sqlite":
            yield from self._sqlite_units(inspector)
            return
        schemas = self.config.schemas or [
            s for s in inspector.get_schema_names() if s not in _SYSTEM_SCHEMAS
        ]
        found: list[tuple[WorkUnit, str]] = []
        # NOTE: every schema is reflected before the first unit is yielded: two tables in
        # different schemas may share a URN, and neither may be emitted then.
        for schema in schemas:
            try:
                tables = self._reflect_schema(inspector, schema)
            except sa.exc.SQLAlchemyError as exc:
                self.context.report.failures.add(
                    f"schema {schema}", " ".join(str(exc).split())[:300]
                )
                continue
            for table in tables:
                unit = WorkUnit(
                    self._urn(schema, table.name),
                    functools.partial(self._aspects, table),
                    _hash(self._key(table)),
                    f"{table.kind} {schema}.{table.name}",
                )
                found.append((unit, _label(table.kind, schema, table.name)))
        yield from self._one_per_urn(found)

    def _one_per_urn(self, found: list[tuple[WorkUnit, str]]) -> Iterator[WorkUnit]:
        """The units of ``found`` (each with its table's quoted name), but for URNs that two or
        more tables map to: each of those is one failure naming them, and none is yielded."""
        labels: dict[str, list[str]] = {}
        for unit, label in found:
            labels.setdefault(unit.urn, []).append(label)
        for urn, names in labels.items():
            if len(names) > 1:
                self.context.report.failures.add(
                    urn,
                    f"{len(names)} tables or views map to this one dataset URN: "
                    f"{', '.join(names)} (a URN writes ',', '(' and ')' as %2C, %28 and %29 but "
                    "leaves '%' alone, and joins schema and table with '.'); none of them is "
                    "emitted, so none overwrites another. Rename one, or leave all but one out "
                    "with source.config.exclude or source.config.schemas.",
                )
        for unit, _ in found:
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
        import sqlalchemy as sa

        found: list[tuple[WorkUnit, str]] = []
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master "
                "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            for kind, name, ddl in rows:
                if not self._wanted(None, name, kind):
                    continue
                # NOTE: a table's DDL holds its columns (ALTER TABLE rewrites it) and so is its
                # fingerprint; a view's does not change when a table it reads does.
                fingerprint: str | None = _hash(kind, ddl)
                if kind == "view":
                    try:
                        columns = conn.exec_driver_sql(
                            "SELECT * FROM pragma_table_xinfo(?)", (name,)
                        ).fetchall()
                        fingerprint = _hash(kind, ddl, [list(c) for c in columns])
                    except sa.exc.DBAPIError:
                        # NOTE: no fingerprint: the unit is read, and fails with SQLite's reason.
                        fingerprint = None
                unit = WorkUnit(
                    self._urn(None, name),
                    functools.partial(self._sqlite_aspects, inspector, kind, name, ddl or ""),
                    fingerprint,
                    f"{kind} {name}",
                )
                found.append((unit, _label(kind, None, name)))
        yield from self._one_per_urn(found)

    def _sqlite_aspects(self, inspector: Any, kind: str, name: str, ddl: str) -> list[A.Aspect]:
        return self._aspects(self._reflect_sqlite(inspector, kind, name, ddl))

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
                table.definition = inspector.get_view_definition(name, schema=schema)
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
        for c in table.columns:
            kind, nested = datahub_type(c["type"])
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
