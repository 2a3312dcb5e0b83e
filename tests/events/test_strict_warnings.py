"""The schema checks leave the process's warning filters alone.

The strict check silenced the avro package's warning about a logical type it ignores with
``warnings.catch_warnings()``, which swaps the filters of the whole process while it runs: a
filter another thread (a notebook cell, a widget's, the live tail's) set meanwhile was lost
when the check put its copy back, and that thread's warnings went through the check's filter.
The compatibility check did not silence it at all: registering a new version of a schema with
such a logical type warned, and under ``-W error`` it was refused as "not a valid Avro schema".
"""

from __future__ import annotations

import json
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.events.compatibility import breaking_changes
from metaverse_kit.events.strict import check_definition


def _big_definition() -> str:
    """A new definition (the check is cached per text) that takes the check a while."""
    fields = [
        {
            "name": f"f{i}",
            "type": {
                "type": "record",
                "name": f"R{i}",
                "fields": [
                    {"name": "a", "type": "string"},
                    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                    {"name": "local", "type": {"type": "long", "logicalType": "local-time"}},
                ],
            },
        }
        for i in range(1500)
    ]
    namespace = f"t{uuid.uuid4().hex[:12]}"
    return json.dumps({"type": "record", "name": "Big", "namespace": namespace, "fields": fields})


def test_checking_a_definition_never_swaps_the_processs_warning_filters() -> None:
    definition = _big_definition()
    filters = warnings.filters
    done = threading.Event()
    failed: list[BaseException] = []

    def check() -> None:
        try:
            check_definition(definition)
        except BaseException as exc:  # pragma: no cover - reported below
            failed.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=check)
    thread.start()
    swapped = 0
    polls = 0
    while not done.is_set():
        polls += 1
        # NOTE: what another thread sees while the check runs: catch_warnings() put a copy with
        # one more filter in the module's place for the whole parse.
        swapped += warnings.filters is not filters
    thread.join()
    assert not failed, failed
    assert polls > 100  # the check ran long enough to be watched
    assert swapped == 0
    assert warnings.filters is filters


def test_a_filter_set_while_a_definition_is_checked_is_kept() -> None:
    class Mine(UserWarning):
        pass

    definition = _big_definition()
    done = threading.Event()

    def check() -> None:
        try:
            check_definition(definition)
        finally:
            done.set()

    thread = threading.Thread(target=check)
    with warnings.catch_warnings():
        filters = warnings.filters
        thread.start()
        polls = 0
        while not done.is_set():
            polls += 1
            # NOTE: set while the check runs: at once when it swapped the filters (as it did),
            # else after a while.
            if warnings.filters is not filters or polls == 1000:
                warnings.simplefilter("error", Mine)
                break
        assert not done.is_set()  # set while the check ran
        thread.join()
        with pytest.raises(Mine):
            warnings.warn(Mine("still an error"), stacklevel=1)


def _versioned(extra: list[dict]) -> str:
    fields = [
        {"name": "at", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "day", "type": {"type": "string", "logicalType": "date"}},  # on another type
        *extra,
    ]
    return json.dumps({"type": "record", "name": "Ev", "namespace": "t", "fields": fields})


def test_a_new_version_with_a_logical_type_the_avro_package_ignores_registers_silently(
    tmp_path: Path,
) -> None:
    # NOTE: pytest runs with filterwarnings = error: a warning would fail the registration.
    first = _versioned([])
    second = _versioned([{"name": "n", "type": ["null", "long"], "default": None}])
    assert breaking_changes(second, first, "Backward") == []
    third = _versioned([{"name": "m", "type": "long"}])  # no default: old events lack it
    assert any("field m" in line for line in breaking_changes(third, first, "Backward"))
    with mk.connect(path=tmp_path / "ws") as ws, warnings.catch_warnings():
        warnings.simplefilter("error")
        ws.registry.register_schema(ws.schema_group, first)
        props = ws.registry.register_schema(ws.schema_group, second)
        assert props.version == 2


@pytest.mark.parametrize(
    ("union", "where"),
    [
        (["null", "long", {"type": "long", "logicalType": "timestamp-millis"}], "field at in t.R"),
        ({"type": "array", "items": ["int", {"type": "int", "logicalType": "date"}]}, "field at"),
        ({"type": "map", "values": ["string", "string"]}, "field at in record t.R"),
    ],
    ids=["long-and-timestamp", "in-an-array", "in-a-map"],
)
def test_a_union_of_two_branches_of_one_type_is_refused_naming_its_field(
    union: Any, where: str
) -> None:
    # The avro package said "long type already in Union", naming no field.
    definition = json.dumps(
        {
            "type": "record",
            "name": "R",
            "namespace": "t",
            "fields": [{"name": "u", "type": "string"}, {"name": "at", "type": union}],
        }
    )
    with pytest.raises(mk.SchemaParseError, match="two branches of one type") as caught:
        check_definition(definition)
    assert where.replace(" in t.R", " in record t.R") in str(caught.value)
