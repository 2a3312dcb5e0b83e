"""Fixtures of the ingestion tests: a real PostgreSQL server, SQLite files, DataHub's MCE reader.

PostgreSQL is Debian's server (``make test`` installs ``postgresql`` with apt when missing),
started once per session with ``initdb`` and ``pg_ctl`` in a temporary folder on 127.0.0.1,
and stopped at the end. As root, both run as the ``postgres`` system user (initdb refuses root).
Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import fastavro
import pytest
from ingest_helpers import SHOP_DDL, run_sql

import metaverse_kit as mk

DATAHUB_WHEEL = "acryl_datahub-1.7.0.17-py3-none-any.whl"


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    """A SQLite file with three tables and a view."""
    path = tmp_path / "shop.db"
    run_sql(path, SHOP_DDL)
    return path


# -- PostgreSQL ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for the session; yields the URL of its server (no db)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip(
            "PostgreSQL is not installed; `make postgresql` (part of make test) installs it"
        )
    bindir = Path(found[-1]).parent
    as_root = os.geteuid() == 0
    # NOTE: not under pytest's tmp folder: as root that is 0700 and the postgres user needs it.
    base = Path(tempfile.mkdtemp(prefix="metaverse-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        for p in (base, sock):
            shutil.chown(p, "postgres", "postgres")
    port = _free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode:
            log = (base / "log").read_text() if (base / "log").exists() else ""
            raise RuntimeError(f"{cmd[0]} failed: {done.stderr}{done.stdout}\n{log}")

    run(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--no-sync",
    )
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(base / "log"),
        "-w",
        "start",
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_server: str) -> Iterator[str]:
    """A fresh database on the session's server; yields its SQLAlchemy URL."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield f"{postgres_server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


# -- DataHub reads what we emit ------------------------------------------------------------------


@pytest.fixture(scope="session")
def datahub_reads(pytestconfig: pytest.Config) -> Callable[[list[dict]], int]:
    """``datahub_reads(events)``: decode each event with DataHub's own MCE schema; returns how many.

    Every event counts: the built-in schema carries only aspects DataHub's MCE has. Skips
    without DataHub's wheel.
    """
    wheel = pytestconfig.rootpath / ".cache" / DATAHUB_WHEEL
    if not wheel.is_file():
        pytest.skip(f"DataHub's wheel is not at {wheel}; `make test-deps` downloads it")
    with zipfile.ZipFile(wheel) as zf:
        theirs = fastavro.parse_schema(
            json.loads(zf.read("datahub/metadata/schemas/MetadataChangeEvent.avsc"))
        )
    ours = fastavro.parse_schema(json.loads(mk.mce_definition()))

    def check(events: list[dict]) -> int:
        read = 0
        for event in events:
            aspects = event["proposedSnapshot"][1]["aspects"]
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, ours, event)
            buf.seek(0)
            decoded = fastavro.schemaless_reader(buf, ours, theirs, return_record_name=False)
            assert decoded["proposedSnapshot"]["urn"] == event["proposedSnapshot"][1]["urn"]
            assert len(decoded["proposedSnapshot"]["aspects"]) == len(aspects)
            read += 1
        return read

    return check
