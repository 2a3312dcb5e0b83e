"""Sample sources for the ingestion notebook and demo: a SQLite shop database and a folder of files.

They hold the demo's sales datasets (orders, customers, a revenue view) the way a real system
would: tables with keys and types in SQLite, Hive-partitioned Parquet files of orders, and a
CSV of reference data. :func:`make_sample_sources` writes them (again) into a folder.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SampleSources", "make_sample_sources"]

_SHOP = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    name VARCHAR(80),
    country CHAR(2)
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    total NUMERIC(10, 2) NOT NULL,
    placed_at TIMESTAMP NOT NULL
);
CREATE TABLE order_lines (
    order_id INTEGER NOT NULL REFERENCES orders(id),
    line INTEGER NOT NULL,
    sku VARCHAR(20) NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE TABLE campaigns (id INTEGER PRIMARY KEY, name TEXT, budget REAL);
CREATE VIEW revenue_daily AS
    SELECT date(placed_at) AS day, sum(total) AS revenue FROM orders GROUP BY 1;
INSERT INTO customers VALUES (1, 'ann@example.com', 'Ann', 'NO'), (2, 'bo@example.com', 'Bo', 'SE');
INSERT INTO orders VALUES (1, 1, 120.50, '2026-03-01 10:00:00'),
                          (2, 2, 35.00, '2026-03-02 11:30:00');
"""


@dataclass(frozen=True)
class SampleSources:
    """Where the sample sources are, and a recipe for each."""

    folder: Path
    database: Path
    files: Path

    @property
    def sql_recipe(self) -> dict[str, Any]:
        """A recipe for the SQLite database (pipeline ``shop-db``)."""
        return {
            "source": {"type": "sql", "config": {"url": f"sqlite:///{self.database.resolve()}"}},
            "pipeline_name": "shop-db",
        }

    @property
    def files_recipe(self) -> dict[str, Any]:
        """A recipe for the folder of files (pipeline ``lake-files``)."""
        return {
            "source": {"type": "files", "config": {"path": str(self.files.resolve())}},
            "pipeline_name": "lake-files",
        }


def make_sample_sources(folder: str | Path) -> SampleSources:
    """Write ``shop.db`` and ``lake-files/`` into ``folder`` (replacing earlier copies)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(folder)
    database, files = root / "shop.db", root / "lake-files"
    database.unlink(missing_ok=True)
    shutil.rmtree(files, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as conn:
        conn.executescript(_SHOP)
    conn.close()
    orders = pa.table(
        {
            "order_id": pa.array([1, 2], pa.int64()),
            "sku": pa.array(["A-1", "B-7"]),
            "quantity": pa.array([2, 1], pa.int32()),
            "price": pa.array([60.25, 35.0]),
        }
    )
    for day in ("2026-03-01", "2026-03-02"):
        part = files / "sales" / "order_lines" / f"day={day}"
        part.mkdir(parents=True)
        pq.write_table(orders, part / "part-0.parquet")
    (files / "reference").mkdir(parents=True)
    (files / "reference" / "countries.csv").write_text(
        "code,name,currency\nNO,Norway,NOK\nSE,Sweden,SEK\n", encoding="utf-8"
    )
    return SampleSources(root, database, files)
