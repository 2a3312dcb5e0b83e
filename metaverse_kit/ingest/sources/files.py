"""The ``files`` source: Parquet, CSV, JSON lines and Avro files in a folder or a storage container.

Each file is a dataset, except in Hive-partitioned folders (``orders/date=2026-03-01/...``):
the folder whose sub-folders are all ``key=value`` is one dataset, its partition keys columns.
Schemas are inferred with pyarrow (Parquet footers, the first block of a CSV, the first MiB of
JSON lines; Avro files' own writer schema, mapped through the replay's Avro-to-Arrow types),
unified over a dataset's files, newest first. DatasetProperties carries the format, the size,
the number of files, the last modification time and, where the footers give it for free
(Parquet), the row count. A CSV file is UTF-8 (with or without a byte order mark) or UTF-16 with
one; another encoding fails its dataset with the line and the byte offset that do not decode.

The types of CSV and JSON lines columns are inferred from their values: a column with no value
in the rows read (a file with a header and no row, a column left empty, a key always ``null``, an
array always empty) has no type to infer, and is given as ``string`` (``StringType``), its
description saying why, rather than DataHub's ``NullType`` (a column that only ever holds
null); wherever another file of the dataset has values, their type wins. Parquet and Avro
declare their types, a ``null`` one included. A file with no column (0 bytes, or only blank
lines) fails its dataset, unless other files of the dataset give the columns (Spark writes such
a file for an empty partition); a column with no name (an empty header cell) and a name given
twice fail the dataset, naming the file and the columns.

``path`` is a local folder or ``abfs[s]://<container>@<account>.dfs.core.windows.net/<folder>``
(read through the Blob API with ranged reads, so a Parquet footer costs two small requests;
``connection_string`` for keys or the emulator, otherwise ``DefaultAzureCredential``).
A dataset's fingerprint is its files' names, sizes and modification times: a rerun reads
nothing of a dataset whose files did not change.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import functools
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from metaverse_kit.events import aspects as A
from metaverse_kit.events.urns import make_dataset_urn
from metaverse_kit.ingest.source import (
    Source,
    SourceUnreachableError,
    WorkUnit,
    repeated_columns,
    text_encoding,
    text_problem,
)

__all__ = ["FORMATS", "FilesConfig", "FilesSource", "arrow_fields"]

#: In every dataset's fingerprint: a new version reads every dataset again on the next run, for
#: what it now makes of the same files (2: columns with no value are strings, not null).
_VERSION = "files/2"
#: File name endings per format.
FORMATS = {
    "parquet": (".parquet", ".pq"),
    "csv": (".csv",),
    "json": (".jsonl", ".ndjson", ".json"),
    "avro": (".avro",),
}
_PARTITION = re.compile(r"^[^=/]+=[^/]*$")
_HEAD = 1 << 20  # bytes of CSV / JSON lines read to infer a schema
_SAMPLED = 50  # files per dataset whose schemas are unified


@dataclass
class FilesConfig:
    """Config of the ``files`` source."""

    path: str = field(metadata={"help": "a folder, or abfss://container@account.dfs.../folder"})
    platform: str | None = field(
        default=None, metadata={"help": "DataHub platform (default: file, or abs for Azure)"}
    )
    prefix: str | None = field(
        default=None, metadata={"help": "first part of dataset names (default: the folder name)"}
    )
    include: list[str] = field(
        default_factory=list, metadata={"help": "only relative paths matching these globs"}
    )
    exclude: list[str] = field(
        default_factory=list, metadata={"help": "skip relative paths matching these globs"}
    )
    formats: list[str] = field(
        default_factory=lambda: list(FORMATS), metadata={"help": "parquet, csv, json, avro"}
    )
    row_counts: bool = field(
        default=True, metadata={"help": "count rows where it is cheap (Parquet footers)"}
    )
    env: str = field(default="PROD", metadata={"help": "DataHub environment of the datasets"})
    connection_string: str | None = field(
        default=None, metadata={"help": "abfs paths: a storage connection string (secret)"}
    )


@dataclass(frozen=True)
class _File:
    path: str  # relative to the root, with /
    size: int
    mtime_ms: int


# -- Arrow types as DataHub fields -----------------------------------------------------------------


def _kind(t: pa.DataType) -> tuple[str, list[str] | None]:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_boolean(t):
        return "BooleanType", None
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "NumberType", None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "StringType", None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "BytesType", None
    if pa.types.is_date(t):
        return "DateType", None
    if pa.types.is_timestamp(t) or pa.types.is_time(t) or pa.types.is_duration(t):
        return "TimeType", None
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item, _ = _kind(t.value_type)
        return "ArrayType", [item.removesuffix("Type").lower()]
    if pa.types.is_map(t):
        return "MapType", [
            _kind(t.key_type)[0].removesuffix("Type").lower(),
            _kind(t.item_type)[0].removesuffix("Type").lower(),
        ]
    if pa.types.is_struct(t):
        return "RecordType", None
    if pa.types.is_union(t):
        return "UnionType", [_kind(f.type)[0].removesuffix("Type").lower() for f in t]
    return "NullType", None


def arrow_fields(
    schema: pa.Schema,
    *,
    partition_keys: tuple[str, ...] = (),
    native: dict[str, str] | None = None,
    descriptions: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """DataHub SchemaFields for an Arrow schema; struct children as dotted paths (``a.b``).

    ``native`` overrides the native type text of top-level fields (an Avro file's own types);
    ``descriptions`` gives fields (by path) a description.
    """
    out: list[dict[str, Any]] = []

    def add(f: pa.Field, prefix: str) -> None:
        path = f"{prefix}{f.name}"
        kind, nested = _kind(f.type)
        text = (native or {}).get(path) or str(f.type)
        out.append(
            A.schema_field(
                path,
                kind,
                native_type=text,
                nullable=f.nullable,
                description=(descriptions or {}).get(path),
                nested=nested,
                is_partitioning_key=True if f.name in partition_keys and not prefix else None,
            )
        )
        if pa.types.is_struct(f.type):
            for child in f.type:
                add(child, f"{path}.")

    for f in schema:
        add(f, "")
    return out


# -- where the files are -----------------------------------------------------------------------


class _Local:
    def __init__(self, root: str) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise SourceUnreachableError(f"no folder at {self.root}")
        self.name = self.root.name
        self.platform = "file"

    def url(self, rel: str) -> str:
        return (self.root / rel).as_uri() if rel else self.root.as_uri()

    def walk(self) -> Iterator[tuple[str, list[str], list[_File]]]:
        for folder, dirs, names in os.walk(self.root):
            dirs.sort()
            rel = Path(folder).relative_to(self.root).as_posix()
            rel = "" if rel == "." else rel
            files = []
            for name in sorted(names):
                st = os.stat(os.path.join(folder, name))
                path = f"{rel}/{name}" if rel else name
                files.append(_File(path, st.st_size, st.st_mtime_ns // 1_000_000))
            yield rel, list(dirs), files

    def open(self, rel: str) -> BinaryIO:
        return (self.root / rel).open("rb")

    def head(self, rel: str, size: int) -> bytes:
        with self.open(rel) as f:
            return f.read(size)

    def close(self) -> None:
        pass


class _BlobRaw(io.RawIOBase):
    """A blob as a seekable file that reads ranges (a Parquet footer is two small requests)."""

    def __init__(self, blob: Any, size: int) -> None:
        self.blob, self.size, self.pos = blob, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        data = self.blob.download_blob(offset=self.pos, length=n).readall()
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


class _Blobs:
    def __init__(self, url: str, connection_string: str | None) -> None:
        from metaverse_kit.backends.azure.lake import parse_lake_url, storage_retry_policy
        from metaverse_kit.errors import ConfigurationError

        try:
            account, container, prefix = parse_lake_url(url)
        except ConfigurationError as exc:
            raise SourceUnreachableError(str(exc)) from exc
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContainerClient

        try:
            if connection_string:
                self.client = ContainerClient.from_connection_string(connection_string, container)
            else:
                from azure.identity import DefaultAzureCredential

                self.client = ContainerClient(
                    f"https://{account}.blob.core.windows.net",
                    container,
                    credential=DefaultAzureCredential(),
                    retry_policy=storage_retry_policy(),
                )
            self.blobs = [
                b
                for b in self.client.list_blobs(name_starts_with=prefix)
                if b.size and not (b.metadata or {}).get("hdi_isfolder")
            ]
        except AzureError as exc:
            from metaverse_kit.redact import redact

            raise SourceUnreachableError(
                f"cannot list {url}: {redact(' '.join(str(exc).split())[:300])}"
            ) from exc
        self.prefix = prefix
        self.base = f"{url.rstrip('/')}/"
        self.name = prefix.rstrip("/").rpartition("/")[2] or container
        self.platform = "abs"

    def url(self, rel: str) -> str:
        return self.base + rel

    def walk(self) -> Iterator[tuple[str, list[str], list[_File]]]:
        tree: dict[str, tuple[set[str], list[_File]]] = {"": (set(), [])}
        for b in sorted(self.blobs, key=lambda b: b.name):
            rel = b.name[len(self.prefix) :]
            folder, _, _ = rel.rpartition("/")
            parts = folder.split("/") if folder else []
            for i in range(len(parts)):
                parent = "/".join(parts[:i])
                tree.setdefault(parent, (set(), []))[0].add(parts[i])
                tree.setdefault("/".join(parts[: i + 1]), (set(), []))
            mtime = int(b.last_modified.timestamp() * 1000)
            tree[folder][1].append(_File(rel, b.size, mtime))

        def visit(folder: str) -> Iterator[tuple[str, list[str], list[_File]]]:
            dirs = sorted(tree[folder][0])
            yield folder, dirs, tree[folder][1]
            for d in dirs:
                yield from visit(f"{folder}/{d}" if folder else d)

        # NOTE: the caller prunes ``dirs`` in place, as with os.walk; visit() reads it after.
        yield from visit("")

    def open(self, rel: str) -> BinaryIO:
        blob = self.client.get_blob_client(self.prefix + rel)
        size = blob.get_blob_properties().size
        return io.BufferedReader(_BlobRaw(blob, size), buffer_size=1 << 16)

    def head(self, rel: str, size: int) -> bytes:
        blob = self.client.get_blob_client(self.prefix + rel)
        return bytes(blob.download_blob(offset=0, length=size).readall())

    def close(self) -> None:
        self.client.close()


# -- the source ------------------------------------------------------------------------------------


@dataclass
class _Dataset:
    path: str  # relative; a file, or a folder of partitions
    format: str
    files: list[_File]
    partition_keys: tuple[str, ...] = ()


def _format_of(name: str, formats: list[str]) -> str | None:
    lower = name.lower()
    for fmt in formats:
        if lower.endswith(FORMATS[fmt]):
            return fmt
    return None


#: The formats whose column types pyarrow infers from the values read.
_INFERRED = ("csv", "json")
#: The description of a column of those formats with no value in the rows read.
_UNTYPED = (
    "No value in the rows read (the first MiB of each file) tells this column's type: "
    "given as string."
)


def _untyped_as_text(t: pa.DataType, path: str, found: set[str]) -> pa.DataType:
    """``t`` with every null type in it (no value to infer a type from) made ``string``;
    the path of each field (as :func:`arrow_fields` names it) that held one is put in ``found``.

    NOTE: pyarrow types a column it saw no value of as null, which DataHub shows as NullType,
    a column that only ever holds null: nothing says that of a file's column with no row yet.
    """
    if pa.types.is_null(t):
        found.add(path)
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct(
            [f.with_type(_untyped_as_text(f.type, f"{path}.{f.name}", found)) for f in t]
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        item = t.value_field.with_type(_untyped_as_text(t.value_type, path, found))
        return pa.list_(item) if pa.types.is_list(t) else pa.large_list(item)
    if pa.types.is_map(t):
        item = t.item_field.with_type(_untyped_as_text(t.item_type, path, found))
        return pa.map_(t.key_field, item, t.keys_sorted)
    return t


def _check_column_names(f: _File, schema: pa.Schema, fmt: str) -> None:
    """Raise ValueError naming the columns of ``f`` with no name, or named more than once."""
    blank = [str(n) for n, name in enumerate(schema.names, 1) if not name.strip()]
    if blank:
        # NOTE: DataHub needs a field path (the builder refused it naming neither file nor
        # column); an empty header cell is often a pandas index written by to_csv.
        where = " and ".join([", ".join(blank[:-1]), blank[-1]] if len(blank) > 1 else blank)
        hint = " (pandas: to_csv(index=False), or name the index)" if fmt == "csv" else ""
        raise ValueError(
            f"{f.path} has {'a column' if len(blank) == 1 else 'columns'} with no name "
            f"(column{'s' if len(blank) > 1 else ''} {where} of {len(schema.names)}); give "
            f"each column a name{hint}"
        )
    for column in schema:
        _check_field_names(f, column, column.name)
    named = repeated_columns(schema.names)
    if named:
        # NOTE: checked before unifying: pyarrow's own error then blames the dataset's files
        # for disagreeing, and a dataset's fields must have distinct paths anyway.
        raise ValueError(
            f"{f.path} names a column more than once: {named}; give each column its own name"
        )


def _check_field_names(f: _File, field: pa.Field, path: str) -> None:
    """Raise ValueError for a nested field (of a JSON object, a Parquet struct) with no name."""
    if not pa.types.is_struct(field.type):
        return
    for child in field.type:
        if not child.name.strip():
            raise ValueError(f"{f.path} has a field with no name in {path}; give each field a name")
        _check_field_names(f, child, f"{path}.{child.name}")


class _NoColumns(ValueError):
    """A file holds nothing (0 bytes, or no text but blank lines): no column to read."""


def _check_not_empty(path: str, head: bytes, fmt: str) -> None:
    """Raise :class:`_NoColumns` when a CSV or JSON lines file holds no text."""
    if head.removeprefix(codecs.BOM_UTF8).strip():
        return
    state = "is empty (0 bytes)" if not head else "holds no text (only blank lines)"
    if fmt == "csv":
        raise _NoColumns(
            f"{path} {state}: a CSV file's first line is the header naming its columns"
        )
    raise _NoColumns(f"{path} {state}: no JSON object to read columns from (one per line)")


def _csv_head(path: str, head: bytes, *, what: str = "row (or the header)") -> bytes:
    """The whole lines of a CSV (or JSON lines) file's first bytes (all of them when ``head``
    is shorter than :data:`_HEAD`), as UTF-8 for pyarrow; ValueError naming the file's line and
    byte offset where they are not text in the encodings the CSV readers take
    (:data:`~metaverse_kit.ingest.source.TEXT_ENCODINGS`). ``what`` names a line in the error
    of a head without a whole one.
    """
    whole = len(head) < _HEAD
    # NOTE: pyarrow took a column of text that is not UTF-8 (Excel's plain "CSV") for bytes
    # (BytesType) without a word, and UTF-16 for a jumble of columns.
    problem = text_problem([head], complete=whole)
    if problem:
        raise ValueError(f"{path} {problem}")
    if text_encoding(head) == "utf-16":
        decoder = codecs.getincrementaldecoder("utf-16")()
        head = decoder.decode(head, final=whole).encode()
    if whole:
        # NOTE: pyarrow finds no columns in a header that ends the file without a line end.
        return head if head.endswith((b"\n", b"\r")) or not head else head + b"\n"
    # NOTE: \r too: the lines of a Mac's CSV end in \r alone, which left nothing to read.
    cut = max(head.rfind(b"\n"), head.rfind(b"\r")) + 1
    lines = head[:cut].rstrip(b"\r\n")
    if b"\n" not in lines and b"\r" not in lines:
        # NOTE: a header without a row gives every column the type null.
        raise ValueError(
            f"{path} has no whole row in its first {_HEAD >> 20} MiB, from which the schema is "
            f"read: a {what} longer than that, or a quote never closed"
        )
    return head[:cut]


def _csv_parse_problem(path: str, head: bytes, exc: pa.ArrowInvalid) -> str:
    """pyarrow's reason a CSV file does not parse, with the line its bad row starts on.

    NOTE: pyarrow numbers records (the header is 1, blank lines are skipped), not lines: a
    cell over several lines, or a quote never closed, puts the two apart.
    """
    said = " ".join(str(exc).split())
    found = re.search(r"Row #(\d+): (.*)", said)
    if found is None:
        return f"{path}: {said}"
    row, reason = int(found[1]), found[2]
    reader = csv.reader(io.StringIO(head.decode("utf-8-sig", "replace"), newline=""))
    start, records = 1, 0
    try:
        for cells in reader:
            records += bool(cells)
            if records == row:
                break
            start = reader.line_num + 1
    except csv.Error:
        return f"{path} row {row} (the header is row 1): {reason:.160}"
    return (
        f"{path} line {start}: {reason:.160} (a quote never closed, or a cell holding a comma "
        "without quotes?)"
    )


class FilesSource(Source):
    """Reads the schemas of data files (see the module docstring)."""

    config_class = FilesConfig
    description = "Parquet, CSV, JSON lines and Avro files in a folder or an Azure container"

    def identity(self) -> str:
        return self.config.path

    def open(self) -> None:
        unknown = [f for f in self.config.formats if f not in FORMATS]
        if unknown:
            raise SourceUnreachableError(
                f"source.config.formats: unknown {unknown}; use some of {', '.join(FORMATS)}"
            )
        path = self.config.path
        self.store: _Local | _Blobs = (
            _Blobs(path, self.config.connection_string)
            if path.startswith(("abfs://", "abfss://"))
            else _Local(path)
        )
        self.platform = self.config.platform or self.store.platform
        self.prefix = self.config.prefix if self.config.prefix is not None else self.store.name

    def close(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    def _wanted(self, rel: str) -> bool:
        if self.config.include and not any(fnmatch.fnmatch(rel, p) for p in self.config.include):
            return False
        return not any(fnmatch.fnmatch(rel, p) for p in self.config.exclude)

    def _datasets(self) -> Iterator[_Dataset]:
        formats = self.config.formats
        partitioned: dict[str, list[_File]] = {}
        walker = self.store.walk()
        for rel, dirs, files in walker:
            owner = next(
                (p for p in partitioned if not p or rel == p or rel.startswith(p + "/")), None
            )
            if owner is not None:
                partitioned[owner].extend(f for f in files if _format_of(f.path, formats))
                continue
            if dirs and all(_PARTITION.match(d) for d in dirs):
                partitioned[rel] = []
                continue
            for f in files:
                fmt = _format_of(f.path, formats)
                if fmt and self._wanted(f.path):
                    yield _Dataset(f.path, fmt, [f])
        for rel, files in partitioned.items():
            if not files or not self._wanted(rel):
                continue
            fmt = _format_of(files[0].path, formats)
            assert fmt is not None
            keys: list[str] = []
            for f in files:
                for part in f.path[len(rel) :].strip("/").split("/")[:-1]:
                    key = part.partition("=")[0]
                    if key not in keys:
                        keys.append(key)
            yield _Dataset(rel, fmt, [f for f in files if _format_of(f.path, [fmt])], tuple(keys))

    def work_units(self) -> Iterator[WorkUnit]:
        for ds in self._datasets():
            name = "/".join(p for p in (self.prefix, ds.path) if p)
            listing = [(f.path, f.size, f.mtime_ms) for f in ds.files]
            fingerprint = hashlib.sha256(
                json.dumps([_VERSION, ds.format, listing, self.config.row_counts]).encode()
            ).hexdigest()[:24]
            yield WorkUnit(
                make_dataset_urn(self.platform, name, self.config.env),
                functools.partial(self._aspects, ds, name),
                fingerprint,
                f"{ds.format} {ds.path}",
            )

    # -- reading schemas ---------------------------------------------------------------------

    def _schema(self, ds: _Dataset, f: _File) -> tuple[pa.Schema, int | None, dict[str, str]]:
        """(schema, row count if cheap, native types) of one file."""
        if f.size == 0 and ds.format in ("parquet", "avro"):
            # NOTE: pyarrow said "Parquet file size is 0 bytes", fastavro "cannot read header".
            what = "footer" if ds.format == "parquet" else "header"
            raise _NoColumns(
                f"{f.path} is empty (0 bytes): no {ds.format.capitalize()} {what} to read its "
                "columns from"
            )
        if ds.format == "parquet":
            import pyarrow.parquet as pq

            with self.store.open(f.path) as handle:
                meta = pq.ParquetFile(handle).metadata
                return meta.schema.to_arrow_schema(), meta.num_rows, {}
        if ds.format == "csv":
            import pyarrow.csv as pcsv

            head = _csv_head(f.path, self.store.head(f.path, _HEAD))
            _check_not_empty(f.path, head, "csv")
            try:
                # NOTE: one thread, so that pyarrow numbers the row it cannot parse.
                options = pcsv.ReadOptions(use_threads=False)
                return pcsv.read_csv(io.BytesIO(head), read_options=options).schema, None, {}
            except pa.ArrowInvalid as exc:
                raise ValueError(_csv_parse_problem(f.path, head, exc)) from exc
        if ds.format == "json":
            import pyarrow.json as pjson

            # NOTE: as a CSV file's: a Latin-1 file was read without a word and UTF-16 failed
            # with "JSON parse error: Invalid value. in row 0".
            head = _csv_head(f.path, self.store.head(f.path, _HEAD), what="line")
            _check_not_empty(f.path, head, "json")
            try:
                return pjson.read_json(io.BytesIO(head)).schema, None, {}
            except pa.ArrowInvalid as exc:
                said = " ".join(str(exc).split())
                raise ValueError(f"{f.path}: {said:.200} (one JSON object per line)") from exc
        return self._avro_schema(f)

    def _avro_schema(self, f: _File) -> tuple[pa.Schema, int | None, dict[str, str]]:
        import fastavro

        from metaverse_kit.events.avro import AvroSchema
        from metaverse_kit.history.arrow_types import arrow_mapping

        with self.store.open(f.path) as handle:
            writer = fastavro.reader(handle).writer_schema
        avro = AvroSchema(json.dumps(writer))
        mapped = arrow_mapping(avro).type
        root = avro.resolve(avro.root)
        native = {}
        for fd in root.get("fields", []):
            t = avro.resolve(fd["type"])
            native[fd["name"]] = (
                json.dumps(fd["type"])
                if isinstance(t, list)
                else (t if isinstance(t, str) else t.get("logicalType") or t["type"])
            )
        nullable = {
            fd["name"]: isinstance(avro.resolve(fd["type"]), list)
            and "null" in avro.resolve(fd["type"])
            for fd in root.get("fields", [])
        }
        schema = pa.schema([pa.field(c.name, c.type, nullable[c.name]) for c in mapped])
        return schema, None, native

    def _aspects(self, ds: _Dataset, name: str) -> list[A.Aspect]:
        newest = sorted(ds.files, key=lambda f: f.mtime_ms, reverse=True)
        schemas: list[pa.Schema] = []
        native: dict[str, str] = {}
        rows = 0
        counted = self.config.row_counts and ds.format == "parquet"
        empty: _NoColumns | None = None
        for i, f in enumerate(newest):
            if i >= _SAMPLED and not counted:
                break
            try:
                schema, count, types = self._schema(ds, f) if i < _SAMPLED else (None, None, {})
            except _NoColumns as exc:
                # NOTE: an empty part of a dataset of many files (Spark writes one for an empty
                # partition) says nothing of its columns; a dataset with no other fails.
                empty = empty or exc
                continue
            if schema is None and ds.format == "parquet":
                import pyarrow.parquet as pq

                with self.store.open(f.path) as handle:
                    count = pq.ParquetFile(handle).metadata.num_rows
            if schema is not None:
                _check_column_names(f, schema, ds.format)
                schemas.append(schema)
                native = {**types, **native}
            rows += count or 0
        if not schemas and empty is not None:
            raise empty
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(
                f"the files of {ds.path} have schemas that do not agree: {exc}"
            ) from exc
        untyped: set[str] = set()
        if ds.format in _INFERRED:
            # NOTE: after unifying, so that another file's values give the column its type.
            schema = pa.schema(
                [f.with_type(_untyped_as_text(f.type, f.name, untyped)) for f in schema]
            )
        for key in ds.partition_keys:
            if schema.get_field_index(key) < 0:
                values = {
                    p.partition("=")[2]
                    for f in ds.files
                    for p in f.path.split("/")
                    if p.startswith(key + "=")
                }
                numeric = all(v.lstrip("-").isdigit() for v in values) and values
                schema = schema.append(pa.field(key, pa.int64() if numeric else pa.string()))
        custom = {
            "format": ds.format,
            "size_in_bytes": str(sum(f.size for f in ds.files)),
            "number_of_files": str(len(ds.files)),
        }
        if counted:
            custom["row_count"] = str(rows)
        if ds.partition_keys:
            custom["partition_keys"] = ",".join(ds.partition_keys)
        return [
            A.dataset_properties(
                name=ds.path.rpartition("/")[2] or name,
                qualified_name=self.store.url(ds.path),
                uri=self.store.url(ds.path),
                custom_properties=custom,
                last_modified_ms=max(f.mtime_ms for f in ds.files),
            ),
            A.schema_metadata(
                name,
                arrow_fields(
                    schema,
                    partition_keys=ds.partition_keys,
                    native=native,
                    descriptions=dict.fromkeys(untyped, _UNTYPED),
                ),
                platform=self.platform,
                raw_schema=schema.to_string(show_schema_metadata=False),
            ),
        ]
