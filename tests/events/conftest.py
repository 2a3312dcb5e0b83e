"""Fixtures for the event-model tests: DataHub's own schema and URN encoder, read from its wheel.

The wheel is not a dependency: ``make`` downloads it into ``.cache/`` with
``pip download --no-deps acryl-datahub==1.7.0.17 -d .cache``. Tests that compare with DataHub
skip, saying so, when it is absent.
"""

from __future__ import annotations

import io
import json
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest

from metaverse_kit.events.builtin import mce_schema

DATAHUB_WHEEL = "acryl_datahub-1.7.0.17-py3-none-any.whl"
_NAMED = {"record", "error", "enum", "fixed"}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def index_named_types(schema: Any) -> dict[str, dict]:
    """Map every named type's full name to its definition, nested named types as full-name refs.

    Fails when a type is defined twice or referenced before its definition, which Avro forbids.
    """
    out: dict[str, dict] = {}

    def full(name: str, namespace: str | None) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def walk(t: Any, namespace: str | None) -> Any:
        if isinstance(t, list):
            return [walk(b, namespace) for b in t]
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return t
            name = full(t, namespace)
            assert name in out, f"{name} is referenced before it is defined"
            return name
        if t["type"] in _NAMED:
            name = full(t["name"], t.get("namespace", namespace))
            assert name not in out, f"{name} is defined twice"
            out[name] = {}  # NOTE: registered before its fields, so recursive refs resolve.
            inner = name.rpartition(".")[0]
            d = dict(t)
            if "fields" in d:
                d["fields"] = [{**f, "type": walk(f["type"], inner)} for f in d["fields"]]
            out[name] = d
            return name
        if t["type"] == "array":
            return {**t, "items": walk(t["items"], namespace)}
        if t["type"] == "map":
            return {**t, "values": walk(t["values"], namespace)}
        return t

    walk(schema, None)
    return out


def strip_record_names(value: Any) -> Any:
    """Turn ``("full.Name", {...})`` union branches into plain dicts, recursively."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return strip_record_names(value[1])
    if isinstance(value, dict):
        return {k: strip_record_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_record_names(v) for v in value]
    return value


@pytest.fixture(scope="session")
def ours() -> dict:
    """Our built-in MCE schema, parsed JSON."""
    return mce_schema()


@pytest.fixture(scope="session")
def our_types(ours: dict) -> dict[str, dict]:
    """Every named type of our schema by full name."""
    return index_named_types(ours)


@pytest.fixture(scope="session")
def our_parsed(ours: dict) -> Any:
    """Our schema parsed by fastavro."""
    return fastavro.parse_schema(ours)


@pytest.fixture(scope="session")
def datahub_wheel(pytestconfig: pytest.Config) -> Path:
    """Path of DataHub's wheel in ``.cache/``; skips when it has not been downloaded."""
    path = pytestconfig.rootpath / ".cache" / DATAHUB_WHEEL
    if not path.is_file():
        pytest.skip(
            f"DataHub's wheel is not at {path}; download it with "
            f"`pip download --no-deps acryl-datahub==1.7.0.17 -d .cache`"
        )
    return path


@pytest.fixture(scope="session")
def datahub_schema(datahub_wheel: Path) -> dict:
    """DataHub's own MetadataChangeEvent schema, parsed JSON."""
    with zipfile.ZipFile(datahub_wheel) as wheel:
        return json.loads(wheel.read("datahub/metadata/schemas/MetadataChangeEvent.avsc"))


@pytest.fixture(scope="session")
def datahub_types(datahub_schema: dict) -> dict[str, dict]:
    """Every named type of DataHub's MCE schema by full name."""
    return index_named_types(datahub_schema)


@pytest.fixture(scope="session")
def datahub_parsed(datahub_schema: dict) -> Any:
    """DataHub's MCE schema parsed by fastavro."""
    return fastavro.parse_schema(datahub_schema)


@pytest.fixture(scope="session")
def datahub_encode(datahub_wheel: Path) -> Callable[[str], str]:
    """DataHub's own ``UrnEncoder.encode_string`` (its module imports only the standard library)."""
    with zipfile.ZipFile(datahub_wheel) as wheel:
        source = wheel.read("datahub/utilities/urn_encoder.py").decode("utf-8")
    module = types.ModuleType("datahub_urn_encoder")
    exec(compile(source, "datahub/utilities/urn_encoder.py", "exec"), module.__dict__)
    return module.UrnEncoder.encode_string


@pytest.fixture(scope="session")
def avro_roundtrip(our_parsed: Any) -> Callable[..., Any]:
    """Encode a record with our schema and decode it again (with another reader schema if given)."""

    def roundtrip(record: Any, *, reader: Any = None, return_record_name: bool = True) -> Any:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, our_parsed, record)
        buf.seek(0)
        return fastavro.schemaless_reader(
            buf, our_parsed, reader, return_record_name=return_record_name
        )

    return roundtrip


@pytest.fixture(scope="session")
def strip_names() -> Callable[[Any], Any]:
    """:func:`strip_record_names`, for comparing with what a reader without names returns."""
    return strip_record_names
