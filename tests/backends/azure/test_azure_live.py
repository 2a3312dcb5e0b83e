"""Against a real namespace, after ``az login``: runs only when METAVERSE_LIVE_* are set.

METAVERSE_LIVE_NAMESPACE, METAVERSE_LIVE_EVENTHUB, METAVERSE_LIVE_SCHEMA_GROUP and
METAVERSE_LIVE_LAKE name the resources (see docs/azure.md for the roles the identity needs).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import metaverse_kit as mk

pytestmark = pytest.mark.live


def test_register_emit_and_replay_on_azure(live: dict[str, str], tmp_path: Path) -> None:
    with mk.connect(
        "azure",
        path=tmp_path,
        fully_qualified_namespace=live["METAVERSE_LIVE_NAMESPACE"],
        eventhub=live["METAVERSE_LIVE_EVENTHUB"],
        schema_group=live["METAVERSE_LIVE_SCHEMA_GROUP"],
        lake=live["METAVERSE_LIVE_LAKE"],
        retry_total=2,
        send_timeout=30,
    ) as ws:
        assert live["METAVERSE_LIVE_SCHEMA_GROUP"] in ws.registry.list_groups()
        assert len(ws.hub.partition_ids()) >= 1
        (receipt,) = ws.emit(mk.example_mce())
        schema = ws.registry.get_schema(receipt.schema_id)
        assert schema.properties.name == mk.MCE_FULL_NAME
        assert ws.registry.list_versions(ws.schema_group, mk.MCE_FULL_NAME)
        assert ws.outbox.list() == []
        table = ws.replay(start=datetime.now(UTC) - timedelta(days=7))
        assert "message_id" in table.column_names
