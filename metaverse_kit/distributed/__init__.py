"""The replay, the history questions and the Parquet export on Spark and on Dask.

::

    from metaverse_kit.distributed import spark_replay, dask_replay
    df = spark_replay(spark, "abfss://capture@account.dfs.core.windows.net/", registry=ws.registry)
    mk.history.state_as_of(df, "2026-02-01")         # a Spark DataFrame in, one out
    ddf = dask_replay("lake/", schemas=registry_schemas(ws.registry))

Executors and workers call the local replay's decode layer (:mod:`metaverse_kit.history.decode`)
on each file's bytes; the driver lists and prunes the files, ships the schema definitions and
plans deduplication (see :mod:`._plan`), so the rows are those of
:func:`metaverse_kit.replay_capture`, damaged files are skipped or reported as it does, and
:func:`spark_export` and :func:`dask_export` append to the same Parquet dataset as
:func:`metaverse_kit.history.export.export_parquet`.

Importing this package imports neither pyspark nor dask; each function raises
:class:`~metaverse_kit.errors.MissingDependencyError` with the ``pip install`` line of the
extra (``metaverse-kit[spark]``, ``metaverse-kit[dask]``) when its engine is missing.
"""

from metaverse_kit.distributed._plan import registry_schemas
from metaverse_kit.distributed.dask import dask_export, dask_replay
from metaverse_kit.distributed.spark import spark_export, spark_replay

__all__ = [
    "dask_export",
    "dask_replay",
    "registry_schemas",
    "spark_export",
    "spark_replay",
]
