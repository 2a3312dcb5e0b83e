"""connect() and the Workspace: where it opens, what it says about itself, emit with any schema."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.workspace import partition_key_of


def test_connect_uses_metaverse_home_then_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.environ["METAVERSE_HOME"] = str(tmp_path / "home")
    with mk.connect() as ws:
        assert ws.path == tmp_path / "home" and ws.backend == "local"
    del os.environ["METAVERSE_HOME"]
    monkeypatch.chdir(tmp_path)
    with mk.connect() as ws:
        assert ws.path is not None and ws.path.resolve() == (tmp_path / ".metaverse").resolve()
    assert (tmp_path / ".metaverse" / "workspace.json").is_file()


def test_a_new_workspace_replays_to_an_empty_table(workspace: mk.Workspace) -> None:
    table = workspace.replay()
    assert table.num_rows == 0 and "proposedSnapshot" in table.column_names


def test_repr_says_backend_namespace_and_eventhub(workspace: mk.Workspace) -> None:
    text = repr(workspace)
    assert text.startswith("<Workspace local:")
    assert "namespace='metaverse-local'" in text and "eventhub='metaverse'" in text


def test_settings_are_fixed_at_creation(tmp_path: Path) -> None:
    mk.connect(path=tmp_path / "w", partition_count=2).close()
    with mk.connect(path=tmp_path / "w") as ws:
        assert ws.hub.partition_ids() == ["0", "1"]
    with pytest.raises(mk.ConfigurationError, match="partition_count=8"):
        mk.connect(path=tmp_path / "w", partition_count=8)


def test_unknown_backends_and_options_are_explained(tmp_path: Path) -> None:
    with pytest.raises(mk.ConfigurationError, match="Unknown backend 'cloud'"):
        mk.connect("cloud")
    with pytest.raises(mk.ConfigurationError, match="takes path, namespace"):
        mk.connect(path=tmp_path / "w", colour="blue")
    assert mk.available_backends()["local"] is None


def test_emit_with_a_schema_of_ones_own(workspace: mk.Workspace) -> None:
    schema = {
        "type": "record",
        "name": "Ping",
        "namespace": "ops",
        "fields": [{"name": "urn", "type": "string"}, {"name": "n", "type": "int"}],
    }
    receipts = workspace.emit(
        [{"urn": "urn:li:corpuser:a", "n": i} for i in range(3)], schema=schema
    )
    assert {r.partition_key for r in receipts} == {"urn:li:corpuser:a"}
    assert workspace.registry.list_schemas("metadata") == [mk.MCE_FULL_NAME, "ops.Ping"]
    table = workspace.replay(schema=json.dumps(schema))
    assert table["n"].to_pylist() == [0, 1, 2]
    # Read with the MCE schema, the same events are kept and say why they were not decoded.
    mce_view = workspace.replay()
    assert mce_view.num_rows == 3
    assert "written with schema ops.Ping" in mce_view["decode_error"][0].as_py()
    by_id = workspace.emit({"urn": "u", "n": 9}, schema=receipts[0].schema_id)
    assert by_id[0].schema_id == receipts[0].schema_id


def test_partition_key_of_mces_mcps_and_plain_records() -> None:
    assert partition_key_of(mk.example_mce()) == "urn:li:corpuser:datahub"
    assert partition_key_of({"entityUrn": "urn:li:tag:x"}) == "urn:li:tag:x"
    assert partition_key_of({"n": 1}) is None


@pytest.mark.parametrize("given", ["x" * 10_000, b"bytes", 42, 4.2, None])
def test_emit_refuses_what_is_not_an_event_or_a_list_of_events(
    workspace: mk.Workspace, given: object
) -> None:
    with pytest.raises(TypeError, match=f"not {type(given).__name__}"):
        workspace.emit(given)  # type: ignore[arg-type]
    assert workspace.lake.list_files() == []


def test_emit_of_a_dataframe_says_how_to_emit_its_rows(workspace: mk.Workspace) -> None:
    import pandas as pd

    with pytest.raises(TypeError, match=r"not DataFrame .*to_dict\('records'\)"):
        workspace.emit(pd.DataFrame({"urn": ["a"]}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ("namespace", "../../../../elsewhere", "namespace name"),
        ("namespace", "short", "6 to 50 characters"),
        ("namespace", "ends-with-", "ending with a letter or digit"),
        ("namespace", "my-namespace-sb", "-sb"),
        ("eventhub", "..", "event hub name"),
        ("eventhub", "a/b", "event hub name"),
        ("eventhub", "x" * 257, "1 to 256"),
        ("schema_group", "..", "schema group name"),
        ("schema_group", "a\x00b", "schema group name"),
    ],
)
def test_names_break_no_azure_rule_and_nothing_is_written(
    tmp_path: Path, option: str, value: str, rule: str
) -> None:
    with pytest.raises(mk.ConfigurationError, match=rule):
        mk.connect(path=tmp_path / "w", **{option: value})
    assert not (tmp_path / "w").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_workspace_file_edited_to_leave_the_workspace_is_refused(tmp_path: Path) -> None:
    mk.connect(path=tmp_path / "w").close()
    settings = json.loads((tmp_path / "w" / "workspace.json").read_text())
    (tmp_path / "w" / "workspace.json").write_text(json.dumps({**settings, "eventhub": ".."}))
    with pytest.raises(mk.ConfigurationError, match=r"workspace\.json gives eventhub as '\.\.'"):
        mk.connect(path=tmp_path / "w")


def test_the_hub_checks_the_names_it_builds_paths_from(tmp_path: Path) -> None:
    from metaverse_kit.backends.local.hub import LocalEventHub

    for namespace, eventhub in (("..", "e"), ("n", "a/b"), ("n", "")):
        with pytest.raises(mk.ConfigurationError, match="folder name"):
            LocalEventHub(
                tmp_path / "lake", tmp_path / "hub", namespace=namespace, eventhub=eventhub
            )


def test_backends_declare_their_options_and_connect_checks_them(tmp_path: Path) -> None:
    from metaverse_kit.backends.azure import factory as azure_factory
    from metaverse_kit.backends.local import factory as local_factory

    assert local_factory.OPTIONS[:2] == ("path", "namespace") and "clock" in local_factory.OPTIONS
    assert "fully_qualified_namespace" in azure_factory.OPTIONS
    with pytest.raises(mk.ConfigurationError, match="Unknown options colour, size for the local"):
        mk.connect(path=tmp_path / "w", colour="blue", size=3)
    assert not (tmp_path / "w").exists()
    with pytest.raises(mk.ConfigurationError, match="Unknown option lake for the local"):
        mk.connect(path=tmp_path / "w", lake="abfss://x")


def test_what_backends_can_do_is_part_of_the_contract(workspace: mk.Workspace) -> None:
    from metaverse_kit.backends.azure.hub import AzureEventHub
    from metaverse_kit.backends.azure.registry import AzureSchemaRegistry
    from metaverse_kit.backends.protocols import EventHub, SchemaRegistry

    assert isinstance(workspace.registry, SchemaRegistry) and isinstance(workspace.hub, EventHub)
    assert workspace.registry.lists_all_schemas and workspace.registry.listing_note == ""
    assert workspace.registry.can_create_groups and workspace.hub.clock is not None
    assert workspace.registry.create_group("more").name == "more"
    assert AzureSchemaRegistry.lists_all_schemas is False
    assert AzureSchemaRegistry.can_create_groups is False and AzureEventHub.clock is None


def test_every_event_gets_its_own_version_4_uuid_as_message_id(workspace: mk.Workspace) -> None:
    import uuid

    receipts = workspace.emit([mk.example_mce()] * 50)
    ids = [r.message_id for r in receipts]
    assert len(set(ids)) == 50
    assert all(uuid.UUID(hex=i).version == 4 and uuid.UUID(hex=i).hex == i for i in ids)


@pytest.mark.parametrize(
    ("properties", "words"),
    [
        ({"flag": True}, "as text ('true' or 'false')"),
        ({"raw": b"\x00\x01"}, "not bytes; encode bytes as text"),
        ({"list": [1]}, "not list"),
        ({"big": 2**64}, "fit in 64 bits"),
        ({"nul": "a\x00b"}, "NUL"),
        ({"": "x"}, "non-empty"),
        # History orders writes by it: these became a missing time in the audit trail.
        ({"metaverse-emitted-time": "yesterday"}, "epoch milliseconds, a whole number"),
        ({"metaverse-emitted-time": -5}, "got -5"),
        ({"metaverse-emitted-time": 10**17}, "got 100000000000000000"),
    ],
)
def test_properties_the_hub_cannot_carry_are_refused_before_the_outbox(
    workspace: mk.Workspace, properties: dict, words: str
) -> None:
    with pytest.raises(mk.ValidationError, match=re.escape(words)):
        workspace.emit(mk.aspects.example_mce(), properties=properties)
    assert len(workspace.outbox) == 0 and not workspace.lake.list_files()
    # None is a value Capture and AMQP carry (how a producer leaves out the emit-time stamp).
    receipt = workspace.emit(
        mk.aspects.example_mce(), properties={"n": 7, "x": 1.5, "s": "ok", "none": None}
    )
    props = dict(workspace.replay(progress=False).column("properties")[0].as_py())
    assert props["n"] == "7" and props["none"] is None and receipt[0].sequence_number == 0


@pytest.mark.parametrize(
    ("key", "words"),
    [(123, "text, not int"), ("\udc80", "surrogate"), ("", "non-empty text")],
)
def test_a_partition_key_the_hub_cannot_carry_is_refused_before_the_outbox(
    workspace: mk.Workspace, key: object, words: str
) -> None:
    """It raised AttributeError or UnicodeEncodeError from the hub after the outbox wrote the
    events, which then failed every retry."""
    with pytest.raises(mk.ValidationError, match=words):
        workspace.emit(mk.aspects.example_mce(), partition_key=key)  # type: ignore[arg-type]
    assert len(workspace.outbox) == 0 and not workspace.lake.list_files()


def test_check_refuses_what_emit_would_and_writes_nothing(workspace: mk.Workspace) -> None:
    """A dry run or a preview asks the workspace, which holds the rules: schema, properties,
    partition key and Event Hubs' size."""
    good = mk.aspects.example_mce()
    bad = mk.mce(mk.make_user_urn("x"), [mk.aspects.status(False)])
    bad["proposedSnapshot"][1]["aspects"][0][1]["removed"] = "no"
    workspace.check([good, good])
    for args, kwargs, words in [
        ([good, bad], {}, "events[1].proposedSnapshot.aspects[0].removed"),
        ([good], {"properties": {"flag": True}}, "as text ('true' or 'false')"),
        ([good], {"partition_key": 7}, "text, not int"),
    ]:
        with pytest.raises(mk.ValidationError, match=re.escape(words)):
            workspace.check(args, **kwargs)
    big = mk.mce(
        mk.make_dataset_urn("hive", "db.wide"),
        [mk.aspects.dataset_properties(description="x" * 1_100_000)],
    )
    with pytest.raises(mk.ValidationError, match="more than Event Hubs takes"):
        workspace.check(big)
    assert len(workspace.outbox) == 0 and not workspace.lake.list_files()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("partition_count", 0),
        ("partition_count", 2000),
        ("window_seconds", 5),
        ("codec", "gzip"),
        ("compatibility", "Bogus"),
        ("partition_cout", 8),
    ],
)
def test_a_bad_setting_in_workspace_json_is_refused_naming_the_file(
    tmp_path: Path, key: str, value: object
) -> None:
    mk.connect(path=tmp_path / "w").close()
    path = tmp_path / "w" / "workspace.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(mk.ConfigurationError) as info:
        mk.connect(path=tmp_path / "w")
    assert str(info.value).startswith(f"{path} gives {key} as {value!r}; ")


@pytest.mark.parametrize(
    "option",
    [
        {"partition_count": 0},
        {"partition_count": "4"},
        {"window_seconds": 5},
        {"codec": "gzip"},
        {"compatibility": "Bogus"},
    ],
)
def test_a_refused_option_leaves_no_workspace_behind(tmp_path: Path, option: dict) -> None:
    with pytest.raises(mk.ConfigurationError, match=f"The option {next(iter(option))}="):
        mk.connect(path=tmp_path / "w", **option)
    assert list(tmp_path.iterdir()) == []
    mk.connect(path=tmp_path / "w").close()  # the same folder opens (it was left broken)


def test_a_workspace_path_that_is_not_utf8_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """Such a workspace took events and then failed every replay with a UnicodeEncodeError
    naming no path (a replay names each event's file in a UTF-8 column)."""
    import os

    target = tmp_path / os.fsdecode(b"ws\xff")
    with pytest.raises(mk.ConfigurationError) as refused:
        mk.connect(path=target)
    assert str(refused.value) == (
        f"The workspace path {tmp_path}/ws\\xff is not UTF-8 text: replays name their files in "
        "UTF-8; rename the folder, or use one whose name is UTF-8"
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(mk.ConfigurationError, match=r"The lake path .* is not UTF-8 text"):
        mk.replay_capture(target)
