"""The sql source against real SQLite files and a real PostgreSQL server, through the runner."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.compute as pc
import pytest
from ingest_helpers import run_postgres, run_sql, sql_recipe, sqlite_url

import metaverse_kit as mk
from metaverse_kit.events import aspects as A
from metaverse_kit.ingest import RecipeError, SourceUnreachableError

P = "com.linkedin.pegasus2avro."


def _urn(name: str, platform: str = "sqlite") -> str:
    return mk.make_dataset_urn(platform, name)


def _aspects(event: dict) -> dict[str, dict]:
    return {
        name.rpartition(".")[2]: value for name, value in event["proposedSnapshot"][1]["aspects"]
    }


def _by_urn(report: mk.IngestReport) -> dict[str, dict]:
    return {e["proposedSnapshot"][1]["urn"]: e for e in report.events}


def test_first_run_emits_every_table_and_view(workspace, shop_db, datahub_reads):
    report = mk.ingest(workspace, sql_recipe(sqlite_url(shop_db)), progress=False)
    assert report.exit_status == 0, report.summary()
    events = _by_urn(report)
    assert sorted(events) == sorted(
        _urn(f"shop.{n}") for n in ("big_orders", "customers", "orders", "refunds")
    )
    assert (report.entities_seen, report.entities_added, report.events_emitted) == (4, 4, 4)

    orders = _aspects(events[_urn("shop.orders")])
    assert sorted(orders) == ["DatasetProperties", "SchemaMetadata", "Status"]
    schema = orders["SchemaMetadata"]
    assert schema["platform"] == "urn:li:dataPlatform:sqlite"
    assert schema["primaryKeys"] == ["id"]
    columns = {f["fieldPath"]: f for f in schema["fields"]}
    assert list(columns) == ["id", "customer_id", "total", "paid", "placed_at"]
    assert columns["customer_id"]["nullable"] is False
    assert columns["total"]["nativeDataType"] == "NUMERIC(10, 2)"
    assert columns["total"]["type"]["type"][0] == P + "schema.NumberType"
    assert columns["paid"]["type"]["type"][0] == P + "schema.BooleanType"
    assert columns["placed_at"]["type"]["type"][0] == P + "schema.TimeType"
    assert columns["id"]["isPartOfKey"] and not columns["total"]["isPartOfKey"]
    assert "CREATE TABLE orders" in schema["platformSchema"][1]["tableSchema"]
    assert orders["DatasetProperties"]["qualifiedName"] == "shop.orders"
    assert orders["Status"]["removed"] is False

    view = _aspects(events[_urn("shop.big_orders")])
    assert view["ViewProperties"]["materialized"] is False
    assert "WHERE total > 100" in view["ViewProperties"]["viewLogic"]
    assert view["DatasetProperties"]["customProperties"] == {"is_view": "True"}

    # Which pipeline and run wrote each event is in the event itself.
    meta = events[_urn("shop.orders")]["systemMetadata"][1]
    assert meta["pipelineName"] == "shop" and meta["runId"] == report.run_id
    assert meta["properties"]["metaverse.source"] == "sql"
    # DataHub's own MCE schema reads every event the source emitted.
    assert datahub_reads(report.events) == 4
    # And they are in the lake.
    state = mk.history.state_as_of(workspace.replay(progress=False), "2100-01-01")
    assert pc.sum(pc.equal(state["aspect"], "schemaMetadata")).as_py() == 4


def test_an_immediate_rerun_emits_nothing_and_the_database_is_untouched(workspace, shop_db):
    recipe = sql_recipe(sqlite_url(shop_db))
    mk.ingest(workspace, recipe, progress=False)
    before = hashlib.sha256(shop_db.read_bytes()).hexdigest()
    lake = len(workspace.lake.list_files())
    again = mk.ingest(workspace, recipe, progress=False)
    assert again.events_emitted == 0 and again.events == []
    assert (again.entities_seen, again.entities_unchanged) == (4, 4)
    assert again.aspects_unchanged == 13  # 4 entities x (properties, schema, status) + 1 view
    assert len(workspace.lake.list_files()) == lake
    assert hashlib.sha256(shop_db.read_bytes()).hexdigest() == before


def test_a_dropped_table_gives_one_soft_delete(workspace, shop_db):
    recipe = sql_recipe(sqlite_url(shop_db))
    mk.ingest(workspace, recipe, progress=False)
    run_sql(shop_db, "DROP TABLE refunds;")
    report = mk.ingest(workspace, recipe, progress=False)
    assert report.events_emitted == 1 and report.entities_removed == 1
    (event,) = report.events
    assert event["proposedSnapshot"][1]["urn"] == _urn("shop.refunds")
    assert event["proposedSnapshot"][1]["aspects"] == [A.status(True)]
    state = mk.history.state_as_of(workspace.replay(progress=False), "2100-01-01")
    assert _urn("shop.refunds") not in state["urn"].to_pylist()
    # Removed once: the next run does not remove it again.
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0
    # Created again, it comes back (Status removed=False) with its schema.
    run_sql(shop_db, "CREATE TABLE refunds (id INTEGER PRIMARY KEY, reason TEXT);")
    back = mk.ingest(workspace, recipe, progress=False)
    assert back.entities_added == 1
    restored = _aspects(back.events[0])
    assert restored["Status"]["removed"] is False
    assert [f["fieldPath"] for f in restored["SchemaMetadata"]["fields"]] == ["id", "reason"]


def test_an_added_column_gives_one_schema_metadata_and_its_history(workspace, shop_db):
    recipe = sql_recipe(sqlite_url(shop_db))
    mk.ingest(workspace, recipe, progress=False)
    run_sql(shop_db, "ALTER TABLE customers ADD COLUMN phone VARCHAR(20);")
    report = mk.ingest(workspace, recipe, progress=False)
    assert report.events_emitted == 1 and report.aspects_emitted == 1
    (event,) = report.events
    ((name, _),) = event["proposedSnapshot"][1]["aspects"]
    assert name == P + "schema.SchemaMetadata"
    (change,) = report.changes
    assert change.kind == "changed"
    assert "fields[fieldPath=phone]" in change.aspects[0].changed_fields

    history = mk.history.schema_changes(workspace.replay(progress=False), _urn("shop.customers"))
    last = history.filter(pc.equal(history["change_number"], 1)).to_pylist()
    assert [(r["operation"], r["field_path"], r["after"], r["version"]) for r in last] == [
        ("ADD", "phone", "VARCHAR(20) (StringType)", "0.1.0")
    ]
    first = history.filter(pc.equal(history["change_number"], 0))
    assert first["field_path"].to_pylist() == ["id", "email", "name"]


def test_a_stewards_tag_and_description_survive_a_reingest(workspace, shop_db):
    recipe = sql_recipe(sqlite_url(shop_db))
    mk.ingest(workspace, recipe, progress=False)
    customers = _urn("shop.customers")
    workspace.emit(
        mk.mce(
            customers,
            [A.global_tags(["PII"]), A.editable_dataset_properties("People who buy things")],
        )
    )
    run_sql(shop_db, "ALTER TABLE customers ADD COLUMN phone TEXT;")
    report = mk.ingest(workspace, recipe, progress=False)
    assert report.events_emitted == 1
    events = workspace.replay(progress=False)
    assert mk.history.latest_aspect(events, customers, "globalTags")["tags"][0]["tag"] == (
        "urn:li:tag:PII"
    )
    described = mk.history.latest_aspect(events, customers, "editableDatasetProperties")
    assert described["description"] == "People who buy things"


def test_dry_run_shows_the_diff_and_emits_nothing(workspace, shop_db):
    recipe = sql_recipe(sqlite_url(shop_db))
    mk.ingest(workspace, recipe, progress=False)
    run_sql(shop_db, "ALTER TABLE orders ADD COLUMN note TEXT; DROP VIEW big_orders;")
    files = workspace.lake.list_files()
    seen = []
    report = mk.ingest(workspace, recipe, progress=False, dry_run=True, on_change=seen.append)
    assert workspace.lake.list_files() == files
    assert report.dry_run and report.events_emitted == 2 and len(report.events) == 2
    kinds = {c.urn: c.kind for c in seen if c.kind != "unchanged"}
    assert kinds == {_urn("shop.orders"): "changed", _urn("shop.big_orders"): "removed"}
    text = "\n".join(line for c in report.changes for line in c.lines())
    assert "~ " + _urn("shop.orders") in text
    assert "fields[fieldPath=note]" in text
    assert "- " + _urn("shop.big_orders") in text
    # The real run then emits exactly what the dry run said.
    real = mk.ingest(workspace, recipe, progress=False)
    assert [e["proposedSnapshot"][1]["urn"] for e in real.events] == [
        e["proposedSnapshot"][1]["urn"] for e in report.events
    ]


def test_include_exclude_and_names(workspace, shop_db):
    recipe = sql_recipe(
        sqlite_url(shop_db),
        database="sales",
        exclude=["refunds"],
        include_views=False,
        env="dev",
    )
    report = mk.ingest(workspace, recipe, progress=False)
    assert sorted(_by_urn(report)) == sorted(
        mk.make_dataset_urn("sqlite", f"sales.{n}", "DEV") for n in ("customers", "orders")
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "sqlite:///{missing}"}, "no SQLite database at"),
        (
            {"url": "nonsense://"},
            "cannot connect to nonsense://|is not a SQLAlchemy URL|Can't load",
        ),
        ({"url": "postgresql+psycopg://nobody:secret@127.0.0.1:1/x"}, "cannot connect to"),
    ],
)
def test_an_unreachable_source_says_why(workspace, tmp_path, config, message):
    url = config["url"].replace("{missing}", str(tmp_path / "missing.db"))
    with pytest.raises(SourceUnreachableError, match=message) as info:
        mk.ingest(workspace, sql_recipe(url), progress=False)
    assert "secret" not in str(info.value)
    assert not (tmp_path / "missing.db").exists()  # nothing created on the way


def test_bad_config_keys_are_named(workspace, shop_db):
    with pytest.raises(RecipeError) as info:
        mk.ingest(
            workspace,
            {"source": {"type": "sql", "config": {"ulr": "x", "include_views": "yes"}}},
            progress=False,
        )
    text = str(info.value)
    assert "source.config.ulr: unknown key; did you mean 'url'?" in text
    assert "source.config.url: required" in text
    assert "source.config.include_views: expected true or false, got 'yes'" in text


def test_a_view_follows_the_tables_it_reads_and_a_broken_view_is_a_failure(workspace, shop_db):
    """A view's DDL stays the same when its table changes; what SQLite reports for it does not."""
    run_sql(shop_db, "CREATE VIEW all_refunds AS SELECT * FROM refunds;")
    recipe = sql_recipe(sqlite_url(shop_db))
    mk.ingest(workspace, recipe, progress=False)
    view = _urn("shop.all_refunds")

    run_sql(shop_db, "ALTER TABLE refunds ADD COLUMN reason TEXT;")
    report = mk.ingest(workspace, recipe, progress=False)
    assert {c.urn: c.kind for c in report.changes if c.kind != "unchanged"} == {
        _urn("shop.refunds"): "changed",
        view: "changed",
    }
    schema = mk.history.latest_aspect(workspace.replay(progress=False), view, "schemaMetadata")
    assert [f["fieldPath"] for f in schema["fields"]] == ["id", "order_id", "amount", "reason"]
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0

    # A table it reads is gone: the view cannot be read, which is a failure, not "unchanged".
    run_sql(shop_db, "DROP TABLE refunds;")
    broken = mk.ingest(workspace, recipe, progress=False)
    assert broken.exit_status == 1
    assert [(p.where, p.message) for p in broken.failures] == [
        (
            "view all_refunds",
            "OperationalError: (sqlite3.OperationalError) no such table: main.refunds",
        )
    ]
    assert {c.urn: c.kind for c in broken.changes if c.kind != "unchanged"} == {view: "failed"}
    # The run had a failure, so the dropped table is kept until a clean run removes it.
    assert broken.entities_removed == 0 and broken.warnings.total == 1


def test_two_tables_with_one_urn_are_a_failure_and_neither_is_emitted(workspace, tmp_path):
    """',' is written %2C in a URN and '%' is not encoded, so "a,b" and "a%2Cb" share a URN."""
    db = tmp_path / "c.db"
    run_sql(db, 'CREATE TABLE "a,b" (x INT); CREATE TABLE t (z INT);')
    recipe = sql_recipe(sqlite_url(db), pipeline="c")
    assert mk.ingest(workspace, recipe, progress=False).entities_added == 2
    shared = _urn("c.a,b")
    assert shared == _urn("c.a%2Cb")
    before = mk.history.latest_aspect(workspace.replay(progress=False), shared, "schemaMetadata")

    run_sql(db, 'CREATE TABLE "a%2Cb" (y TEXT, w TEXT); ALTER TABLE t ADD COLUMN u INT;')
    for _ in range(2):  # every run says so, and neither table overwrites the other
        report = mk.ingest(workspace, recipe, progress=False)
        assert report.exit_status == 1
        ((where, message),) = [(p.where, p.message) for p in report.failures]
        assert where == shared
        assert 'table "a%2Cb", table "a,b"' in message and "source.config.exclude" in message
        assert shared not in [c.urn for c in report.changes]
        assert report.entities_removed == 0
    events = workspace.replay(progress=False)
    assert mk.history.latest_aspect(events, shared, "schemaMetadata") == before
    assert mk.history.latest_aspect(events, shared, "status")["removed"] is False

    run_sql(db, 'DROP TABLE "a%2Cb";')
    assert mk.ingest(workspace, recipe, progress=False).exit_status == 0


def test_an_unknown_env_or_a_file_that_is_no_database_exits_2_naming_it(
    workspace, tmp_path, shop_db, capsys
):
    """Both are known before anything is read: a bad config and an unusable source (exit 2)."""
    from metaverse_kit.cli import main

    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("hello\n")
    cases = [
        (
            f"    url: {sqlite_url(shop_db)}\n    env: NOTANENV\n",
            "source.config.env: 'NOTANENV' is not a DataHub environment (FabricType); "
            "use one of DEV, TEST,",
        ),
        (
            f"    url: {sqlite_url(not_a_database)}\n",
            f"{not_a_database} is not a SQLite database",
        ),
    ]
    for config, message in cases:
        recipe = tmp_path / "recipe.yml"
        recipe.write_text(f"source:\n  type: sql\n  config:\n{config}")
        assert main(["--workspace", str(tmp_path / "ws"), "ingest", str(recipe), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("metaverse ingest: error: ") and message in err, err
    assert not_a_database.read_text() == "hello\n"
    with pytest.raises(RecipeError, match=r"source\.config\.env: 'nope' is not"):
        mk.ingest(workspace, sql_recipe(sqlite_url(shop_db), env="nope"), progress=False)
    with pytest.raises(SourceUnreachableError, match="is not a SQLite database"):
        mk.ingest(workspace, sql_recipe(sqlite_url(not_a_database)), progress=False)


# -- PostgreSQL --------------------------------------------------------------------------------

PG_DDL = """
CREATE SCHEMA sales;
CREATE TABLE sales.customers (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL,
    tags TEXT[],
    profile JSONB
);
COMMENT ON TABLE sales.customers IS 'People who buy things';
COMMENT ON COLUMN sales.customers.email IS 'Where receipts go';
CREATE TABLE sales.orders (
    id INTEGER NOT NULL,
    line INTEGER NOT NULL,
    customer_id BIGINT REFERENCES sales.customers(id),
    total NUMERIC(12, 2),
    placed_at TIMESTAMPTZ,
    PRIMARY KEY (id, line)
);
CREATE VIEW sales.big_orders AS SELECT o.id, o.total, c.email
    FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id WHERE o.total > 100;
CREATE MATERIALIZED VIEW sales.daily AS SELECT date(placed_at) AS day, sum(total) AS revenue
    FROM sales.orders GROUP BY 1;
"""


def test_postgres_tables_views_comments_keys_and_lineage(workspace, postgres_db, datahub_reads):
    run_postgres(postgres_db, PG_DDL)
    recipe = sql_recipe(postgres_db, pipeline="pg")
    report = mk.ingest(workspace, recipe, progress=False)
    assert report.exit_status == 0, report.summary()
    database = postgres_db.rpartition("/")[2]

    def urn(name: str) -> str:
        return _urn(f"{database}.sales.{name}", "postgres")

    events = _by_urn(report)
    assert sorted(events) == sorted(urn(n) for n in ("big_orders", "customers", "daily", "orders"))
    customers = _aspects(events[urn("customers")])
    assert customers["DatasetProperties"]["description"] == "People who buy things"
    columns = {f["fieldPath"]: f for f in customers["SchemaMetadata"]["fields"]}
    assert columns["email"]["description"] == "Where receipts go"
    assert columns["email"]["nullable"] is False
    assert columns["tags"]["type"]["type"] == (P + "schema.ArrayType", {"nestedType": ["string"]})
    assert columns["tags"]["nativeDataType"] == "TEXT[]"
    assert columns["profile"]["type"]["type"][0] == P + "schema.RecordType"
    orders = _aspects(events[urn("orders")])["SchemaMetadata"]
    assert orders["primaryKeys"] == ["id", "line"]
    assert orders["platform"] == "urn:li:dataPlatform:postgres"

    view = _aspects(events[urn("big_orders")])
    assert "o.total > " in view["ViewProperties"]["viewLogic"]
    upstreams = {u["dataset"]: u["type"] for u in view["UpstreamLineage"]["upstreams"]}
    assert upstreams == {urn("customers"): "VIEW", urn("orders"): "VIEW"}
    daily = _aspects(events[urn("daily")])
    assert daily["ViewProperties"]["materialized"] is True
    assert datahub_reads(report.events) == 4

    # Rerun: nothing; drop a table and add a column: one soft delete, one SchemaMetadata.
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0
    run_postgres(
        postgres_db,
        "DROP MATERIALIZED VIEW sales.daily; ALTER TABLE sales.customers ADD COLUMN phone TEXT;",
    )
    changed = mk.ingest(workspace, recipe, progress=False)
    assert {c.urn: c.kind for c in changed.changes} == {
        urn("customers"): "changed",
        urn("daily"): "removed",
    }
    assert changed.aspects_emitted == 2
    history = mk.history.schema_changes(workspace.replay(progress=False), urn("customers"))
    assert history.filter(pc.equal(history["change_number"], 1))["field_path"].to_pylist() == [
        "phone"
    ]


def test_postgres_schema_and_table_names_that_share_a_urn_are_a_failure(workspace, postgres_db):
    """Schema a with table "b.c" and schema "a.b" with table c are both <db>.a.b.c."""
    run_postgres(
        postgres_db,
        'CREATE SCHEMA a; CREATE SCHEMA "a.b"; CREATE TABLE a."b.c" (x INT); '
        'CREATE TABLE "a.b".c (y TEXT); CREATE TABLE a.d (z INT);',
    )
    report = mk.ingest(workspace, sql_recipe(postgres_db, pipeline="pg"), progress=False)
    database = postgres_db.rpartition("/")[2]
    ((where, message),) = [(p.where, p.message) for p in report.failures]
    assert where == _urn(f"{database}.a.b.c", "postgres")
    assert 'table "a"."b.c"' in message and 'table "a.b"."c"' in message
    assert [e["proposedSnapshot"][1]["urn"] for e in report.events] == [
        _urn(f"{database}.a.d", "postgres")
    ]
    assert report.exit_status == 1


def test_the_sqlite_file_need_not_be_writable(workspace, shop_db, tmp_path):
    shop_db.chmod(0o444)
    Path(tmp_path).chmod(0o555)
    try:
        report = mk.ingest(workspace, sql_recipe(sqlite_url(shop_db)), progress=False)
    finally:
        Path(tmp_path).chmod(0o755)
        shop_db.chmod(0o644)
    assert report.entities_added == 4


def test_a_wal_database_in_a_folder_this_user_cannot_write_is_read_immutable(tmp_path):
    """SQLite cannot make the -shm file a WAL reader needs there; immutable=1 reads it anyway.

    See https://www.sqlite.org/wal.html#readonly. As root (who writes anywhere) the run is done
    as the user nobody, in a folder outside pytest's (root's is 0700).
    """
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root needs setpriv to read as another user")
    base = Path(tempfile.mkdtemp(prefix="metaverse-wal-"))
    folder, home = base / "db", base / "home"
    try:
        base.chmod(0o755)
        folder.mkdir()
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        db = folder / "w.db"
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=wal")
            conn.execute("CREATE TABLE a (x INTEGER)")
        conn.close()
        assert sorted(p.name for p in folder.iterdir()) == ["w.db"]  # no -wal nor -shm left
        db.chmod(0o644)
        folder.chmod(0o555)
        script = (
            "import json, sys\n"
            "import metaverse_kit as mk\n"
            "from metaverse_kit.errors import warnings_to\n"
            "seen = []\n"
            "with warnings_to(seen.append), mk.connect(path=sys.argv[2]) as ws:\n"
            "    recipe = {'source': {'type': 'sql', 'config': {'url': sys.argv[1]}}}\n"
            "    report = mk.ingest(ws, recipe, dry_run=True, progress=False)\n"
            "print(json.dumps({'added': report.entities_added,\n"
            "    'failures': [str(p) for p in report.failures],\n"
            "    'warnings': [(type(w).__name__, str(w)) for w in seen]}))\n"
        )
        prefix = (
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            if os.geteuid() == 0
            else []
        )
        done = subprocess.run(
            [*prefix, sys.executable, "-c", script, sqlite_url(db), str(home / "ws")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HOME": str(home)},
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.splitlines()[-1])
        assert (result["added"], result["failures"]) == (1, [])
        ((kind, message),) = result["warnings"]
        assert kind == "ImmutableReadWarning"
        assert str(db) in message and "may miss changes" in message
        assert sorted(p.name for p in folder.iterdir()) == ["w.db"]
    finally:
        if folder.exists():
            folder.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_schemas_on_sqlite_are_refused_not_ignored(workspace: mk.Workspace, tmp_path: Path):
    """SQLite has one schema, main: `schemas: [nope]` read every table as if not given."""
    db = tmp_path / "one.db"
    run_sql(db, "CREATE TABLE t (id INTEGER);")
    with pytest.raises(RecipeError, match=r"source.config.schemas: SQLite has one schema, 'main'"):
        mk.ingest(workspace, sql_recipe(sqlite_url(db), schemas=["nope"]), progress=False)
    report = mk.ingest(workspace, sql_recipe(sqlite_url(db), schemas=["main"]), progress=False)
    assert report.entities_added == 1
