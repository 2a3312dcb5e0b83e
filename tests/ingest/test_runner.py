"""The runner and the source protocol: configs, recipes, plugins, stewards' aspects, reports."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.events import aspects as A
from metaverse_kit.ingest import (
    RecipeError,
    Source,
    available_sources,
    config_fields,
    get_source,
    load_recipe,
    parse_config,
    pipeline_source_urn,
)

TABLE = mk.make_dataset_urn("acme", "warehouse.orders")

PLUGIN = """
from dataclasses import dataclass, field
from metaverse_kit.events import aspects as A
from metaverse_kit.ingest import Source, WorkUnit

@dataclass
class AcmeConfig:
    tags: list[str] = field(default_factory=list)
    fail: int = 0
    description: str = "From Acme"
    skip: bool = False

class AcmeSource(Source):
    config_class = AcmeConfig
    description = "Acme's catalogue"

    def work_units(self):
        if self.config.skip:
            return
        yield WorkUnit(
            "{table}",
            [A.dataset_properties(description=self.config.description),
             A.global_tags(self.config.tags),
             A.editable_dataset_properties("a source must not write this")],
        )
        for i in range(self.config.fail):
            def broken(i=i):
                raise ValueError(f"table {{i}} cannot be read")
            yield WorkUnit(f"urn:li:dataset:(urn:li:dataPlatform:acme,t{{i}},PROD)", broken,
                           where=f"table t{{i}}")
"""


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A third-party source installed the way pip installs one: a dist-info with an entry point."""
    site = tmp_path / "site"
    (site / "acme_metaverse").mkdir(parents=True)
    (site / "acme_metaverse" / "__init__.py").write_text(PLUGIN.format(table=TABLE))
    info = site / "acme_metaverse-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-metaverse\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[metaverse_kit.sources]\nacme = acme_metaverse:AcmeSource\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return "acme"


def _acme(**config) -> dict:
    return {"source": {"type": "acme", "config": config}, "pipeline_name": "acme"}


def test_third_party_sources_register_through_entry_points(workspace, acme):
    assert available_sources()["acme"] is None
    assert set(available_sources()) >= {"files", "sql", "schema-registry", "csv", "acme"}
    assert get_source("acme").description == "Acme's catalogue"
    report = mk.ingest(workspace, _acme(), progress=False)
    assert report.entities_added == 1
    with pytest.raises(RecipeError, match="unknown source 'nope'; known sources: files, sql"):
        get_source("nope")
    assert get_source("acme_metaverse:AcmeSource") is get_source("acme")
    with pytest.raises(RecipeError, match="not a metaverse_kit Source subclass"):
        get_source("pathlib:Path")


def test_stewards_tags_survive_and_editable_aspects_are_theirs(workspace, acme):
    mk.ingest(workspace, _acme(tags=["Certified"]), progress=False)
    events = workspace.replay(progress=False)
    tags = mk.history.latest_aspect(events, TABLE, "globalTags")["tags"]
    assert [t["tag"] for t in tags] == ["urn:li:tag:Certified"]
    assert tags[0]["attribution"]["source"] == pipeline_source_urn("acme")
    assert mk.history.latest_aspect(events, TABLE, "editableDatasetProperties") is None

    # A steward adds a tag and a description by hand.
    current = [(t["tag"], t["attribution"]) for t in tags]
    by_hand = A.global_tags(["PII"])[1]["tags"]
    workspace.emit(
        mk.mce(
            TABLE,
            [
                (
                    "com.linkedin.pegasus2avro.common.GlobalTags",
                    {
                        "tags": [
                            {
                                "tag": tag,
                                "context": None,
                                "attribution": (
                                    "com.linkedin.pegasus2avro.common.MetadataAttribution",
                                    {**attr, "sourceDetail": dict(attr["sourceDetail"] or {})},
                                ),
                            }
                            for tag, attr in current
                        ]
                        + by_hand
                    },
                ),
                A.editable_dataset_properties("Curated by the data team"),
            ],
        )
    )
    # The source now reports another tag instead of Certified, and a new description.
    report = mk.ingest(workspace, _acme(tags=["Gold"], description="New"), progress=False)
    assert report.aspects_kept_for_stewards == 2  # the editable one dropped, the tags merged
    assert next(str(w) for w in report.warnings).endswith(
        "editableDatasetProperties is the stewards' own: a source never writes it"
    )
    events = workspace.replay(progress=False)
    tags = mk.history.latest_aspect(events, TABLE, "globalTags")["tags"]
    assert [t["tag"] for t in tags] == ["urn:li:tag:PII", "urn:li:tag:Gold"]
    assert tags[0]["attribution"] is None
    assert (
        mk.history.latest_aspect(events, TABLE, "editableDatasetProperties")["description"]
        == "Curated by the data team"
    )
    assert mk.history.latest_aspect(events, TABLE, "datasetProperties")["description"] == "New"
    # And nothing changes on a rerun.
    assert (
        mk.ingest(workspace, _acme(tags=["Gold"], description="New"), progress=False).events_emitted
        == 0
    )


def test_failures_are_counted_and_capped_and_stop_removals(workspace, acme):
    mk.ingest(workspace, _acme(fail=0), progress=False)
    report = mk.ingest(workspace, _acme(fail=30), progress=False)
    assert report.exit_status == 1
    assert (report.failures.total, len(report.failures), report.failures.dropped) == (30, 20, 10)
    assert str(next(iter(report.failures))) == "table t0: table 0 cannot be read"
    assert "... and 10 more" in report.summary()
    # The table itself was seen, so nothing is removed; nor would anything be, with failures.
    assert report.entities_removed == 0


def test_unseen_entities_are_removed_only_by_their_own_source_and_pipeline(workspace, acme):
    mk.ingest(workspace, _acme(), progress=False)

    @dataclass
    class Empty:
        pass

    class Nothing(Source):
        config_class = Empty

        def work_units(self):
            return iter(())

    import sys
    import types

    module = types.ModuleType("nothing_source")
    module.Nothing = Nothing
    sys.modules["nothing_source"] = module
    try:
        # Another source type under the same pipeline name removes nothing of acme's.
        other = {"source": {"type": "nothing_source:Nothing"}, "pipeline_name": "acme"}
        assert mk.ingest(workspace, other, progress=False).entities_removed == 0
    finally:
        del sys.modules["nothing_source"]
    # The same source under another pipeline name removes nothing either.
    elsewhere = {"source": {"type": "acme", "config": {"skip": True}}, "pipeline_name": "b"}
    assert mk.ingest(workspace, elsewhere, progress=False).entities_removed == 0
    keep = {**_acme(skip=True), "remove_unseen": False}
    assert mk.ingest(workspace, keep, progress=False).entities_removed == 0
    # All of the pipeline's entities unseen: more than the fail-safe threshold removes.
    held = mk.ingest(workspace, _acme(skip=True), progress=False)
    assert (held.entities_removed, held.exit_status) == (0, 1)
    assert "1 of the 1 entities this pipeline emitted (100%) were not seen" in str(
        next(iter(held.failures))
    )
    gone = mk.ingest(workspace, {**_acme(skip=True), "fail_safe_threshold": 100}, progress=False)
    assert [(c.urn, c.kind) for c in gone.changes] == [(TABLE, "removed")]


@dataclass
class _Config:
    url: str = field(metadata={"help": "where"})
    mode: Literal["fast", "safe"] = "safe"
    tags: list[str] = field(default_factory=list)
    props: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    ratio: float = 0.5
    on: bool = True


def test_configs_are_checked_key_by_key():
    fields = {f.name: f for f in config_fields(_Config)}
    assert (fields["url"].required, fields["url"].help) == (True, "where")
    assert fields["mode"].choices == ("fast", "safe") and fields["limit"].optional
    assert parse_config(_Config, {"url": "x", "tags": "one", "ratio": 1}).tags == ["one"]
    with pytest.raises(RecipeError) as info:
        parse_config(
            _Config,
            {"mode": "slow", "tags": [1], "props": {"a": 1}, "limit": "3", "on": 1, "rate": 2},
        )
    assert info.value.problems == [
        "source.config.rate: unknown key; did you mean 'ratio'? (known keys: url, mode, tags, "
        "props, limit, ratio, on)",
        "source.config.url: required (where)",
        "source.config.mode: expected one of 'fast', 'safe', got 'slow'",
        "source.config.tags: expected a list of text, got [1]",
        "source.config.props: expected a mapping of text to text, got {'a': 1}",
        "source.config.limit: expected a whole number, got '3'",
        "source.config.on: expected true or false, got 1",
    ]


def test_recipes_from_yaml_with_environment_variables(tmp_path, monkeypatch):
    path = tmp_path / "recipe.yml"
    path.write_text(
        textwrap.dedent("""
        pipeline_name: shop
        source:
          type: sql
          config:
            url: postgresql://app:${SHOP_PASSWORD}@db/shop
    """)
    )
    monkeypatch.setenv("SHOP_PASSWORD", "s3cret")
    recipe = load_recipe(path)
    assert recipe.config["url"] == "postgresql://app:s3cret@db/shop"
    monkeypatch.delenv("SHOP_PASSWORD")
    with pytest.raises(RecipeError, match="the environment variable SHOP_PASSWORD is not set"):
        load_recipe(path)
    path.write_text("source: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(RecipeError) as info:
        load_recipe({"source": {"type": "sql", "cfg": {}}, "sink": {}, "pipeline_name": ""})
    assert info.value.problems == [
        "sink: unknown key (events go to the workspace: use --workspace or mk.ingest(ws, ...)); "
        "a recipe has source, pipeline_name, remove_unseen, fail_safe_threshold",
        "source.cfg: unknown key; a source has type and config",
        "pipeline_name: expected a non-empty name, got ''",
    ]
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        load_recipe(tmp_path / "missing.yml")


def _module_source(name: str, source: type) -> None:
    """Register ``source`` as the importable ``<name>:<class>`` source type."""
    import sys
    import types

    module = types.ModuleType(name)
    setattr(module, source.__name__, source)
    sys.modules[name] = module


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_event_the_workspace_refuses_fails_alone(workspace, dry_run):
    """One entity whose event does not fit the schema is a failure naming it; the others of
    its chunk are emitted and counted (a whole chunk of 500 was refused with it, and a dry
    run, which sends nothing, reported no failure at all)."""
    from metaverse_kit.ingest import WorkUnit

    @dataclass
    class Empty:
        pass

    class Shaky(Source):
        config_class = Empty

        def work_units(self):
            for i in range(1200):
                urn = mk.make_dataset_urn("shaky", f"t{i:04d}")
                bad = ("com.linkedin.pegasus2avro.common.Status", {"removed": "not a boolean"})
                aspects = [bad] if i == 700 else [A.dataset_properties(description=f"t{i}")]
                yield WorkUnit(urn, aspects, where=f"table t{i:04d}")

    _module_source("shaky_source", Shaky)
    recipe = {"source": {"type": "shaky_source:Shaky"}, "pipeline_name": "shaky"}
    report = mk.ingest(workspace, recipe, progress=False, dry_run=dry_run)
    assert report.exit_status == 1
    assert [str(f).split(":")[0] for f in report.failures] == ["table t0700"]
    assert "removed" in str(next(iter(report.failures)))
    assert report.events_emitted == len(report.events) == 1199
    assert report.aspects_emitted == 1199 * 2  # the properties and Status(removed=False)
    assert (report.entities_seen, report.entities_added) == (1200, 1199)
    lake = workspace.replay(progress=False)
    assert lake.num_rows == (0 if dry_run else 1199)


def test_two_runs_at_once_take_turns(tmp_path):
    """Two pipelines tagging one table at once: the second waits for the first and merges
    with what it wrote (it read the lake before the first emitted, and its GlobalTags dropped
    the first one's tag: both runs said "1 emitted")."""
    import threading

    from metaverse_kit.ingest import WorkUnit

    first_reading, second_opened = threading.Event(), threading.Event()

    @dataclass
    class TagConfig:
        tag: str = ""

    class Tagger(Source):
        config_class = TagConfig

        def open(self):
            if self.config.tag == "second":
                second_opened.set()

        def work_units(self):
            if self.config.tag == "first":
                first_reading.set()
                # Without the lock the second run opens, reads the lake and emits here.
                second_opened.wait(timeout=3)
            yield WorkUnit(TABLE, [A.global_tags([self.config.tag])])

    _module_source("tagger_source", Tagger)
    root = tmp_path / "ws"
    mk.connect(path=root).close()
    reports = {}

    def run(tag: str) -> None:
        recipe = {"source": {"type": "tagger_source:Tagger", "config": {"tag": tag}}}
        with mk.connect(path=root) as ws:
            reports[tag] = mk.ingest(ws, {**recipe, "pipeline_name": tag}, progress=False)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert first_reading.wait(timeout=30)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(timeout=60)
    second.join(timeout=60)
    assert [reports[t].events_emitted for t in ("first", "second")] == [1, 1]
    with mk.connect(path=root) as ws:
        state = mk.history.state_as_of(ws.replay(progress=False), "2100-01-01")
    tags = state.filter(pc.equal(state["aspect"], "globalTags")).column("value").to_pylist()
    assert [t["tag"] for t in mk.history.aspect_record(tags[0])["tags"]] == [
        "urn:li:tag:first",
        "urn:li:tag:second",
    ]


@pytest.mark.parametrize("threshold", ["lots", True, -1, 101])
def test_the_fail_safe_threshold_is_a_percentage(threshold):
    with pytest.raises(RecipeError, match="fail_safe_threshold: expected a percentage from 0 to"):
        load_recipe({**_acme(), "fail_safe_threshold": threshold})
    assert load_recipe({**_acme(), "fail_safe_threshold": 10}).fail_safe_threshold == 10.0


def test_recipe_files_in_utf16_cp1252_or_with_a_loop(tmp_path):
    """Windows PowerShell 5 writes UTF-16: read. Other encodings and a YAML alias inside itself
    are a RecipeError naming the file (they were a UnicodeDecodeError or RecursionError)."""
    text = "pipeline_name: café\nsource:\n  type: sql\n  config:\n    url: sqlite:///s.db\n"
    path = tmp_path / "recipe.yml"
    path.write_bytes(text.encode("utf-16"))
    assert load_recipe(path).pipeline_name == "café"
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(RecipeError, match=r"recipe.yml: not UTF-8 text \(byte 18 is 0xe9\)"):
        load_recipe(path)
    path.write_text("pipeline_name: x\nsource:\n  type: sql\n  config:\n    include: &b [*b]\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.problems == [
        "source.config.include[0]: a YAML alias puts this value inside itself"
    ]


def test_a_run_says_when_another_pipeline_owns_what_it_found(workspace, acme):
    """A renamed pipeline (or one named after a URL written another way) finds the old one's
    entities unchanged and emits nothing: it never owns them, so it would never remove them.
    It said nothing; now it names the pipeline to carry on."""
    assert mk.ingest(workspace, _acme(), progress=False).entities_added == 1
    renamed = mk.ingest(workspace, {**_acme(), "pipeline_name": "acme-2"}, progress=False)
    assert (renamed.entities_unchanged, renamed.events_emitted) == (1, 0)
    assert [str(w) for w in renamed.warnings if str(w).startswith("pipeline")] == [
        "pipeline: 1 entities this run found unchanged were emitted by pipeline 'acme' of the "
        "same source: pipeline 'acme-2' does not own them and will not remove them when they "
        "go. To carry on that pipeline, set pipeline_name: 'acme' in the recipe"
    ]
    again = mk.ingest(workspace, _acme(), progress=False)
    assert [str(w) for w in again.warnings if str(w).startswith("pipeline")] == []


def test_an_entity_too_large_for_event_hubs_fails_alone(workspace):
    """A view with a 2.5 MB definition made a 2.5 MB event, which the local hub wrote and
    Event Hubs refuses; now its entity fails alone, naming it, and the others are emitted."""
    from metaverse_kit.ingest import WorkUnit

    @dataclass
    class Empty:
        pass

    class Wide(Source):
        config_class = Empty

        def work_units(self):
            for i, size in enumerate([10, 1_100_000, 10]):
                urn = mk.make_dataset_urn("wide", f"t{i}")
                yield WorkUnit(urn, [A.dataset_properties(description="x" * size)], where=f"t{i}")

    _module_source("wide_source", Wide)
    report = mk.ingest(workspace, {"source": {"type": "wide_source:Wide"}}, progress=False)
    (failure,) = (str(f) for f in report.failures)
    assert failure.startswith("t1: ") and "the event is 1100321 bytes encoded" in failure
    assert "more than Event Hubs takes (1048576 bytes" in failure
    assert (report.events_emitted, workspace.replay(progress=False).num_rows) == (2, 2)


def test_env_and_platform_are_checked_with_the_config():
    """Every source's ``env`` and ``platform`` go into URNs: a wrong one was a failure in the
    middle of a run (the files and registry sources, the sql source) instead of a config
    error naming its key."""

    @dataclass
    class Conventional:
        env: str = "PROD"
        platform: str = ""

    assert parse_config(Conventional, {"env": "dev"}).env == "dev"
    with pytest.raises(RecipeError) as info:
        parse_config(Conventional, {"env": "NOTANENV", "platform": "urn:li:corpuser:x"})
    assert [p.split(":")[0] for p in info.value.problems] == [
        "source.config.env",
        "source.config.platform",
    ]
    assert "is not a DataHub environment (FabricType)" in info.value.problems[0]


def test_a_recipe_giving_a_key_twice_is_refused_and_problems_name_the_file(tmp_path):
    """PyYAML keeps the last of two equal keys: ``type: sql`` then ``type: csv`` ran the csv
    source without a word."""
    path = tmp_path / "shop.yml"
    path.write_text("source:\n  type: sql\n  type: csv\n")
    with pytest.raises(RecipeError, match=r"the key 'type' is given twice \(lines 2 and 3\)"):
        load_recipe(path)
    path.write_text("source:\n  type: sql\nsinks: {}\n")
    with pytest.raises(RecipeError, match=f"The recipe {path} has 1 problem"):
        load_recipe(path)
