"""The history questions given a Dask DataFrame: refused, saying what to pass instead, and what
they say to pass answers as the local replay does.

NOTE: refused rather than computed: the questions run locally (Arrow) or on Spark, and
computing a Dask DataFrame here would pull the whole history into this process unasked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.history import HistoryInputError, audit_trail, changes, state_as_of
from tests.distributed.conftest import Lake

WHEN, START = "2026-03-01", "2026-01-01"


def _questions(urn: str) -> dict[str, Any]:
    return {
        "state_as_of": lambda events: state_as_of(events, WHEN),
        "changes": lambda events: changes(events, START, WHEN),
        "audit_trail": lambda events: audit_trail(events, urn),
    }


def test_the_questions_refuse_a_dask_dataframe_saying_what_to_pass(
    demo_lake: Lake, tmp_path: Path
) -> None:
    dask = pytest.importorskip("dask")
    from metaverse_kit.distributed import dask_export, dask_replay

    local = mk.replay_capture(demo_lake.root, registry=demo_lake.registry, progress=False)
    urn = mk.history.aspects(local)["urn"][0].as_py()
    with dask.config.set(scheduler="sync"):
        ddf = dask_replay(demo_lake.root, registry=demo_lake.registry)
        for name, ask in _questions(urn).items():
            with pytest.raises(
                HistoryInputError, match="for a Dask replay: ask the Parquet dataset"
            ) as e:
                ask(ddf)
            message = str(e.value)
            assert "pa.Table.from_pandas(ddf.compute(), preserve_index=False)" in message, name
            assert "dask_export" in message, name
        # Both things the message offers answer as the local replay does.
        computed = pa.Table.from_pandas(ddf.compute(), preserve_index=False)
        dask_export(demo_lake.root, tmp_path / "history", registry=demo_lake.registry)
    for name, ask in _questions(urn).items():
        expected = _without_event_index(ask(local))
        assert expected.num_rows, name
        assert _without_event_index(ask(computed)).equals(expected), name
        assert _without_event_index(ask(tmp_path / "history")).equals(expected), name


def _without_event_index(table: pa.Table) -> pa.Table:
    # NOTE: the row of each event in the table asked: the three tables need not share an order.
    if "event_index" in table.column_names:
        table = table.drop_columns(["event_index"])
    return table
