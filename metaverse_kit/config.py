"""The one place where metaverse-kit reads the environment.

Explicit arguments to :func:`metaverse_kit.connect` always win; these variables fill in only
what was not given:

==========================  =====================================================
``METAVERSE_BACKEND``       ``local`` (the default) or ``azure``
``METAVERSE_HOME``          the local workspace folder (default ``./.metaverse``)
==========================  =====================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULT_WORKSPACE", "default_backend", "default_workspace_path"]

DEFAULT_WORKSPACE = ".metaverse"


def default_backend(environ: Mapping[str, str] | None = None) -> str:
    """The backend ``connect()`` uses when none is named: ``$METAVERSE_BACKEND`` or ``local``."""
    env = os.environ if environ is None else environ
    return env.get("METAVERSE_BACKEND", "").strip() or "local"


def default_workspace_path(environ: Mapping[str, str] | None = None) -> Path:
    """The local workspace folder: ``$METAVERSE_HOME``, else ``./.metaverse``."""
    env = os.environ if environ is None else environ
    home = env.get("METAVERSE_HOME", "").strip()
    return Path(home).expanduser() if home else Path(DEFAULT_WORKSPACE)
