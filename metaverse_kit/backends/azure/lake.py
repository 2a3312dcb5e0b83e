"""The Capture lake in ADLS Gen2 (or any Blob Storage container), read through the Blob API.

Reads use the Blob endpoint, which every storage account serves, with or without a
hierarchical namespace (and which Azurite, the emulator, serves; it has no dfs endpoint).

Listing: a few one-level listings find the partition folders of the Capture tree
(``<namespace>/<eventhub>/<partition>/``); then each partition is listed with one flat prefix
listing per time prefix (``.../<partition>/2026/03/02/``) that covers the asked time range, so
a year of history is not walked folder by folder. Folder marker blobs (metadata
``hdi_isfolder=true``, written by accounts with a hierarchical namespace) and empty blobs are
skipped. Downloads are ranged and parallel, and the next files are fetched while the current
one is decoded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from metaverse_kit.backends.azure._errors import translate_http_error
from metaverse_kit.backends.protocols import CaptureFile
from metaverse_kit.capture import CAPTURE_MAX_WINDOW, parse_capture_path, select_files
from metaverse_kit.errors import CaptureFileError, ConfigurationError, SchemaNotFoundError
from metaverse_kit.redact import redact

__all__ = ["AzureLake", "parse_lake_url", "storage_retry_policy", "time_prefixes"]

_ROLE = "Storage Blob Data Reader"
_YEAR = re.compile(r"^\d{4}$")
# At most this many prefix listings per partition; a longer range is listed by coarser prefixes.
_MAX_PREFIXES = 16
# Partition folders are at most this many levels below the root (namespace/eventhub/partition).
_MAX_DEPTH = 3


def parse_lake_url(url: str, *, account_name: str | None = None) -> tuple[str, str, str]:
    """``(account, container, prefix)`` of an ``abfs[s]://`` or ``az://`` URL.

    ``abfss://<container>@<account>.dfs.core.windows.net/<prefix>`` names the account;
    ``abfs://<container>/<prefix>`` takes it from ``account_name``. Raises
    :class:`ConfigurationError` for anything else.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("abfs", "abfss", "az"):
        raise ConfigurationError(f"A lake URL starts with abfss://, abfs:// or az://, not {url!r}")
    container, at, host = parts.netloc.partition("@")
    prefix = parts.path.lstrip("/")
    account = host.split(".", 1)[0] if at else account_name or ""
    if not container:
        raise ConfigurationError(f"The lake URL {url!r} names no container (file system)")
    if prefix and not prefix.endswith("/") and not prefix.endswith(".avro"):
        prefix += "/"
    return account, container, prefix


def storage_retry_policy(**options: Any) -> Any:
    """Azure Storage's exponential retry policy (``options`` as the storage clients take them:
    ``retry_total=`` ...), but a credential that cannot get a token fails the call at once;
    pass it as ``retry_policy=`` to storage clients given a credential.

    NOTE: azure-core's retry policy re-raises ``ClientAuthenticationError`` (the credential has
    already tried; azure-sdk-for-python#6019), Storage's own retries it like a lost connection:
    without ``az login`` a lake listing waited 78 s (4 tries of its backoff) before saying so.
    A host name the name server says does not exist (a misspelt account) is final too.
    """
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
    from azure.storage.blob import ExponentialRetry

    from metaverse_kit.backends.azure._errors import no_such_host

    class SignInIsFinal(ExponentialRetry):
        def increment(
            self, settings: Any, request: Any, response: Any = None, error: Any = None
        ) -> bool:
            # Raised inside the pipeline, this comes from the credential (an HTTP 401 from the
            # service is a response, which Storage never retries).
            if isinstance(error, ClientAuthenticationError):
                return False
            if isinstance(error, ServiceRequestError) and no_such_host(error):
                return False
            return bool(super().increment(settings, request, response=response, error=error))

    return SignInIsFinal(**options)


class AzureLake:
    """Capture files under ``prefix`` in one container, read with ``azure-storage-blob``.

    Build it with :meth:`from_url` (a credential) or :meth:`from_connection_string`.
    ``container_client`` is an ``azure.storage.blob.ContainerClient``; ``root`` is the URL
    shown in file paths (``abfss://<container>@<account>.dfs.core.windows.net/``).
    ``max_concurrency`` is the number of parallel ranged reads per file, and ``prefetch`` the
    number of files fetched ahead while one is decoded.
    """

    #: How the caller passes a credential; a lake opened from a URL and ``storage_options``
    #: says so (see :func:`~metaverse_kit.backends.azure.factory.lake_from_url`).
    credential_option = "credential=..."

    def __init__(
        self,
        container_client: Any,
        *,
        prefix: str = "",
        root: str | None = None,
        max_concurrency: int = 4,
        prefetch: int = 4,
    ) -> None:
        self._container = container_client
        self.prefix = prefix
        base = root or (
            f"abfss://{container_client.container_name}@{container_client.account_name}"
            ".dfs.core.windows.net/"
        )
        self._base = base if base.endswith("/") else base + "/"
        self.root = self._base + prefix
        self.max_concurrency = max_concurrency
        self.prefetch = prefetch
        self._pool: ThreadPoolExecutor | None = None
        self._order: list[CaptureFile] = []
        self._pending: dict[str, Future[bytes]] = {}

    # -- construction ---------------------------------------------------------------------------

    @staticmethod
    def _client_options(chunk_size: int | None) -> dict[str, Any]:
        if chunk_size is None:
            return {}
        return {"max_single_get_size": chunk_size, "max_chunk_get_size": chunk_size}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        credential: Any = None,
        account_name: str | None = None,
        chunk_size: int | None = None,
        **client_options: Any,
    ) -> AzureLake:
        """A lake at ``abfss://<container>@<account>.dfs.core.windows.net/<prefix>``.

        ``credential`` is a ``TokenCredential``, an account key, a SAS token or None
        (anonymous). ``chunk_size`` sets the size of ranged reads. Other options go to
        ``BlobServiceClient`` (``transport=``, ``raw_request_hook=`` ...).
        """
        from azure.storage.blob import BlobServiceClient

        account, container, prefix = parse_lake_url(url, account_name=account_name)
        if not account:
            raise ConfigurationError(
                f"The lake URL {url!r} names no storage account: use "
                "abfss://<container>@<account>.dfs.core.windows.net/ or pass "
                "storage_options={'account_name': ...}"
            )
        if "retry_policy" not in client_options:
            client_options["retry_policy"] = storage_retry_policy(**client_options)
        service = BlobServiceClient(
            f"https://{account}.blob.core.windows.net",
            credential=credential,
            **cls._client_options(chunk_size),
            **client_options,
        )
        return cls(
            service.get_container_client(container),
            prefix=prefix,
            root=f"abfss://{container}@{account}.dfs.core.windows.net/",
        )

    @classmethod
    def from_connection_string(
        cls,
        conn_str: str,
        url: str,
        *,
        chunk_size: int | None = None,
        **client_options: Any,
    ) -> AzureLake:
        """A lake in the account a storage connection string names (Azurite's, for example).

        ``url`` gives the container and prefix (``abfs://<container>/<prefix>`` or an
        ``abfss://`` URL, whose account must be the connection string's).
        """
        from azure.storage.blob import BlobServiceClient

        try:
            service = BlobServiceClient.from_connection_string(
                conn_str, **cls._client_options(chunk_size), **client_options
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"The storage connection string is not valid: {redact(exc)}"
            ) from None
        account, container, prefix = parse_lake_url(url, account_name=service.account_name)
        if account and service.account_name and account != service.account_name:
            raise ConfigurationError(
                f"The lake URL names account {account!r} but the connection string is for "
                f"{service.account_name!r}"
            )
        return cls(
            service.get_container_client(container),
            prefix=prefix,
            root=f"abfss://{container}@{service.account_name}.dfs.core.windows.net/",
        )

    def __repr__(self) -> str:
        return f"AzureLake({redact(self.root)!r})"

    def __enter__(self) -> AzureLake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the prefetching and close the HTTP connections."""
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()
        self._container.close()

    # -- listing --------------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import AzureError

        try:
            return fn(*args, **kwargs)
        except AzureError as exc:
            error = translate_http_error(
                exc,
                what=what,
                role=_ROLE,
                credential_option=self.credential_option,
                resource=self._resource,
            )
            if isinstance(error, SchemaNotFoundError):
                error = ConfigurationError(f"{what}: the container or path does not exist")
            raise error from exc

    @property
    def _resource(self) -> str:
        container = getattr(self._container, "container_name", "?")
        account = getattr(self._container, "account_name", "?")
        return f"the container {container} of the storage account {account}"

    def _children(self, prefix: str) -> tuple[list[str], list[Any]]:
        """The sub-folders and the blobs one level below ``prefix``."""
        from azure.storage.blob import BlobPrefix

        folders: list[str] = []
        blobs: list[Any] = []

        def walk() -> None:
            for item in self._container.walk_blobs(
                name_starts_with=prefix or None, delimiter="/", include=["metadata"]
            ):
                if isinstance(item, BlobPrefix):
                    folders.append(item.name)
                else:
                    blobs.append(item)

        self._call(f"Listing {self._base}{prefix}", walk)
        return folders, blobs

    def _flat(self, prefix: str) -> list[Any]:
        def listing() -> list[Any]:
            return list(
                self._container.list_blobs(name_starts_with=prefix or None, include=["metadata"])
            )

        return list(self._call(f"Listing {self._base}{prefix}", listing))

    def _partition_folders(self) -> tuple[list[str], list[Any]]:
        """Partition folders below the root (found by their year sub-folders), and loose blobs."""
        found: list[str] = []
        loose: list[Any] = []
        level = [self.prefix]
        for _ in range(_MAX_DEPTH + 1):
            deeper: list[str] = []
            for folder in level:
                children, blobs = self._children(folder)
                loose.extend(blobs)
                if any(_YEAR.match(c[len(folder) :].rstrip("/")) for c in children):
                    found.append(folder)
                else:
                    deeper.extend(children)
            if not deeper:
                break
            level = deeper
        return found, loose

    def _file(self, blob: Any) -> CaptureFile | None:
        name: str = blob.name
        metadata = {k.lower(): str(v).lower() for k, v in (blob.metadata or {}).items()}
        if metadata.get("hdi_isfolder") == "true" or not name.endswith(".avro"):
            return None
        # NOTE: Capture never writes a zero-byte archive; such blobs are markers or uploads in
        # progress, so they are skipped like folders.
        if not blob.size:
            return None
        path = self._base + name
        info = parse_capture_path(name)
        return CaptureFile(
            path=path,
            size=int(blob.size),
            version=f"{blob.size}:{str(blob.etag).strip(chr(34))}",
            namespace=info.namespace if info else None,
            eventhub=info.eventhub if info else None,
            partition=info.partition if info else None,
            window_start=info.window_start if info else None,
        )

    def list_files(
        self,
        *,
        partitions: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[CaptureFile]:
        """Capture files that may hold events of these partitions in [start, end], in order.

        Raises :class:`ServiceError` (access denied: the identity needs Storage Blob Data
        Reader) or :class:`TransientServiceError` (connection lost, throttled).
        """
        # The partition folders' names: only the wanted ones are listed below, so these say
        # which partitions the lake has (None: not a Capture tree).
        lake_partitions: list[str] | None = None
        if self.prefix.endswith(".avro"):
            blobs = [b for b in self._flat(self.prefix) if b.name == self.prefix]
        else:
            folders, blobs = self._partition_folders()
            wanted = None if partitions is None else {str(p) for p in partitions}
            prefixes: list[str] = []
            lake_partitions = [f.rstrip("/").rsplit("/", 1)[-1] for f in folders] or None
            for folder, partition in zip(folders, lake_partitions or (), strict=True):
                if wanted is not None and partition not in wanted:
                    continue
                prefixes.extend(folder + p for p in time_prefixes(start, end))
            if not folders:
                # Not a Capture tree: list everything below the root once.
                blobs = self._flat(self.prefix)
            elif prefixes:
                blobs = blobs + self._list_all(prefixes)
        files = [f for f in (self._file(b) for b in blobs) if f is not None]
        selected = select_files(
            files, partitions=partitions, start=start, end=end, lake_partitions=lake_partitions
        )
        self._order = selected
        return selected

    def _list_all(self, prefixes: list[str]) -> list[Any]:
        if len(prefixes) == 1:
            return self._flat(prefixes[0])
        # PERF: prefix listings are independent round trips; a few run at once.
        with ThreadPoolExecutor(max_workers=min(8, len(prefixes))) as pool:
            return [blob for page in pool.map(self._flat, prefixes) for blob in page]

    # -- reading --------------------------------------------------------------------------------

    def _name(self, file: CaptureFile) -> str:
        if not file.path.startswith(self._base):
            raise CaptureFileError(f"{redact(file.path)} is not in the lake {redact(self.root)}")
        return file.path[len(self._base) :]

    def _download(self, name: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(name)
        try:
            downloader = self._call(
                f"Reading {self._base}{name}",
                blob.download_blob,
                max_concurrency=self.max_concurrency,
            )
            return bytes(self._call(f"Reading {self._base}{name}", downloader.readall))
        except ConfigurationError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                raise CaptureFileError(
                    f"{self._base}{name} disappeared while replaying"
                ) from exc.__cause__
            raise

    def read_bytes(self, file: CaptureFile) -> bytes:
        """The whole content of one file (ranged parallel reads; the next files are prefetched).

        Raises :class:`CaptureFileError` when the file disappeared.
        """
        name = self._name(file)
        if self.prefetch > 0:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.prefetch)
            try:
                position = self._order.index(file)
            except ValueError:
                position = -1
            if position >= 0:
                for ahead in self._order[position + 1 : position + 1 + self.prefetch]:
                    if ahead.path not in self._pending:
                        self._pending[ahead.path] = self._pool.submit(
                            self._download, self._name(ahead)
                        )
            future = self._pending.pop(file.path, None)
            if future is not None:
                return future.result()
        return self._download(name)


def time_prefixes(start: datetime | None, end: datetime | None) -> list[str]:
    """The path prefixes below a partition folder that cover Capture windows in [start, end].

    The finest of hour, day, month or year prefixes that needs at most 16 listings; ``[""]``
    (the whole partition) when the range is open at the start or too long.
    """
    if start is None:
        return [""]
    first = start.astimezone(UTC) - CAPTURE_MAX_WINDOW
    last = (end or datetime.now(UTC) + timedelta(days=1)).astimezone(UTC)
    if last < first:
        return []
    for fmt, step in (
        ("%Y/%m/%d/%H/", timedelta(hours=1)),
        ("%Y/%m/%d/", timedelta(days=1)),
    ):
        count = int((last - first) / step) + 2
        if count <= _MAX_PREFIXES:
            out: list[str] = []
            t = first
            while t <= last + step:
                prefix = t.strftime(fmt)
                if prefix not in out and t.strftime(fmt) <= last.strftime(fmt):
                    out.append(prefix)
                t += step
            return out
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    if months <= _MAX_PREFIXES:
        out = []
        year, month = first.year, first.month
        for _ in range(months):
            out.append(f"{year:04d}/{month:02d}/")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return out
    if last.year - first.year + 1 <= _MAX_PREFIXES:
        return [f"{y:04d}/" for y in range(first.year, last.year + 1)]
    return [""]
