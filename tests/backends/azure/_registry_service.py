"""An in-process Azure Schema Registry (REST api-version 2022-10) behind azure-core's transport.

It implements the operations the toolkit uses (register, get by id, get by version, get
properties by content, list groups, list versions) and checks what the SDK sends: the method
and path, ``api-version=2022-10``, the ``Accept``/``Content-Type`` headers and the bearer token
the credential issued. Every deviation is recorded in ``violations`` (the fixture fails the test
when any is left), because an exception raised here would be turned into a ServiceError by the
code under test and hide what went wrong.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._requests_basic import RestRequestsTransportResponse

from metaverse_kit.events.compatibility import breaking_changes

AVRO = "application/json; serialization=Avro"
SCOPE = "https://eventhubs.azure.net/.default"


class FakeCredential:
    """A TokenCredential that hands out a fresh opaque token and records the scopes asked."""

    def __init__(self) -> None:
        self.token = "tok-" + uuid.uuid4().hex
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass
class _Version:
    id: str
    group: str
    name: str
    version: int
    definition: str


@dataclass
class RegistryService:
    """The service's state and the checks on every request."""

    credential: FakeCredential
    compatibility: dict[str, str] = field(default_factory=dict)
    schemas: dict[tuple[str, str], list[_Version]] = field(default_factory=dict)
    ids: dict[str, _Version] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    page_size: int = 2
    fail_next: list[int] = field(default_factory=list)
    #: Headers of the answers ``fail_next`` makes (``Retry-After`` of a throttled request).
    fail_headers: dict[str, str] = field(default_factory=dict)

    def add_group(self, name: str, compatibility: str = "Backward") -> None:
        self.compatibility[name] = compatibility

    # -- HTTP -------------------------------------------------------------------------------

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple:
        parts = urlsplit(url)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        self.requests.append((method, path))
        if query.get("api-version") != ["2022-10"]:
            self.violations.append(f"{method} {path}: api-version {query.get('api-version')}")
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.credential.token}":
            self.violations.append(f"{method} {path}: Authorization {auth[:12]!r}...")
            return 401, {}, b'{"error":{"code":"Unauthorized","message":"bad token"}}'
        if self.fail_next:
            body = b'{"error":{"code":"ServerBusy","message":"busy"}}'
            return self.fail_next.pop(0), dict(self.fail_headers), body
        if method in ("PUT", "POST") and headers.get("content-type") != AVRO:
            self.violations.append(f"{method} {path}: Content-Type {headers.get('content-type')}")
        if method == "GET" and path == "/$schemaGroups":
            return self._page(sorted(self.compatibility), query, parts.path)
        m = re.fullmatch(r"/\$schemaGroups/\$schemas/([^/]+)", path)
        if m and method == "GET":
            found = self.ids.get(m[1])
            return self._schema(found) if found else self._not_found(f"schema id {m[1]}")
        m = re.fullmatch(r"/\$schemaGroups/([^/]+)/schemas/([^/]+)/versions", path)
        if m and method == "GET":
            versions = self.schemas.get((m[1], m[2]))
            if not versions:
                return self._not_found(f"schema {m[2]}")
            return self._page([v.version for v in versions], query, parts.path)
        m = re.fullmatch(r"/\$schemaGroups/([^/]+)/schemas/([^/]+)/versions/(\d+)", path)
        if m and method == "GET":
            versions = self.schemas.get((m[1], m[2]), [])
            n = int(m[3])
            if not 1 <= n <= len(versions):
                return self._not_found(f"version {n} of {m[2]}")
            return self._schema(versions[n - 1])
        m = re.fullmatch(r"/\$schemaGroups/([^/]+)/schemas/([^/:]+):get-id", path)
        if m and method == "POST":
            for v in self.schemas.get((m[1], m[2]), []):
                if _same(v.definition, body.decode()):
                    return 204, self._headers(v), b""
            return self._not_found(f"definition of {m[2]}")
        m = re.fullmatch(r"/\$schemaGroups/([^/]+)/schemas/([^/:]+)", path)
        if m and method == "PUT":
            return self._register(m[1], m[2], body.decode())
        self.violations.append(f"unexpected {method} {path}")
        return 404, {}, b'{"error":{"code":"NotFound","message":"no such operation"}}'

    def _page(self, values: list, query: dict, path: str) -> tuple:
        start = int(query.get("skip", ["0"])[0])
        page = values[start : start + self.page_size]
        out: dict[str, Any] = {"Value": page}
        if start + self.page_size < len(values):
            out["NextLink"] = f"{path}?skip={start + self.page_size}&api-version=2022-10"
        return 200, {"Content-Type": "application/json"}, json.dumps(out).encode()

    def _headers(self, v: _Version) -> dict[str, str]:
        return {
            "Schema-Id": v.id,
            "Schema-Id-Location": f"https://x/$schemaGroups/$schemas/{v.id}?api-version=2022-10",
            "Schema-Group-Name": v.group,
            "Schema-Name": v.name,
            "Schema-Version": str(v.version),
            "Location": f"https://x/$schemaGroups/{v.group}/schemas/{v.name}/versions/{v.version}",
            "Content-Type": AVRO,
        }

    def _schema(self, v: _Version) -> tuple:
        return 200, self._headers(v), v.definition.encode()

    def _not_found(self, what: str) -> tuple:
        body = {"error": {"code": "ItemNotFound", "message": f"{what} not found"}}
        return 404, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _register(self, group: str, name: str, definition: str) -> tuple:
        if group not in self.compatibility:
            return self._not_found(f"group {group}")
        versions = self.schemas.setdefault((group, name), [])
        for v in versions:
            if _same(v.definition, definition):
                return 204, self._headers(v), b""
        if versions:
            broken = breaking_changes(
                definition, versions[-1].definition, self.compatibility[group]
            )
            if broken:
                body = {
                    "error": {
                        "code": "InvalidRequest",
                        "message": "Schema is not compatible with the group's Backward "
                        "compatibility: " + "; ".join(broken),
                    }
                }
                return 400, {"Content-Type": "application/json"}, json.dumps(body).encode()
        v = _Version(uuid.uuid4().hex, group, name, len(versions) + 1, definition)
        versions.append(v)
        self.ids[v.id] = v
        return 204, self._headers(v), b""


def _same(a: str, b: str) -> bool:
    return json.loads(a) == json.loads(b)


class FakeTransport(HttpTransport):
    """An azure-core transport answered in this process: nothing to open or close; a
    subclass's ``send`` answers each request."""

    def __enter__(self) -> FakeTransport:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


class RegistryTransport(FakeTransport):
    """azure-core transport that answers from a :class:`RegistryService`, in process."""

    def __init__(self, service: RegistryService) -> None:
        self.service = service

    def send(self, request: Any, **kwargs: Any) -> Any:
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = request.content if hasattr(request, "content") else request.data
        if isinstance(body, str):
            body = body.encode()
        elif body is not None and not isinstance(body, bytes):
            body = body.read() if hasattr(body, "read") else bytes(body)
        status, out_headers, out_body = self.service.handle(
            request.method, request.url, headers, body or b""
        )
        raw = requests.Response()
        raw.status_code = status
        raw.headers.update(out_headers)
        raw.raw = io.BytesIO(out_body)
        raw.url = request.url
        raw.reason = "OK" if status < 400 else "Error"
        return RestRequestsTransportResponse(request=request, internal_response=raw)
