"""Gaps closed after trying to break ingestion: names with dots in patterns, fingerprints and
ownership recorded when nothing changed, careless configs and sources that go away."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from ingest_helpers import run_postgres, run_sql, sql_recipe, sqlite_url

import metaverse_kit as mk
from metaverse_kit.events import aspects as A
from metaverse_kit.ingest import RecipeError, Source, WorkUnit


def _urns(report: mk.IngestReport) -> list[str]:
    return sorted(e["proposedSnapshot"][1]["urn"] for e in report.events)


def _names(report: mk.IngestReport) -> dict[str, str]:
    """The DatasetProperties name of each emitted entity."""
    out = {}
    for event in report.events:
        for name, value in event["proposedSnapshot"][1]["aspects"]:
            if name.endswith("DatasetProperties"):
                out[event["proposedSnapshot"][1]["urn"]] = value["name"]
    return out


def _pattern_warnings(report: mk.IngestReport) -> list[str]:
    return [str(w) for w in report.warnings if w.where.startswith("source.config.")]


# -- include and exclude: a name with a dot is quoted ----------------------------------------------


def test_postgres_patterns_tell_a_dotted_schema_from_a_dotted_table(workspace, postgres_db):
    """Schema a with table "b.c" and schema "a.b" with table c were both the text a.b.c: a
    pattern meant for one matched the other. Now they are a."b.c" and "a.b".c."""
    run_postgres(
        postgres_db,
        'CREATE SCHEMA a; CREATE SCHEMA "a.b"; CREATE TABLE a."b.c" (x INT); '
        'CREATE TABLE "a.b".c (y TEXT); CREATE TABLE a.d (z INT);',
    )
    database = postgres_db.rpartition("/")[2]
    shared = mk.make_dataset_urn("postgres", f"{database}.a.b.c")
    d = mk.make_dataset_urn("postgres", f"{database}.a.d")

    # Schema a's tables, and only them: "a.b".c is not in schema a, so the URN is not shared.
    report = mk.ingest(
        workspace, sql_recipe(postgres_db, pipeline="pg", include=["a.*"]), dry_run=True
    )
    assert report.exit_status == 0, report.summary()
    assert _names(report) == {shared: "b.c", d: "d"}

    # Each of the two is left out by its own pattern, and only by it.
    for pattern, kept in (('"a.b".c', "b.c"), ('a."b.c"', "c")):
        report = mk.ingest(
            workspace, sql_recipe(postgres_db, pipeline="pg", exclude=[pattern]), dry_run=True
        )
        assert report.exit_status == 0, report.summary()
        assert _names(report) == {shared: kept, d: "d"}
        assert _pattern_warnings(report) == []

    # Unquoted, the text matches neither table: the run says so, and the URN is still refused.
    report = mk.ingest(
        workspace, sql_recipe(postgres_db, pipeline="pg", exclude=["a.b.c"]), dry_run=True
    )
    assert _urns(report) == [d]
    ((where, message),) = [(p.where, p.message) for p in report.failures]
    assert where == shared
    assert "their patterns, in order: 'a.\"b.c\"', '\"a.b\".c'" in message
    assert _pattern_warnings(report) == [
        "source.config.exclude: the pattern 'a.b.c' matched no table or view; patterns match "
        'schema.table, with a name that holds "." or \'"\' in double quotes (a."b.c" is table '
        "b.c of schema a)"
    ]
    # Failures name the table as patterns write it.
    assert [c.where for c in report.changes] == ["table a.d"]


def test_sqlite_patterns_tell_main_dot_orders_from_a_table_named_so(workspace, tmp_path):
    """SQLite's tables are in schema main: the pattern main.orders names table orders, not a
    table called "main.orders" (which it matched, as the text was the bare table name)."""
    db = tmp_path / "shop.db"
    run_sql(db, 'CREATE TABLE orders (id INT); CREATE TABLE "main.orders" (id INT, x TEXT);')
    plain = mk.make_dataset_urn("sqlite", "shop.orders")
    dotted = mk.make_dataset_urn("sqlite", "shop.main.orders")

    def names(**config) -> dict[str, str]:
        report = mk.ingest(workspace, sql_recipe(sqlite_url(db), **config), dry_run=True)
        assert report.exit_status == 0, report.summary()
        return _names(report)

    assert names(include=["main.orders"]) == {plain: "orders"}
    assert names(include=["orders"]) == {plain: "orders"}
    assert names(include=['"main.orders"']) == {dotted: "main.orders"}
    assert names(include=['main."main.orders"']) == {dotted: "main.orders"}
    assert names(exclude=["main.*"]) == {}
    assert names(exclude=["*.orders"]) == {dotted: "main.orders"}


def test_a_pattern_that_matches_nothing_is_a_warning(workspace, shop_db):
    """A mistyped include read nothing and an exclude left everything in, without a word."""
    report = mk.ingest(
        workspace,
        sql_recipe(
            sqlite_url(shop_db),
            include=["order*", "custmers", "big_orders"],
            exclude=["refund"],
            include_views=False,
        ),
        dry_run=True,
    )
    assert _urns(report) == [mk.make_dataset_urn("sqlite", "shop.orders")]
    warnings = _pattern_warnings(report)
    assert [w.partition(" matched")[0] for w in warnings] == [
        "source.config.include: the pattern 'custmers'",
        "source.config.exclude: the pattern 'refund'",
    ]
    assert "schema.table or main.table" in warnings[0]


# -- the lake records what a run saw, even when nothing changed ------------------------------------

READS: list[str] = []


@dataclass
class _CountingConfig:
    fingerprint: str = "v1"
    description: str = "same"


class _Counting(Source):
    """One entity whose fingerprint comes from the config; counts its detailed reads."""

    config_class = _CountingConfig

    def work_units(self) -> Iterator[WorkUnit]:
        def read() -> list[A.Aspect]:
            READS.append(self.config.fingerprint)
            return [A.dataset_properties(description=self.config.description)]

        yield WorkUnit(COUNTED, read, self.config.fingerprint, "table t")


COUNTED = mk.make_dataset_urn("acme", "t")


@pytest.fixture
def counting() -> Iterator[str]:
    module = types.ModuleType("counting_source")
    module.Counting = _Counting  # type: ignore[attr-defined]
    sys.modules["counting_source"] = module
    READS.clear()
    try:
        yield "counting_source:Counting"
    finally:
        del sys.modules["counting_source"]


def test_a_fingerprint_that_changes_alone_is_recorded_once(workspace, counting):
    """A fingerprint that changed while the aspects did not (row_counts switched on CSV files,
    a source's new _VERSION) was never recorded: every later run read the entity again."""

    def run(fingerprint: str, **config) -> mk.IngestReport:
        recipe = {
            "source": {"type": counting, "config": {"fingerprint": fingerprint, **config}},
            "pipeline_name": "p",
        }
        return mk.ingest(workspace, recipe, progress=False)

    assert run("v1").events_emitted == 1
    assert run("v1").events_emitted == 0
    assert READS == ["v1"]

    changed = run("v2")
    assert READS == ["v1", "v2"]
    assert (changed.entities_unchanged, changed.entities_restated) == (1, 1)
    assert (changed.events_emitted, changed.aspects_emitted) == (1, 1)
    (event,) = changed.events
    assert [name for name, _ in event["proposedSnapshot"][1]["aspects"]] == [A.STATUS_TYPE]
    assert event["systemMetadata"][1]["properties"]["metaverse.fingerprint"] == "v2"
    assert "1 of them for unchanged entities" in changed.summary()
    assert changed.to_dict()["entities"]["restated"] == 1
    assert changed.changes == []

    for _ in range(2):  # the next runs skip it again
        again = run("v2")
        assert (again.events_emitted, again.entities_restated) == (0, 0)
    assert READS == ["v1", "v2"]
    # And a real change is still seen and emitted.
    assert run("v3", description="new").entities_changed == 1


def test_what_the_lake_holds_already_becomes_the_pipelines(workspace, tmp_path):
    """The lake held exactly what the first run would write (imported from DataHub): the run
    emitted nothing, so the pipeline owned nothing, and a dropped table was never removed."""
    db = tmp_path / "shop.db"
    run_sql(db, "".join(f"CREATE TABLE t{i} (x INT);" for i in range(4)))
    recipe = sql_recipe(sqlite_url(db))
    preview = mk.ingest(workspace, recipe, dry_run=True)
    workspace.emit([{**e, "systemMetadata": None} for e in preview.events])

    first = mk.ingest(workspace, recipe, progress=False)
    assert (first.entities_unchanged, first.entities_restated, first.events_emitted) == (4, 4, 4)
    assert first.aspects_unchanged == 0 and first.aspects_emitted == 12
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0

    run_sql(db, "DROP TABLE t3;")
    gone = mk.ingest(workspace, recipe, progress=False)
    assert [(c.urn, c.kind) for c in gone.changes] == [
        (mk.make_dataset_urn("sqlite", "shop.t3"), "removed")
    ]


# -- sources that change or go away while a run reads them -----------------------------------------


def _columns(workspace: mk.Workspace, urn: str) -> list[str]:
    schema = mk.history.latest_aspect(workspace.replay(progress=False), urn, "schemaMetadata")
    return [f["fieldPath"] for f in schema["fields"]]


def test_a_sqlite_table_altered_or_dropped_while_read_fails_alone(workspace, tmp_path):
    """The catalogue is listed first (the fingerprints) and each table read later. A table
    altered in between was emitted with the new columns under the old fingerprint; altered
    back before the next run, that run skipped it and the lake kept a column the table did
    not have. Now such a table fails alone, and so does one dropped in between."""
    db = tmp_path / "shop.db"
    run_sql(db, "".join(f"CREATE TABLE t{i} (x INT);" for i in range(4)))
    recipe = sql_recipe(sqlite_url(db))
    assert mk.ingest(workspace, recipe, progress=False).entities_added == 4

    def meanwhile(change: mk.EntityChange) -> None:
        if change.urn.endswith("shop.t0,PROD)"):
            run_sql(db, "ALTER TABLE t2 ADD COLUMN y INT; DROP TABLE t3;")

    run_sql(db, "".join(f"ALTER TABLE t{i} ADD COLUMN z INT;" for i in range(1, 4)))
    report = mk.ingest(workspace, recipe, progress=False, on_change=meanwhile)
    assert [(p.where, p.message.partition(":")[0]) for p in report.failures] == [
        ("table t2", "changed while this run read it"),
        ("table t3", "dropped while this run read the database"),
    ]
    assert _urns(report) == [mk.make_dataset_urn("sqlite", "shop.t1")]
    assert report.entities_removed == 0

    # t2 is altered back: the lake must not keep the column it had for a moment.
    run_sql(db, "ALTER TABLE t2 DROP COLUMN y;")
    again = mk.ingest(workspace, recipe, progress=False)
    assert again.exit_status == 0, again.summary()
    assert _columns(workspace, mk.make_dataset_urn("sqlite", "shop.t2")) == ["x", "z"]
    assert [(c.urn, c.kind) for c in again.changes] == [
        (mk.make_dataset_urn("sqlite", "shop.t2"), "changed"),
        (mk.make_dataset_urn("sqlite", "shop.t3"), "removed"),
    ]
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0


@pytest.fixture
def on_query():
    """``on_query(text, action)``: run ``action(dbapi_connection)`` once, before the first
    statement the sql source sends that contains ``text`` (SQLAlchemy's public event hook)."""
    import sqlalchemy as sa

    hooks = []

    def install(text: str, action) -> None:
        state = {"armed": True}

        def hook(conn, cursor, statement, params, context, executemany):
            if state["armed"] and text in statement + str(params):
                state["armed"] = False
                action(conn.connection.dbapi_connection)

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", hook)
        hooks.append(hook)

    yield install
    for hook in hooks:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", hook)


def _admin(url: str, statement: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def test_postgres_connection_lost_mid_schema_emits_none_of_that_schema(
    workspace, postgres_db, on_query
):
    """The server ends the source's connection while it reflects schema s2: no table of s2
    is emitted from half a read, s1's are, nothing is removed, and the failure says so in
    one line (it carried SQLAlchemy's SQL and web link)."""
    run_postgres(
        postgres_db,
        "CREATE SCHEMA s1; CREATE SCHEMA s2; CREATE TABLE s1.a (x INT); "
        "CREATE TABLE s1.gone (x INT); CREATE TABLE s2.b (y INT);",
    )
    recipe = sql_recipe(postgres_db, pipeline="pg", exclude=["public.*"])
    assert mk.ingest(workspace, recipe, progress=False).entities_added == 3
    run_postgres(
        postgres_db,
        "ALTER TABLE s1.a ADD COLUMN z INT; ALTER TABLE s2.b ADD COLUMN z INT; DROP TABLE s1.gone;",
    )
    on_query(
        "'s2'",
        lambda dbapi: _admin(postgres_db, f"SELECT pg_terminate_backend({dbapi.info.backend_pid})"),
    )
    report = mk.ingest(workspace, recipe, progress=False)
    ((where, message),) = [(p.where, p.message) for p in report.failures]
    assert where == "schema s2"
    assert message.startswith("its tables and views were not read: (psycopg.errors.AdminShutdown)")
    assert "[SQL:" not in message
    database = postgres_db.rpartition("/")[2]
    assert _urns(report) == [mk.make_dataset_urn("postgres", f"{database}.s1.a")]
    assert report.entities_removed == 0
    # The next run, on a good connection, reads s2 and removes the dropped table.
    again = mk.ingest(workspace, recipe, progress=False)
    assert sorted((c.urn.split(",")[1], c.kind) for c in again.changes) == [
        (f"{database}.s1.gone", "removed"),
        (f"{database}.s2.b", "changed"),
    ]


def test_postgres_a_view_dropped_while_read_fails_alone(workspace, postgres_db, on_query):
    """A view dropped between the listing and its definition failed its whole schema, as
    "schema s: s.w"; now only the view fails, named."""
    run_postgres(
        postgres_db,
        "CREATE SCHEMA s; CREATE TABLE s.t (x INT); CREATE VIEW s.v AS SELECT x FROM s.t; "
        "CREATE VIEW s.w AS SELECT x FROM s.t;",
    )
    on_query("pg_get_viewdef", lambda dbapi: _admin(postgres_db, "DROP VIEW s.w"))
    report = mk.ingest(workspace, sql_recipe(postgres_db, pipeline="pg", schemas=["s"]))
    assert [(p.where, p.message) for p in report.failures] == [
        (
            "view s.w",
            "its definition cannot be read: s.w does not exist (dropped while this run read "
            "the database?); nothing of it is emitted",
        )
    ]
    database = postgres_db.rpartition("/")[2]
    assert _urns(report) == [
        mk.make_dataset_urn("postgres", f"{database}.s.{n}") for n in ("t", "v")
    ]


# -- odd tables and careless configs ---------------------------------------------------------------


def test_an_empty_column_name_fails_its_table_naming_the_column(workspace, tmp_path):
    """SQLite takes a column named "": the failure said only "The SchemaField record has 1
    problem:" (its first line), naming neither the column nor the problem."""
    db = tmp_path / "odd.db"
    run_sql(db, 'CREATE TABLE e (x INT, "" INT); CREATE TABLE ok (y INT);')
    report = mk.ingest(workspace, sql_recipe(sqlite_url(db)), progress=False)
    assert [(p.where, p.message) for p in report.failures] == [
        (
            "table e",
            "The column 2 ('') has 1 problem: - fieldPath: expected a non-empty field path, got ''",
        )
    ]
    assert _urns(report) == [mk.make_dataset_urn("sqlite", "odd.ok")]


def test_2000_columns_and_a_newline_in_a_name_are_read_whole(workspace, tmp_path, datahub_reads):
    """SQLite's most columns (2,000) make one event well under Event Hubs' 1 MiB, and a name
    with a newline is kept as it is; a rerun skips both."""
    db = tmp_path / "odd.db"
    columns = ", ".join(f"column_with_a_long_name_{i:04d} VARCHAR(255)" for i in range(2000))
    run_sql(db, f'CREATE TABLE wide ({columns}); CREATE TABLE "two\nlines" ("a\nb" INT);')
    recipe = sql_recipe(sqlite_url(db))
    report = mk.ingest(workspace, recipe, progress=False)
    assert report.exit_status == 0, report.summary()
    assert len(_columns(workspace, mk.make_dataset_urn("sqlite", "odd.wide"))) == 2000
    assert _columns(workspace, mk.make_dataset_urn("sqlite", "odd.two\nlines")) == ["a\nb"]
    assert datahub_reads(report.events) == 2
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            {"include_tables": False, "include_views": False},
            "source.config.include_tables and include_views are both false: the source would "
            "read nothing",
        ),
        ({"database": ""}, "source.config.database: empty; leave the key out for the default"),
        ({"platform": ""}, "source.config.platform: empty; leave the key out for the default"),
        ({"URL": "x"}, "source.config.URL: unknown key; did you mean 'url'?"),
    ],
)
def test_careless_sql_configs_are_refused_naming_the_key(workspace, shop_db, config, problem):
    """Both kinds switched off read nothing (exit 0, and later runs removed everything up to
    the fail-safe); an empty database or platform was replaced by the default without a word;
    "URL" got no suggestion, as difflib compares case."""
    recipe = sql_recipe(sqlite_url(shop_db), **config)
    with pytest.raises(RecipeError) as info:
        mk.ingest(workspace, recipe, progress=False)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems
    assert workspace.replay(progress=False).num_rows == 0


def test_postgres_a_schema_the_database_lacks_is_refused(workspace, postgres_db):
    """A mistyped schema (or "S1" for s1) was read as an empty one: nothing read, exit 0."""
    run_postgres(postgres_db, "CREATE SCHEMA s1; CREATE TABLE s1.a (x INT);")
    with pytest.raises(RecipeError) as info:
        mk.ingest(workspace, sql_recipe(postgres_db, schemas=["s1", "S1", "nosuch"]))
    assert info.value.problems == [
        "source.config.schemas[1]: the database has no schema 'S1'; did you mean 's1'? "
        "(it has information_schema, public, s1)",
        "source.config.schemas[2]: the database has no schema 'nosuch' "
        "(it has information_schema, public, s1)",
    ]


# -- what a source no longer reports is taken back -------------------------------------------------


def test_postgres_lineage_a_view_no_longer_has_is_emptied(workspace, postgres_db):
    """A view that stopped reading a table, and a view replaced by a table, kept their
    lineage to it: the source no longer reported UpstreamLineage and nothing compared it.
    ViewProperties cannot be emptied: the run says it stays."""
    run_postgres(
        postgres_db,
        "CREATE TABLE t (x INT); CREATE VIEW v AS SELECT x FROM t; "
        "CREATE VIEW w AS SELECT x FROM t;",
    )
    recipe = sql_recipe(postgres_db, pipeline="pg")
    mk.ingest(workspace, recipe, progress=False)
    run_postgres(
        postgres_db,
        "CREATE OR REPLACE VIEW v AS SELECT 1 AS x; DROP VIEW w; CREATE TABLE w (x INT);",
    )
    report = mk.ingest(workspace, recipe, progress=False)
    database = postgres_db.rpartition("/")[2]
    events = workspace.replay(progress=False)
    for name in ("v", "w"):
        urn = mk.make_dataset_urn("postgres", f"{database}.public.{name}")
        lineage = mk.history.latest_aspect(events, urn, "upstreamLineage")
        assert lineage["upstreams"] == [], name
    assert [(w.where, w.message) for w in report.warnings] == [
        (
            "table public.w",
            "the source no longer reports viewProperties, which this pipeline wrote: it stays "
            "in the lake as last written (a metadata change event cannot remove an aspect)",
        )
    ]
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0


@dataclass
class _TaggingConfig:
    tags: list[str] | None = None


class _Tagging(Source):
    """One entity, with GlobalTags only when ``tags`` is given."""

    config_class = _TaggingConfig

    def work_units(self) -> Iterator[WorkUnit]:
        found = [A.dataset_properties(description="d")]
        if self.config.tags is not None:
            found.append(A.global_tags(self.config.tags))
        yield WorkUnit(COUNTED, found)


def test_tags_a_source_no_longer_reports_go_and_the_stewards_stay(workspace):
    module = types.ModuleType("tagging_source")
    module.Tagging = _Tagging  # type: ignore[attr-defined]
    sys.modules["tagging_source"] = module

    def run(**config) -> mk.IngestReport:
        recipe = {"source": {"type": "tagging_source:Tagging", "config": config}}
        return mk.ingest(workspace, {**recipe, "pipeline_name": "t"}, progress=False)

    def tags() -> list[str]:
        value = mk.history.latest_aspect(workspace.replay(progress=False), COUNTED, "globalTags")
        return [t["tag"] for t in value["tags"]]

    try:
        first = run(tags=["pii"])
        (name, written), *_ = [
            a for a in first.events[0]["proposedSnapshot"][1]["aspects"] if "GlobalTags" in a[0]
        ]
        # A steward adds a tag of their own beside the pipeline's.
        steward = A.global_tags(["gold"])[1]["tags"]
        workspace.emit([A.mce(COUNTED, [(name, {"tags": steward + written["tags"]})])])
        assert tags() == ["urn:li:tag:gold", "urn:li:tag:pii"]
        # The source stops reporting tags: its own goes, the steward's stays.
        report = run()
        assert report.entities_changed == 1
        assert tags() == ["urn:li:tag:gold"]
        assert run().events_emitted == 0
    finally:
        del sys.modules["tagging_source"]
