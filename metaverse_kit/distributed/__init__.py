"""The replay, the history questions and the Parquet export on Spark and on Dask.

::

    from metaverse_kit.distributed import spark_replay, dask_replay
    df = spark_replay(spark, "abfss://capture@account.dfs.core.windows.net/", registry=ws.registry)
    mk.history.state_as_of(df, "2026-02-01")         # a Spark DataFrame in, one out
    ddf = dask_replay("lake/", schemas={schema_id: definition})

Executors and workers decode with the local replay's own per-file decoder; the driver lists
and prunes the files, resolves schemas and plans deduplication (see :mod:`._driver`), so the
rows are those of :func:`metaverse_kit.replay_capture`. :func:`spark_export` and
:func:`dask_export` append to the same Parquet dataset as
:func:`metaverse_kit.history.export.export_parquet`.

Importing this package imports neither pyspark nor dask; each function raises
:class:`~metaverse_kit.errors.MissingDependencyError` with the ``pip install`` line of the
extra (``metaverse-kit[spark]``, ``metaverse-kit[dask]``) when its engine is missing.
"""

from metaverse_kit.distributed._driver import SkippedFilesWarning
from metaverse_kit.distributed._tasks import SkippedFile
from metaverse_kit.distributed.dask import dask_export, dask_replay
from metaverse_kit.distributed.spark import spark_export, spark_replay

__all__ = [
    "SkippedFile",
    "SkippedFilesWarning",
    "dask_export",
    "dask_replay",
    "spark_export",
    "spark_replay",
]
