"""Helpers of the ingestion tests (a module of its own: ``conftest`` is not importable by name)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

SHOP_DDL = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    name VARCHAR(80)
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    total NUMERIC(10, 2),
    paid BOOLEAN,
    placed_at TIMESTAMP
);
CREATE TABLE refunds (id INTEGER PRIMARY KEY, order_id INTEGER, amount REAL);
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
"""


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path}"


def run_sql(path: Path, script: str) -> None:
    """Run SQL statements against a SQLite file (the tests' own writes, not the source's)."""
    with sqlite3.connect(path) as conn:
        conn.executescript(script)
    conn.close()


def sql_recipe(url: str, pipeline: str = "shop", **config: Any) -> dict[str, Any]:
    """A recipe for the sql source."""
    return {"source": {"type": "sql", "config": {"url": url, **config}}, "pipeline_name": pipeline}


def run_postgres(url: str, script: str) -> None:
    """Run SQL statements against a PostgreSQL database."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(script)
    engine.dispose()
