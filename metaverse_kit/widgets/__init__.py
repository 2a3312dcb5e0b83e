"""Notebook widgets: browse the registry, compose and emit MCEs, explore the lake's history.

Each widget is a controller class with a lazily built ``.widget`` (an ipywidgets container);
display it by leaving it as the last expression of a cell or with ``.show()``. The classes are
imported on first use so that ``import metaverse_kit`` does not pay for ipywidgets.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SchemaBrowser": "metaverse_kit.widgets.schema_browser",
    "EventComposer": "metaverse_kit.widgets.event_composer",
    "BatchEmitter": "metaverse_kit.widgets.batch_emitter",
    "HistoryExplorer": "metaverse_kit.widgets.history_explorer",
    "IngestionRunner": "metaverse_kit.widgets.ingestion_runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metaverse_kit.widgets' has no attribute {name!r}")
