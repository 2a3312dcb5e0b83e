"""Ingestion: sources read real systems, and only what changed since the lake's state is emitted.

::

    import metaverse_kit as mk
    report = mk.ingest(ws, {"source": {"type": "sql", "config": {"url": "sqlite:///shop.db"}},
                            "pipeline_name": "shop"})
    print(report)                       # counts, warnings, failures
    report.changes                      # per entity: added / changed / removed, and which fields

From the shell: ``metaverse ingest recipe.yml [--dry-run]``. The pieces:
:mod:`~metaverse_kit.ingest.source` (the protocol plugins implement, and how they are found),
:mod:`~metaverse_kit.ingest.config` (configs with errors naming the key),
:mod:`~metaverse_kit.ingest.runner` (the comparison with the lake and the emission),
:mod:`~metaverse_kit.ingest.report`, and the built-in sources in
:mod:`metaverse_kit.ingest.sources`.
"""

from metaverse_kit.ingest.config import ConfigField, RecipeError, config_fields, parse_config
from metaverse_kit.ingest.report import AspectChange, CappedList, EntityChange, IngestReport
from metaverse_kit.ingest.runner import Recipe, ingest, load_recipe, pipeline_source_urn
from metaverse_kit.ingest.source import (
    ENTRY_POINT_GROUP,
    Source,
    SourceContext,
    SourceUnreachableError,
    WorkUnit,
    available_sources,
    get_source,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "AspectChange",
    "CappedList",
    "ConfigField",
    "EntityChange",
    "IngestReport",
    "Recipe",
    "RecipeError",
    "Source",
    "SourceContext",
    "SourceUnreachableError",
    "WorkUnit",
    "available_sources",
    "config_fields",
    "get_source",
    "ingest",
    "load_recipe",
    "parse_config",
    "pipeline_source_urn",
]
